"""The panel's session model and session file, without Qt: a napari ``ViewerModel`` stands
in for the viewer (it has layers and events, no window)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from napari_cetpick._napari.layers import META_KEY
from napari_cetpick._napari.session_file import (
    ClassSession,
    SessionData,
    keep_previous,
    read_session,
    session_file_name,
    write_session,
)
from napari_cetpick.errors import CetpickError

SHAPE = (20, 64, 48)


def _data(**kw) -> SessionData:
    ribosome = ClassSession("ribosome", 250.0, "Å", "#ffd700", labels=np.array([[1.25, 2.5, 3.0], [10.0, 40.0, 30.5]]),
                            negatives=np.array([[4.0, 5.0, 6.0]]), kept=np.array([[7.0, 8.0, 9.0], [1.0, 1.0, 1.0]]),
                            kept_scores=np.array([0.875, np.nan]), removed=np.array([[3.0, 3.0, 3.0]]),
                            threshold=0.625, min_distance_vox=4.5)
    shell = ClassSession("shell", 12.0, "voxels", "#00ffff", labels=np.array([[2.0, 2.0, 2.0]]))
    base = dict(tomogram={"name": "t1", "path": None, "shape": list(SHAPE)}, classes=[ribosome, shell],
                ignore=[{"type": "rectangle", "vertices": [[5, 1, 1], [5, 1, 9], [5, 9, 9], [5, 9, 1]]}],
                ignore_z_range=(2, 12), model_path="/data/model.ckpt")
    base.update(kw)
    return SessionData(**base)


# ---------------------------------------------------------------------------- the file
def test_session_file_round_trip(tmp_path):
    path = tmp_path / session_file_name("t 1/a")
    assert path.name == "t_1_a.cetpick-session.json"
    write_session(path, _data())
    back = read_session(path, SHAPE)
    want = _data()
    assert [c.name for c in back.classes] == ["ribosome", "shell"]
    for got, exp in zip(back.classes, want.classes):
        for name in ("labels", "negatives", "kept", "removed", "kept_scores"):  # NaN (added by hand) survives
            np.testing.assert_array_equal(getattr(got, name), getattr(exp, name))
        assert (got.diameter, got.unit, got.colour, got.threshold, got.min_distance_vox) == \
            (exp.diameter, exp.unit, exp.colour, exp.threshold, exp.min_distance_vox)
    assert back.model_path == "/data/model.ckpt" and back.ignore == want.ignore and back.ignore_z_range == (2, 12)
    assert back.saved_at
    assert back.describe() == ("3 labels (ribosome, shell), 1 negative, 1 ignore region, 3 decisions and "
                               "threshold 0.625")
    json.loads(path.read_text())  # strict JSON (no NaN)
    assert "NaN" not in path.read_text()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]  # the temporary file was renamed


def test_session_file_refuses_another_tomogram_and_bad_files(tmp_path):
    path = write_session(tmp_path / "a.cetpick-session.json", _data())
    with pytest.raises(CetpickError, match="shape 20 × 64 × 48, not 20 × 64 × 50"):
        read_session(path, (20, 64, 50))
    bad = tmp_path / "bad.cetpick-session.json"
    bad.write_text("{ not json")
    with pytest.raises(CetpickError, match="not a readable session file"):
        read_session(bad)
    bad.write_text(json.dumps({"format": "something else"}))
    with pytest.raises(CetpickError, match="not a napari-cetpick session file"):
        read_session(bad)
    bad.write_text(json.dumps({"format": "cetpick-session", "version": 99}))
    with pytest.raises(CetpickError, match="newer"):
        read_session(bad)
    with pytest.raises(CetpickError, match="no such session file"):
        read_session(tmp_path / "missing.cetpick-session.json")


def test_a_failed_write_leaves_the_previous_file_whole(tmp_path, monkeypatch):
    path = write_session(tmp_path / "a.cetpick-session.json", _data())
    before = path.read_text()

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(json, "dump", broken)
    with pytest.raises(OSError):
        write_session(path, _data(classes=[]))
    assert path.read_text() == before
    assert [p.name for p in tmp_path.iterdir()] == [path.name]


def test_keep_previous_moves_aside_never_deletes(tmp_path):
    path = write_session(tmp_path / "a.cetpick-session.json", _data())
    moved = keep_previous(path)
    assert moved.name == "a.cetpick-session.previous.json" and not path.exists()
    np.testing.assert_array_equal(read_session(moved).labels, _data().labels)
    assert read_session(moved).of("shell").diameter == 12.0
    assert keep_previous(path) is None


def test_empty_session_and_what_a_restore_adds():
    empty = SessionData(tomogram={}, classes=[ClassSession("ribosome")])
    assert empty.is_empty() and empty.describe() == "nothing"
    assert not _data().is_empty()
    assert _data().adds_to(empty) and not empty.adds_to(_data())
    same_points = _data(ignore=[], classes=[ClassSession("ribosome", labels=_data().classes[0].labels)])
    assert not same_points.adds_to(_data())
    # the same points as another class are new to this one
    assert _data(ignore=[], classes=[ClassSession("shell", labels=_data().classes[0].labels)]).adds_to(_data())


# ---------------------------------------------------------------------------- the model
@pytest.fixture
def model():
    napari = pytest.importorskip("napari")
    from napari.components import ViewerModel

    from napari_cetpick._napari.session import PanelState

    viewer = ViewerModel()
    for name in ("t1", "t2"):
        viewer.add_image(np.zeros(SHAPE, np.float32), name=name, scale=(2, 2, 2) if name == "t2" else (1, 1, 1),
                         metadata={META_KEY: {"voxel_size_a": 10.0, "tomogram_name": name, "path": None}})
    assert napari
    return viewer, PanelState(viewer)


def _points(viewer, name, source, data=()):
    return viewer.add_points(np.asarray(data, float).reshape(-1, 3), ndim=3, name=name,
                             metadata={META_KEY: {"role": "labels", "source": source}})


def test_records_own_their_layers_and_nothing_else(model):
    viewer, state = model
    r1, r2 = state.record(viewer.layers["t1"]), state.record(viewer.layers["t2"])
    lab1 = _points(viewer, "labels", "t1", [[1, 2, 3]])
    lab2 = _points(viewer, "t2 labels", "t2")
    r1.labels, r2.labels = lab1, lab2
    truth = viewer.add_points(np.zeros((0, 3)), ndim=3, name="truth", metadata={META_KEY: {"tomogram_name": "t1"}})
    assert state.owned_layers(r1) == [lab1]
    assert state.owned_layers(r2) == [lab2]
    assert state.held_by_another(lab1, r2) and not state.held_by_another(lab1, r1)
    assert state.belongs_elsewhere(truth, r2) and not state.belongs_elsewhere(truth, r1)
    closed = []
    state.closed.connect(closed.append)
    state.set_current(viewer.layers["t1"])
    assert state.forget(viewer.layers["t1"]) is r1
    assert closed == [r1] and state.current is None and list(state.records.values()) == [r2]


def test_snapshot_holds_every_class(model):
    viewer, state = model
    rec = state.record(viewer.layers["t2"])  # scaled by 2: points are stored in its voxels
    rec.labels = viewer.add_points([[4.0, 8.0, 12.0]], ndim=3, name="l", scale=(1, 1, 1))
    rec.edits.keep([[1.0, 1.0, 1.0]], [0.9])
    rec.edits.remove([[2.0, 2.0, 2.0]])
    rec.restored = {"threshold": 0.7}
    state.add_class("shell", diameter=12.0, unit="voxels")
    assert rec.active == "shell" and rec.labels is None  # the record follows the active class
    rec.labels = viewer.add_points([[2.0, 2.0, 2.0]], ndim=3, name="s")
    data = state.snapshot(rec)
    first, shell = data.classes
    assert (first.name, shell.name, shell.diameter, shell.unit) == ("particle", "shell", 12.0, "voxels")
    np.testing.assert_allclose(first.labels, [[2.0, 4.0, 6.0]])
    np.testing.assert_allclose(shell.labels, [[1.0, 1.0, 1.0]])
    np.testing.assert_allclose(first.kept, [[1.0, 1.0, 1.0]])
    np.testing.assert_allclose(first.removed, [[2.0, 2.0, 2.0]])
    assert first.threshold == 0.7 and shell.threshold is None and data.tomogram["shape"] == list(SHAPE)
    assert state.classes_with_labels([rec]) == ["particle", "shell"]


def test_classes(model):
    viewer, state = model
    rec = state.record(viewer.layers["t1"])
    seen = []
    state.class_changed.connect(seen.append)
    state.set_diameter(250.0, "Å")
    ribo = state.add_class("ribosome")
    assert ribo.diameter == 250.0 and ribo.colour != state.classes[0].colour and seen == ["ribosome"]
    state.set_diameter(120.0, "Å")
    assert state.particle_class("particle").diameter == 250.0 and state.diameter == 120.0
    assert state.diameter_vox(rec) == 12.0 and state.diameter_vox(rec, "particle") == 25.0
    with pytest.raises(CetpickError, match="already"):
        state.add_class("ribosome")
    with pytest.raises(CetpickError, match="differs only in case"):
        state.add_class("Ribosome")
    with pytest.raises(CetpickError, match="not allowed"):
        state.add_class("two words")
    rec.labels = "L"
    state.rename_class("ribosome", "ribo80S")
    assert state.active_class == "ribo80S" and rec.active == "ribo80S" and rec.labels == "L"
    state.set_class("particle")
    assert rec.labels is None and seen == ["ribosome", "particle"]


def test_a_new_model_keeps_the_previous_one_for_undo(model):
    _, state = model
    seen = []
    state.checkpoint_changed.connect(seen.append)
    a, b = object(), object()
    state.set_checkpoint(a, path="/m/a.ckpt")
    assert state.previous_checkpoint is None and state.model_path == "/m/a.ckpt"
    state.set_checkpoint(b)
    assert state.previous_checkpoint is a and state.model_path is None
    assert state.undo_model()
    assert state.checkpoint is a and state.previous_checkpoint is b and state.model_path == "/m/a.ckpt"
    assert seen == [a, b, a]


@pytest.mark.parametrize("diameter, unit, vs, message", [
    (0.0, "Å", 10.0, "it is 0"), (-5.0, "voxels", 10.0, "it is 0"), (2.0, "voxels", 10.0, "too small"),
    (20.0, "Å", 10.0, "too small"), (150.0, "Å", None, "voxel size is unknown"), (3.0, "voxels", None, None),
    (150.0, "Å", 10.0, None)])
def test_diameter_guard(model, diameter, unit, vs, message):
    viewer, state = model
    rec = state.record(viewer.layers["t1"])
    viewer.layers["t1"].metadata[META_KEY]["voxel_size_a"] = vs
    state.set_diameter(diameter, unit)
    got = state.check_diameter(rec)
    assert (got is None) if message is None else (message in got)
