import warnings
from dataclasses import replace

import numpy as np
import pytest

from napari_cetpick.checkpoint import Checkpoint
from napari_cetpick.config import DetectConfig, TrainConfig
from napari_cetpick.detect import detect
from napari_cetpick.errors import CetpickError
from napari_cetpick.model import build_network
from napari_cetpick.utils import run_generator


def _ckpt(voxel_size_a=10.0, bin_xy=1, seed=0, arch="unet_small"):
    import torch

    torch.manual_seed(seed)
    net = build_network(arch)
    return Checkpoint(net.state_dict(), TrainConfig(bbox=12, arch=arch), 12.0, voxel_size_a, bin_xy, 0.3)


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


@pytest.mark.parametrize("arch, scale, translate", [("unet_small", [2, 4, 4], [0.5, 1.5, 1.5]),
                                                     ("unet3d_small", [4, 4, 4], [1.5, 1.5, 1.5])])
def test_binned_model_maps_back_to_tomogram_voxels(volume, arch, scale, translate):
    # output cell j covers working voxels s*j .. s*j+s-1 (bin 2): its centre in the tomogram
    res = run_generator(detect(_ckpt(bin_xy=2, arch=arch), volume, DetectConfig(threshold=0.0), device="cpu"))
    assert np.allclose(res.scale, scale) and np.allclose(res.translate, translate)
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


@pytest.mark.parametrize("mode", ["r", "c", "r+"])
def test_release_only_drops_read_only_maps(tmp_path, mode):
    # MADV_DONTNEED on a copy-on-write map reverts the pages changed in memory to the file:
    # only read-only maps may be released
    from napari_cetpick.detect import _file_map, _release

    path = tmp_path / "v.raw"
    np.arange(8 * 4096, dtype=np.float32).tofile(path)
    arr = np.memmap(path, dtype=np.float32, mode=mode)
    if mode != "r":
        arr[5] = -1.0
    released = _release(_file_map(arr))
    assert released == (mode == "r")
    assert arr[5] == (5.0 if mode == "r" else -1.0)


def test_chunk_border_peak_is_kept_exactly_once():
    # a saturated plateau over slices 6..8 crosses the border of chunks [0, 8) and [8, 16): the
    # upper chunk sees slices 7..8 of it, whose centroid 7.5 rounds (half to even) to 8; the
    # owner must follow the plateau's voxel, not its rounded refined position
    from napari_cetpick.detect import chunked_candidates
    from napari_cetpick.peaks import candidates

    heat = np.zeros((16, 20, 20), np.float32)
    heat[6:9, 10, 10] = 1.0
    heat[3, 4, 4] = 0.6  # an ordinary peak inside the first chunk
    heat[12, 15, 5] = 0.7  # and one inside the second
    kw = dict(scale=(1.0, 2.0, 2.0), translate=(0.0, 0.0, 0.0))
    whole_z, _ = candidates(heat, floor=0.05, refine=True, **kw)
    z, s = chunked_candidates(heat, 0.05, (0, 0, 0), kw["scale"], kw["translate"], True, (16, 40, 40), chunk=8)
    assert len(whole_z) == 3
    assert len(z) == 3, z
    assert np.sum(s == 1.0) == 1
    # a single-voxel peak on the last slice of a chunk, refined towards the next one
    heat = np.zeros((16, 20, 20), np.float32)
    heat[6:10, 10, 10] = [0.2, 0.9, 0.899, 0.1]  # maximum at slice 7, refined to 7.4999
    z, _ = chunked_candidates(heat, 0.05, (0, 0, 0), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), True, (16, 20, 20), chunk=8)
    assert len(z) == 1 and 7.0 < z[0, 0] < 7.5


@pytest.mark.parametrize("gauss, tile_xy, arch", [(0.0, 100, "unet_small"), (1.0, 64, "unet_small"),
                                                  (1.0, 100, "unet_small"), (0.0, 64, "unet3d_small"),
                                                  (1.0, 100, "unet3d_small")])
