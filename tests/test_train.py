"""Training: falls, finds planted particles, deterministic, cancellable, guarded."""
import numpy as np
import pytest
import torch

from napari_cetpick.config import DetectConfig, TrainConfig, preset
from napari_cetpick.detect import detect
from napari_cetpick.device import cpu_has_amx_bf16
from napari_cetpick.errors import CetpickError
from napari_cetpick.evaluate import evaluate
from napari_cetpick.train import Trainer, estimate_tau, train
from napari_cetpick.utils import run_generator

from _planted import planted_volume

TINY = dict(bbox=10, max_steps=4, num_epochs=100, crop_xy=32, crop_z=16, batch_size=2, tau=0.05)


@pytest.fixture(scope="module")
def planted():
    return planted_volume()


@pytest.fixture(scope="module")
def trained(planted):
    v, pts = planted
    # 8 of the 24 particles are labelled, and the user says so (the default threshold keeps
    # as many picks as the labels imply)
    cfg = TrainConfig(bbox=10, max_steps=70, num_epochs=1000, tau=0.05, seed=1, label_fraction=8 / 24)
    trainer = Trainer([v], [pts[:8]], cfg, voxel_size_a=10.0, device="cpu")
    records = list(trainer.steps())
    return trainer, records, trainer.checkpoint()


def test_loss_falls(trained):
    _, records, _ = trained
    losses = np.array([r.loss for r in records])
    # the schedule, then the self-training round (a third of it at most) where it found sure picks
    assert len(records) == (70 + 23 if trained[0].self_trained else 70)
    assert np.all(np.isfinite(losses))
    assert losses[-10:].mean() < 0.6 * losses[:10].mean()
    r = records[-1]
    assert r.step == r.total == len(records) and r.elapsed_s > 0 and "CPU" in r.device


def test_detections_find_planted_particles(trained, planted):
    v, pts = planted
    _, _, ckpt = trained
    res = run_generator(detect(ckpt, v, DetectConfig(), voxel_size_a=10.0, device="cpu"))
    # trained on 8 of 24 labels: the others must be found too, at the calibrated threshold
    ev = evaluate(res.zyx, res.scores, pts, 3.0, threshold=res.threshold)
    assert ev.recall >= 0.9, ev
    assert ev.precision >= 0.85 and ev.f1 >= 0.9, ev
    # the default threshold keeps about as many picks as the labels imply (24 here)
    assert 20 <= ckpt.info["expected_particles"] <= 30 and abs(len(res.zyx) - 24) <= 4
    assert 0.05 <= ckpt.default_threshold <= 0.95


def test_model_carries_its_labels_profile_model_and_detection_checks_it(trained, planted, tmp_path):
    from napari_cetpick.checkpoint import Checkpoint
    from napari_cetpick.descriptors import ProfileModel

    v, pts = planted
    _, _, ckpt = trained
    model = ProfileModel.from_info(ckpt.info.get("profile_model"))
    # fitted on the labels and the picks the self-training round was sure of; the user's 8 stay the count
    sure = sum(len(a) for per in trained[0].sure_points for a in per.values())
    assert model is not None and model.n_labels == 8 + sure and ckpt.info["n_labels"] == 8
    back = Checkpoint.load(ckpt.save(tmp_path / "m.ckpt"))
    assert back.info["profile_model"] == ckpt.info["profile_model"]
    checked = run_generator(detect(back, v, DetectConfig(threshold=0.0), voxel_size_a=10.0, device="cpu"))
    plain = run_generator(detect(back, v, DetectConfig(threshold=0.0, profile_weight=0.0), voxel_size_a=10.0,
                                 device="cpu"))
    # the check moves scores at the same places, and says by how much
    assert "profile_excess" in checked.features.columns and "profile_excess" not in plain.features.columns
    assert checked.profile_moved is not None and checked.profile_moved >= 0 and plain.profile_moved is None
    # the contrast it compared at: read on the labels' own tomogram, within a few percent of theirs; asked
    # not to (the labels' contrast), 1; no check, none
    own = run_generator(detect(back, v, DetectConfig(threshold=0.0, profile_contrast=False), voxel_size_a=10.0,
                               device="cpu"))
    assert 0.9 <= checked.profile_gain <= 1.1 and own.profile_gain == 1.0 and plain.profile_gain is None
    assert len(checked.cand_zyx) == len(plain.cand_zyx)
    from napari_cetpick.review import nearest_distance

    assert np.all(nearest_distance(checked.cand_zyx, plain.cand_zyx) < 1e-6)
    # each checked candidate's logit is the network's less the weight times its charge
    from scipy.spatial import cKDTree

    from napari_cetpick.utils import logit

    idx = cKDTree(plain.cand_zyx).query(checked.cand_zyx)[1]
    ex = checked.cand_profile_excess
    done = np.isfinite(ex) & (checked.cand_scores > 1e-4) & (checked.cand_scores < 1 - 1e-4)
    assert done.sum() >= 10
    np.testing.assert_allclose(logit(checked.cand_scores[done]),
                               logit(plain.cand_scores[idx][done]) - DetectConfig().profile_weight * ex[done],
                               atol=2e-3)
    # the planted spheres themselves look like the labels: at most a small excess
    on = nearest_distance(checked.zyx, pts) < 3.0
    assert np.nanmedian(checked.features["profile_excess"].to_numpy()[on]) < 5.0


