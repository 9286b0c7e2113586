"""Matching and precision / recall / F1 / AP, on hand-checked examples."""
import math

import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment

from napari_cetpick import evaluate as ev
from napari_cetpick.errors import CetpickError
from napari_cetpick.evaluate import evaluate, match_points, pr_curve


def max_matching(pred, true, r):
    if len(pred) == 0 or len(true) == 0:
        return 0
    d = np.linalg.norm(pred[:, None] - true[None], axis=2)
    cost = np.where(d < r, 0.0, 1.0)
    rows, cols = linear_sum_assignment(cost)
    return int((cost[rows, cols] == 0).sum())


def test_three_picks_two_truths():
    true = np.array([[0.0, 0, 0], [0, 0, 10]])
    pred = np.array([[0.0, 0, 1], [0, 0, 9], [0, 0, 30]])
    scores = np.array([0.9, 0.8, 0.7])
    res = evaluate(pred, scores, true, radius_vox=2.0)
    assert (res.n_pred, res.n_true, res.n_matched) == (3, 2, 2)
    assert res.precision == pytest.approx(2 / 3)
    assert res.recall == 1.0
    assert res.f1 == pytest.approx(0.8)  # 2 * (2/3) * 1 / (2/3 + 1)
    assert res.best_f1 == 1.0 and res.best_threshold == pytest.approx(0.8)
    at = evaluate(pred, scores, true, 2.0, threshold=0.75)
    assert (at.precision, at.recall, at.f1, at.n_pred) == (1.0, 1.0, 1.0, 2)
    at = evaluate(pred, scores, true, 2.0, threshold=0.85)
    assert (at.precision, at.recall, at.n_pred) == (1.0, 0.5, 1)
    at = evaluate(pred, scores, true, 2.0, threshold=0.95)
    assert (at.precision, at.recall, at.n_pred) == (0.0, 0.0, 0)


def test_average_precision_by_hand():
    # Ranked TP, FP, TP against 2 truths: P = 1, 1/2, 2/3 at R = 1/2, 1/2, 1.
    true = np.array([[0.0, 0, 0], [0, 0, 10]])
    pred = np.array([[0.0, 0, 0.5], [0, 0, 50], [0, 0, 10.5]])
    res = evaluate(pred, [0.9, 0.8, 0.7], true, 2.0)
    assert res.ap == pytest.approx(1.0 * 0.5 + 0.5 * 0.0 + (2 / 3) * 0.5)
    t, p, r = pr_curve(pred, [0.9, 0.8, 0.7], true, 2.0)
    np.testing.assert_allclose(t, [0.9, 0.8, 0.7])
    np.testing.assert_allclose(p, [1, 0.5, 2 / 3])
    np.testing.assert_allclose(r, [0.5, 0.5, 1])


def test_tied_scores_form_one_threshold():
    true = np.array([[0.0, 0, 0]])
    pred = np.array([[0.0, 0, 30], [0, 0, 0.5]])
    t, p, r = pr_curve(pred, [0.5, 0.5], true, 2.0)
    np.testing.assert_allclose(t, [0.5])
    np.testing.assert_allclose(p, [0.5])
    np.testing.assert_allclose(r, [1.0])


def test_distance_equal_to_radius_is_not_a_match():
    true = np.array([[0.0, 0, 0]])
    assert len(match_points([[0, 0, 2.0]], true, 2.0)[0]) == 0
    assert len(match_points([[0, 0, 1.999]], true, 2.0)[0]) == 1
    # Not d**2 - r**3: with r = 2 a pick 2.5 away is far (the original would accept it).
    assert evaluate([[0, 0, 2.5]], [1.0], true, 2.0).n_matched == 0


def test_matching_is_optimal_where_greedy_fails():
    # p0 (better score) is nearest to t0 but also reaches t1; p1 only reaches t0.
    true = np.array([[0.0, 0, 0], [0, 0, 3.5]])
    pred = np.array([[0.0, 0, 1.7], [0, 0, -1.5]])
    pi, ti = match_points(pred, true, 2.0)
    np.testing.assert_array_equal(pi, [0, 1])
    np.testing.assert_array_equal(ti, [1, 0])
    res = evaluate(pred, [0.9, 0.8], true, 2.0)
    assert res.n_matched == 2 and res.recall == 1.0 and res.ap == pytest.approx(1.0)