def test_tiles_equal_one_untiled_pass(gauss, tile_xy, arch):
    # tile starts and halos on the network's max-pool grid: no seams with a Gaussian halo or
    # a tile size that is not a multiple of the network's
    import torch

    torch.manual_seed(0)
    net = build_network(arch)
    ck = Checkpoint(net.state_dict(), TrainConfig(bbox=12, gauss=gauss, arch=arch), 12.0, 10.0, 1, 0.3)
    vol = np.random.default_rng(0).normal(size=(10, 150, 170)).astype(np.float32)
    exact = {"precision": "float32"}  # reduced precision rounds differently per block size (below)
    whole = run_generator(detect(ck, vol, DetectConfig(tile_xy=1024, tile_z=64, **exact), voxel_size_a=10.0,
                                 device="cpu"))
    tiled = run_generator(detect(ck, vol, DetectConfig(tile_xy=tile_xy, tile_z=4, **exact), voxel_size_a=10.0,
                                 device="cpu"))
    assert np.allclose(tiled.heatmap, whole.heatmap, atol=1e-6, rtol=0)


def test_bfloat16_detection_gives_the_float32_picks(volume):
    """The network's pass in bfloat16 (the default on CPUs that compute it natively): the
    scores come from float32 heads, so they stay continuous (no ties from an 8-bit mantissa),
    move by little and the picks stay where they were."""
    import torch

    from napari_cetpick.device import inference_dtype

    assert inference_dtype("cpu", "float32") == torch.float32
    assert inference_dtype("cpu", "bfloat16") == torch.bfloat16
    native = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    assert inference_dtype("cpu", "auto") == (torch.bfloat16 if native else torch.float32)
    with pytest.raises(CetpickError, match="precision must be one of auto, float32, bfloat16"):
        inference_dtype("cpu", "half")
    from scipy.stats import spearmanr

    for arch in ("unet3d_small", "unet_small"):
        ck = _ckpt(arch=arch)
        vol = volume[:16, :96, :96]
        full, bf = (run_generator(detect(ck, vol, DetectConfig(precision=p, threshold=0.0), voxel_size_a=10.0,
                                         device="cpu")) for p in ("float32", "bfloat16"))
        assert np.abs(bf.heatmap - full.heatmap).max() < 0.05
        # continuous scores: about as many distinct values as the float32 pass has
        assert len(np.unique(bf.heatmap)) > 0.9 * len(np.unique(full.heatmap))
        assert spearmanr(bf.heatmap.ravel(), full.heatmap.ravel())[0] > 0.99
        seen = []
        again = run_generator(detect(ck, vol, DetectConfig(precision="bfloat16", threshold=0.0), voxel_size_a=10.0,
                                     device="cpu"), lambda p: seen.append(p.device))
        assert np.array_equal(again.heatmap, bf.heatmap)  # deterministic, as float32 is
        assert seen and seen[-1].endswith("· bfloat16")  # the progress (and a batch's JSON) says so


def test_unknown_voxel_size_warns(volume):
    with pytest.warns(UserWarning, match="voxel size is unknown: assuming the model's 10 Å"):
        run_generator(detect(_ckpt(voxel_size_a=10.0), volume[:8, :64, :64], voxel_size_a=None, device="cpu"))
    with pytest.warns(UserWarning, match="model's voxel size is unknown"):
        run_generator(detect(_ckpt(voxel_size_a=None), volume[:8, :64, :64], voxel_size_a=10.0, device="cpu"))


def test_the_model_s_centre_offset_is_subtracted_from_one_view_only(volume):
    ck = _ckpt(bin_xy=2)
    one = DetectConfig(threshold=0.0, views=1)
    plain = run_generator(detect(ck, volume, one, voxel_size_a=10.0, device="cpu"))
    ck.info["centre_offset_work"] = [0.25, -0.5, 0.125]
    shifted = run_generator(detect(ck, volume, one, voxel_size_a=10.0, device="cpu"))
    assert len(plain.cand_zyx) == len(shifted.cand_zyx) > 10
    # working voxels times the binning: tomogram voxels
    assert np.allclose(plain.cand_zyx - shifted.cand_zyx, [0.5, -1.0, 0.25])
    for views in (2, 4):  # mirror pairs cancel it by themselves
        many = [run_generator(detect(c, volume, DetectConfig(threshold=0.0, views=views), voxel_size_a=10.0,
                                     device="cpu")) for c in (_ckpt(bin_xy=2), ck)]
        assert np.allclose(many[0].cand_zyx, many[1].cand_zyx), views


