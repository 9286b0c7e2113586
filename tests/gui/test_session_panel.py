"""One session over several tomograms in the panel: each keeps its own labels, regions and
evaluation; closing one removes its layers only; autosave gives everything back after the
viewer is closed; guards on the diameter and on too few labels; the previous model stays."""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("qtpy")
pytest.importorskip("napari")

from _gui import META_KEY, meta, open_panel, rows, tiny, wait_idle  # noqa: E402

from napari_cetpick._napari.session_file import read_session  # noqa: E402

pytestmark = pytest.mark.gui

LABELS = np.array([[10.0, 20.0, 30.0], [12.0, 60.0, 70.0], [20.0, 100.0, 40.0]])
NEGATIVES = np.array([[5.0, 5.0, 5.0], [25.0, 110.0, 110.0]])
SHELLS = np.array([[8.0, 90.0, 20.0], [22.0, 30.0, 100.0]])


def _rectangle(y0, x0, y1, x1, z=5.0) -> list:
    return [{"type": "rectangle", "vertices": [[z, y0, x0], [z, y0, x1], [z, y1, x1], [z, y1, x0]]}]


def _add_second(viewer, sim):
    layer = viewer.add_image(sim.volume[:, :64, :96].copy(), name="second",
                             metadata={META_KEY: meta(sim, file_shape=None, tomogram_name="second")})
    return layer


def test_autosave_gives_everything_back_after_the_viewer_is_closed(make_napari_viewer, sim, qtbot):
    viewer = make_napari_viewer()
    viewer.add_image(sim.volume, name="sim", metadata={META_KEY: meta(sim)})
    panel = open_panel(viewer)
    tiny(panel)
    rec = panel.state.current
    assert rec.name == "sim" and rec.labels is None  # no layer of the tomogram's yet
    panel.data._on_new_labels_clicked()
    rec.labels.add(LABELS)
    panel.data._on_new_negatives_clicked()
    rec.negatives.add(NEGATIVES)
    panel.mask.add_shapes_layer(rec, _rectangle(0, 0, 30, 40), z_range=(2, 20))
    rec.edits.remove([[7.0, 7.0, 7.0]])
    # a second class with its own size and labels
    assert panel.classes.add_class("shell")
    panel.data._diameter_unit_combo.value = "voxels"
    panel.data._diameter_spin.value = 12.0
    panel.data._on_new_labels_clicked()
    rec.labels.add(SHELLS)
    panel.classes._class_combo.value = "particle"
    path = panel.autosave.path(rec, for_writing=True)
    # closing the tomogram saves it and takes its layers with it, nothing else
    viewer.add_points(np.zeros((0, 3)), ndim=3, name="unrelated")
    viewer.layers.remove("sim")
    qtbot.waitUntil(lambda: [lay.name for lay in viewer.layers] == ["unrelated"], timeout=5000)
    saved = read_session(path, sim.volume.shape)
    assert rows(saved.labels) == rows(np.vstack([LABELS, SHELLS])) and rows(saved.negatives) == rows(NEGATIVES)
    assert len(saved.ignore) == 1 and saved.ignore_z_range == (2, 20) and len(saved.classes[0].removed) == 1
    viewer.close()

    viewer = make_napari_viewer()
    viewer.add_image(sim.volume, name="sim", metadata={META_KEY: meta(sim)})
    panel = open_panel(viewer)
    before = path.read_text()
    autosave = panel.autosave
    assert not autosave._restore_row.native.isHidden()
    assert "5 labels (particle, shell), 2 negatives, 1 ignore region and 1 decision" in autosave._restore_label.value
    # the user clicks before choosing: the saved session is neither overwritten nor deleted
    panel.data._on_new_labels_clicked()
    rec = panel.state.current
    rec.labels.add([[15.0, 15.0, 15.0], list(LABELS[0])])
    autosave.save_now()
    assert path.read_text() == before
    assert autosave.restore() == 2 + 2 + 2  # two labels (LABELS[0] is there already), two negatives, two shells
    assert rows(rec.labels.data) == rows(np.vstack([LABELS, [[15.0, 15.0, 15.0]]]))
    assert rows(rec.negatives.data) == rows(NEGATIVES)
    assert rec.ignore is not None and len(rec.ignore.data) == 1 and rec.ignore_z_range == (2, 20)
    assert panel.mask.mask_for(rec) is not None
    assert len(rec.edits.removed) == 1
    # the other class comes back with its size, in its own layer
    shell = panel.state.particle_class("shell")
    assert (shell.diameter, shell.unit) == (12.0, "voxels")
    assert rows(rec.view("shell").labels.data) == rows(SHELLS) and rec.view("shell").labels is not rec.labels
    assert autosave._restore_row.native.isHidden()
    # and from now on autosave writes the merged session
    assert len(read_session(path).labels) == 4 + 2


