"""A model applied to the next tomogram in the panel: each tomogram's detection status is its
own, Improve learns from every open tomogram and detects again wherever the old model had,
a model of several classes continues on one class's decisions, and picks of another model
say so (status, table, export)."""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("qtpy")
pytest.importorskip("napari")

from _gui import META_KEY, meta, tiny, wait_idle  # noqa: E402

pytestmark = pytest.mark.gui


def _add_second(viewer, sim):
    return viewer.add_image(sim.volume[:, :64, :96].copy(), name="second",
                            metadata={META_KEY: meta(sim, file_shape=None, tomogram_name="second")})


def _capture_improve(monkeypatch) -> list:
    """The inputs each Improve hands the engine (the real round still runs)."""
    from napari_cetpick.widgets import _improve

    seen, real = [], _improve.improve_job

    def capturing(init, volumes, labels, negatives, *args, **kwargs):
        seen.append({"volumes": list(volumes), "labels": list(labels), "negatives": negatives})
        return (yield from real(init, volumes, labels, negatives, *args, **kwargs))

    monkeypatch.setattr(_improve, "improve_job", capturing)
    return seen


def _detect_all(qtbot, panel) -> None:
    panel.detect._detect_all_check.value = True
    panel.detect._on_detect_clicked()
    wait_idle(qtbot, panel)


def test_the_next_tomogram_has_its_own_status_and_improve_learns_from_every_tomogram(
        viewer, panel, qtbot, sim, notes, monkeypatch):
    state = panel.state
    tiny(panel, steps=2)
    panel.train._on_train_clicked()
    wait_idle(qtbot, panel)
    first_model = state.checkpoint
    sim_layer, second = viewer.layers["sim"], _add_second(viewer, sim)
    # the canvas shows the tomogram the panel works on, not the one opened over it
    assert state.current.layer is sim_layer and sim_layer.visible and not second.visible
    assert "second is open, hidden: the panel works on sim" in notes()[-1]
    _detect_all(qtbot, panel)
    first, other = state.record(sim_layer), state.record(second)
    assert first.result is not None and other.result is not None
    status = panel.detect._detect_status_label
    # each tomogram's status is its own: its name, its candidates, how its threshold was chosen
    for rec in (other, first, other):
        panel._select_tomogram(rec.layer)
        assert rec.layer.visible and not (first if rec is other else other).layer.visible
        assert status.value.startswith(f"{rec.name}: {len(rec.result.cand_scores)} candidate peaks")
        assert f"threshold {rec.result.model_threshold:.3f} from {rec.result.threshold_source}" in status.value
        assert panel.detect._threshold_slider.value == pytest.approx(rec.result.threshold, abs=1e-3)
        assert panel.detect._threshold_slider.enabled
    # nothing to train on in the selected tomogram: the message names it and where labels are
    panel.train._all_tomograms_check.value = False
    panel.train._on_train_clicked()
    assert not panel._busy
    assert "No labels in second, the selected tomogram" in notes()[-1] and "sim has labels" in notes()[-1]
    assert panel.train._plan_label.value == f"Plan: {notes()[-1]}"
    # a review in the second tomogram, then Improve: every tomogram's clicks, both detected again
    seen = _capture_improve(monkeypatch)
    assert panel.review.start()
    panel.review.reject()
    n_negatives = other.count("negatives")
    assert n_negatives == 1
    assert panel.improve.improve()
    assert "in 2 tomograms" in panel.improve._improve_status_label.value
    wait_idle(qtbot, panel)
    assert len(seen) == 1 and len(seen[0]["volumes"]) == 2
    by_shape = {tuple(v.shape): (lab, neg) for v, lab, neg in zip(seen[0]["volumes"], seen[0]["labels"],
                                                                   seen[0]["negatives"])}
    labels_sim, _ = by_shape[tuple(sim.volume.shape)]
    labels_second, negatives_second = by_shape[tuple(second.data.shape)]
    assert len(labels_sim) == len(sim.labels) and len(labels_second) == 0 and len(negatives_second) == 1
    assert state.checkpoint is not first_model
    for rec in (first, other):
        assert rec.result is not None and rec.track().model is state.checkpoint
        assert not state.from_other_model(rec)
    assert "Detected again in sim too" in panel.improve._improve_status_label.value
    assert all("other model" not in row[-1] for row in panel.tomograms.rows())
    # the review's ring stays with the tomogram reviewed
    assert len(panel.review._cursor.data) == 1
    panel._select_tomogram(sim_layer)
    assert len(panel.review._cursor.data) == 0
    # back to the first model: every pick is now another model's, and Train's status says which model is current
    panel.train._on_undo_model_clicked()
    assert state.checkpoint is first_model
    assert panel.train._train_status_label.value.startswith(f"Current model: {first_model.info['steps']} steps")
    assert all(row[-1].endswith("(other model)") for row in panel.tomograms.rows())