class _Probe:
    """A stand-in network whose scores are its input (stride 1): each view's mapping back onto
    the block's cells can be checked exactly."""

    def __init__(self, torch):
        self.torch = torch

    def __call__(self, x, with_proj=False):
        return self.torch.logit(x.clamp(1e-4, 1 - 1e-4)), None


@pytest.mark.parametrize("views", [1, 2, 4])
def test_every_view_maps_back_onto_the_block_s_own_cells(views):
    import torch

    from napari_cetpick.detect import VIEWS, _view_scores

    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.uniform(0.05, 0.95, (1, 1, 4, 6, 10)).astype(np.float32))  # y and x differ
    for mirrored, turns in VIEWS[views]:
        # an identity network: every view, undone, gives back the block cell for cell
        assert np.allclose(_view_scores(_Probe(torch), x, mirrored, turns), x[0].numpy(), atol=1e-5), (mirrored, turns)
    # and the views are different: a mirror or a turn really moves the block
    moved = [torch.rot90(torch.flip(x, dims=(-3, -2, -1)) if m else x, t, dims=(-2, -1)) for m, t in VIEWS[views]]
    assert len({tuple(v.flatten().tolist()) for v in moved}) == views


def test_a_model_trained_without_quarter_turns_gets_its_mirror_pair(volume):
    import torch

    torch.manual_seed(0)
    net = build_network("unet_small")
    ck = Checkpoint(net.state_dict(), TrainConfig(bbox=12, arch="unet_small", augment="flip"), 12.0, 10.0, 2, 0.3)
    with pytest.warns(UserWarning, match="without quarter turns in xy .* 2 views instead of 4"):
        four = run_generator(detect(ck, volume, DetectConfig(threshold=0.0, views=4), voxel_size_a=10.0, device="cpu"))
    two = run_generator(detect(ck, volume, DetectConfig(threshold=0.0, views=2), voxel_size_a=10.0, device="cpu"))
    assert len(two.cand_zyx) > 10
    assert np.array_equal(four.cand_zyx, two.cand_zyx) and np.array_equal(four.cand_scores, two.cand_scores)


def _mixture_candidates(n_bg=4000, n_particles=150, seed=0):
    rng = np.random.default_rng(seed)
    z = np.r_[rng.gumbel(-1.6, 0.45, n_bg), rng.normal(3.0, 1.0, n_particles)]
    s = (1 / (1 + np.exp(-z))).astype(np.float32)
    zyx = rng.uniform(0, 1000, (len(s), 3))  # far apart: suppression keeps them all
    keep = s >= 0.05
    return zyx[keep], s[keep]


def test_each_tomogram_gets_its_own_threshold_and_says_how():
    from napari_cetpick.detect import choose_threshold

    ck = _ckpt()  # its default threshold is 0.3
    zyx, s = _mixture_candidates()
    t, how = choose_threshold(ck, zyx, s, 1.0, DetectConfig())
    assert how == "this tomogram's scores"  # the particles' low edge is seen: no fit
    assert 0.5 < t < 0.95  # between the background's mode (logit -1.6) and the particles' (3)
    assert choose_threshold(ck, zyx, s, 1.0, DetectConfig(threshold_from="model")) == (0.3, "the model's default")
    assert choose_threshold(ck, zyx, s, 1.0, DetectConfig(threshold=0.7)) == (0.7, "given")
    # particles running into the background's flank: the fit, and the line says so
    rng = np.random.default_rng(1)
    z = np.concatenate([rng.gumbel(-2.4, 0.35, 60000), rng.normal(0.3, 1.0, 500)])
    s2 = 1 / (1 + np.exp(-z))
    keep = s2 >= 0.05
    pts = rng.uniform(0, 1000, (int(keep.sum()), 3))
    t2, how2 = choose_threshold(ck, pts, s2[keep], 0.0, DetectConfig())
    assert how2 == "this tomogram's scores (the particles overlap the background: its flank fitted)"
    assert 0.3 < t2 < 0.7
    # one population only: the model's default, and why
    bg = s < 0.3
    t, how = choose_threshold(ck, zyx[bg], s[bg], 1.0, DetectConfig())
    assert t == 0.3 and "no clear split" in how
    with pytest.raises(CetpickError, match="threshold_from"):
        choose_threshold(ck, zyx, s, 1.0, DetectConfig(threshold_from="labels"))


