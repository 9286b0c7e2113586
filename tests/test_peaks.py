"""Peak picking: local maxima, sub-voxel refinement, suppression, margins and frames."""

import numpy as np
import pytest

from napari_cetpick import peaks
from napari_cetpick.errors import CetpickError
from napari_cetpick.peaks import candidates, pick_peaks, select, suppress


def gaussian_map(shape, centres, sigma=2.0, amps=None):
    zz, yy, xx = np.indices(shape, dtype=np.float64)
    hm = np.zeros(shape)
    amps = np.ones(len(centres)) if amps is None else amps
    for c, a in zip(centres, amps):
        hm += a * np.exp(-((zz - c[0]) ** 2 + (yy - c[1]) ** 2 + (xx - c[2]) ** 2) / (2 * sigma**2))
    return hm.astype(np.float32)


def brute_greedy(zyx, scores, dist):
    """The definition: best first, keep a point unless a kept one is closer than dist."""
    pts = np.asarray(zyx) / np.asarray(dist, float)
    keep = []
    for i in np.argsort(-np.asarray(scores), kind="stable"):
        if all(np.sum((pts[i] - pts[j]) ** 2) >= 1.0 for j in keep):
            keep.append(i)
    return np.array(keep, dtype=np.int64)


def test_subvoxel_refinement_of_two_blobs():
    true = np.array([[10.3, 12.6, 9.8], [20.7, 30.2, 25.45]])
    hm = gaussian_map((32, 40, 36), true, sigma=2.0, amps=[0.9, 0.7])
    zyx, scores = pick_peaks(hm, threshold=0.3, min_distance_vox=4)
    assert zyx.shape == (2, 3) and zyx.dtype == np.float64 and scores.dtype == np.float32
    assert scores[0] > scores[1]  # best first
    np.testing.assert_allclose(zyx, true, atol=0.1)
    # A log-parabola is exact on a Gaussian.
    zyx_g, _ = pick_peaks(hm, threshold=0.3, min_distance_vox=4, refine="gaussian")
    np.testing.assert_allclose(zyx_g, true, atol=1e-3)
    # Without refinement: integer voxels.
    zyx_i, _ = pick_peaks(hm, threshold=0.3, refine=False)
    np.testing.assert_array_equal(zyx_i, np.round(true))


def test_close_peaks_keep_only_the_higher():
    true = np.array([[16.0, 16.0, 12.0], [16.0, 16.0, 19.0]])  # 7 voxels apart
    hm = gaussian_map((32, 32, 32), true, sigma=1.0, amps=[0.6, 0.9])
    both, _ = pick_peaks(hm, threshold=0.3, min_distance_vox=5)
    assert len(both) == 2
    one, s = pick_peaks(hm, threshold=0.3, min_distance_vox=10)
    assert len(one) == 1
    np.testing.assert_allclose(one[0], true[1], atol=0.1)
    assert s[0] == pytest.approx(0.9, abs=1e-3)


def test_distance_is_strict_and_anisotropic():
    zyx = np.array([[0.0, 0, 0], [0, 0, 5.0], [3.0, 0, 0]])
    scores = np.array([0.9, 0.8, 0.7])
    # Exactly at the distance is not "closer than": both survive.
    np.testing.assert_array_equal(suppress(zyx[:2], scores[:2], 5.0), [0, 1])
    np.testing.assert_array_equal(suppress(zyx[:2], scores[:2], 5.01), [0])
    # Ellipsoid (dz, dy, dx) = (4, 2, 2): the z neighbour at 3 is inside, the x one at 5 is not.
    np.testing.assert_array_equal(suppress(zyx, scores, (4, 2, 2)), [0, 1])
    # (2, 6, 6): now x at 5 is inside, z at 3 is not.
    np.testing.assert_array_equal(suppress(zyx, scores, (2, 6, 6)), [0, 2])


def test_greedy_chain_matches_definition():
    # A chain 0-1-2 where 0 suppresses 1 and 2 survives because 1 is gone.
    zyx = np.array([[0.0, 0, 0], [0, 0, 3], [0, 0, 6]])
    np.testing.assert_array_equal(suppress(zyx, [0.9, 0.8, 0.7], 4.0), [0, 2])


@pytest.mark.parametrize("seed", range(6))
def test_suppress_equals_sequential_greedy(seed, monkeypatch):
    rng = np.random.default_rng(seed)
    n = 300
    zyx = rng.uniform(0, 20, (n, 3))
    if seed % 2:
        zyx = np.round(zyx)  # exact distance ties
    scores = np.round(rng.random(n), 1)  # score ties
    dist = rng.uniform(1, 4, 3) if seed % 3 else 2.5
    expected = brute_greedy(zyx, scores, dist)
    np.testing.assert_array_equal(suppress(zyx, scores, dist), expected)
    # Tiny blocks and round limits exercise the block and sequential fallback paths.
    monkeypatch.setattr(peaks, "_NMS_BLOCK_FIRST", 7)
    monkeypatch.setattr(peaks, "_NMS_BLOCK_MAX", 20)
    monkeypatch.setattr(peaks, "_NMS_ROUNDS", 1)
    np.testing.assert_array_equal(suppress(zyx, scores, dist), expected)