def test_dismiss_keeps_the_saved_session_aside(viewer, panel, sim, qtbot):
    rec = panel.state.current
    panel.data._on_new_negatives_clicked()
    rec.negatives.add(NEGATIVES)
    path = panel.autosave.save_now()[0]
    viewer.layers.remove("sim")
    qtbot.waitUntil(lambda: "labels" not in viewer.layers, timeout=5000)
    viewer.add_image(sim.volume, name="sim", metadata={META_KEY: meta(sim)})
    assert not panel.autosave._restore_row.native.isHidden()
    moved = panel.autosave.dismiss()
    assert moved.name == "sim.cetpick-session.previous.json"
    assert rows(read_session(moved).negatives) == rows(NEGATIVES)
    assert panel.autosave._restore_row.native.isHidden()


def test_two_tomograms_keep_their_own_labels_regions_and_truth(viewer, panel, qtbot, checkpoint, sim, tmp_path,
                                                              notes):
    from napari_cetpick.io import write_points

    sim_rec = panel.state.current
    sim_labels = np.asarray(sim_rec.labels.data).copy()
    panel.mask.add_shapes_layer(sim_rec, _rectangle(0, 0, 40, 40), z_range=(0, 0))
    assert panel.evaluate._truth_combo.value is viewer.layers["truth: proteasome"]
    second = _add_second(viewer, sim)
    panel._select_tomogram(second)
    rec = panel.state.current
    assert rec.name == "second"
    # tomograms share napari's world: the selected one shows, the other one and its layers hide
    assert second.visible and not viewer.layers["sim"].visible and not sim_rec.labels.visible
    assert not sim_rec.ignore.visible
    # the sample's labels, regions and truth are not the second tomogram's
    assert rec.labels is None and panel.data._labels_combo.value is None
    assert not any(c is sim_rec.labels for c in panel.data._labels_combo.choices)  # not even offered
    assert panel.mask._layer_combo.value is None and panel.mask.mask_for(rec) is None
    assert panel.evaluate._truth_combo.value is None
    path = write_points(tmp_path / "second.csv", LABELS[:, :] * [1, 0.5, 0.5], fmt="csv", tomogram_name="second",
                        shape_zyx=rec.shape)
    layer = panel.importer.import_coordinates(path, "labels")
    assert layer is rec.labels and layer.name == "second labels" and len(layer.data) == 3
    np.testing.assert_array_equal(sim_rec.labels.data, sim_labels)
    # back on the sample, its own things come back
    panel._select_tomogram(viewer.layers["sim"])
    assert viewer.layers["sim"].visible and sim_rec.labels.visible and not second.visible
    assert panel.mask._layer_combo.value is sim_rec.ignore and panel.mask.mask_for(sim_rec) is not None
    assert panel.evaluate._truth_combo.value is viewer.layers["truth: proteasome"]
    # train on both, detect in both, then close one
    tiny(panel, steps=2)
    panel.train._all_tomograms_check.value = True
    panel.train._on_train_clicked()
    assert panel.runner.uses == {sim_rec.layer.unique_id, rec.layer.unique_id}
    wait_idle(qtbot, panel)
    assert panel.state.checkpoint is not None
    panel.detect._detect_all_check.value = True
    panel.detect._on_detect_clicked()
    wait_idle(qtbot, panel)
    assert rec.picks is not None and sim_rec.picks is not None
    active = viewer.layers.selection.active
    assert active is None or active.visible  # never a hidden layer of the other tomogram
    kept = {sim_rec.layer, sim_rec.labels, sim_rec.picks, sim_rec.heatmap, sim_rec.ignore,
            viewer.layers["truth: proteasome"]}
    viewer.layers.remove("second")
    qtbot.waitUntil(lambda: len(viewer.layers) == len(kept), timeout=5000)
    assert {id(lay) for lay in viewer.layers} == {id(lay) for lay in kept}
    assert panel.state.current is not None and panel.state.current.name == "sim"


def test_diameter_and_too_few_labels_are_refused(viewer, panel, sim, notes):
    panel.data._diameter_spin.value = 0.0
    assert "it is 0" in panel.train._plan_label.value
    panel.train._on_train_clicked()
    assert not panel._busy and "it is 0" in notes()[-1]
    panel.data._diameter_unit_combo.value = "voxels"
    panel.data._diameter_spin.value = 2.0
    panel.train._on_train_clicked()
    assert not panel._busy and "too small" in notes()[-1]
    panel.data._diameter_spin.value = 15.0
    _add_second(viewer, sim)
    panel._select_tomogram(viewer.layers["second"])
    panel.data._on_new_labels_clicked()
    panel.state.current.labels.add([[10.0, 30.0, 30.0]])
    assert "Only 1 label" in panel.train._plan_label.value
    panel.train._on_train_clicked()
    assert not panel._busy and "Only 1 label" in notes()[-1]
    panel.train._expected_particles_spin.value = 20
    assert panel.train._plan_label.value.startswith("Plan: ") and "Only" not in panel.train._plan_label.value