def test_a_split_that_keeps_a_handful_against_the_model_s_many_is_not_trusted():
    """A few top scores set apart by a gap (a wider network after a correction round: 4 picks
    where 564 particles were) look like a second population; where that split keeps fewer
    than a quarter of the picks the model's default keeps, the default decides, and says why.
    The same split against a default that keeps fewer picks stands."""
    from dataclasses import replace

    from napari_cetpick.counts import MIN_SPLIT_SHARE_OF_REFERENCE
    from napari_cetpick.detect import choose_threshold
    from napari_cetpick.peaks import select

    n = 10000
    q = (np.arange(n) + 0.5) / n
    z = np.concatenate([-2.6 + 0.5 * np.log(q / (1 - q)), np.linspace(2.4, 2.6, 7)])
    s = 1 / (1 + np.exp(-z))
    keep = s >= 0.05
    s = s[keep]
    zyx = np.random.default_rng(0).uniform(0, 1000, (len(s), 3))
    assert len(select(zyx, s, 0.0, 1.0)) == len(s)
    ck = _ckpt()  # default 0.3
    n_model = int((s >= 0.3).sum())
    t, how = choose_threshold(ck, zyx, s, 1.0, DetectConfig())
    assert t == 0.3 and how.startswith("the model's default: this tomogram's split kept too few picks")
    split_picks = int(how.split("(")[1].split(",")[0])
    assert split_picks < MIN_SPLIT_SHARE_OF_REFERENCE * n_model and f"against {n_model}" in how
    high = replace(ck, default_threshold=0.9)
    t2, how2 = choose_threshold(high, zyx, s, 1.0, DetectConfig())
    assert how2 == "this tomogram's scores" and 0.5 < t2 < 0.9 and (s >= t2).sum() == split_picks


def test_a_split_inside_the_background_s_body_is_not_trusted():
    """A broad shoulder of look-alikes on the background (a model of a class it barely tells
    from the noise, in a tomogram without the class: 943 picks at its split, 84 at its default)
    can pass for a second population, but the split then lies where the background is still
    dense: most picks above it are background. The model's default decides, and says why; a
    population that stands out of the same background keeps its split."""
    from napari_cetpick.counts import BACKGROUND_BODY, score_density, split_scores
    from napari_cetpick.detect import choose_threshold
    from napari_cetpick.utils import logit

    ck = _ckpt()  # default 0.3
    rng = np.random.default_rng(0)
    for n_shoulder, in_body in ((400, False), (1200, True)):
        z = np.concatenate([rng.normal(-2.6, 0.5, 3000), rng.uniform(-2.0, 1.0, n_shoulder)])
        s = 1 / (1 + np.exp(-z))
        s = s[s >= 0.05]
        zyx = rng.uniform(0, 5000, (len(s), 3))
        split = split_scores(s, floor=0.05)
        grid, dens = score_density(logit(s))
        density_at_split = np.interp(logit(np.array([split.threshold]))[0], grid, dens)
        assert (density_at_split >= BACKGROUND_BODY * dens.max()) == in_body
        t, how = choose_threshold(ck, zyx, s, 1.0, DetectConfig())
        if in_body:
            assert (t, how) == (0.3, "the model's default: this tomogram's split lies in the body of its background")
        else:
            assert how == "this tomogram's scores" and t == split.threshold


