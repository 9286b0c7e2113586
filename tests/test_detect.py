import warnings

import numpy as np
import pytest

from napari_cetpick.checkpoint import Checkpoint
from napari_cetpick.config import DetectConfig, TrainConfig
from napari_cetpick.detect import detect
from napari_cetpick.errors import CetpickError
from napari_cetpick.model import build_network
from napari_cetpick.utils import run_generator


def _ckpt(voxel_size_a=10.0, bin_xy=1, seed=0):
    import torch

    torch.manual_seed(seed)
    net = build_network("unet_small")
    return Checkpoint(net.state_dict(), TrainConfig(bbox=12), 12.0, voxel_size_a, bin_xy, 0.3)


@pytest.fixture(scope="module")
def volume():
    return np.random.default_rng(0).normal(size=(20, 150, 170)).astype(np.float32)


def test_progress_and_shapes(volume):
    gen = detect(_ckpt(), volume, DetectConfig(tile_xy=64, tile_z=8), voxel_size_a=10.0, device="cpu")
    progress = []
    while True:
        try:
            progress.append(next(gen))
        except StopIteration as stop:
            res = stop.value
            break
    assert progress[-1].tile == progress[-1].n_tiles == len(progress) > 1
    assert res.heatmap.shape == (20, 75, 85)
    assert np.allclose(res.scale, [1, 2, 2]) and np.allclose(res.translate, [0, 0.5, 0.5])
    assert res.heatmap.min() >= 0 and res.heatmap.max() <= 1


def test_tiling_matches_whole_volume_in_z(volume):
    # z tiles with the halo give the same heatmap as one z tile (the head sees ±3 slices)
    ck = _ckpt()
    a = run_generator(detect(ck, volume, DetectConfig(tile_xy=512, tile_z=5), device="cpu"))
    b = run_generator(detect(ck, volume, DetectConfig(tile_xy=512, tile_z=64), device="cpu"))
    assert np.allclose(a.heatmap, b.heatmap, atol=1e-5)
    # xy tiles with a 32-voxel halo: same in the bulk up to the receptive field's tail
    c = run_generator(detect(ck, volume, DetectConfig(tile_xy=64, tile_z=64), device="cpu"))
    assert np.abs(c.heatmap - b.heatmap).mean() < 0.01


def test_reselect_is_instant_and_monotone(volume):
    res = run_generator(detect(_ckpt(), volume, DetectConfig(threshold=0.0), device="cpu"))
    n0 = len(res.zyx)
    z, s = res.reselect(threshold=float(np.median(res.cand_scores)))
    assert 0 < len(z) < n0 and np.all(s >= res.threshold)
    z2, _ = res.reselect(min_distance_vox=20.0)
    assert len(z2) <= len(z)
    d = np.linalg.norm(z2[:, None] - z2[None], axis=-1) + np.eye(len(z2)) * 1e9
    assert d.min() >= 20.0
    z3, _ = res.reselect(K=3)
    assert len(z3) <= 3


def test_binned_model_maps_back_to_tomogram_voxels(volume):
    res = run_generator(detect(_ckpt(bin_xy=2), volume, DetectConfig(threshold=0.0), device="cpu"))
    assert np.allclose(res.scale, [2, 4, 4]) and np.allclose(res.translate, [0.5, 1.5, 1.5])
    assert np.all(res.zyx >= -0.5) and np.all(res.zyx <= np.array(volume.shape) - 0.5)


def test_voxel_size_mismatch_rescales_or_refuses(volume):
    ck = _ckpt(voxel_size_a=10.0, bin_xy=2)
    with pytest.warns(UserWarning, match="binning by 1"):
        res = run_generator(detect(ck, volume, voxel_size_a=20.0, device="cpu"))
    assert np.allclose(res.scale, [1, 2, 2])
    with pytest.raises(CetpickError, match="not a whole binning"):
        run_generator(detect(ck, volume, voxel_size_a=13.7, device="cpu"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        run_generator(detect(ck, volume, voxel_size_a=10.0, device="cpu"))


def test_bad_volumes():
    with pytest.raises(CetpickError, match="NaN"):
        v = np.zeros((8, 64, 64), np.float32)
        v[4, 32, 32] = np.nan
        run_generator(detect(_ckpt(), v, device="cpu"))
    with pytest.raises(CetpickError, match="too small"):
        run_generator(detect(_ckpt(), np.random.rand(4, 10, 10).astype(np.float32), device="cpu"))
    with pytest.raises(CetpickError, match="3D"):
        run_generator(detect(_ckpt(), np.random.rand(10, 10).astype(np.float32), device="cpu"))


def test_tiles_release_the_memory_map(tmp_path):
    import mmap

    from napari_cetpick.detect import _file_map, _release
    from napari_cetpick.io import FileLayout, open_tomogram, write_tomogram

    vol = np.random.default_rng(0).normal(size=(8, 64, 64)).astype(np.float32)
    path = write_tomogram(tmp_path / "t.mrc", vol, voxel_size_a=10.0, layout=FileLayout(1, (64, 8, 64)))
    tomo = open_tomogram(path)
    fm = _file_map(tomo.data)  # found through the transposed view
    assert isinstance(fm, mmap.mmap)
    _release(fm)
    assert np.array_equal(np.asarray(tomo.data), vol)  # pages come back from the file
    assert _file_map(vol) is None
    res = run_generator(detect(_ckpt(), tomo.data, DetectConfig(threshold=0.0), voxel_size_a=10.0, device="cpu"))
    assert res.heatmap.shape == (8, 32, 32)


def test_chunked_candidates_equal_whole_heatmap():
    from scipy import ndimage

    from napari_cetpick.detect import chunked_candidates
    from napari_cetpick.peaks import candidates

    rng = np.random.default_rng(1)
    heat = ndimage.gaussian_filter(rng.random((23, 30, 34)), 1.5).astype(np.float32)
    heat = (heat - heat.min()) / (heat.max() - heat.min())
    kw = dict(scale=(1.0, 2.0, 2.0), translate=(0.0, 0.5, 0.5))
    whole_z, whole_s = candidates(heat, floor=0.05, refine=True, **kw)
    z, s = chunked_candidates(heat, 0.05, (0, 0, 0), kw["scale"], kw["translate"], True, (23, 60, 68), chunk=5)
    order_w = np.lexsort(whole_z.T)
    order_c = np.lexsort(z.T)
    assert np.allclose(whole_z[order_w], z[order_c]) and np.allclose(whole_s[order_w], s[order_c])
    # a margin drops peaks near the tomogram's borders
    zm, _ = chunked_candidates(heat, 0.05, (3, 6, 6), kw["scale"], kw["translate"], True, (23, 60, 68), chunk=5)
    assert len(zm) < len(z) and np.all(zm[:, 0] >= 3) and np.all(zm[:, 1:] >= 6)
