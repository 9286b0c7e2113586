"""Several particle classes in one model: settings, model file, targets, overlaps, detection, CLI."""
from dataclasses import replace

import numpy as np
import pytest

from napari_cetpick.checkpoint import Checkpoint
from napari_cetpick.config import ALL_CLASSES, ClassSpec, DetectConfig, TrainConfig, class_colour
from napari_cetpick.data import HARD, NEGATIVE, OTHER_CLASS, UNLABELLED
from napari_cetpick.detect import DetectResult, detect, detect_classes, resolve_classes
from napari_cetpick.errors import CetpickError
from napari_cetpick.evaluate import aggregate_fbeta, fbeta, match_points
from napari_cetpick.train import Trainer, plan_training
from napari_cetpick.utils import run_generator

from _planted import planted_volume


def two_sizes(shape=(40, 128, 128), n_big=10, n_small=14, noise=0.5, seed=0):
    """Dark spheres of two sizes (radius 7 and 3.5) at known places: two classes told apart by size."""
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    pts, radii = [], []
    for r, n in ((7.0, n_big), (3.5, n_small)):
        lo = np.array([r + 2, r + 4, r + 4])
        hi = np.array(shape) - lo
        for _ in range(20000):
            if sum(1 for q in radii if q == r) == n:
                break
            p = rng.uniform(lo, hi)
            if all(np.linalg.norm(p - q) > r + rq + 5 for q, rq in zip(pts, radii)):
                pts.append(p)
                radii.append(r)
    pts, radii = np.array(pts), np.array(radii)
    zz, yy, xx = np.indices(shape, dtype=np.float32)
    v = np.zeros(shape, np.float32)
    for p, r in zip(pts, radii):
        v -= (((zz - p[0]) ** 2 + (yy - p[1]) ** 2 + (xx - p[2]) ** 2) < r**2).astype(np.float32)
    v = ndimage.gaussian_filter(v, 1.0) + rng.normal(0, noise, shape).astype(np.float32)
    return v.astype(np.float32), pts[radii > 5], pts[radii < 5]


def config(**kw):
    return TrainConfig(classes=[ClassSpec("big", bbox=14), ClassSpec("small", bbox=7)], bin=1, **kw)


# ----------------------------------------------------------------------------- settings and plan
def test_class_specs_take_the_configs_share_and_refuse_bad_names():
    cfg = TrainConfig(label_fraction=0.3, classes=[ClassSpec("a", bbox=10), ClassSpec("b", bbox=6, label_fraction=0.8)])
    a, b = cfg.class_specs()
    assert (a.label_fraction, b.label_fraction) == (0.3, 0.8)
    assert TrainConfig(bbox=9).class_specs()[0].bbox == 9  # the one-class form
    for bad in (["a", "a"], ["a b", "c"], ["x=y", "c"], ["", "c"]):
        with pytest.raises(CetpickError):
            TrainConfig(classes=[ClassSpec(n, bbox=5) for n in bad]).validate()
    # round trip through the model file's plain dict
    back = TrainConfig.from_dict(cfg.to_dict())
    assert back.class_specs() == cfg.class_specs()


def test_plan_per_class_and_the_smallest_class_decides_the_bin():
    cfg = TrainConfig(classes=[ClassSpec("big", bbox=40), ClassSpec("small", bbox=13)])
    labels = [{"big": np.array([[10, 50, 50.0], [10, 90, 90]]), "small": np.array([[10, 30, 30.0]])}]
    plan = plan_training(cfg, [(32, 128, 128)], labels)
    assert plan.bin_xy == 1  # 13 voxels: no room to bin (alone, 40 would bin by 3)
    assert [c.name for c in plan.classes] == ["big", "small"]
    assert [c.n_labels for c in plan.classes] == [2, 1]
    # each class's own prior: its count from its own labels and box, its blob from its own size
    one = plan_training(TrainConfig(bbox=13, bin=1), [(32, 128, 128)], [labels[0]["small"]])
    assert plan.classes[1].tau == pytest.approx(one.tau)
    assert plan.classes[0].tau != pytest.approx(plan.classes[1].tau)
    assert "big" in plan.describe() and "small" in plan.describe()