def test_the_default_s_many_are_counted_after_the_profile_check():
    """The guard above trusts the default's picks to be particles. Where the profile check
    finds most of them unlike the labels (look-alikes a low default lets through: the shell
    model of share 0.8 on a sparser tomogram, 138 split picks against 588 at the default
    before the check, 194 after), it counts what the check leaves above the default, and the
    split stands; where the check leaves the default's many, the default still decides."""
    from napari_cetpick.detect import choose_threshold

    n = 20000
    q = (np.arange(n) + 0.5) / n
    z = np.concatenate([-2.6 + 0.5 * np.log(q / (1 - q)), np.linspace(3.6, 4.4, 100)])
    s = (1 / (1 + np.exp(-z))).astype(np.float32)
    keep = s >= 0.05
    s = s[keep]
    zyx = np.random.default_rng(3).uniform(0, 5000, (len(s), 3))
    ck = _ckpt()  # default 0.3
    t, how = choose_threshold(ck, zyx, s, 1.0, DetectConfig())
    assert t == 0.3 and "split kept too few picks" in how and "after the profile check" not in how
    # the check lowers the background's upper flank (look-alikes) below the default
    look = (s >= 0.3) & (s < 0.95)
    checked = np.where(look, s * 0.2, s).astype(np.float32)
    t2, how2 = choose_threshold(ck, zyx, s, 1.0, DetectConfig(), checked=(zyx, checked))
    assert how2.startswith("this tomogram's scores") and t2 > 0.3
    assert abs(int((checked >= t2).sum()) - 100) <= 3  # the 100 the check left, shown
    # the check agrees with the network: the default still decides, and says the count was checked
    t3, how3 = choose_threshold(ck, zyx, s, 1.0, DetectConfig(), checked=(zyx, s))
    assert t3 == 0.3 and how3.endswith("at the default after the profile check)")


def test_the_split_s_handful_is_counted_after_the_profile_check_too():
    """Like the default's many, the split's picks are counted on what detection shows. Where
    the network ranks look-alikes first and the check takes most of them below the default
    (the 15 nm barrel at SNR 0.05 on a sparser tomogram, round 25: the network's split kept 127
    picks, 31 after the check, against 148 at the default after it), the split's count is the
    one shown, and the default decides; counted on the network's scores the split stood."""
    from napari_cetpick.counts import MIN_SPLIT_SHARE_OF_REFERENCE
    from napari_cetpick.detect import choose_threshold

    n = 20000
    q = (np.arange(n) + 0.5) / n
    z = np.concatenate([-2.6 + 0.5 * np.log(q / (1 - q)), np.linspace(3.6, 4.4, 100)])
    s = (1 / (1 + np.exp(-z))).astype(np.float32)
    s = s[s >= 0.05]
    zyx = np.random.default_rng(5).uniform(0, 5000, (len(s), 3))
    ck = _ckpt()  # default 0.3
    order = np.argsort(-s, kind="stable")
    top, rest = order[:100], order[100:]
    checked = s.copy()
    checked[top[10:]] *= 0.2  # 90 of the network's first 100 are unlike the labels
    above = rest[s[rest] >= 0.3]
    checked[above[290:]] = 0.29  # the check leaves 290 of the others above the default
    n_model = int((checked >= 0.3).sum())
    assert n_model == 300
    t, how = choose_threshold(ck, zyx, s, 1.0, DetectConfig(), checked=(zyx, checked))
    assert t == 0.3, how
    assert how.startswith("the model's default: this tomogram's split kept too few picks (")
    assert how.endswith(f", against {n_model} at the default after the profile check)")
    shown = int(how.split("(")[1].split(",")[0])
    assert 10 <= shown <= 12  # the ten look-alikes left, and at most a background pick or two beside them
    assert shown < MIN_SPLIT_SHARE_OF_REFERENCE * n_model < 100  # counted before the check, the split had stood
    # where the check leaves the split's picks, it stands against the same default
    kept_top = checked.copy()
    kept_top[top] = s[top]
    t2, how2 = choose_threshold(ck, zyx, s, 1.0, DetectConfig(), checked=(zyx, kept_top))
    assert how2.startswith("this tomogram's scores") and t2 > 0.7 and int((kept_top >= t2).sum()) >= 95


