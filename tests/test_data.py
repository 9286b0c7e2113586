import numpy as np
import pytest
import torch

from napari_cetpick import data as D


def test_geometry_round_trip_and_centres():
    g = D.make_geometry(2, compress=True)
    assert g.bin_zyx == (4, 2, 2)
    pts = np.array([[10.3, 20.7, 5.0], [0.0, 0.0, 0.0]])
    assert np.allclose(g.grid_to_tomo(g.tomo_to_grid(pts)), pts)
    # grid cell 0 sits at the centre of the block it covers: z slices 0..3 (compress and bin
    # 2, stride 1), y/x voxels 0..3 (bin 2, stride 2)
    assert np.allclose(g.grid_translate, [1.5, 1.5, 1.5])
    assert np.allclose(g.grid_scale, [4, 4, 4])


def test_bin_block_is_mean():
    a = np.arange(2 * 4 * 6, dtype=np.float32).reshape(2, 4, 6)
    b = D.bin_block(a, (2, 2, 2))
    assert b.shape == (1, 2, 3)
    assert b[0, 0, 0] == pytest.approx(np.mean(a[:2, :2, :2]))


def test_auto_bin():
    assert D.auto_bin(25, 12) == 2
    assert D.auto_bin(12, 12) == 1
    assert D.auto_bin(5, 12) == 1


def test_preprocess_range_and_memmap(tmp_path):
    rng = np.random.default_rng(0)
    v = rng.normal(5, 2, (20, 40, 40)).astype(np.float32)
    mm = np.lib.format.open_memmap(tmp_path / "v.npy", mode="w+", dtype=np.float32, shape=v.shape)
    mm[:] = v
    out = D.preprocess(mm, D.make_geometry(1, False), gauss=1.0)
    assert out.dtype == np.float32 and out.shape == v.shape
    assert 0 <= out.min() and out.max() <= 1
    assert abs(float(out.mean()) - 0.5) < 0.05


def test_targets_hard_soft_unlabelled():
    spec = D.blob_spec(12.0)
    t = D.draw_targets((10, 16, 16), np.array([[5.0, 8.0, 8.0]]), spec)
    assert t[5, 8, 8] == 1.0
    assert t[0, 0, 0] == -1.0
    soft = (t > 0) & (t < 1)
    assert soft.any()
    # the blob is isotropic in physical units: one grid cell in x is 2 working voxels, in z 1

    def expected(d2):
        v = float(np.exp(-d2 / (2 * spec.sigma_work**2)))
        return -1.0 if d2 > spec.radius_work**2 or v < spec.floor else (1.0 if v > 0.9 else v)

    assert t[5, 8, 9] == pytest.approx(expected(2.0**2))
    assert t[6, 8, 8] == pytest.approx(expected(1.0**2))
    assert t[7, 8, 8] == pytest.approx(expected(2.0**2)) == pytest.approx(t[5, 8, 9])


def test_cetpick_blob_formula():
    spec = D.blob_spec(26.0, "cetpick")
    # r = floor(0.273 * floor(26 / 2)) = 3 grid cells, sigma = 7/6 cells, isotropic in cells
    assert spec.in_cells and spec.radius_work == 3
    assert spec.sigma_work == pytest.approx(7 / 6)
    t = D.draw_targets((12, 16, 16), np.array([[6.0, 8.0, 8.0]]), spec)
    # as many cells out along z as along y and x (a cell is 1 slice in z, 2 voxels in y/x)
    assert t[6 + 3, 8, 8] > 0 and t[6, 8 + 3, 8] > 0 and t[6, 8, 8 + 3] > 0
    assert t[6 + 3, 8, 8] == pytest.approx(t[6, 8 + 3, 8]) and t[6 + 4, 8, 8] == -1


def test_ball_targets_are_hard_within_a_sixth_of_the_diameter():
    spec = D.blob_spec(24.0, "ball")
    assert spec.hard_ball and spec.radius_work == pytest.approx(4.0)
    t = D.draw_targets((12, 16, 16), np.array([[6.0, 8.0, 8.0]]), spec, (2, 2, 2))
    # stride 2 on every axis: cells 2 voxels apart; within 4 voxels = 2 cells
    assert set(np.unique(t)) == {-1.0, 1.0}
    assert t[6, 8, 10] == 1 and t[6, 8, 11] == -1 and t[8, 8, 8] == 1 and t[9, 8, 8] == -1


def test_transforms_invert_exactly():
    rng = np.random.default_rng(0)
    a = rng.random((4, 8, 8)).astype(np.float32)
    for _ in range(20):
        t = D.random_transform(rng, "full")
        back = t.invert_torch(torch.from_numpy(np.ascontiguousarray(t.apply(a))))
        assert np.array_equal(back.numpy(), a)


def test_crop_origins_even_and_inside():
    rng = np.random.default_rng(0)
    o = D.sample_crop_origins(rng, (20, 100, 90), np.array([6, 32, 32]), np.array([[10, 50, 40.0]]), 50, 0.5, 0.2)
    assert np.all(o >= 0) and np.all(o + [6, 32, 32] <= [20, 100, 90])
    assert np.all(o[:, 1:] % 2 == 0)


def test_every_label_has_a_hard_positive():
    spec = D.blob_spec(10.0)
    # labels between grid cells (odd working coordinates): the blob alone has no cell > 0.9
    labels = np.array([[3.4, 5.5, 7.5], [6.6, 2.5, 3.5]])
    t = D.draw_targets((10, 12, 12), labels, spec)
    for c in np.floor(labels + 0.5).astype(int):
        assert t[tuple(c)] == 1.0
    assert (t == 1.0).sum() == 2


def test_grid_cells_sit_at_the_centre_of_their_block_and_flips_map_cells_to_cells():
    # cell j covers working voxels 2j, 2j+1: a flip of a 2n-voxel crop maps it to cell n-1-j
    g = D.work_to_grid(np.array([[0.0, 0.5, 2.5], [3.0, 62.5, 63.0]]))
    assert np.allclose(g, [[0.0, 0.0, 1.0], [3.0, 31.0, 31.25]])
    w = np.array([[4.0, 10.3, 17.8]])
    flipped_then_grid = D.work_to_grid(np.array([[4.0, 63 - 10.3, 63 - 17.8]]))
    assert np.allclose(flipped_then_grid[0, 1:], 31 - D.work_to_grid(w)[0, 1:])
    assert np.allclose(D.grid_to_work(D.work_to_grid(w)), w)
    geom = D.make_geometry(1, False, (2, 2, 2))
    assert np.allclose(geom.grid_translate, 0.5) and np.allclose(geom.grid_scale, 2.0)


def test_negative_clicks_and_ignored_cells_in_targets():
    spec = D.blob_spec(12.0)
    pos = np.array([[5.0, 4.0, 4.0]])
    neg = np.array([[5.0, 11.0, 11.0], [5.0, 4.0, 4.5]])  # the second sits on the positive
    t = D.draw_targets((10, 16, 16), pos, spec, negatives_grid=neg)
    assert t[5, 11, 11] == D.NEGATIVE
    # a negative click never turns a hard positive into a negative
    assert t[5, 4, 4] == D.HARD
    r = spec.neg_radius_work
    assert t[5, 11, 11 + int(np.ceil(r / 2)) + 1] == D.UNLABELLED  # beyond the region (cells are 2 voxels)
    keep = np.ones((10, 32, 32), bool)
    keep[:, :, 16:] = False
    on_grid = D.keep_on_grid(keep)
    assert on_grid.shape == (10, 16, 16) and on_grid[:, :, :8].all() and not on_grid[:, :, 8:].any()