def test_a_new_model_keeps_the_previous_and_closing_stops_training(viewer, panel, qtbot, checkpoint, notes):
    tiny(panel, steps=2)
    panel.state.set_checkpoint(checkpoint)
    assert not panel.train._undo_model_button.enabled
    panel.train._on_train_clicked()
    wait_idle(qtbot, panel)
    trained = panel.state.checkpoint
    assert trained is not checkpoint and panel.state.previous_checkpoint is checkpoint
    assert panel.train._undo_model_button.enabled
    panel.train._on_undo_model_clicked()
    assert panel.state.checkpoint is checkpoint and panel.state.previous_checkpoint is trained
    assert "Current model" in panel.train._train_status_label.value
    # closing the tomogram while it trains stops the training and says so
    tiny(panel, steps=5000)
    panel.train._on_train_clicked()
    assert panel._busy
    viewer.layers.remove("sim")
    assert any("sim was closed: Training stopped" in n for n in notes())
    wait_idle(qtbot, panel)


def test_a_plain_detect_keeps_the_threshold_the_user_chose(viewer, panel, qtbot, checkpoint):
    panel.state.set_checkpoint(checkpoint)
    panel.detect._on_detect_clicked()
    wait_idle(qtbot, panel)
    rec = panel.state.current
    chosen = round(float(np.clip(rec.result.model_threshold + 0.01, 0.001, 0.999)), 3)
    panel.detect._threshold_slider.value = chosen
    panel.detect._on_detect_clicked()
    wait_idle(qtbot, panel)
    assert rec.result.threshold == pytest.approx(chosen, abs=1e-6)
    assert panel.detect._threshold_slider.value == pytest.approx(chosen, abs=1e-3)
    assert panel.state.snapshot(rec).of(rec.active).threshold == pytest.approx(chosen, abs=1e-6)
    # no pick at the threshold: Review says why instead of starting an empty review
    panel.detect._threshold_slider.value = 1.0
    assert len(rec.picks.data) == 0 and not panel.review.start()


# ---------------------------------------------------------------------------- classes
def test_a_model_of_several_classes_loads_and_detects_every_class(viewer, panel, qtbot, sim, tmp_path):
    from napari_cetpick.config import ClassSpec, TrainConfig
    from napari_cetpick.train import Trainer
    from napari_cetpick.utils import run_generator

    cfg = TrainConfig(classes=[ClassSpec("a", bbox=8), ClassSpec("b", bbox=6)], max_steps=1, crop_xy=32, crop_z=16,
                      batch_size=1, bin=1)
    tr = Trainer([sim.volume], [{"a": sim.labels[:2], "b": sim.labels[2:4]}], cfg, voxel_size_a=10.0, device="cpu")
    run_generator(tr.steps(calibrate=False))
    path = tr.checkpoint(calibrate=False).save(tmp_path / "two.ckpt")
    assert panel.train.load_model(path) is not None
    state = panel.state
    assert state.class_names == ["proteasome", "a", "b"]  # the sample's class, then the model's
    assert (state.particle_class("a").diameter, state.particle_class("a").unit) == (80.0, "Å")  # 8 voxels of 10 Å
    panel.detect._on_detect_clicked()
    wait_idle(qtbot, panel)
    rec = state.current
    for name in ("a", "b"):
        view = rec.view(name)
        assert view.result is not None and view.result.class_name == name
        assert view.picks is viewer.layers[f"sim picks {name}"] and view.heatmap is viewer.layers[f"sim heatmap {name}"]
        assert view.picks.metadata[META_KEY]["class"] == name
        if len(view.picks.data):  # each class's picks filled faintly with its colour
            np.testing.assert_allclose(view.picks.face_color[:, 3], 0.12)
        assert len(view.picks.data) == len(view.result.zyx)
    # the panel's own class had no channel: no picks for it
    assert rec.result is None
    panel.classes._class_combo.value = "b"
    assert state.active_class == "b" and rec.picks is viewer.layers["sim picks b"]
    assert panel.detect._threshold_slider.value == pytest.approx(rec.result.threshold, abs=1e-3)
    out = panel.export.export(tmp_path / "b.csv", "CSV with scores (.csv)")
    import pandas as pd

    assert len(pd.read_csv(out)) == len(rec.picks.data)


