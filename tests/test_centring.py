"""Picks sit on the particles' centres: no systematic offset from the grid, the stem or the flips.

A trained model (default settings, flips and rotations in training) detects planted spheres
at bin 1 and bin 2; the matched picks' mean offset per axis must be a small fraction of a
working voxel (before the grid convention was fixed it was about half a working voxel in x
and y). A difference-of-Gaussians picker on the same volume is the reference for the spread.
"""
import numpy as np
import pytest

from napari_cetpick.baselines import dog_picker
from napari_cetpick.config import DetectConfig, TrainConfig
from napari_cetpick.detect import detect
from napari_cetpick.evaluate import match_points
from napari_cetpick.train import Trainer
from napari_cetpick.utils import run_generator

from _planted import planted_volume

pytestmark = pytest.mark.slow


def _offsets(zyx, truth, radius):
    pi, ti = match_points(zyx, truth, radius)
    d = zyx[pi] - truth[ti]
    return len(pi), d.mean(0), np.sqrt((d**2).mean(0))


@pytest.mark.parametrize("bin_xy, radius, shape, n", [(1, 6.0, (48, 128, 128), 30), (2, 13.0, (64, 192, 192), 16)])
def test_picks_are_centred(bin_xy, radius, shape, n):
    v, pts = planted_volume(shape=shape, n=n, radius=radius, noise=0.8, seed=3, min_gap=2 * radius + 3)
    d = 2 * radius
    cfg = TrainConfig(bbox=d, max_steps=150, seed=0, bin=bin_xy, label_fraction=0.5)
    tr = Trainer([v], [pts[: n // 2]], cfg, voxel_size_a=10.0, device="cpu")
    assert tr.bin_xy == bin_xy
    for _ in tr.steps(calibrate=False):
        pass
    ck = tr.checkpoint(calibrate=False)

    dog_zyx, _ = dog_picker(v, d)
    k_dog, _, rms_dog = _offsets(dog_zyx[:n], pts, radius)
    assert k_dog == n
    found = {}
    for views in (1, 2):
        res = run_generator(detect(ck, v, DetectConfig(threshold=0.0, views=views), voxel_size_a=10.0, device="cpu"))
        top = res.zyx[np.argsort(-res.scores)][:n]
        k, mean, rms = _offsets(top, pts, radius)
        assert k == n, (views, k)
        found[views] = (mean / bin_xy, rms / bin_xy)  # in working voxels
    mean1, _ = found[1]
    mean2, rms2 = found[2]
    # one pass: what one model learned, a third of a working voxel at most (measured: <= 0.27)
    assert np.all(np.abs(mean1) < 0.35), mean1
    # two flipped passes average that out (measured: <= 0.09)
    assert np.all(np.abs(mean2) < 0.15), mean2
    # the spread: within half a working voxel, and at most 3.5 times the DoG picker's on these
    # clean spheres (measured: 0.30-0.36 against DoG's 0.10-0.27)
    assert np.all(rms2 < 0.5), rms2
    assert np.all(rms2 < 3.5 * rms_dog / bin_xy), (rms2, rms_dog / bin_xy)