def test_select_threshold_topk_and_unsorted_input():
    zyx = np.array([[0.0, 0, 0], [0, 0, 1], [0, 0, 10], [0, 0, 20]])
    scores = np.array([0.4, 0.95, 0.7, 0.2])
    np.testing.assert_array_equal(select(zyx, scores, 0.3), [1, 2, 0])
    np.testing.assert_array_equal(select(zyx, scores, 0.3, min_distance_vox=2), [1, 2])
    np.testing.assert_array_equal(select(zyx, scores, 0.0, min_distance_vox=2, top_k=1), [1])
    np.testing.assert_array_equal(select(zyx, scores, 0.7), [1, 2])  # >= threshold
    assert select(zyx, scores, 0.99).shape == (0,)


def test_scale_translate_and_margin():
    hm = np.zeros((10, 20, 20), np.float32)
    hm[5, 6, 7] = 1.0
    hm[5, 1, 10] = 0.8  # heatmap y=1 -> tomogram y = 2.5
    zyx, s = pick_peaks(hm, threshold=0.5, scale=(1, 2, 2), translate=(0, 0.5, 0.5), refine=False)
    np.testing.assert_allclose(zyx, [[5, 12.5, 14.5], [5, 2.5, 20.5]])
    # A margin of 3 tomogram voxels drops the pick at y = 2.5.
    zyx, s = pick_peaks(hm, threshold=0.5, scale=(1, 2, 2), translate=(0, 0.5, 0.5), margin_vox=3)
    np.testing.assert_allclose(zyx, [[5, 12.5, 14.5]])
    # Margin per axis, against the tomogram shape: x = 14.5 is 24.5 from the border 39.
    zyx, _ = pick_peaks(hm, 0.5, scale=(1, 2, 2), translate=(0, 0.5, 0.5), margin_vox=(0, 0, 25),
                        shape_zyx=(10, 40, 40))
    assert len(zyx) == 0


def test_border_peak_plateau_and_empty():
    hm = np.zeros((8, 8, 8), np.float32)
    hm[0, 4, 4] = 0.9  # on the border: found, not refined along z
    hm[4, 2, 2] = 0.2
    hm[4, 4:7, 6] = 0.7  # a plateau of three equal maxima -> one pick at its centroid
    zyx, s = candidates(hm, floor=0.1)
    np.testing.assert_allclose(zyx, [[0, 4, 4], [4, 5, 6], [4, 2, 2]])
    np.testing.assert_allclose(s, [0.9, 0.7, 0.2])
    zyx, s = pick_peaks(np.zeros((5, 5, 5)), threshold=0.5)
    assert zyx.shape == (0, 3) and s.shape == (0,)


def test_pick_peaks_is_candidates_plus_select():
    rng = np.random.default_rng(3)
    hm = rng.random((20, 30, 30)).astype(np.float32)
    cz, cs = candidates(hm, floor=0.05, scale=(1, 2, 2))
    keep = select(cz, cs, 0.6, (2, 4, 4), top_k=50)
    zyx, s = pick_peaks(hm, 0.6, (2, 4, 4), top_k=50, scale=(1, 2, 2))
    np.testing.assert_array_equal(zyx, cz[keep])
    np.testing.assert_array_equal(s, cs[keep])
    assert len(zyx) == 50 and np.all(np.diff(s) <= 0)


def test_bad_arguments():
    with pytest.raises(CetpickError):
        suppress(np.zeros((2, 3)), [1, 1], (0, 2, 2))
    with pytest.raises(CetpickError):
        suppress(np.zeros((2, 3)), [1, 1], -1)
    with pytest.raises(CetpickError):
        candidates(np.zeros((4, 4)))
    with pytest.raises(CetpickError):
        select(np.zeros((2, 3)), [1.0], 0.5)


@pytest.mark.parametrize("centre", [(10.3, 12.45, 11.8), (9.6, 11.5, 12.25)])
def test_a_flat_topped_response_is_centred_on_its_middle(centre):
    """A saturated ball (a detector trained on ball targets) with a slight tilt across its top:
    the maximum sits at the top's edge, the centre of the response where the ball is."""
    from napari_cetpick.peaks import candidates, refine_centroid

    zz, yy, xx = np.indices((24, 24, 24), float)
    r = np.sqrt((zz - centre[0]) ** 2 + (yy - centre[1]) ** 2 + (xx - centre[2]) ** 2)
    hm = 1 / (1 + np.exp((r - 2.5) * 3.0))  # about 1 inside 2.5 voxels, 0 outside
    hm = hm * (1 + 1e-3 * (xx - centre[2]))  # a tilt of a thousandth per voxel
    zyx, s, idx = candidates(hm, floor=0.5, refine=True, return_index=True)
    assert len(zyx) == 1
    c = refine_centroid(hm, idx, 3.5)[0]
    assert np.all(np.abs(c - centre) < 0.05), c
    assert np.abs(zyx[0] - centre).max() > 2 * np.abs(c - centre).max()  # the parabola through the maximum is off
