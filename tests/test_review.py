"""Review helpers: edits survive re-selection, review order, suggestions (no GUI)."""
import numpy as np
import pytest

from napari_cetpick.review import (
    PickEdits,
    apply_edits,
    diff_points,
    review_order,
    suggest_locations,
    uncertainty_distance,
)

PICKS = np.array([[1.0, 10, 10], [2.0, 20, 20], [3.0, 30, 30]])
SCORES = np.array([0.9, 0.6, 0.4])


def test_edits_survive_reselection():
    edits = PickEdits()
    edits.remove(PICKS[1])                       # rejected
    edits.keep([[5.0, 50, 50]], [0.2])           # accepted below the threshold
    edits.keep([[6.0, 60, 60]])                  # added by hand (no score)
    zyx, s = apply_edits(PICKS, SCORES, edits)
    assert len(zyx) == 4
    assert not np.any(np.all(np.isclose(zyx, PICKS[1]), axis=1))
    assert [5.0, 50, 50] in zyx.tolist() and [6.0, 60, 60] in zyx.tolist()
    assert s[-2] == pytest.approx(0.2) and np.isnan(s[-1])
    # a fresh selection at another threshold: the rejected pick stays away, the kept ones stay
    zyx2, _ = apply_edits(PICKS[:2] + [0.3, 0, 0], SCORES[:2], edits)
    assert len(zyx2) == 3
    # undo
    edits.unremove(PICKS[1])
    edits.unkeep([[5.0, 50, 50]])
    zyx3, _ = apply_edits(PICKS, SCORES, edits)
    assert len(zyx3) == 4 and [5.0, 50, 50] not in zyx3.tolist()


def test_keep_then_remove_is_a_removal():
    edits = PickEdits()
    edits.keep(PICKS[0], [0.9])
    edits.remove(PICKS[0])
    assert len(edits.kept) == 0 and len(edits.removed) == 1
    assert not edits.is_kept(PICKS[:1])[0]


def test_accepted_pick_is_not_duplicated():
    edits = PickEdits()
    edits.keep(PICKS[0], [0.9])
    zyx, _ = apply_edits(PICKS, SCORES, edits)
    assert len(zyx) == 3
    # an improved model finds the accepted particle 1.5 voxels away: still one pick
    moved = PICKS + [0.0, 1.5, 0.0]
    zyx, s = apply_edits(moved, SCORES, edits, tol_vox=5.0)
    assert len(zyx) == 3 and np.allclose(zyx, moved)
    # and a rejected one stays rejected
    edits.remove(PICKS[1])
    zyx, _ = apply_edits(moved, SCORES, edits, tol_vox=5.0)
    assert len(zyx) == 2 and not np.any(np.all(np.isclose(zyx, moved[1]), axis=1))


def test_diff_points():
    after = np.vstack([PICKS[[0, 2]], [[9.0, 9, 9]]])
    removed, added = diff_points(PICKS, after)
    np.testing.assert_allclose(removed, PICKS[[1]])
    np.testing.assert_allclose(added, [[9.0, 9, 9]])
    r, a = diff_points(np.zeros((0, 3)), np.zeros((0, 3)))
    assert r.shape == (0, 3) and a.shape == (0, 3)


def test_review_order():
    s = np.array([0.55, 0.95, np.nan, 0.3, 0.49])
    assert review_order(s, 0.5, "score").tolist() == [1, 0, 4, 3, 2]
    # least certain first: 0.49 and 0.55 sit next to the threshold
    assert review_order(s, 0.5, "uncertain").tolist() == [4, 0, 3, 1, 2]
    # a detector's own margin wins over the distance to the threshold
    assert review_order(s, 0.5, "uncertain", margin=[5, 4, 3, 0.1, 2]).tolist() == [3, 4, 2, 1, 0]
    with pytest.raises(ValueError):
        review_order(s, 0.5, "random")


def test_uncertainty_distance_is_symmetric_in_logits():
    d = uncertainty_distance([0.5, 0.731, 0.269], 0.5)
    assert d[0] == pytest.approx(0) and d[1] == pytest.approx(d[2], abs=1e-3)


def test_suggestions_ordered_as_specified():
    """Near the threshold first, away from judged places, spread out."""
    cand = np.array([
        [10.0, 100, 100],   # 0: right on the threshold, far from everything
        [10.0, 104, 100],   # 1: nearly on the threshold, but on top of 0 (same particle)
        [10.0, 10, 10],     # 2: on the threshold, next to a label: skipped
        [10.0, 100, 160],   # 3: a bit less certain, 60 voxels from 0
        [10.0, 200, 10],    # 4: a bit less certain, far from all
        [10.0, 60, 60],     # 5: certain (0.99): skipped
        [10.0, 250, 250],   # 6: less certain still, far from all
    ])
    scores = np.array([0.5, 0.52, 0.5, 0.6, 0.6, 0.99, 0.75])
    labels = np.array([[10.0, 12, 12]])
    idx = suggest_locations(cand, scores, 0.5, labels, diameter_vox=10, n=10)
    assert idx[0] == 0
    assert 1 not in idx and 2 not in idx and 5 not in idx
    assert idx.tolist() == [0, 4, 3, 6]
    # spread: with a large spread scale the far candidate 6 overtakes 3, which sits near 0
    idx_far = suggest_locations(cand, scores, 0.5, labels, diameter_vox=10, n=10, spread_vox=400)
    assert idx_far.tolist().index(3) == 3
    assert suggest_locations(cand, scores, 0.5, labels, 10, n=2).tolist() == [0, 4]
    assert suggest_locations(np.zeros((0, 3)), np.zeros(0), 0.5, labels, 10).size == 0
    # near the tomogram's faces nothing is suggested (a particle radius, 5 voxels, from each face)
    idx_inside = suggest_locations(cand, scores, 0.5, labels, 10, n=10, shape_zyx=(20, 255, 200))
    assert idx_inside.tolist() == [0, 4, 3]  # 6 lies at x 250 > 200 - 5.5
