import numpy as np
import pytest
import torch

from napari_cetpick.checkpoint import Checkpoint
from napari_cetpick.config import TrainConfig
from napari_cetpick.errors import CetpickError
from napari_cetpick.model import build_network


def _ckpt():
    net = build_network("unet_small")
    return Checkpoint(state_dict=net.state_dict(), config=TrainConfig(arch="unet_small", bbox=20, gauss=0.8, lr_step=(5,)),
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


def test_numpy_values_in_the_metadata_still_load_safely(tmp_path):
    # values from numpy (a header voxel size, a spin box, np.round) must not make the model
    # unloadable with weights_only=True
    import numpy as np

    cfg = TrainConfig(arch="unet_small", bbox=np.float64(20.0), gauss=np.float32(0.5), batch_size=np.int64(2), lr_step=(np.int64(5),),
                      crop_xy=np.int64(64))
    ck = Checkpoint(state_dict=build_network("unet_small").state_dict(), config=cfg, diameter_vox=np.float64(20.0),
                    voxel_size_a=np.float32(7.5), bin_xy=np.int64(1), default_threshold=np.float64(0.37),
                    tau=np.float64(0.02), info={"steps": np.int64(12), "loss_history": list(np.array([0.5, 0.4])),
                                                "shape": np.array([8, 64, 64])})
    path = ck.save(tmp_path / "m.ckpt")
    back = Checkpoint.load(path)
    assert back.config.bbox == 20.0 and type(back.config.bbox) is float
    assert back.config.lr_step == (5,) and type(back.config.batch_size) is int
    assert back.voxel_size_a == 7.5 and back.info["steps"] == 12 and back.info["shape"] == [8, 64, 64]
    assert back.summary() == Checkpoint.load(ck.save(tmp_path / "m2.ckpt")).summary()


def test_model_files_have_one_extension(tmp_path):
    from napari_cetpick.checkpoint import MODEL_EXTENSION

    assert MODEL_EXTENSION == ".ckpt"
    assert _ckpt().save(tmp_path / "model").name == "model.ckpt"


def test_missing_metadata_or_misfit_weights_are_plain_errors(tmp_path):
    ck = _ckpt()
    good = ck.save(tmp_path / "good.ckpt")
    blob = torch.load(good, weights_only=True)
    del blob["meta"]["tau"], blob["meta"]["bin_xy"]
    torch.save(blob, tmp_path / "nometa.ckpt")
    with pytest.raises(CetpickError, match=r"nometa.ckpt: the model file lacks bin_xy, tau"):
        Checkpoint.load(tmp_path / "nometa.ckpt")
    # weights of another architecture under this config
    blob = torch.load(good, weights_only=True)
    blob["state_dict"] = build_network("unet_4").state_dict()
    torch.save(blob, tmp_path / "misfit.ckpt")
    with pytest.raises(CetpickError, match=r"misfit.ckpt: the weights do not fit the unet_small network"):
        Checkpoint.load(tmp_path / "misfit.ckpt")
    # an architecture this version does not know
    blob = torch.load(good, weights_only=True)
    blob["meta"]["config"]["arch"] = "unet_9"
    torch.save(blob, tmp_path / "arch.ckpt")
    with pytest.raises(CetpickError, match=r"unknown network 'unet_9'"):
        Checkpoint.load(tmp_path / "arch.ckpt")
    # a truncated file
    (tmp_path / "cut.ckpt").write_bytes(good.read_bytes()[:2000])
    with pytest.raises(CetpickError, match="not a napari-cetpick model file"):
        Checkpoint.load(tmp_path / "cut.ckpt")
