"""Batch outputs of a model of several classes: files per format, heatmaps per class,
--skip-existing, the --json record and copick picks sets per class."""
import json

import imodmodel
import numpy as np
import pytest
import starfile

from napari_cetpick.batch import (
    BatchOptions,
    DetectJob,
    JobResult,
    expected_outputs,
    load_model,
    run_batch,
)
from napari_cetpick.config import ClassSpec, DetectConfig, TrainConfig, class_colour
from napari_cetpick.detect import detect_classes
from napari_cetpick.errors import CetpickError
from napari_cetpick.io import open_tomogram, read_points, write_tomogram
from napari_cetpick.io.points import hex_to_rgb
from napari_cetpick.train import Trainer
from napari_cetpick.utils import run_generator

from _planted import planted_volume

CLASSES = ["proteasome", "ribosome"]  # also the copick objects of the copick test
K = 5


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """Two classes trained for two steps: enough to detect something in each channel."""
    v, pts = planted_volume(shape=(32, 64, 64), n=12)
    cfg = TrainConfig(classes=[ClassSpec("proteasome", bbox=8, colour="#ff0000"), ClassSpec("ribosome", bbox=6)],
                      max_steps=2, crop_xy=32, crop_z=16, batch_size=2, seed=1)
    trainer = Trainer([v], [{"proteasome": pts[:6], "ribosome": pts[6:]}], cfg, voxel_size_a=10.0, device="cpu")
    for _ in trainer.steps():
        pass
    return trainer.checkpoint().save(tmp_path_factory.mktemp("model") / "two.ckpt")


@pytest.fixture(scope="module")
def tomogram(tmp_path_factory):
    v, _ = planted_volume(shape=(32, 64, 64), n=12, seed=5)
    return write_tomogram(tmp_path_factory.mktemp("tomos") / "t1.mrc", v, voxel_size_a=10.0)


def _opts(model, out, fmt, **kw):
    return BatchOptions(model=str(model), out_dir=str(out), fmt=fmt, threshold={"proteasome": 0.0, "ribosome": 0.0},
                        K=K, device="cpu", **kw)


def _run(model, tomogram, out, fmt, skip_existing=False, **kw):
    opts = _opts(model, out, fmt, **kw)
    [result] = run_generator(run_batch([DetectJob("t1", str(tomogram))], opts, skip_existing=skip_existing))
    assert result.status in ("ok", "skipped"), result.error
    return result, opts


def _names(folder):
    return sorted(p.name for p in folder.iterdir())


def test_csv_one_file_with_a_class_column_and_a_heatmap_per_class(model, tomogram, tmp_path):
    result, opts = _run(model, tomogram, tmp_path, "csv")
    assert _names(tmp_path) == ["t1_picks.csv", "t1_proteasome_heatmap.mrc", "t1_ribosome_heatmap.mrc"]
    assert list(result.outputs) == ["picks", "heatmap:proteasome", "heatmap:ribosome"]
    ps = read_points(tmp_path / "t1_picks.csv")
    per_class = {c: int((ps.features["class"] == c).sum()) for c in CLASSES}
    assert per_class == {c: result.classes[c]["picks"] for c in CLASSES}
    assert sum(per_class.values()) == result.picks and min(per_class.values()) > 0
    # the positions and scores are those of the detection itself, class by class
    tomo = open_tomogram(tomogram)
    found = run_generator(detect_classes(load_model(model), tomo.data, DetectConfig(threshold={c: 0.0 for c in CLASSES},
                                                                                      K=K), voxel_size_a=10.0,
                                         device="cpu"))
    for c in CLASSES:
        sel = (ps.features["class"] == c).to_numpy()
        np.testing.assert_allclose(ps.zyx[sel], found[c].zyx, atol=1e-3)
        np.testing.assert_allclose(ps.features["score"][sel], found[c].scores, rtol=1e-5)
        heat = open_tomogram(tmp_path / f"t1_{c}_heatmap.mrc")
        assert heat.data.shape == found[c].heatmap.shape
        np.testing.assert_allclose(np.asarray(heat.data), found[c].heatmap, atol=1e-6)
    assert not np.allclose(np.asarray(open_tomogram(tmp_path / "t1_proteasome_heatmap.mrc").data),
                           np.asarray(open_tomogram(tmp_path / "t1_ribosome_heatmap.mrc").data))


def test_star_numbers_and_names_the_classes(model, tomogram, tmp_path):
    result, _ = _run(model, tomogram, tmp_path, "star", heatmap=False)
    assert _names(tmp_path) == ["t1_picks.star"]
    df = starfile.read(tmp_path / "t1_picks.star")
    assert set(df["rlnTomoName"]) == {"t1"}
    for number, c in enumerate(CLASSES, start=1):
        rows = df[df["cetpickClassName"] == c]
        assert len(rows) == result.classes[c]["picks"] and set(rows["rlnClassNumber"]) <= {number}
    ps = read_points(tmp_path / "t1_picks.star")
    assert set(ps.features["class"]) <= set(CLASSES) and len(ps) == result.picks


def test_mod_has_one_named_object_per_class_in_the_model_colours(model, tomogram, tmp_path):
    result, _ = _run(model, tomogram, tmp_path, "mod", heatmap=False)
    assert _names(tmp_path) == ["t1_picks.mod"]
    mod = imodmodel.ImodModel.from_file(tmp_path / "t1_picks.mod")
    assert [o.header.name for o in mod.objects] == CLASSES
    assert [sum(len(c.points) for c in o.contours) for o in mod.objects] == [result.classes[c]["picks"]
                                                                             for c in CLASSES]
    assert mod.objects[0].color == pytest.approx((1.0, 0.0, 0.0))  # the class's colour, "#ff0000"
    # none given: the class's default colour from the palette
    assert mod.objects[1].color == pytest.approx(hex_to_rgb(class_colour(1)), abs=1e-6)
    ps = read_points(tmp_path / "t1_picks.mod")
    assert sorted(set(ps.features["class"])) == sorted(c for c in CLASSES if result.classes[c]["picks"])