def test_the_split_is_placed_on_the_scores_shown_where_they_split_alike():
    """The network's split says where a tomogram's particles begin; where the scores shown
    (after the profile check) split too, keeping within SHOWN_SPLIT_WITHIN times the picks the
    network's split leaves shown, the threshold is theirs (round 25: a shell model's 224 picks
    for 261 → 271, a barrel model's 368 for 262 → 329). Where the check stretches the
    background so that the shown scores' split keeps many times as many, the network's stays;
    where the check changes nothing, nothing moves and the line says nothing more."""
    from scipy.special import erfinv

    from napari_cetpick.counts import SHOWN_SPLIT_WITHIN, split_scores
    from napari_cetpick.detect import choose_threshold

    n = 20000
    q = (np.arange(n) + 0.5) / n
    z_bg = -2.6 + 0.5 * np.log(q / (1 - q))
    z_part = 1.0 + 0.7 * np.sqrt(2) * erfinv(2 * (np.arange(300) + 0.5) / 300 - 1)
    z = np.concatenate([z_bg, z_part])
    is_part = np.r_[np.zeros(n, bool), np.ones(300, bool)]
    s = 1 / (1 + np.exp(-z))
    keep = s >= 0.05
    s, z, is_part = s[keep], z[keep], is_part[keep]
    zyx = np.random.default_rng(0).uniform(0, 5000, (len(s), 3))
    ck = _ckpt()  # default 0.3
    t_net, how_net = choose_threshold(ck, zyx, s, 1.0, DetectConfig())
    assert how_net.startswith("this tomogram's scores") and 0.5 < t_net < 0.7

    def shown(zc):
        return (1 / (1 + np.exp(-zc))).astype(np.float32)

    same = shown(z)
    t, how = choose_threshold(ck, zyx, s, 1.0, DetectConfig(), checked=(zyx, same))
    assert t == pytest.approx(t_net) and how == how_net
    # the check raises the particles and lowers the background's upper flank: their own split
    raised = shown(np.where(is_part, z + 1.0, np.where(z > -1.5, z - 1.0, z)))
    t2, how2 = choose_threshold(ck, zyx, s, 1.0, DetectConfig(), checked=(zyx, raised))
    split = split_scores(raised, floor=DetectConfig().candidate_floor)
    assert how2.startswith("this tomogram's scores") and how2.endswith(", placed after the profile check")
    assert ("flank fitted" in how2) == (split.kind == "tail")  # the kind of the split that placed it
    assert t2 == pytest.approx(split.threshold) and t2 < t_net
    n_net, n2 = int((raised >= t_net).sum()), int((raised >= t2).sum())
    assert n_net < n2 <= SHOWN_SPLIT_WITHIN * n_net
    assert int((raised[is_part] >= t2).sum()) >= int((raised[is_part] >= t_net).sum())
    # the check lifts the background's flank: the shown scores' split keeps far more; not taken
    stretched = shown(np.where(is_part, z, np.where(z > -2.0, z + 1.6, z)))
    wide = split_scores(stretched, floor=DetectConfig().candidate_floor)
    assert wide.n_above > SHOWN_SPLIT_WITHIN * int((stretched >= t_net).sum())
    t3, how3 = choose_threshold(ck, zyx, s, 1.0, DetectConfig(), checked=(zyx, stretched))
    assert t3 == pytest.approx(t_net) and how3 == how_net