def test_deterministic_on_cpu(planted):
    v, pts = planted
    cfg = TrainConfig(**TINY)
    a = run_generator(train([v], [pts[:5]], cfg, device="cpu"))
    b = run_generator(train([v], [pts[:5]], cfg, device="cpu"))
    for k in a.state_dict:
        assert torch.equal(a.state_dict[k], b.state_dict[k]), k
    c = run_generator(train([v], [pts[:5]], TrainConfig(**{**TINY, "seed": 7}), device="cpu"))
    assert any(not torch.equal(a.state_dict[k], c.state_dict[k]) for k in a.state_dict)


def test_training_arithmetic_is_bfloat16_only_where_amx_computes_it(monkeypatch):
    from napari_cetpick import device

    for amx in (True, False):
        monkeypatch.setattr(device, "cpu_has_amx_bf16", lambda amx=amx: amx)
        assert device.training_dtype("cpu") == (torch.bfloat16 if amx else torch.float32)
        assert device.training_dtype("cpu", "float32") == torch.float32
        assert device.training_dtype("cpu", "bfloat16") == torch.bfloat16
        assert device.training_dtype("mps") == torch.float32 and device.training_dtype("cuda") == torch.float32
    with pytest.raises(CetpickError, match="precision must be one of"):
        device.training_dtype("cpu", "half")
    with pytest.raises(CetpickError, match="precision must be one of"):
        TrainConfig(precision="half").validate()
    # the published settings keep float32: bfloat16 training was measured on the default network only
    assert TrainConfig().precision == "auto" and preset("cetpick").precision == "float32"


@pytest.mark.parametrize("precision", ["float32", "bfloat16"])
def test_a_training_step_runs_the_network_in_the_asked_arithmetic(planted, precision):
    """The convolutions see the asked dtype, the scores and the weights stay float32, the model
    says how it was trained, and oneDNN's flag is back as it was after the steps."""
    v, pts = planted
    trainer = Trainer([v], [pts[:5]], TrainConfig(**{**TINY, "precision": precision}), device="cpu")
    seen = {"conv": set(), "hm": set()}
    trainer.net.stem[0].register_forward_hook(lambda m, i, o: seen["conv"].add(o.dtype))
    trainer.net.hm.register_forward_hook(lambda m, i, o: seen["hm"].add(o.dtype))
    before = torch.backends.mkldnn.deterministic
    ck = run_generator(trainer.steps(calibrate=False))
    assert seen["conv"] == {getattr(torch, precision)} and seen["hm"] == {torch.float32}
    assert all(t.dtype == torch.float32 for t in ck.state_dict.values() if t.is_floating_point())
    assert ck.info["rounds"][-1]["precision"] == precision
    assert ("bfloat16" in trainer.device_name) == (precision == "bfloat16")
    assert torch.backends.mkldnn.deterministic == before


@pytest.mark.skipif(not cpu_has_amx_bf16(),
                    reason="bfloat16 training is the default (and deterministic) only on a CPU with AMX for it")
def test_bfloat16_training_is_deterministic_where_it_is_the_default(planted):
    v, pts = planted
    cfg = TrainConfig(**{**TINY, "max_steps": 6, "precision": "bfloat16"})
    a = run_generator(train([v], [pts[:5]], cfg, device="cpu"))
    b = run_generator(train([v], [pts[:5]], cfg, device="cpu"))
    for k in a.state_dict:
        assert torch.equal(a.state_dict[k], b.state_dict[k]), k
    f = run_generator(train([v], [pts[:5]], TrainConfig(**{**TINY, "max_steps": 6, "precision": "float32"}),
                            device="cpu"))
    assert any(not torch.equal(a.state_dict[k], f.state_dict[k]) for k in a.state_dict)  # it did run in bfloat16