def test_match_minimises_total_distance():
    true = np.array([[0.0, 0, 0], [0, 0, 2]])
    pred = np.array([[0.0, 0, 0.9], [0, 0, 1.9]])  # both reach both truths
    pi, ti = match_points(pred, true, 3.0)
    np.testing.assert_array_equal(ti[np.argsort(pi)], [0, 1])


def test_box_counts_only_inside():
    true = np.array([[5.0, 5, 5], [5, 5, 9.5], [5, 5, 30]])  # the last is outside
    pred = np.array([
        [5.0, 5, 5.5],    # inside, TP
        [5, 5, 10.5],     # just outside, matches the truth at x = 9.5 inside: TP
        [5, 5, 30],       # outside, far: ignored although it matches a truth outside
        [5, 5, 11.5],     # just outside, unmatched: ignored
        [5, 1, 1],        # inside, FP
    ])
    box = (0, 0, 0, 10, 10, 10)
    res = evaluate(pred, [0.9, 0.8, 0.7, 0.6, 0.5], true, 2.0, box=box)
    assert (res.n_true, res.n_matched, res.n_pred) == (2, 2, 3)
    assert res.precision == pytest.approx(2 / 3) and res.recall == 1.0
    with pytest.raises(CetpickError):
        evaluate(pred, None, true, 2.0, box=(0, 0, 0, 10, 10))


@pytest.mark.parametrize("seed", range(8))
def test_curve_equals_maximum_matching_at_every_threshold(seed, monkeypatch):
    rng = np.random.default_rng(seed)
    n, m = rng.integers(1, 40), rng.integers(1, 30)
    pred = rng.uniform(0, 12, (n, 3))
    true = rng.uniform(0, 12, (m, 3))
    r = rng.uniform(1, 4)
    scores = np.round(rng.random(n), 1)
    t, p, rec = pr_curve(pred, scores, true, r)
    for ti, pi, ri in zip(t, p, rec):
        sel = scores >= ti
        k = max_matching(pred[sel], true, r)
        assert ri == pytest.approx(k / m) and pi == pytest.approx(k / sel.sum())
    # match_points: maximum size, minimum total distance; the sparse solver agrees.
    pi_, ti_ = match_points(pred, true, r)
    d = np.linalg.norm(pred[:, None] - true[None], axis=2)
    assert len(pi_) == max_matching(pred, true, r) and np.all(d[pi_, ti_] < r)
    assert len(set(pi_)) == len(pi_) and len(set(ti_)) == len(ti_)
    monkeypatch.setattr(ev, "_DENSE_MAX", 0)
    ps, ts = match_points(pred, true, r)
    assert len(ps) == len(pi_) and d[ps, ts].sum() == pytest.approx(d[pi_, ti_].sum())


def test_empty_inputs_and_to_dict():
    res = evaluate(np.zeros((0, 3)), np.zeros(0), [[1.0, 2, 3]], 2.0)
    assert (res.precision, res.recall, res.f1, res.ap, res.n_true) == (0.0, 0.0, 0.0, 0.0, 1)
    assert math.isnan(res.best_threshold)
    d = res.to_dict()
    assert d["best_threshold"] is None and d["n_true"] == 1 and d["threshold"] is None
    res = evaluate([[1.0, 2, 3]], [0.5], np.zeros((0, 3)), 2.0)
    assert (res.precision, res.recall, res.n_pred, res.n_matched) == (0.0, 0.0, 1, 0)
    with pytest.raises(CetpickError):
        evaluate([[1.0, 2, 3]], [0.5], [[1.0, 2, 3]], 0.0)
    with pytest.raises(CetpickError):
        evaluate([[1.0, 2, 3]], [0.5, 0.4], [[1.0, 2, 3]], 1.0)
