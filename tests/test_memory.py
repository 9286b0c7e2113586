"""Memory of a training step: estimate, machine memory, refusal before anything is allocated."""
import sys

import numpy as np
import pytest

from napari_cetpick import memory as M
from napari_cetpick.config import ARCHS, TrainConfig
from napari_cetpick.errors import CetpickError

GiB = 1024**3


def test_parameter_count_matches_the_network():
    from napari_cetpick.model import build_network, count_parameters

    for arch in ARCHS:
        assert M.arch_parameter_count(arch) == count_parameters(build_network(arch))


#: the settings the estimate was calibrated on (the former defaults: two views per crop)
P3D = dict(arch="unet_small", batch_size=4, crop_z=10, contrastive=True, consistency_weight=1.0)


def test_estimate_grows_with_crop_batch_and_network():
    est = M.estimate_train_memory_bytes
    assert est(TrainConfig()) < 1 * GiB  # the defaults are cheap
    base = TrainConfig(**P3D)
    assert est(TrainConfig(**{**P3D, "batch_size": 8})) > est(base)
    assert est(TrainConfig(**{**P3D, "crop_z": 20})) > est(base)
    assert est(base) < est(TrainConfig(**{**P3D, "arch": "unet_4"})) < est(TrainConfig(**{**P3D, "arch": "unet_5"}))
    # the activations scale with the pixels of a step: crop xy x 2 -> about x 4
    act = [est(TrainConfig(**P3D, crop_xy=c)) - M.STEP_OVERHEAD_BYTES - 16 * M.arch_parameter_count("unet_small")
           for c in (64, 128)]
    assert act[1] == pytest.approx(4 * act[0], rel=1e-6)
    # a second augmented view only where a loss compares the views: twice the activations
    one = TrainConfig(**{**P3D, "contrastive": False, "consistency_weight": 0.0})
    assert M.training_views(one) == 1 and M.training_views(base) == 2
    assert est(base) - est(one) == pytest.approx(est(one) - M.STEP_OVERHEAD_BYTES
                                                 - 16 * M.arch_parameter_count("unet_small"), rel=1e-6)


def test_the_crop_that_killed_napari_is_refused():
    # crop xy 512 and crop z 128 at batch 4 grew napari to 23.8 GB before the kernel killed it
    cfg = TrainConfig(**{**P3D, "crop_xy": 512, "crop_z": 128})
    assert M.estimate_train_memory_bytes(cfg) > 24 * GiB
    with pytest.raises(CetpickError) as info:
        M.check_train_memory(cfg, available_bytes=16 * GiB)
    msg = str(info.value)
    assert "crop 512x512x128, batch 4" in msg and "16.0 GB" in msg and "crop xy" in msg
    fit = M.largest_crop_xy(cfg, int(M.USABLE_SHARE * 16 * GiB))
    assert fit is not None and fit % 8 == 0 and f"crop xy {fit} fits" in msg
    from dataclasses import replace

    assert M.estimate_train_memory_bytes(replace(cfg, crop_xy=fit)) <= M.USABLE_SHARE * 16 * GiB
    assert M.estimate_train_memory_bytes(replace(cfg, crop_xy=fit + 8)) > M.USABLE_SHARE * 16 * GiB
    # what fits passes and returns the estimate
    assert M.check_train_memory(TrainConfig(), available_bytes=16 * GiB) == M.estimate_train_memory_bytes(TrainConfig())


def test_data_that_alone_does_not_fit():
    with pytest.raises(CetpickError, match="training tomograms alone do not fit"):
        M.check_train_memory(TrainConfig(), data_bytes=20 * GiB, available_bytes=16 * GiB)


def test_available_memory_without_psutil(monkeypatch):
    monkeypatch.setitem(sys.modules, "psutil", None)  # import fails: /proc/meminfo is read
    avail = M.available_memory_bytes()
    if sys.platform.startswith("linux"):
        assert avail is not None and avail > 64 * 1024**2
    monkeypatch.setattr("builtins.open", lambda *a, **k: (_ for _ in ()).throw(OSError("no /proc")))
    assert M.available_memory_bytes() is None  # unknown: the check is skipped
    assert M.check_train_memory(TrainConfig(crop_xy=512, crop_z=128)) > 0


def test_trainer_refuses_before_allocating(monkeypatch):
    monkeypatch.setattr(M, "available_memory_bytes", lambda device=None: 4 * GiB)
    from napari_cetpick.train import Trainer

    vol = np.zeros((16, 64, 64), np.float32)
    vol[8, 32, 32] = 1.0
    with pytest.raises(CetpickError, match="needs about"):
        Trainer([vol], [np.array([[8.0, 32.0, 32.0]])], TrainConfig(bbox=10, crop_xy=512, crop_z=64), device="cpu")
