"""The correction loop in the panel under Xvfb: review keys, negatives, suggestions, ignore
regions, evaluation in a box, import round trips, several tomograms, autosave.

The panel is opened through Plugins (napari hands it a proxy of the viewer). Detection
runs a two-step model on a 32×128×128 simulated tomogram: these tests check the plumbing
and the numbers the panel shows, not the model.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("qtpy")
pytest.importorskip("napari")

from _gui import (  # noqa: E402,F401
    DIAMETER_A, META_KEY, TIMEOUT_MS, VOXEL_A, meta, open_panel, press, rows, tiny, wait_idle)
from napari_cetpick.config import TrainConfig  # noqa: E402
from napari_cetpick.detect import logit  # noqa: E402
from napari_cetpick.descriptors import MIN_PROFILE_LABELS  # noqa: E402

pytestmark = pytest.mark.gui


def _detect(qtbot, panel, checkpoint) -> None:
    panel.state.set_checkpoint(checkpoint)
    panel.detect._on_detect_clicked()
    qtbot.waitUntil(lambda: not panel._busy, timeout=TIMEOUT_MS)


FORMATS = ("IMOD text (.txt)", "IMOD model (.mod)", "RELION 4 STAR (.star, pixels)",
           "RELION 5 STAR (.star, centred Å)", "CSV with scores (.csv)")

# ---------------------------------------------------------------------------- review
def test_review_keys_move_labels_negatives_and_the_view(viewer, panel, qtbot, checkpoint, sim):
    _detect(qtbot, panel, checkpoint)
    rec = panel.state.current
    picks, labels = viewer.layers["sim picks"], viewer.layers["labels"]
    n_picks, n_labels = len(picks.data), len(labels.data)
    assert n_picks >= 3
    review = panel.review
    assert review.start()
    assert viewer.layers.selection.active is picks

    def centred_on(zyx):
        return (viewer.dims.point[0] == pytest.approx(zyx[0], abs=0.51)
                and np.allclose(viewer.camera.center[-2:], zyx[1:], atol=1e-3))

    # highest score first, the view on the pick
    order = np.argsort(-picks.features["score"].to_numpy(), kind="stable")
    first, second, third = (np.asarray(picks.data)[i].copy() for i in order[:3])
    assert centred_on(first) and "Pick 1 of" in review._position_label.value
    cursor = viewer.layers["sim review"]  # a ring around the pick under review
    assert rows(cursor.data) == rows(first) and viewer.layers.selection.active is picks
    press(viewer, "a")  # accept: joins the labels, stays a pick
    assert len(labels.data) == n_labels + 1 and rows(labels.data[-1]) == rows(first)
    assert len(picks.data) == n_picks
    assert centred_on(second)
    press(viewer, "r")  # reject: goes to a negatives layer, leaves the picks
    negatives = viewer.layers["sim negatives"]
    assert rec.negatives is negatives and rows(negatives.data) == rows(second)
    assert negatives.symbol[0] == "x" and negatives.size[0] == pytest.approx(DIAMETER_A / VOXEL_A)
    assert len(picks.data) == n_picks - 1 and rows(second)[0] not in rows(picks.data)
    assert centred_on(third)
    press(viewer, "p")
    assert centred_on(second) and "rejected" in review._position_label.value
    press(viewer, "n")
    assert centred_on(third)
    assert "negatives 1" in review._legend.value and "labels 5" in review._legend.value

    # moving the threshold keeps the decisions: the rejected pick stays out, the accepted one in
    panel.detect._threshold_slider.value = round(float(rec.result.cand_scores.min()), 3)
    assert rows(second)[0] not in rows(picks.data) and rows(first)[0] in rows(picks.data)
    panel.detect._threshold_slider.value = 0.999
    assert rows(first)[0] in rows(picks.data)  # accepted: kept above any threshold

    # undo, twice: the negative goes and the pick comes back, then the label goes
    panel.detect._threshold_slider.value = round(float(rec.result.cand_scores.min()), 3)
    press(viewer, "u")
    assert len(negatives.data) == 0 and rows(second)[0] in rows(picks.data)
    press(viewer, "u")
    assert len(labels.data) == n_labels and len(rec.edits) == 0


def test_hand_deleted_pick_stays_deleted(viewer, panel, qtbot, checkpoint):
    _detect(qtbot, panel, checkpoint)
    picks = viewer.layers["sim picks"]
    gone = np.asarray(picks.data)[0].copy()
    picks.selected_data = {0}
    picks.remove_selected()
    slider = panel.detect._threshold_slider
    slider.value = round(slider.value - 0.002, 3)
    assert rows(gone)[0] not in rows(picks.data)
    assert "1 rejected or deleted" in panel.detect._pick_count_label.value


def test_judged_picks_found_again_elsewhere_show_once(viewer, panel, qtbot, checkpoint):
    """A new detection (after Improve) finds the judged particles a voxel and a half away:
    the accepted one shows once, the rejected one stays away."""
    _detect(qtbot, panel, checkpoint)
    rec, review = panel.state.current, panel.review
    review.start()
    accepted = review._queue[0].copy()
    review.accept()
    rejected = review._queue[1].copy()
    review.reject()
    n = len(rec.picks.data)
    rec.result.cand_zyx = rec.result.cand_zyx + [0.0, 1.5, 0.0]
    panel.tracker.reselect(rec)
    picks = np.asarray(rec.picks.data)
    assert len(picks) == n
    assert np.sum(np.linalg.norm(picks - accepted, axis=1) < 3.0) == 1
    assert np.sum(np.linalg.norm(picks - rejected, axis=1) < 3.0) == 0


def test_profile_check_on_and_off(viewer, panel, qtbot, checkpoint, sim):
    """A model carrying its labels' profile model: Detect checks the picks against it by
    default (their profile_excess in the layer's features), not when the box is unticked; a
    model without one (its 4 labels are too few) detects as before."""
    from dataclasses import replace

    from napari_cetpick.descriptors import ProfileModel

    assert "profile_model" not in checkpoint.info  # 4 labels: too few for a profile model
    _detect(qtbot, panel, checkpoint)
    rec = panel.state.current
    assert "profile_excess" not in rec.picks.features.columns
    assert "no profile check" in panel.detect._detect_status_label.value  # said, not silently skipped
    # the same weights with a profile model of the labels (each tomogram twice: 8 rows)
    model = ProfileModel.fit([sim.volume, sim.volume], [sim.labels, sim.labels], checkpoint.diameter_vox)
    checked = replace(checkpoint, info={**checkpoint.info, "profile_model": model.to_info()})
    _detect(qtbot, panel, checked)
    feats = rec.picks.features
    assert "profile_excess" in feats.columns and np.isfinite(feats["profile_excess"].to_numpy()).all()
    status = panel.detect._detect_status_label.value
    # the status: what the check did to the picks; its tooltip: how
    assert (f"the profile check dropped {rec.result.profile_moved} picks and added {rec.result.profile_raised or 0}"
            in status)
    detail = panel.detect._detect_status_label.tooltip
    charge = np.nan_to_num(rec.result.cand_profile_excess)
    lowered, raised = int(np.sum(charge > 0)), int(np.sum(charge < 0))
    assert f"the profile check lowered {lowered} candidates" in detail and f"{rec.result.profile_moved} of them" in detail
    assert (f"it raised {raised} more like your labels" in detail) == (raised > 0)
    # the contrast it compared at is said where it is not the labels'
    from napari_cetpick.descriptors import gain_differs

    assert ("contrast here" in detail) == gain_differs(rec.result.profile_gain)
    assert "read at the class's contrast here, 0.59 × your labels')" in panel.detect._profile_note(
        replace(rec.result, profile_gain=0.59))[1]
    panel.detect._profile_check.value = False
    _detect(qtbot, panel, checked)
    assert "profile_excess" not in rec.picks.features.columns
    assert "profile check" not in panel.detect._detect_status_label.value


def test_lookalikes_of_rejected_picks_come_first(viewer, panel, qtbot, checkpoint, notes):
    """'Like my rejections first' orders the picks not yet judged by their radial profiles'
    closeness to what was rejected (and the labels), as the core orders them."""
    from napari_cetpick.descriptors import radial_profiles
    from napari_cetpick.review import lookalike_order

    _detect(qtbot, panel, checkpoint)
    rec, review = panel.state.current, panel.review
    assert len(rec.picks.data) >= 4
    review._order_combo.value = "like my rejections first"   # nothing rejected yet: says what to do
    assert any("needs something rejected" in n for n in notes())
    review._order_combo.value = "highest score first"
    rejected = review._queue[0].copy()
    review.reject()
    accepted = review._queue[1].copy()   # the next pick, after the reject advanced
    review.accept()
    review._order_combo.value = "like my rejections first"
    assert "Pick 1 of" in review._position_label.value
    picks = np.asarray(rec.picks.data, float)
    open_ = picks[np.linalg.norm(picks - accepted, axis=1) > 1e-6]
    assert len(review._queue) == len(open_)
    known = np.asarray(viewer.layers["labels"].data, float)  # the labels, the accepted pick among them
    assert np.min(np.linalg.norm(known - accepted, axis=1)) < 1e-6
    desc = radial_profiles(rec.layer.data, np.vstack([open_, rejected, known]), panel.state.pick_size(rec))
    n = len(open_)
    expected = open_[lookalike_order(desc[:n], desc[n:n + 1], desc[n + 1:])]
    np.testing.assert_allclose(review._queue, expected)
    assert not np.any(np.linalg.norm(review._queue - rejected, axis=1) < 1e-6)
    # each decision sorts the rest again: the next pick shown is the first of the new order
    second = review._queue[0].copy()
    review.reject()
    assert len(review._queue) == len(open_) - 1 and review._index == 0
    assert not np.any(np.linalg.norm(review._queue - second, axis=1) < 1e-6)
    assert "Pick 1 of" in review._position_label.value
    # the re-sort reads the profiles kept from the first sort: the order is the core's, computed afresh
    rest = open_[np.linalg.norm(open_ - second, axis=1) > 1e-6]
    both = np.vstack([rejected, second])
    desc = radial_profiles(rec.layer.data, np.vstack([rest, both, known]), panel.state.pick_size(rec))
    n = len(rest)
    np.testing.assert_allclose(review._queue, rest[lookalike_order(desc[:n], desc[n:n + 2], desc[n + 2:])])


def test_a_second_decision_on_a_pick_replaces_the_first_and_undo_restores_it(viewer, panel, qtbot, checkpoint):
    """Accepted, then rejected on a second pass: the place leaves the labels (training would
    refuse a place that is both); undo gives the acceptance back; and the other way round."""
    from napari_cetpick.widgets._inputs import gather_training_inputs

    _detect(qtbot, panel, checkpoint)
    rec, review = panel.state.current, panel.review
    labels = viewer.layers["labels"]
    n_labels = len(labels.data)
    review._order_combo.value = "highest score first"
    assert review.start()
    item = review._queue[0].copy()
    review.accept()
    assert len(labels.data) == n_labels + 1
    review.go(0)  # back to the same pick
    review.reject()
    negatives = viewer.layers["sim negatives"]

    def count(layer, zyx):
        pts = np.asarray(layer.data, float).reshape(-1, 3)
        return int((np.linalg.norm(pts - zyx, axis=1) < 1e-3).sum()) if len(pts) else 0

    assert count(labels, item) == 0 and count(negatives, item) == 1 and len(labels.data) == n_labels
    inputs = gather_training_inputs(panel.state, every=False)
    assert len(inputs.negatives[0]) == len(negatives.data)  # nothing refused, nothing lost
    review.undo()  # the rejection taken back: accepted again
    assert count(labels, item) == 1 and count(negatives, item) == 0
    review.go(0)
    review.reject()
    assert count(rec.picks, item) == 0
    review._decisions.accept(rec, item, 0.9)  # accepted again after the rejection
    assert count(labels, item) == 1 and count(negatives, item) == 0 and count(rec.picks, item) == 1
    review.undo()  # rejected again: a negative, and out of the picks
    assert count(labels, item) == 0 and count(negatives, item) == 1 and count(rec.picks, item) == 0


def test_not_a_particle_clicks_and_undo(viewer, panel, qtbot):
    review = panel.review
    review._not_particle_check.value = True
    negatives = viewer.layers.selection.active
    assert negatives.name == "sim negatives" and negatives.mode == "add"
    negatives.add([[10.0, 20.0, 30.0]])  # a click in the viewer
    assert "negatives 1" in review._legend.value
    assert panel.data._negatives_count_label.value == "1 negative"
    review.undo()
    assert len(negatives.data) == 0
    review._not_particle_check.value = False
    assert negatives.mode == "pan_zoom"


def test_suggestions_step_with_the_same_keys(viewer, panel, qtbot, checkpoint):
    from napari_cetpick.review import suggest_locations

    _detect(qtbot, panel, checkpoint)
    rec = panel.state.current
    review = panel.review
    review._suggest_count_spin.value = 5
    assert review.suggest()
    picks = np.asarray(rec.picks.data, float)
    known = np.vstack([viewer.layers["labels"].data, picks])
    expected = suggest_locations(rec.result.cand_zyx, rec.result.cand_scores, rec.result.threshold, known,
                                 panel.state.pick_size(rec), n=5, shape_zyx=rec.shape)
    np.testing.assert_allclose(review._queue, rec.result.cand_zyx[expected])
    # nothing within a particle of a pick: neither a pick nor the rim of one
    if len(picks):
        gaps = np.linalg.norm(review._queue[:, None] - picks[None], axis=-1).min(axis=1)
        assert np.all(gaps >= panel.state.pick_size(rec) - 1e-6)
    assert review._order_combo.value == "suggestions"
    assert "Suggestion 1 of" in review._position_label.value
    target = review._queue[0].copy()
    press(viewer, "a")
    for _ in range(len(review._queue)):  # the others skipped: they stay unjudged
        press(viewer, "n")
    review._advance()
    assert f"1 of {len(review._queue)} judged" in review._position_label.value or len(review._queue) == 1
    assert rows(target)[0] in rows(viewer.layers["labels"].data)
    # an accepted candidate is a pick (or a pick within the minimum distance stands for it)
    picks = np.asarray(viewer.layers["sim picks"].data)
    assert np.min(np.linalg.norm(picks - target, axis=1)) < rec.result.min_distance_vox


# ---------------------------------------------------------------------------- masks, boxes
def _corners(y0, x0, y1, x1, z=5.0) -> np.ndarray:
    """A rectangle drawn on slice ``z`` of a 3D Shapes layer."""
    return np.array([[z, y0, x0], [z, y0, x1], [z, y1, x1], [z, y1, x0]], float)


def test_ignore_regions_mask_and_mrc_in_the_file_layout(viewer, panel, tmp_path, sim):
    import mrcfile

    tomo = viewer.layers["sim"]
    nz, ny, nx = sim.volume.shape
    tomo.metadata[META_KEY].update(thickness_axis=1, file_shape=[ny, nz, nx])  # IMOD unrotated
    mask_section = panel.mask
    mask_section._on_draw_clicked()
    shapes = viewer.layers["sim ignore"]
    assert mask_section._layer_combo.value is shapes and shapes.mode == "add_rectangle"
    shapes.add_rectangles(_corners(-0.5, -0.5, 63.5, 127.5))  # the top half in y
    mask_section._z_from_spin.value = 4
    mask_section._z_to_spin.value = 20
    keep = panel.state.keep_mask(panel.state.current)
    assert keep.shape == sim.volume.shape and keep.dtype == np.uint8
    assert keep[10, 10, 10] == 0 and keep[10, 100, 10] == 1 and keep[2, 10, 10] == 1 and keep[25, 10, 10] == 1
    assert keep[4:20, :64].sum() == 0 and keep[4:20, 64:].all()
    assert "25.0% of the tomogram ignored over z 4–20" in mask_section._summary_label.value
    out = mask_section.save_mask(tmp_path / "mask.mrc")
    with mrcfile.open(out) as mrc:
        file_mask = np.asarray(mrc.data)
    assert file_mask.shape == (ny, nz, nx)  # the tomogram file's own layout
    np.testing.assert_array_equal(np.transpose(file_mask, (1, 0, 2)), keep)
    from napari_cetpick.io import open_tomogram

    back = open_tomogram(out, thickness_axis=1)
    np.testing.assert_array_equal(np.asarray(back.data) != 0, keep != 0)

    # a painted Labels layer works the same way
    mask_section._on_paint_clicked()
    painted = viewer.layers["sim ignore (painted)"]
    painted.data[0:3, 0:10, 0:10] = 1
    painted.events.paint()
    keep = panel.state.keep_mask(panel.state.current)
    assert keep[:3, :10, :10].sum() == 0 and keep.sum() == keep.size - 3 * 10 * 10
    mask_section._use_check.value = False
    assert panel.state.keep_mask(panel.state.current) is None


def test_evaluation_inside_a_box(viewer, panel, qtbot, checkpoint, sim):
    _detect(qtbot, panel, checkpoint)
    ev = panel.evaluate
    assert "in the truth's extent" in ev._eval_label.value
    truth = sim.particles["proteasome"]
    ev._on_new_box_clicked()
    box_layer = viewer.layers["sim evaluation box"]
    box_layer.add_rectangles(_corners(-0.5, -0.5, 63.5, 127.5, z=0.0))
    ev._box_z_from_spin.value = 0
    ev._box_z_to_spin.value = 32
    res = ev.last_evaluation
    inside = truth[(truth[:, 1] >= -0.5) & (truth[:, 1] < 63.5)]
    assert res.n_true == len(inside) < len(truth)
    assert "in the box of 'sim evaluation box' (z 0–32 · y 0–64 · x 0–128)" in ev._eval_label.value
    from napari_cetpick.evaluate import evaluate

    picks = viewer.layers["sim picks"]
    want = evaluate(picks.data, picks.features["score"], truth, 0.5 * DIAMETER_A / VOXEL_A, box=ev.last_box)
    assert (res.n_pred, res.n_matched, res.n_true) == (want.n_pred, want.n_matched, want.n_true)


# ---------------------------------------------------------------------------- import
def test_import_round_trip_every_format_unrotated(viewer, panel, tmp_path, sim):
    """Picks of an unrotated-layout tomogram, exported in every format, re-import onto the same voxels."""
    tomo = viewer.layers["sim"]
    nz, ny, nx = sim.volume.shape
    tomo.metadata[META_KEY].update(thickness_axis=1, file_shape=[ny, nz, nx])
    rec = panel.state.current
    rng = np.random.default_rng(0)
    zyx = np.round(rng.uniform([1, 5, 5], [nz - 2, ny - 6, nx - 6], size=(12, 3)), 2)
    panel.tracker.write_picks(rec, zyx, rng.uniform(0.3, 1.0, 12))
    panel.state.detection_changed.emit(rec)
    for i, key in enumerate(FORMATS):
        out = panel.export.export(tmp_path / f"export_{i}", key)
        layer = panel.importer.import_coordinates(out, "picks")
        assert layer is not None, key
        assert rows(layer.data) == rows(zyx), key
        viewer.layers.remove(layer)
    # as labels and negatives too, into the tomogram's layers
    out = panel.export.export(tmp_path / "again.txt", "IMOD text (.txt)")
    negatives = panel.importer.import_coordinates(out, "negatives")
    assert rows(negatives.data) == rows(zyx) and panel.state.current.negatives is negatives


def test_import_refuses_another_tomograms_file(viewer, panel, tmp_path, notes):
    import starfile

    path = tmp_path / "many.star"
    df = pd.DataFrame({"rlnTomoName": ["TS_01", "TS_02"], "rlnCoordinateX": [1.0, 2],
                       "rlnCoordinateY": [1.0, 2], "rlnCoordinateZ": [1.0, 2]})
    starfile.write({"particles": df}, path)
    assert panel.importer.import_coordinates(path, "labels") is None
    assert any("holds the coordinates of 2 tomograms" in n for n in notes())


def test_opened_coordinate_file_is_particle_sized(viewer, panel, tmp_path):
    path = tmp_path / "sim_labels.txt"
    path.write_text("20.5 30.5 10\n")
    [layer] = viewer.open(str(path), plugin="napari-cetpick")
    viewer.layers.remove("labels")
    assert panel.state.current.labels is layer
    assert layer.size[0] == pytest.approx(DIAMETER_A / VOXEL_A)
    assert layer.symbol[0] == "disc" and np.allclose(layer.border_color[0], [1, 1, 0, 1])


# ---------------------------------------------------------------------------- panel, several tomograms
def test_plan_shows_effective_tau_and_steps(panel, sim):
    from napari_cetpick.config import DEFAULT_STEPS, TrainConfig

    plan = panel.train._plan_label.value
    settle = TrainConfig().settle_steps
    assert plan.startswith(f"Plan: {DEFAULT_STEPS} steps (the default schedule, the last {settle} at a tenth of the "
                           "rate)")
    assert "τ 0.0" in plan and "from the label density" in plan and "particles expected" in plan
    panel.train._tau_spin.value = 0.05
    assert "τ 0.05 set by hand" in panel.train._plan_label.value
    panel.train._max_steps_spin.value = 30
    assert panel.train._plan_label.value.startswith("Plan: 30 steps (max steps")
    # 4 labels, batch 4: one step per epoch; epochs win over the steps, an explicit cap applies
    panel.train._epochs_spin.value = 100
    assert panel.train._plan_label.value.startswith("Plan: 30 steps (100 epochs of 1 step, capped by max steps")
    panel.train._max_steps_spin.value = 0
    # the last third at most settles
    assert panel.train._plan_label.value.startswith("Plan: 100 steps (100 epochs of 1 step, the last 33 at a tenth")


def test_training_bounds_keep_memory_sane(panel):
    adv = panel.train._advanced
    assert adv._crop_xy_spin.max <= 256 and adv._crop_z_spin.max <= 64 and adv._batch_size_spin.max <= 32
    with pytest.raises(ValueError):
        adv._crop_xy_spin.value = 10_000


def test_distinct_particle_sized_styles(viewer, panel, qtbot, checkpoint):
    _detect(qtbot, panel, checkpoint)
    panel.data._on_new_negatives_clicked()
    panel.data._on_new_labels_clicked()
    rec = panel.state.current
    layers = {"labels": rec.labels, "negatives": rec.negatives, "picks": rec.picks}
    for layer in layers.values():
        layer.add([[10.0, 50.0, 50.0]])
    looks = {k: (str(v.symbol[-1]), tuple(np.round(v.border_color[-1], 2))) for k, v in layers.items()}
    assert len(set(looks.values())) == 3
    assert all(v.size[-1] == pytest.approx(DIAMETER_A / VOXEL_A, rel=0.05) for v in layers.values())


def test_panel_right_edge_is_not_clipped(viewer, panel, qtbot):
    viewer.window._qt_window.show()
    qtbot.waitUntil(lambda: panel.isVisible(), timeout=5000)
    form = panel._form.native
    assert form.minimumSizeHint().width() <= panel._scroll.viewport().width()
    assert form.width() <= panel._scroll.viewport().width()


def test_tomogram_table_and_export_all(viewer, panel, qtbot, checkpoint, sim, tmp_path):
    viewer.add_image(sim.volume[:, :64, :96].copy(), name="second",
                     metadata={META_KEY: meta(sim, file_shape=None, tomogram_name="second")})
    panel.detect._detect_all_check.value = True
    _detect(qtbot, panel, checkpoint)
    rows = {r[0]: r for r in panel.tomograms.rows()}
    assert set(rows) == {"sim", "second"}
    sim_rec = panel.state.current
    assert rows["sim"][1] == len(sim.labels) and rows["sim"][3] == len(sim_rec.picks.data)
    assert rows["sim"][4] == f"{sim_rec.threshold:.3f}"
    # clicking a row selects that tomogram; its detection comes with it
    panel.tomograms._on_row_clicked(1 if panel.tomograms._layers[1].name == "second" else 0)
    assert panel.state.current.name == "second"
    assert panel.detect._threshold_slider.value == pytest.approx(panel.state.current.threshold, abs=1e-3)
    written = panel.export.export_all(tmp_path, "CSV with scores (.csv)", "picks")
    assert sorted(p.name for p in written) == ["second_picks.csv", "sim_picks.csv"]
    assert len(pd.read_csv(tmp_path / "sim_picks.csv")) == len(sim_rec.picks.data)


# ---------------------------------------------------------------------------- the engine's loop
def test_mask_excludes_picks_and_training_voxels(viewer, panel, qtbot, checkpoint, monkeypatch):
    from napari_cetpick import train

    panel.mask._on_draw_clicked()
    viewer.layers["sim ignore"].add_rectangles(_corners(-0.5, -0.5, 63.5, 127.5))  # y < 64, every slice
    import functools

    seen = {}
    real_init = train.Trainer.__init__

    @functools.wraps(real_init)  # keeps the signature the panel checks for ``masks``
    def recording(self, *args, **kwargs):
        seen["masks"] = kwargs.get("masks")
        real_init(self, *args, **kwargs)

    monkeypatch.setattr(train.Trainer, "__init__", recording)
    tiny(panel, 1)
    panel.train._on_train_clicked()
    qtbot.waitUntil(lambda: not panel._busy, timeout=TIMEOUT_MS)
    [mask] = seen["masks"]
    assert mask[:, :64].sum() == 0 and mask[:, 64:].all()
    panel.detect._threshold_slider.value = 0.0
    _detect(qtbot, panel, checkpoint)
    picks = np.asarray(viewer.layers["sim picks"].data)
    assert len(picks) and np.all(picks[:, 1] >= 63.5)


def test_improve_without_a_chosen_threshold_uses_the_new_models(viewer, panel, qtbot, checkpoint, monkeypatch):
    from napari_cetpick import detect as engine

    _detect(qtbot, panel, checkpoint)
    panel.review.start()
    panel.review.accept()
    panel.review.reject()
    runs, real_run = [], engine.run_tiles

    def counting(plan, *args, **kwargs):
        runs.append(plan.grid_shape)
        return (yield from real_run(plan, *args, **kwargs))

    monkeypatch.setattr(engine, "run_tiles", counting)
    assert panel.improve.improve()
    qtbot.waitUntil(lambda: not panel._busy, timeout=TIMEOUT_MS)
    rec = panel.state.current
    # the labels span this tomogram: the network ran once, for the correction round's
    # calibration, and the detection after Improve took that pass instead of running it again
    assert len(runs) == 1 and rec.result.heatmap.shape[-3:] == runs[0] and panel.state.checkpoint.passes == []
    assert panel.state.checkpoint is not checkpoint
    # the threshold the new model's detection chose for this tomogram, not a carried one
    assert rec.result.threshold_source != "given"
    assert rec.result.threshold == pytest.approx(rec.result.model_threshold)
    # the accepted particle, found again a little elsewhere by the new model, shows once
    picks = np.asarray(rec.picks.data)
    d = np.linalg.norm(picks[:, None] - picks[None], axis=-1) + np.eye(len(picks)) * 1e9
    assert d.min() >= rec.result.min_distance_vox - 1e-6
    assert "the new model's threshold" in panel.improve._improve_status_label.value
    assert panel.detect._threshold_slider.value == pytest.approx(rec.result.threshold, abs=1e-3)


@pytest.mark.slow
def test_improve_lowers_picks_on_rejected_look_alikes(viewer, panel, qtbot, sim):
    """150 steps give a model that also picks shells and globular particles at its default
    threshold; rejecting those (and clicking a few more on the negatives layer) and pressing
    Improve (about 10 s here) lowers them against the wanted particles, which are still found."""
    tiny(panel, 150)
    panel.train._on_train_clicked()
    qtbot.waitUntil(lambda: not panel._busy, timeout=TIMEOUT_MS)
    panel.detect._on_detect_clicked()
    qtbot.waitUntil(lambda: not panel._busy, timeout=TIMEOUT_MS)
    rec = panel.state.current
    panel.detect._threshold_slider.value = round(rec.result.threshold, 3) - 0.001  # the user's own threshold
    radius = 0.5 * panel.state.pick_size(rec)
    wanted = sim.particles["proteasome"]
    look_alikes = np.vstack([sim.particles[c] for c in ("shell", "globular") if len(sim.particles[c])])

    def near(points, targets):
        if len(points) == 0 or len(targets) == 0:
            return np.zeros(len(points), bool)
        return np.min(np.linalg.norm(points[:, None] - targets[None], axis=-1), axis=1) < radius

    margin = float(logit(rec.result.threshold) - logit(rec.result.model_threshold))
    assert margin < 0
    review = panel.review
    assert review.start()
    for _ in range(len(review._queue)):
        zyx = review._queue[review._index][None]
        if near(zyx, look_alikes)[0]:
            review.reject()
        elif near(zyx, wanted)[0]:
            review.accept()
        else:
            review.go(review._index + 1)
    rejected = np.asarray(rec.negatives.data)
    assert len(rejected) >= 2
    # and clicks look-alikes the picks missed on the negatives layer, up to the 5 the profile
    # check needs to model what the user rejects
    missed = look_alikes[~near(look_alikes, rejected)]
    rec.negatives.add(missed[: max(0, MIN_PROFILE_LABELS - len(rejected))])
    rejected = np.asarray(rec.negatives.data)
    assert len(rejected) >= MIN_PROFILE_LABELS

    def best_score(result, points):
        """Each point's best candidate score within the radius (the model's view of it)."""
        d = np.linalg.norm(points[:, None] - result.cand_zyx[None], axis=-1)
        return np.array([result.cand_scores[row < radius].max(initial=1e-6) for row in d])

    found = wanted[near(wanted, rec.result.zyx)]  # the wanted particles picked before the edits
    assert len(found) >= 2

    def contrast(result):
        """How far those particles score above the rejected look-alikes (logit units)."""
        return float(np.median(logit(best_score(result, found))) - np.median(logit(best_score(result, rejected))))

    before = contrast(rec.result)
    assert panel.improve.improve()
    assert "Improving on" in panel.improve._improve_status_label.value
    qtbot.waitUntil(lambda: not panel._busy, timeout=TIMEOUT_MS)
    assert panel.state.checkpoint.info.get("n_negatives") == len(rejected)
    # the user's threshold is kept as its margin over the threshold the new model's detection
    # chose for this tomogram (scores shift with retraining)
    new_default = float(rec.result.model_threshold)
    assert rec.result.threshold_source != "given"
    assert logit(rec.result.threshold) - logit(new_default) == pytest.approx(margin, abs=1e-3)
    # the rejections moved the look-alikes down against the particles (measured: 1.06 -> 1.42
    # logits; with the negatives weighted like the positives, tau, the look-alikes rose with them)
    assert contrast(rec.result) > before + 0.25
    assert int(near(found, rec.result.zyx).sum()) >= len(found) - 1  # the particles are still found
    assert "at your threshold" in panel.improve._improve_status_label.value
    # the profile check learned the rejections' profiles too, and the status's tooltip says so
    assert rec.result.profile_negatives == len(rejected)
    assert "the profile check dropped" in panel.detect._detect_status_label.value
    assert f"like your {len(rejected)} rejections" in panel.detect._detect_status_label.tooltip
    assert f"learned {len(rejected)} negatives" in panel.train._model_label.value


def test_cancel_during_improve_keeps_the_model(viewer, panel, qtbot, checkpoint, notes):
    _detect(qtbot, panel, checkpoint)
    assert panel.improve.improve()
    assert panel.improve._improve_cancel_button.enabled and not panel.improve._improve_button.enabled
    qtbot.waitUntil(lambda: panel.improve._improve_progress.value >= 1 or not panel._busy, timeout=TIMEOUT_MS)
    panel.improve._on_cancel_clicked()
    qtbot.waitUntil(lambda: not panel._busy, timeout=TIMEOUT_MS)
    assert panel.state.checkpoint is checkpoint
    assert "cancelled after" in panel.improve._improve_status_label.value
    assert any("Improve cancelled after" in n for n in notes())
    assert panel.improve._improve_button.enabled and panel.train._train_button.enabled


def test_train_asks_the_memory_estimate_first(viewer, panel, notes, monkeypatch):
    """Train asks the engine's memory estimate (the Trainer's own check) and refuses before it starts."""
    from napari_cetpick.errors import CetpickError

    calls = []

    def check_train_memory(config, data_bytes=0, device=None):
        calls.append((config.crop_xy, config.batch_size, data_bytes, device))
        raise CetpickError("Training needs about 40.0 GB but only 8.0 GB is available; crop xy 64 fits.")

    monkeypatch.setattr("napari_cetpick.memory.check_train_memory", check_train_memory)
    panel.train._advanced._crop_xy_spin.value = 256
    panel.train._on_train_clicked()
    assert calls and calls[0][:2] == (256, panel.train._advanced._batch_size_spin.value) and calls[0][2] > 0
    assert any("only 8.0 GB is available" in n for n in notes())
    assert not panel._busy