@pytest.mark.parametrize("fmt, ext", [("imod", ".txt"), ("cetpick", ".coords")])
def test_one_class_formats_write_a_file_per_class(model, tomogram, tmp_path, fmt, ext):
    result, opts = _run(model, tomogram, tmp_path, fmt)
    assert _names(tmp_path) == sorted([f"t1_{c}_picks{ext}" for c in CLASSES]
                                      + [f"t1_{c}_heatmap.mrc" for c in CLASSES])
    assert list(result.outputs) == [f"picks:{c}" for c in CLASSES] + [f"heatmap:{c}" for c in CLASSES]
    for c in CLASSES:
        assert len(read_points(tmp_path / f"t1_{c}_picks{ext}").zyx) == result.classes[c]["picks"]


def test_skip_existing_needs_every_file_of_every_class(model, tomogram, tmp_path):
    first, opts = _run(model, tomogram, tmp_path, "imod")
    listed = expected_outputs(DetectJob("t1", str(tomogram)), opts)
    assert sorted(p.name for p in listed.values()) == _names(tmp_path)
    again, _ = _run(model, tomogram, tmp_path, "imod", skip_existing=True)
    assert again.status == "skipped" and again.outputs == first.outputs
    (tmp_path / "t1_ribosome_picks.txt").unlink()  # one class's picks missing: the tomogram is run again
    third, _ = _run(model, tomogram, tmp_path, "imod", skip_existing=True)
    assert third.status == "ok" and (tmp_path / "t1_ribosome_picks.txt").is_file()
    assert not list(tmp_path.glob(".*"))


def test_json_record_has_per_class_figures(model, tomogram, tmp_path):
    result, _ = _run(model, tomogram, tmp_path, "csv", heatmap=False)
    d = json.loads(json.dumps(result.to_dict()))
    assert d["tomogram"] == "t1" and d["status"] == "ok"
    assert list(d["classes"]) == CLASSES
    for c in CLASSES:
        fig = d["classes"][c]
        assert set(fig) == {"picks", "threshold", "threshold_source", "expected", "profile_moved", "profile_raised",
                            "profile_gain"}
        assert fig["threshold"] == 0.0 and fig["threshold_source"] == "given"
    assert d["picks"] == sum(d["classes"][c]["picks"] for c in CLASSES)
    assert d["threshold"] is None
    # a model of one class keeps its record as it was: no "classes"
    one = JobResult("t", "t.mrc", "ok", picks=3, threshold=0.5).to_dict()
    assert "classes" not in one and list(one)[:6] == ["tomogram", "source", "status", "picks", "threshold",
                                                      "threshold_source"]


def test_copick_one_picks_set_per_class(model, tmp_path):
    copick = pytest.importorskip("copick")
    from copick.models import PickableObject

    v, _ = planted_volume(shape=(32, 64, 64), n=12, seed=5)

    def project(folder, objects):
        cfg = folder / "copick.json"
        root = copick.new_config(str(cfg), overlay_root=str(folder / "overlay"), pickable_objects=[
            PickableObject(name=n, is_particle=True, label=i + 1, radius=40.0) for i, n in enumerate(objects)])
        root.new_run("TS_1").new_voxel_spacing(10.0).new_tomogram("wbp").from_numpy(v)
        return cfg

    def opts(cfg):
        return BatchOptions(model=str(model), copick_config=str(cfg), voxel_spacing_a=10.0, tomo_type="wbp",
                            threshold=0.0, K=K, device="cpu")

    # a class without its copick object: one error before any tomogram is read
    lacking = project(tmp_path / "lacking", ["proteasome"])
    with pytest.raises(CetpickError, match="no pickable object 'ribosome'"):
        run_generator(run_batch([DetectJob("TS_1", run="TS_1")], opts(lacking)))

    cfg = project(tmp_path / "full", CLASSES)
    [r] = run_generator(run_batch([DetectJob("TS_1", run="TS_1")], opts(cfg)))
    assert r.status == "ok", r.error
    assert list(r.outputs) == [f"picks:{c}" for c in CLASSES]
    root = copick.from_file(str(cfg))
    for c in CLASSES:
        [picks] = root.get_run("TS_1").get_picks(object_name=c, user_id="cetpick", session_id="0")
        assert len(picks.points) == r.classes[c]["picks"]
    [again] = run_generator(run_batch([DetectJob("TS_1", run="TS_1")], opts(cfg), skip_existing=True))
    assert again.status == "skipped"


def test_dask_writes_what_the_local_run_writes(model, tomogram, tmp_path, monkeypatch):
    import logging

    distributed = pytest.importorskip("distributed")
    # a library imported earlier in the session (copick) may print the scheduler's records
    monkeypatch.setattr(logging.getLogger(), "handlers", [])
    local, _ = _run(model, tomogram, tmp_path / "local", "star")
    opts = _opts(model, tmp_path / "dask", "star")
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None) as cl:
        [remote] = run_generator(run_batch([DetectJob("t1", str(tomogram))], opts, dask=cl.scheduler_address))
    assert remote.status == "ok", remote.error
    assert remote.classes == local.classes
    assert _names(tmp_path / "dask") == _names(tmp_path / "local")
    a, b = read_points(tmp_path / "local" / "t1_picks.star"), read_points(tmp_path / "dask" / "t1_picks.star")
    np.testing.assert_allclose(b.zyx, a.zyx, atol=1e-3)
    assert b.features["class"].tolist() == a.features["class"].tolist()