def test_a_new_model_marks_the_picks_of_the_old_and_a_model_of_two_classes_continues(
        viewer, panel, qtbot, sim, notes, monkeypatch, tmp_path):
    state = panel.state
    tiny(panel, steps=2)
    panel.train._on_train_clicked()
    wait_idle(qtbot, panel)
    sim_layer = viewer.layers["sim"]
    panel.detect._on_detect_clicked()
    wait_idle(qtbot, panel)
    assert "sim heatmap" in viewer.layers and "sim picks" in viewer.layers
    # a second class, and one model of both
    assert panel.classes.add_class("shell")
    panel.data._diameter_unit_combo.value = "voxels"
    panel.data._diameter_spin.value = 12.0
    panel.data._on_new_labels_clicked()
    rec = state.current
    rec.labels.add(np.asarray(sim.particles["shell"], float))
    panel.train._on_train_clicked()
    wait_idle(qtbot, panel)
    assert state.checkpoint.class_names == ["proteasome", "shell"]
    prot = rec.view("proteasome")
    # the proteasome picks came from the first model: the status, the table and an export say so
    panel.classes._class_combo.value = "proteasome"
    assert state.from_other_model(prot)
    assert "From another model" in panel.detect._detect_status_label.value
    assert panel.tomograms.rows()[0][-1].endswith("(other model)")
    assert panel.export.export(tmp_path / "old.txt") is not None
    assert "another model" in notes()[-1]
    (tmp_path / "all").mkdir()
    written = panel.export.export_all(tmp_path / "all", what="picks")
    assert [p.name for p in written] == ["sim_proteasome_picks.txt"]
    assert "No picks in: sim (shell)" in notes()[-1] and "The picks of sim (proteasome) came from another" \
        in notes()[-1]
    assert panel.export.export_all(tmp_path / "all", what="negatives") == []
    assert "No tomogram has negatives to export" in notes()[-1]
    # the new model's detection: one heatmap and one picks layer per class, the old ones renamed, none left over
    panel.detect._on_detect_clicked()
    wait_idle(qtbot, panel)
    names = [lay.name for lay in viewer.layers]
    assert "sim heatmap" not in names and "sim picks" not in names
    for cls in ("proteasome", "shell"):
        assert names.count(f"sim heatmap {cls}") == 1 and names.count(f"sim picks {cls}") == 1
        assert rec.view(cls).heatmap is viewer.layers[f"sim heatmap {cls}"]
        assert not state.from_other_model(rec.view(cls))
    # a second tomogram with a proteasome decision only: Improve continues both classes, the
    # shell's labels coming from the first tomogram
    second = _add_second(viewer, sim)
    panel._select_tomogram(second)
    panel.detect._detect_all_check.value = False
    panel.detect._on_detect_clicked()
    wait_idle(qtbot, panel)
    assert state.current.layer is second and state.active_class == "proteasome"
    assert state.current.result is not None
    seen = _capture_improve(monkeypatch)
    assert panel.review.start()
    panel.review.reject()
    assert panel.improve.improve()
    wait_idle(qtbot, panel)
    assert state.checkpoint.class_names == ["proteasome", "shell"]
    assert all(isinstance(lab, dict) and set(lab) == {"proteasome", "shell"} for lab in seen[0]["labels"])
    assert sum(len(lab["shell"]) for lab in seen[0]["labels"]) == len(sim.particles["shell"])
    # without any label of one of the model's classes, Improve says which and starts nothing
    panel._select_tomogram(sim_layer)
    shells = rec.view("shell").labels
    shells.selected_data = set(range(len(shells.data)))
    shells.remove_selected()
    model = state.checkpoint
    assert not panel.improve.improve()
    assert not panel._busy and state.checkpoint is model
    assert "'shell' has none in any open tomogram" in notes()[-1]


def test_a_hidden_tomograms_picks_can_drop_to_none(viewer):
    """Another tomogram detected again (its layers hidden) may keep no pick: napari's stale view
    of the hidden layer's points must not break the update."""
    from napari_cetpick.widgets import _layers as L

    image = viewer.layers["sim"]
    layer = L.show_picks(viewer, image, np.array([[3.0, 10, 10], [3.0, 20, 20], [4.0, 30, 30]]),
                         np.array([0.6, 0.7, 0.9]), 5.0, 0.5)
    viewer.dims.set_point(0, 3)
    layer.visible = False
    L.set_picks(layer, np.zeros((0, 3)), np.zeros(0), 0.5)
    assert len(layer.data) == 0 and len(layer.features) == 0
    L.set_picks(layer, np.array([[5.0, 40, 40]]), np.array([0.8]), 0.5)
    layer.visible = True
    assert np.allclose(layer.data, [[5.0, 40, 40]]) and list(layer.features["score"]) == [0.8]
