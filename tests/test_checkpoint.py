import numpy as np
import pytest
import torch

from napari_cetpick.checkpoint import Checkpoint
from napari_cetpick.config import TrainConfig
from napari_cetpick.errors import CetpickError
from napari_cetpick.model import build_network


def _ckpt():
    net = build_network("unet_small")
    return Checkpoint(state_dict=net.state_dict(), config=TrainConfig(bbox=20, gauss=0.8, lr_step=(5,)),
                      diameter_vox=20.0, voxel_size_a=7.5, bin_xy=1, default_threshold=0.37, tau=0.02,
                      info={"steps": 12, "loss_history": [0.5, 0.4]})


def test_round_trip(tmp_path):
    ck = _ckpt()
    path = ck.save(tmp_path / "m.ckpt")
    back = Checkpoint.load(path)
    assert back.config == ck.config
    assert (back.diameter_vox, back.voxel_size_a, back.bin_xy, back.default_threshold, back.tau) == (20.0, 7.5, 1, 0.37, 0.02)
    assert back.diameter_a == pytest.approx(150.0)
    assert back.info["steps"] == 12
    for k, t in ck.state_dict.items():
        assert torch.equal(back.state_dict[k], t)
    net = back.build()
    assert not net.training
    assert "7.5 Å" in back.summary()
    # the package version travels in the file
    raw = torch.load(path, weights_only=True)
    assert raw["meta"]["package_version"]


def test_loading_is_safe(tmp_path):
    # a pickle that would run code is refused (weights_only)
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    bad = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "meta": Evil()}, bad)
    with pytest.raises(CetpickError, match="not a napari-cetpick model"):
        Checkpoint.load(bad)
    junk = tmp_path / "junk.ckpt"
    junk.write_bytes(b"hello")
    with pytest.raises(CetpickError, match="not a napari-cetpick model"):
        Checkpoint.load(junk)
    with pytest.raises(CetpickError, match="not found"):
        Checkpoint.load(tmp_path / "missing.ckpt")