def test_a_fitted_flank_is_placed_on_the_scores_shown_only_to_keep_more():
    """Where the particles overlap the background, the network's split fits the background's
    flank (kind "tail"): its threshold is the one of best expected F1 against it. Where the
    check then raises the particles above the overlap, the shown scores' edge lies among them
    and keeps fewer (round 26: hollow shells at SNR 0.03, 202 → 167 picks for 261, F1 lower):
    the fitted flank stays. Where the check lowers the background's flank, the shown split
    keeps more of the particles, and places the threshold as before."""
    from napari_cetpick.counts import split_scores
    from napari_cetpick.detect import choose_threshold

    rng = np.random.default_rng(0)
    zb = rng.gumbel(-2.4, 0.35, 60000)  # the shells' background (tests/test_counts.py)
    zp = rng.normal(0.3, 1.0, 500)
    z = np.concatenate([zb, zp])
    is_part = np.r_[np.zeros(len(zb), bool), np.ones(len(zp), bool)]
    s = 1 / (1 + np.exp(-z))
    keep = s >= 0.05
    s, z, is_part = s[keep], z[keep], is_part[keep]
    zyx = np.random.default_rng(1).uniform(0, 20000, (len(s), 3))
    ck = _ckpt()
    ck.default_threshold = 0.5  # a default the split's picks stand against (split_holds)
    net = split_scores(s, floor=DetectConfig().candidate_floor)
    assert net.kind == "tail"
    t_net, how_net = choose_threshold(ck, zyx, s, 1.0, DetectConfig())
    assert t_net == pytest.approx(net.threshold) and "flank fitted" in how_net

    def shown(zc):
        return (1 / (1 + np.exp(-zc))).astype(np.float32)

    def f1(scores, t):
        tp = int((scores[is_part] >= t).sum())
        return 2 * tp / (int((scores >= t).sum()) + int(is_part.sum()))

    # the check raises the upper particles out of the overlap: their edge keeps fewer, and fewer particles
    raised = shown(np.where(is_part & (z > 0.3), z + 1.5, z))
    edge = split_scores(raised, floor=DetectConfig().candidate_floor)
    assert edge.kind == "edge" and edge.threshold > t_net and f1(raised, edge.threshold) < f1(raised, t_net)
    t, how = choose_threshold(ck, zyx, s, 1.0, DetectConfig(), checked=(zyx, raised))
    assert t == pytest.approx(t_net) and how == how_net
    # the check lowers the background's upper flank (by 0.8 logit: the network's fitted flank,
    # bent down past its mode, already keeps most of what a smaller lowering frees): the shown
    # split keeps more, and more particles
    lowered = shown(np.where(~is_part & (z > -1.5), z - 0.8, z))
    t2, how2 = choose_threshold(ck, zyx, s, 1.0, DetectConfig(), checked=(zyx, lowered))
    assert how2.endswith(", placed after the profile check") and t2 < t_net
    assert f1(lowered, t2) > f1(lowered, t_net)


def test_the_network_sees_the_tomogram_less_its_local_background(volume):
    """``DetectConfig.flatten`` (round 23): the network's input is the tomogram less its local
    background over ``flatten`` particle diameters (:class:`Flattened`), read tile by tile; the
    same scores as a pass over that flattened array, and not those of the tomogram as it is
    when a slow change of density runs across it."""
    from napari_cetpick.descriptors import Background, Flattened

    ck = _ckpt()
    x = np.linspace(-1.0, 1.0, volume.shape[2], dtype=np.float32)
    changed = volume + 1.5 * x * x  # a bowl across x, ±0.75 standard deviations
    cfg = DetectConfig(tile_xy=64, tile_z=8, profile_weight=0.0)
    seen = run_generator(detect(ck, changed, cfg, voxel_size_a=10.0, device="cpu"))
    flat = np.asarray(Flattened(changed, Background.of(changed, 4.0 * 12.0, linear=True)))
    by_hand = run_generator(detect(ck, flat, replace(cfg, flatten=0.0), voxel_size_a=10.0, device="cpu"))
    np.testing.assert_allclose(seen.heatmap, by_hand.heatmap, atol=1e-5)
    as_is = run_generator(detect(ck, changed, replace(cfg, flatten=0.0), voxel_size_a=10.0, device="cpu"))
    assert np.abs(as_is.heatmap - seen.heatmap).max() > 100 * np.abs(by_hand.heatmap - seen.heatmap).max()
    with pytest.raises(CetpickError, match="flatten"):
        run_generator(detect(ck, volume, replace(cfg, flatten=-1.0), voxel_size_a=10.0, device="cpu"))