def test_cancel_keeps_model_and_resumes(planted):
    v, pts = planted
    trainer = Trainer([v], [pts[:5]], TrainConfig(**{**TINY, "max_steps": 5}), device="cpu")
    gen = trainer.steps()
    next(gen), next(gen)
    gen.close()  # what a Cancel does between steps
    ck = trainer.checkpoint()
    assert ck.info["steps"] == 2
    # the kept weights are the ones after step 2
    for k, t in trainer.net.state_dict().items():
        assert torch.equal(ck.state_dict[k], t.cpu())
    rest = list(trainer.steps())
    assert [r.step for r in rest] == list(range(3, trainer.total_steps + 1)) and trainer.total_steps in (5, 6)
    # continuing from a checkpoint counts on from its steps
    more = Trainer([v], [pts[:5]], TrainConfig(**{**TINY, "max_steps": 2}), device="cpu", init=trainer.checkpoint())
    list(more.steps())
    assert more.checkpoint().info["steps"] == trainer.total_steps + 2


def test_non_finite_loss_stops_and_keeps_last_good(planted, monkeypatch):
    v, pts = planted
    trainer = Trainer([v], [pts[:5]], TrainConfig(**TINY), device="cpu")
    recs = [next(trainer.steps())]
    good = {k: t.clone() for k, t in trainer.net.state_dict().items()}
    real = trainer._loss

    def nan_loss(*args):
        loss, *rest = real(*args)
        return (loss * float("nan"), *rest)

    monkeypatch.setattr(trainer, "_loss", nan_loss)
    recs += list(trainer.steps())
    assert "non-finite" in trainer.status
    assert "loss became nan" in recs[-1].message
    for k, t in trainer.net.state_dict().items():
        assert torch.equal(t, good[k]), k
    assert trainer.checkpoint().info["status"].startswith("stopped")


def test_bad_labels(planted):
    v, pts = planted
    with pytest.raises(CetpickError, match="outside the tomogram"):
        Trainer([v], [np.array([[5.0, 500.0, 10.0]])], TrainConfig(**TINY))
    with pytest.raises(CetpickError, match="No labels"):
        Trainer([v], [np.zeros((0, 3))], TrainConfig(**TINY))
    with pytest.raises(CetpickError, match="diameter"):
        Trainer([v], [pts], TrainConfig(max_steps=1))
    with pytest.raises(CetpickError, match="voxel size is unknown"):
        Trainer([v], [pts], TrainConfig(diameter_a=100.0, max_steps=1), voxel_size_a=None)


def test_one_label_and_tomogram_smaller_than_a_crop():
    v, pts = planted_volume(shape=(8, 24, 24), n=1, radius=2, min_gap=1)
    ck = run_generator(train([v], [pts[:1]], TrainConfig(**{**TINY, "crop_xy": 32, "crop_z": 16}), device="cpu"))
    res = run_generator(detect(ck, v, DetectConfig(threshold=0.0), device="cpu"))
    # the default 3D network's output grid halves every axis
    assert res.heatmap.shape == (4, 12, 12)


def test_tau_from_expected_particles():
    from napari_cetpick import data as D
    from napari_cetpick.train import TAU_FLOOR

    spec = D.blob_spec(12.0)
    geom = D.make_geometry(1, False)
    shapes = [(40, 200, 200)]
    density = 1000 / (200 * 200)  # 1000 particles in the tomogram
    tau = estimate_tau(TrainConfig(bbox=12), density, shapes, spec, geom)
    per = D.positive_cells_per_particle(spec)
    assert tau == pytest.approx(1000 * per / (40 * 100 * 100))
    # a single particle: its true, tiny prior (no floor that makes look-alikes particles)
    assert estimate_tau(TrainConfig(bbox=12), 1 / (200 * 200), shapes, spec, geom) == \
        pytest.approx(per / (40 * 100 * 100))
    # no particles at all: the prior is floored, never zero
    assert estimate_tau(TrainConfig(bbox=12), 0.0, shapes, spec, geom) == TAU_FLOOR
    assert estimate_tau(TrainConfig(tau=0.3), density, shapes, spec, geom) == 0.3