def test_two_classes_train_one_model_and_review_moves_a_pick(viewer, panel, qtbot, sim, notes):
    state = panel.state
    assert state.class_names == ["proteasome"]  # named after the labels the panel adopted
    first = state.current.labels
    assert panel.classes.add_class("shell")
    rec = state.current
    assert state.active_class == "shell" and rec.labels is None
    panel.data._diameter_unit_combo.value = "voxels"
    panel.data._diameter_spin.value = 12.0
    panel.data._on_new_labels_clicked()
    assert rec.labels.name == "sim shell labels" and rec.labels.metadata[META_KEY]["label_class"] == "shell"
    shells = np.asarray(sim.particles["shell"], float)
    rec.labels.add(shells)
    # the other class keeps its layer and size
    assert rec.view("proteasome").labels is first and state.particle_class("proteasome").unit == "Å"
    tiny(panel, steps=2)
    panel.data._diameter_unit_combo.value = "voxels"
    panel.data._diameter_spin.value = 12.0
    assert "proteasome" in panel.train._plan_label.value and "shell" in panel.train._plan_label.value
    panel.train._on_train_clicked()
    wait_idle(qtbot, panel)
    ckpt = state.checkpoint
    assert ckpt.class_names == ["proteasome", "shell"]
    panel.detect._threshold_slider.value = 0.0  # every candidate of the shell class
    panel.detect._on_detect_clicked()
    wait_idle(qtbot, panel)
    assert rec.picks is not None and rec.view("proteasome").picks is not None
    # a pick of the shell class moved to the proteasome class: a shell negative, a proteasome label
    review = panel.review
    assert review.start()
    zyx = review._queue[review._index].copy()
    n_prot = len(rec.view("proteasome").labels.data)
    # an earlier "not a proteasome" at the same place gives way to the move (the later decision)
    prot_negs = review._decisions.layer_for(rec.view("proteasome"), "negatives")
    prot_negs.add(zyx[None])
    review.move_to("proteasome")
    assert len(rec.view("proteasome").labels.data) == n_prot + 1
    assert rows(zyx)[0] in rows(rec.negatives.data)
    assert rows(zyx)[0] not in rows(rec.picks.data)
    assert len(prot_negs.data) == 0
    # a pick of the other class now, as an accepted one: an export of picks keeps the particle
    assert rows(zyx)[0] in rows(rec.view("proteasome").picks.data)
    review.undo()  # all of it back: the proteasome negative, the shell pick
    assert len(rec.view("proteasome").labels.data) == n_prot and rows(zyx)[0] in rows(prot_negs.data)
    assert rows(zyx)[0] not in rows(rec.negatives.data)
    assert rows(zyx)[0] not in rows(rec.view("proteasome").picks.data)
    assert rows(zyx)[0] in rows(rec.picks.data)
    assert notes()[-1] == "Undone: the move to another class."


def test_closing_a_tomogram_takes_its_labels_with_it_even_if_another_is_open(viewer, panel, sim, qtbot, notes):
    second = _add_second(viewer, sim)
    unrelated = viewer.add_points(np.zeros((0, 3)), ndim=3, name="unrelated")
    sim_labels = panel.state.current.labels
    assert sim_labels is viewer.layers["labels"]
    viewer.layers.remove("sim")
    qtbot.waitUntil(lambda: "labels" not in viewer.layers, timeout=5000)
    # every layer left, points too, is hidden and shown again (vispy on Mesa crashed drawing one
    # that was not) and ends shown
    hidden = []
    unrelated.events.visible.connect(lambda e: hidden.append(unrelated.visible))
    qtbot.waitUntil(lambda: hidden == [False, True], timeout=5000)
    assert second.visible and unrelated.visible
    viewer.layers.remove(unrelated)
    rec = panel.state.current
    assert rec is not None and rec.layer is second and rec.labels is None  # not the closed one's
    assert panel.tomograms.rows() == [("second", 0, 0, 0, "–")]
    # the sample opened again with its labels: they are its own, not the selected tomogram's
    viewer.add_image(sim.volume, name="sim", metadata={META_KEY: meta(sim)})
    again = viewer.add_points(sim.labels, ndim=3, name="labels", metadata={META_KEY: meta(sim, label_class="proteasome")})
    assert panel.state.current.layer is second and panel.state.current.labels is None
    panel._select_tomogram(viewer.layers["sim"])
    assert panel.state.current.labels is again
    # review without picks says so, once
    assert not panel.review.start()
    assert "run Detect" in notes()[-1] or "No picks" in notes()[-1]