# ----------------------------------------------------------------------------- targets
def test_each_class_is_a_known_negative_of_the_other_channel():
    v, big, small = two_sizes()
    tr = Trainer([v], [{"big": big[:3], "small": small[:3]}], config(max_steps=1), device="cpu")
    grid = tuple(int(c // s) for c, s in zip(tr.crop, tr.stride))
    o = np.zeros(3, int)
    t = tr._crop_targets(0, o, grid)
    assert t.shape == (2, *grid)
    for k, own, other in ((0, big[:3], small[:3]), (1, small[:3], big[:3])):
        for p in own:
            c = np.floor((p - o) / tr.stride + 0.5).astype(int) if np.all(p < tr.crop) else None
            if c is not None and np.all(c < grid):
                assert t[k][tuple(c)] == HARD
        for p in other:
            c = np.floor((p - o) / tr.stride + 0.5).astype(int)
            if np.all(c < grid):
                assert t[k][tuple(c)] == OTHER_CLASS
    assert not np.any(t == NEGATIVE)  # no negative clicks: known negatives are the other class's only
    off = Trainer([v], [{"big": big[:3], "small": small[:3]}], config(max_steps=1, cross_class_weight=0.0),
                  device="cpu")
    t_off = off._crop_targets(0, o, grid)
    assert not np.any(t_off == OTHER_CLASS) and np.all((t_off == t) | (t == OTHER_CLASS))
    assert np.all(t_off[t == OTHER_CLASS] == UNLABELLED)


def test_negatives_for_one_class_and_for_all():
    v, big, small = two_sizes()
    neg = np.array([[20.0, 64, 64]])
    tr = Trainer([v], [{"big": big[:2], "small": small[:2]}], config(max_steps=1), device="cpu",
                 negatives=[{"small": neg, ALL_CLASSES: neg + [0, 30, 0]}])
    assert tr.n_negatives_class == [1, 2]
    grid = tuple(int(c // s) for c, s in zip(tr.crop, tr.stride))
    o = np.array([0, 32, 32])
    t = tr._crop_targets(0, o, grid)
    c = tuple(np.floor((neg[0] - o) / tr.stride + 0.5).astype(int))
    assert t[1][c] == NEGATIVE and t[0][c] != NEGATIVE  # "not a small one" says nothing of big ones


@pytest.mark.parametrize("labels, negatives, message", [
    ([{"big": np.array([[20.0, 64, 64]])}], None, "'small' has no labels"),
    ([{"big": np.array([[20.0, 64, 64]]), "small": np.array([[20.0, 64, 64.3]])}], None, "both 'big' and 'small'"),
    ([{"big": np.array([[20.0, 64, 64]]), "huge": np.array([[20.0, 30, 30]])}], None, "'huge'"),
    ([np.array([[20.0, 64, 64]])], None, "say which class"),
    ([{"big": np.array([[20.0, 64, 64]]), "small": np.array([[20.0, 30, 30]])}], [{"medium": np.zeros((1, 3))}],
     "'medium'"),
])
def test_bad_class_labels_are_refused(labels, negatives, message):
    v = np.zeros((40, 128, 128), np.float32)
    with pytest.raises(CetpickError, match=message):
        Trainer([v], labels, config(max_steps=1), device="cpu", negatives=negatives)


# ----------------------------------------------------------------------------- overlaps
def _result(name, zyx, scores, threshold, radius):
    zyx = np.asarray(zyx, float)
    scores = np.asarray(scores, np.float32)
    return DetectResult(heatmap=np.zeros((1, 1, 1)), scale=np.ones(3), translate=np.zeros(3), cand_zyx=zyx,
                        cand_scores=scores, threshold=threshold, min_distance_vox=1.0, K=None, tomogram_shape=(50,) * 3,
                        voxel_size_a=None, diameter_vox=2 * radius, zyx=zyx, scores=scores,
                        keep_idx=np.arange(len(zyx)), class_name=name, radius_vox=radius)


def test_one_place_is_one_class_the_higher_margin_wins():
    a = _result("a", [[10, 10, 10], [30, 30, 30]], [0.9, 0.6], threshold=0.5, radius=6.0)
    b = _result("b", [[10, 10, 14], [30, 30, 35], [45, 45, 45]], [0.8, 0.95, 0.7], threshold=0.5, radius=3.0)
    # (10,10,10)/(10,10,14): 4 apart, within a's radius 6: a's margin logit(.9) > b's logit(.8) -> a stays
    # (30,30,30)/(30,30,35): 5 apart, within 6: b's 0.95 beats a's 0.6 -> b stays; (45,45,45) alone
    dropped = resolve_classes([a, b])
    assert dropped == 2
    np.testing.assert_allclose(a.zyx, [[10, 10, 10]])
    np.testing.assert_allclose(b.zyx, [[30, 30, 35], [45, 45, 45]])
    assert list(a.runner_up) == ["b"] and a.runner_up_score[0] == pytest.approx(0.8)
    assert list(b.runner_up) == ["a", ""] and b.runner_up_score[0] == pytest.approx(0.6)
    assert np.isnan(b.runner_up_score[1])
    f = b.features
    assert list(f.columns[-2:]) == ["runner_up", "runner_up_score"] and len(f) == 2
    # margins are each class's own: the same score is further above a lower threshold
    c = _result("c", [[10, 10, 10]], [0.7], threshold=0.2, radius=3.0)
    d = _result("d", [[10, 10, 12]], [0.8], threshold=0.7, radius=3.0)
    resolve_classes([c, d])
    assert len(c.zyx) == 1 and len(d.zyx) == 0
    # a class at threshold 0 (every candidate asked for) keeps every candidate
    e = _result("e", [[10, 10, 10]], [0.3], threshold=0.0, radius=6.0)
    g = _result("g", [[10, 10, 11]], [0.9], threshold=0.5, radius=6.0)
    assert resolve_classes([e, g]) == 0 and len(e.zyx) == len(g.zyx) == 1


def test_fbeta_and_its_aggregate():
    assert fbeta(1.0, 1.0) == pytest.approx(1.0)
    assert fbeta(0.0, 0.0) == 0.0
    # beta 4: recall weighs 16 times as much as precision in the harmonic mean
    assert fbeta(0.5, 1.0) == pytest.approx(17 * 0.5 / (16 * 0.5 + 1))
    assert aggregate_fbeta({"a": 1.0, "b": 0.0}) == pytest.approx(0.5)
    assert aggregate_fbeta({"a": 1.0, "b": 0.0}, {"a": 3}) == pytest.approx(0.75)


# ----------------------------------------------------------------------------- model file
def test_one_class_model_files_of_format_1_still_load_and_detect(tmp_path):
    import torch

    v, pts = planted_volume(shape=(24, 64, 64), n=6, radius=4.0)
    tr = Trainer([v], [pts[:3]], TrainConfig(bbox=8, max_steps=2, bin=1), device="cpu")
    run_generator(tr.steps(calibrate=False))
    ck = tr.checkpoint(calibrate=False)
    path = ck.save(tmp_path / "new.ckpt")
    blob = torch.load(path, weights_only=True)
    meta = dict(blob["meta"])
    meta.pop("classes")
    meta["format_version"] = 1
    torch.save({"state_dict": blob["state_dict"], "meta": meta}, tmp_path / "old.ckpt")
    old = Checkpoint.load(tmp_path / "old.ckpt")
    assert old.n_classes == 1 and old.class_names == ["particle"] and old.diameter_vox == 8
    a = run_generator(detect(old, v, DetectConfig(threshold=0.1, views=1), device="cpu"))
    b = run_generator(detect(Checkpoint.load(path), v, DetectConfig(threshold=0.1, views=1), device="cpu"))
    np.testing.assert_array_equal(a.zyx, b.zyx)
    # the one-class model's fields are its truth, also after replace()
    assert replace(old, default_threshold=0.77).classes[0].default_threshold == 0.77


@pytest.fixture(scope="module")
def joint():
    """A two-class model trained on planted spheres of two sizes (each class: half its particles labelled)."""
    v, big, small = two_sizes(shape=(40, 128, 128), n_big=10, n_small=14, noise=0.6, seed=2)
    cfg = config(max_steps=150, seed=0, label_fraction=0.5)
    cfg.classes[0].colour = "#ff0000"
    tr = Trainer([v], [{"big": big[:5], "small": small[:7]}], cfg, voxel_size_a=10.0, device="cpu")
    run_generator(tr.steps(calibrate=False))
    return v, big, small, tr.checkpoint()



@pytest.mark.slow
def test_a_correction_round_of_several_classes_rehearses_each_class(joint):
    """A correction round of a model whose self-training round ran finds, before its first step,
    the picks that model is sure of, each class its own, and trains with them as labels of that
    class beside the review (round 24): each on a particle of its own class, none on a label."""
    from scipy.spatial import cKDTree

    from napari_cetpick.train import correction_config

    v, big, small, ck = joint
    if not ck.info["rounds"][-1].get("self_training"):  # training differs across CPUs
        pytest.skip("this CPU's two-class model had no self-training round to rehearse")
    review = {"big": big[:6], "small": small[:7]}
    tr = Trainer([v], [review], correction_config(ck, max_steps=1), voxel_size_a=10.0, device="cpu", init=ck)
    run_generator(tr.steps(calibrate=False))
    found = tr.sure_points[0]
    assert tr.rehearsed == sum(len(a) for a in found.values()) >= 1
    for name, truth, other, radius in (("big", big, small, 7.0), ("small", small, big, 3.5)):
        if name not in found:
            continue
        assert cKDTree(truth).query(found[name])[0].max() < radius / 2
        assert cKDTree(other).query(found[name])[0].min() > 3.0
        assert cKDTree(review[name]).query(found[name])[0].min() > 3.0
        assert len(tr.labels_work[0][name]) == len(review[name]) + len(found[name])
    assert tr.checkpoint(calibrate=False).info["rounds"][-1]["rehearsed"] == tr.rehearsed

@pytest.mark.slow
def test_model_file_carries_the_classes(joint, tmp_path):
    _, _, _, ck = joint
    back = Checkpoint.load(ck.save(tmp_path / "m.ckpt"))
    assert back.class_names == ["big", "small"] and back.n_classes == 2
    assert [c.diameter_vox for c in back.classes] == [14.0, 7.0]
    assert back.classes[0].colour == "#ff0000"  # given
    assert back.classes[1].colour == class_colour(1)  # the palette's
    assert [c.default_threshold for c in back.classes] == [c.default_threshold for c in ck.classes]
    small = back.for_class("small")
    assert small.diameter_vox == 7.0 and small.class_name == "small" and small.channel == 1
    assert small.info["n_labels"] == 7 and back.for_class("big").info["n_labels"] == 5
    # each class its own profile model, of its own labels and the picks of its own the self-training round was sure of
    fitted = [small.info["profile_model"]["n_labels"], back.for_class("big").info["profile_model"]["n_labels"]]
    assert fitted[0] >= 7 and fitted[1] >= 5
    assert sum(fitted) == 12 + back.info["rounds"][-1].get("self_training", 0)
    assert "profile_model" not in back.info
    assert "n_labels" not in back.info  # per-class figures live with their class
    assert "big:" in back.summary() and "small:" in back.summary()
    with pytest.raises(CetpickError, match="whole model"):
        small.save(tmp_path / "view.ckpt")
    with pytest.raises(CetpickError, match="no class 'huge'"):
        back.for_class("huge")


@pytest.mark.slow
def test_one_pass_finds_each_class_on_its_own_particles(joint):
    v, big, small, ck = joint
    with pytest.raises(CetpickError, match="2 classes"):
        run_generator(detect(ck, v, DetectConfig(), device="cpu"))
    with pytest.raises(CetpickError, match="no class 'huge'"):
        run_generator(detect_classes(ck, v, DetectConfig(threshold={"huge": 0.5}), device="cpu"))
    found = run_generator(detect_classes(ck, v, DetectConfig(threshold=0.0), device="cpu"))
    assert found.names == ["big", "small"]
    assert found["big"].heatmap.shape == found["small"].heatmap.shape
    assert not np.array_equal(found["big"].heatmap, found["small"].heatmap)
    # each channel's best candidates land on its own class: the n best of "big" on big spheres
    for name, own, other in (("big", big, small), ("small", small, big)):
        r = found[name]
        top = r.zyx[np.argsort(-r.scores)][: len(own)]
        on_own = len(match_points(top, own, 3.0)[0])
        on_other = len(match_points(top, other, 3.0)[0])
        assert on_own >= 0.7 * len(own) and on_other <= 0.2 * len(own), (name, on_own, on_other)
    # the same channel through the one-class view gives the same candidates
    one = run_generator(detect(ck.for_class("small"), v, DetectConfig(threshold=0.0), device="cpu"))
    np.testing.assert_allclose(one.cand_zyx, found["small"].cand_zyx)
    # a threshold per class; at the defaults no place holds two classes
    per = run_generator(detect_classes(ck, v, DetectConfig(threshold={"big": 0.9}), device="cpu"))
    assert per["big"].threshold == 0.9 and per["big"].threshold_source == "given"
    assert per["small"].threshold_source != "given"
    both = run_generator(detect_classes(ck, v, DetectConfig(), device="cpu"))
    tab = both.table()
    assert set(tab["class"]) <= {"big", "small"} and len(tab) == both.n_picks
    a, b = both["big"].zyx, both["small"].zyx
    if len(a) and len(b):
        d = np.linalg.norm(a[:, None] - b[None], axis=2)
        assert d.min() > max(both["big"].radius_vox, both["small"].radius_vox)


# ----------------------------------------------------------------------------- command line
def test_cli_trains_detects_and_evaluates_several_classes(tmp_path, capsys):
    import json

    from napari_cetpick.cli import main
    from napari_cetpick.io import read_points, write_points, write_tomogram

    v, big, small = two_sizes(shape=(32, 96, 96), n_big=5, n_small=6, seed=4)
    write_tomogram(tmp_path / "t.mrc", v, voxel_size_a=10.0)
    for name, pts in (("big", big), ("small", small)):
        write_points(tmp_path / f"{name}.txt", pts[:3])
        write_points(tmp_path / f"{name}_truth.csv", pts)
    write_points(tmp_path / "neg.txt", np.array([[16.0, 48, 48]]))
    model = tmp_path / "m.ckpt"
    rc = main(["train", "--tomogram", str(tmp_path / "t.mrc"), "--labels", f"big={tmp_path / 'big.txt'}",
               "--labels", f"small={tmp_path / 'small.txt'}", "--negatives", f"small={tmp_path / 'neg.txt'}",
               "--bbox", "big=14", "--bbox", "small=7", "--label-fraction", "small=0.4", "--label-fraction", "0.6",
               "--max-steps", "2", "--out", str(model), "--quiet", "--device", "cpu"])
    assert rc == 0
    ck = Checkpoint.load(model)
    assert ck.class_names == ["big", "small"] and [c.diameter_vox for c in ck.classes] == [14.0, 7.0]
    specs = {c.name: c for c in ck.config.class_specs()}
    assert specs["small"].label_fraction == 0.4 and specs["big"].label_fraction == 0.6
    assert ck.for_class("small").info["n_negatives"] == 1 and ck.for_class("big").info["n_negatives"] == 0
    out = tmp_path / "picks"
    rc = main(["detect", "--model", str(model), "--tomogram", str(tmp_path / "t.mrc"), "--out-dir", str(out),
               "--format", "csv", "--threshold", "big=0.3", "--threshold", "0.2", "--quiet", "--device", "cpu"])
    assert rc == 0, capsys.readouterr().err
    picks = read_points(out / "t_picks.csv")
    assert set(picks.features["class"]) <= {"big", "small"}
    assert {"score", "margin", "runner_up", "runner_up_score"} <= set(picks.features.columns)
    capsys.readouterr()
    rc = main(["evaluate", "--picks", str(out / "t_picks.csv"), "--truth", f"big={tmp_path / 'big_truth.csv'}",
               "--truth", f"small={tmp_path / 'small_truth.csv'}", "--model", str(model), "--json"])
    assert rc == 0
    rep = json.loads(capsys.readouterr().out)
    assert set(rep["classes"]) == {"big", "small"} and "fbeta4_aggregate" in rep
    assert rep["classes"]["big"]["radius_vox"] == pytest.approx(14 / 4)  # CZII: half the particle's radius
    assert rep["classes"]["big"]["n_true"] == len(big)
    # a correction round of the two-class model with per-class labels
    rc = main(["train", "--tomogram", str(tmp_path / "t.mrc"), "--labels", f"big={tmp_path / 'big.txt'}",
               "--labels", f"small={tmp_path / 'small.txt'}", "--continue-from", str(model), "--max-steps", "1",
               "--out", str(tmp_path / "m2.ckpt"), "--quiet", "--device", "cpu"])
    assert rc == 0
    assert Checkpoint.load(tmp_path / "m2.ckpt").class_names == ["big", "small"]


def test_balancing_weighs_each_class_by_the_mean_prior_over_its_own_and_leaves_one_class_alone(monkeypatch):
    import napari_cetpick.losses as losses

    v, big, small = two_sizes()
    # every class's own loss 1: what is left is the weight each class gets
    monkeypatch.setattr(losses, "pu_heatmap_loss", lambda logits, *a, **k: {"loss": logits.sum() * 0 + 1.0})
    got = {}
    for balance in (True, False):
        tr = Trainer([v], [{"big": big[:3], "small": small[:3]}], config(max_steps=1, balance_classes=balance),
                     device="cpu")
        got[balance] = tr._loss(*tr._batch())[1].item()
    taus = np.array(tr.taus)
    assert taus[0] != pytest.approx(taus[1])
    assert got[False] == pytest.approx(2.0)
    assert got[True] == pytest.approx(float(np.sum(taus.mean() / taus)), rel=1e-5)
    one = Trainer([v], [big[:3]], TrainConfig(bbox=14, bin=1, max_steps=1), device="cpu")
    assert one._loss(*one._batch())[1].item() == pytest.approx(1.0)  # one class: weight 1