def test_cetpick_preset_keeps_published_settings():
    from napari_cetpick import data as D
    from napari_cetpick.train import schedule_steps

    cfg = preset("cetpick")
    assert (cfg.arch, cfg.crop_z, cfg.crop_xy, cfg.batch_size, cfg.augment, cfg.blob, cfg.tau) == \
        ("unet_4", 6, 64, 2, "flip", "cetpick", 0.4)
    # the epochs are honoured: no step cap the user did not set
    assert schedule_steps(cfg, 20) == (6000, 10, "600 epochs of 10 steps")
    assert schedule_steps(preset("cetpick", max_steps=50), 20)[0] == 50
    # the original's views: the first as it is, the second always flipped left-right or up-down
    rng = np.random.default_rng(0)
    for _ in range(20):
        t1, t2 = D.view_transforms(rng, "flip")
        assert t1 == D.Transform() and t2.flip_x and t2.k in (0, 2) and not t2.flip_z
    with pytest.raises(CetpickError):
        preset("nope")


def test_the_default_schedule_grows_with_the_labels_up_to_its_cap():
    from napari_cetpick.config import DEFAULT_MAX_STEPS, DEFAULT_MIN_EPOCHS, DEFAULT_STEPS
    from napari_cetpick.train import schedule_steps

    cfg = TrainConfig()  # batch 8
    assert schedule_steps(cfg, 17) == (DEFAULT_STEPS, 3, "the default schedule")  # 100 epochs already
    assert schedule_steps(cfg, 40)[0] == DEFAULT_STEPS  # 5 steps an epoch: 60 epochs are 300 steps
    assert schedule_steps(cfg, 60) == (DEFAULT_MIN_EPOCHS * 8, 8,
                                       "the default schedule for 60 labels: 60 epochs of 8 steps")
    assert schedule_steps(cfg, 74)[0] == 600 == DEFAULT_MAX_STEPS
    assert schedule_steps(cfg, 500) == (DEFAULT_MAX_STEPS, 63,
                                        "the default schedule for 500 labels, at its most steps")
    # a schedule the user sets is theirs, whatever the labels
    assert schedule_steps(TrainConfig(max_steps=200), 500)[0] == 200
    assert schedule_steps(TrainConfig(num_epochs=2), 500)[0] == 126


@pytest.mark.parametrize("noise, smoothed", [(0.5, False), (5.0, True)])
def test_smoothing_is_chosen_from_how_far_the_labels_stand_out_of_the_noise(noise, smoothed):
    """``TrainConfig.gauss`` None (the default): a pre-filter of AUTO_SMOOTHING working voxels where
    the labels' radial profiles stand out of the tomogram's noise by a separation below
    SMOOTHING_BELOW_SEPARATION, else none; the model file holds the value used and why. A value
    given is kept; a correction round keeps its model's."""
    from napari_cetpick.config import AUTO_SMOOTHING, SMOOTHING_BELOW_SEPARATION
    from napari_cetpick.descriptors import ProfileModel

    v, pts = planted_volume(shape=(32, 128, 128), n=30, noise=noise, seed=0)
    labels = pts[:12]
    separation = ProfileModel.fit([v], [labels], 10.0).separation()
    assert (separation < SMOOTHING_BELOW_SEPARATION) == smoothed
    cfg = TrainConfig(bbox=10, arch="unet_small", crop_z=8, crop_xy=32, batch_size=2, max_steps=2)
    assert cfg.gauss is None and cfg.prefilter == 0.0
    trainer = Trainer([v], [labels], cfg, voxel_size_a=10.0)
    assert trainer.config.gauss == (AUTO_SMOOTHING if smoothed else 0.0)
    ck = trainer.checkpoint(calibrate=False)
    assert ck.config.gauss == trainer.config.gauss
    assert ck.info["rounds"][-1]["smoothing"] == {"separation": round(separation, 2), "gauss": ck.config.gauss}
    # a value given wins; a correction round keeps the model's, whatever the labels
    given = Trainer([v], [labels], TrainConfig(**{**cfg.__dict__, "gauss": 0.5}), voxel_size_a=10.0)
    assert given.config.gauss == 0.5 and given.checkpoint(calibrate=False).info["rounds"][-1].get("smoothing") is None
    other = 0.0 if ck.config.prefilter else AUTO_SMOOTHING  # not what the labels would choose
    from dataclasses import replace

    continued = Trainer([v], [labels], cfg, voxel_size_a=10.0, init=replace(ck, config=replace(ck.config, gauss=other)))
    assert continued.config.gauss == other
    # the published preset keeps the original's default: none
    assert preset("cetpick").gauss == 0.0
