"""The difference-of-Gaussians picker finds planted blobs."""
import math

import numpy as np
import pytest

from napari_cetpick.baselines import dog_picker, dog_score_map, dog_sigmas
from napari_cetpick.errors import CetpickError
from napari_cetpick.evaluate import evaluate


def planted(shape=(48, 48, 48), diameter=8.0, noise=0.5, sign=-1.0, seed=0):
    """Solid balls (dark when sign < 0) on a jittered grid, plus Gaussian noise."""
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.arange(12.0, s - 11, 12) for s in shape], indexing="ij"), -1)
    true = grid.reshape(-1, 3) + rng.uniform(-1.5, 1.5, (grid.size // 3, 3))
    zz, yy, xx = np.indices(shape)
    vol = np.zeros(shape, np.float32)
    for c in true:
        vol[(zz - c[0]) ** 2 + (yy - c[1]) ** 2 + (xx - c[2]) ** 2 < (diameter / 2) ** 2] += sign
    vol += rng.normal(0, noise, shape).astype(np.float32)
    return vol, true


def test_sigmas_centre_on_the_ball_scale():
    s1, s2 = dog_sigmas(12.0)
    assert s2 / s1 == pytest.approx(1.6)
    assert math.sqrt(s1 * s2) == pytest.approx(12.0 / (2 * math.sqrt(3)))


def test_dog_finds_dark_blobs_in_noise():
    vol, true = planted()
    zyx, scores = dog_picker(vol, diameter_vox=8.0)
    assert np.all((scores > 0) & (scores < 1)) and np.all(np.diff(scores) <= 0)
    res = evaluate(zyx, scores, true, radius_vox=2.0)
    assert res.recall == 1.0
    assert res.best_f1 == 1.0 and res.ap == pytest.approx(1.0)
    top, _ = dog_picker(vol, 8.0, top_k=len(true))
    assert evaluate(top, None, true, 2.0).precision == 1.0


def test_bright_blobs_and_binning_keep_the_tomogram_frame():
    vol, true = planted(diameter=10.0, noise=0.3, sign=1.0, seed=1)
    assert evaluate(*dog_picker(vol, 10.0), true, 2.0).best_f1 < 0.5  # wrong polarity
    zyx, s = dog_picker(vol, 10.0, dark_particles=False, top_k=len(true))
    assert evaluate(zyx, s, true, 1.5).recall == 1.0
    zyx, s = dog_picker(vol, 10.0, dark_particles=False, top_k=len(true), bin_factor=2)
    assert evaluate(zyx, s, true, 2.0).recall == 1.0
    score, scale, translate = dog_score_map(vol, 10.0, dark_particles=False, bin_factor=2)
    assert score.shape == (24, 24, 24) and score.dtype == np.float32
    np.testing.assert_allclose(scale, 2.0)
    np.testing.assert_allclose(translate, 0.5)


def test_memmap_input_and_margin(tmp_path):
    vol, true = planted(seed=2)
    mm = np.memmap(tmp_path / "v.raw", dtype=np.float32, mode="w+", shape=vol.shape)
    mm[:] = vol
    mm.flush()
    ro = np.memmap(tmp_path / "v.raw", dtype=np.float32, mode="r", shape=vol.shape)
    zyx, _ = dog_picker(ro, 8.0, margin_vox=14)
    assert len(zyx) > 0
    assert np.all((zyx >= 14) & (zyx <= np.array(vol.shape) - 1 - 14))
    np.testing.assert_array_equal(np.asarray(ro), vol)  # input untouched


def test_bad_diameter():
    with pytest.raises(CetpickError):
        dog_picker(np.zeros((8, 8, 8)), 0.0)
    with pytest.raises(CetpickError):
        dog_picker(np.zeros((8, 8)), 4.0)


def test_scale_selective_log_prefers_the_particle_size():
    """Balls of 8 and of 16 voxels: DoG tuned to 8 also responds at the big balls' centres,
    the scale-selective LoG gives them 0 and keeps the small ones."""
    from napari_cetpick.baselines import log_picker, log_score_map

    rng = np.random.default_rng(3)
    shape = (64, 96, 96)
    zz, yy, xx = np.indices(shape)
    vol = np.zeros(shape, np.float32)
    small, big = [], []
    centres = np.stack(np.meshgrid(*[np.arange(16.0, s - 15, 24) for s in shape], indexing="ij"), -1).reshape(-1, 3)
    for i, c in enumerate(centres + rng.uniform(-1, 1, centres.shape)):
        d = 8.0 if i % 2 else 16.0
        (small if d == 8.0 else big).append(c)
        vol[(zz - c[0]) ** 2 + (yy - c[1]) ** 2 + (xx - c[2]) ** 2 < (d / 2) ** 2] -= 1.0
    vol += rng.normal(0, 0.3, shape).astype(np.float32)
    small, big = np.round(small).astype(int), np.round(big).astype(int)
    log, scale, translate = log_score_map(vol, 8.0, bin_factor=1)
    dog, _, _ = dog_score_map(vol, 8.0, bin_factor=1)
    assert np.all(log[tuple(big.T)] == 0) and np.all(dog[tuple(big.T)] > 0.3)
    assert np.all(log[tuple(small.T)] > 0.8)
    np.testing.assert_allclose(scale, 1.0)
    zyx, s = log_picker(vol, 8.0, top_k=len(small))
    assert evaluate(zyx, s, small.astype(float), 2.0).recall == 1.0


def test_log_scale_space_sizes_hold_on_a_smooth_change_of_density():
    """Explore's blob sizes (:func:`log_scale_space` with ``background_vox``): at the large scales
    the noise answers so little that a slow change of density across the tomogram (a slope, a
    broad bright patch, a bowl along z) outweighed the particles in each scale's noise units
    and shrank a 16-voxel ball's size by two scale steps; with the local background taken off
    first it stays within one step of the flat tomogram's."""
    from scipy import ndimage

    from napari_cetpick.baselines import log_scale_space

    rng = np.random.default_rng(0)
    shape = (96, 160, 160)
    zz, yy, xx = np.indices(shape, dtype=np.float32)
    balls = [(48, 50, 50), (48, 50, 110), (48, 110, 50), (48, 110, 110)]
    v = np.zeros(shape, np.float32)
    for c in balls:
        v -= (np.sqrt((zz - c[0]) ** 2 + (yy - c[1]) ** 2 + (xx - c[2]) ** 2) < 8).astype(np.float32)
    v = ndimage.gaussian_filter(v, 0.8) + rng.normal(0, 0.35, shape).astype(np.float32)
    change = (np.exp(-((yy - 70) ** 2 + (xx - 90) ** 2) / (2 * 40.0 ** 2)) + ((zz - 48) / 48) ** 2 + (xx - 80) / 80)
    step = 2 ** (1 / 3)

    def sizes(vol, background_vox):
        _, size, scale, translate = log_scale_space(vol, (6.0, 20.0), background_vox=background_vox)
        return np.array([size[tuple(np.rint((np.array(c) - translate) / scale).astype(int))] for c in balls])

    flat = sizes(v, 20.0)
    np.testing.assert_array_equal(flat, sizes(v, None))  # a flat tomogram: the same sizes either way
    changed = v + np.float32(1.5 * v.std()) * change.astype(np.float32)
    assert np.all(sizes(changed, 20.0) >= flat / step ** 1.01)
