"""The picker panel under Xvfb: the whole loop, cancel, live threshold, exports, errors.

Trainings are tiny (a few steps on 32-voxel crops of a 32×128×128 simulated tomogram);
they check the plumbing, not the model. Workers are waited for with ``qtbot.waitUntil``
on the panel's state, never with sleeps.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("qtpy")
pytest.importorskip("napari")

from _gui import (  # noqa: E402,F401
    DIAMETER_A, META_KEY, TIMEOUT_MS, VOXEL_A, meta, open_panel, press, rows, tiny, wait_idle)
from napari_cetpick.config import TrainConfig  # noqa: E402

pytestmark = pytest.mark.gui


@pytest.fixture
def panel(panel):
    """The shared panel, set for tiny trainings."""
    tiny(panel)
    return panel


def _train(qtbot, panel) -> None:
    panel.train._on_train_clicked()
    assert panel._busy
    wait_idle(qtbot, panel)


def _detect(qtbot, panel) -> None:
    panel.detect._on_detect_clicked()
    wait_idle(qtbot, panel)


def _labels_snapshot(viewer):
    layer = viewer.layers["labels"]
    return layer.data.copy(), layer.size.copy(), layer.features.copy()


def _assert_labels_unchanged(viewer, snap) -> None:
    data, size, features = _labels_snapshot(viewer)
    np.testing.assert_array_equal(data, snap[0])
    np.testing.assert_array_equal(size, snap[1])
    pd.testing.assert_frame_equal(features, snap[2])

# ---------------------------------------------------------------------------- opening
def test_panel_opens_through_plugin_manager(make_napari_viewer):
    from napari.utils._proxies import PublicOnlyProxy

    from napari_cetpick.widgets import PickerWidget

    viewer = make_napari_viewer()
    widget = open_panel(viewer)
    assert isinstance(widget, PickerWidget)
    assert isinstance(widget._viewer, PublicOnlyProxy)  # what plugins get
    assert widget.data._tomogram_combo.value is None
    assert not widget._busy and widget.train._train_button.enabled and not widget.train._cancel_button.enabled


def test_every_control_has_a_tooltip(panel):
    owners = [*panel.sections, panel.improve, panel.autosave, panel.session_files, panel.classes, panel.train._advanced]
    controls = [w for owner in owners for name, w in vars(owner).items()
                if name.endswith(("_spin", "_combo", "_check", "_button", "_slider"))]
    assert len(controls) > 45
    missing = [w.name or w.text for w in controls if not w.tooltip]
    assert not missing


def test_panel_shows_tomogram_and_counts_labels(viewer, panel, sim):
    data = panel.data
    assert data._tomogram_combo.value is viewer.layers["sim"]
    assert data._voxel_size_spin.value == VOXEL_A
    assert "32 × 128 × 128" in data._tomogram_info_label.value
    assert "thickness = file axis 0" in data._tomogram_info_label.value
    assert data._labels_combo.value is viewer.layers["labels"]
    assert panel.evaluate._truth_combo.value is viewer.layers["truth: proteasome"]
    assert data._labels_count_label.value == f"{len(sim.labels)} labels"
    viewer.layers["labels"].add([[5.0, 50.0, 50.0]])
    assert data._labels_count_label.value == f"{len(sim.labels) + 1} labels"
    assert panel.tomograms.rows()[0][:2] == ("sim", len(sim.labels) + 1)


def test_new_labels_layer(viewer, panel):
    panel.data._on_new_labels_clicked()
    layer = viewer.layers[-1]
    assert panel.data._labels_combo.value is layer
    assert layer.mode == "add" and len(layer.data) == 0
    assert layer.current_size == pytest.approx(DIAMETER_A / VOXEL_A)
    assert str(layer.projection_mode) == "rescale_spherical"
    # the particle shows on the slices its sphere crosses
    assert viewer.dims.margin_left[0] == pytest.approx(DIAMETER_A / VOXEL_A / 2)
    assert layer.metadata[META_KEY]["role"] == "labels"
    layer.add([[10.0, 40.0, 40.0], [12.0, 60.0, 60.0]])
    assert panel.data._labels_count_label.value == "2 labels"
    # the size follows the diameter; switching units keeps the length
    panel.data._diameter_unit_combo.value = "voxels"
    assert panel.data._diameter_spin.value == pytest.approx(DIAMETER_A / VOXEL_A)
    panel.data._diameter_spin.value = 20.0
    np.testing.assert_allclose(layer.size, 20.0)


def test_voxel_size_override_goes_to_metadata(viewer, panel):
    panel.data._voxel_size_spin.value = 12.5
    assert viewer.layers["sim"].metadata[META_KEY]["voxel_size_a"] == 12.5
    assert panel.train.train_config().diameter_a == DIAMETER_A
    assert panel.state.diameter_vox() == pytest.approx(DIAMETER_A / 12.5)


def test_train_config_from_controls(panel):
    train, adv = panel.train, panel.train._advanced
    train._expected_particles_spin.value = 40
    # off by default (on in the cetpick preset): its weight and temperature are greyed out
    assert not adv._contrastive_check.value and not adv._cr_weight_spin.enabled
    adv._contrastive_check.value = True
    assert adv._cr_weight_spin.enabled and adv._temp_spin.enabled
    adv._contrastive_check.value = False
    adv._arch_combo.value = "unet_4"
    # smoothing from the labels by default (TrainConfig.gauss None); a value given once unticked
    assert adv._gauss_auto.value and not adv._gauss_spin.enabled and train.train_config().gauss is None
    adv._gauss_auto.value = False
    assert adv._gauss_spin.enabled
    adv._gauss_spin.value = 1.0
    adv._compress_check.value = True
    cfg = train.train_config()
    assert cfg.expected_particles == 40 and cfg.tau is None
    assert not cfg.contrastive and cfg.arch == "unet_4" and cfg.gauss == 1.0 and cfg.compress
    assert not adv._cr_weight_spin.enabled
    train._tau_spin.value = 0.02
    assert train.train_config().tau == pytest.approx(0.02)


# ---------------------------------------------------------------------------- the loop
def test_whole_loop_train_detect_export_evaluate(viewer, panel, qtbot, tmp_path, notes):
    import imodmodel
    import starfile

    snap = _labels_snapshot(viewer)
    _train(qtbot, panel)
    ckpt = panel._checkpoint
    assert ckpt is not None and ckpt.info["steps"] == 3
    assert ckpt.voxel_size_a == VOXEL_A and ckpt.diameter_vox == pytest.approx(DIAMETER_A / VOXEL_A)
    assert panel.train._loss_plot.n_points == 3
    assert panel.train._device_label.value.startswith("Device: CPU")
    assert "3 steps" in panel.train._model_label.value
    assert panel.train._save_model_button.enabled

    _detect(qtbot, panel)
    heatmap = viewer.layers["sim heatmap"]
    picks = viewer.layers["sim picks"]
    rec = panel.state.current
    # the heatmap lies exactly over the tomogram: index * scale + translate = voxel
    np.testing.assert_allclose(heatmap.scale, rec.result.scale)
    np.testing.assert_allclose(heatmap.translate, rec.result.translate)
    assert heatmap.blending == "additive"
    lo, hi = heatmap.contrast_limits
    assert hi == 1.0 and 0.0 <= lo <= np.median(rec.result.heatmap) + 0.05
    assert heatmap.data.shape == rec.result.heatmap.shape
    assert len(picks.data) > 0 and "score" in picks.features.columns
    np.testing.assert_allclose(picks.features["score"], rec.result.scores)
    assert picks.metadata[META_KEY]["voxel_size_a"] == VOXEL_A
    assert panel.detect._pick_count_label.value.startswith(f"{len(picks.data)} pick")
    assert "F1" in panel.evaluate._eval_label.value and "true particles" in panel.evaluate._eval_label.value

    # hand edits count as picks (delete one, evaluation and count follow) — through the proxy viewer
    n_true_found = panel.evaluate.last_evaluation.n_pred
    picks.selected_data = {0}
    picks.remove_selected()
    assert panel.detect._pick_count_label.value.startswith(f"{len(rec.result.zyx) - 1} pick")
    assert panel.evaluate.last_evaluation.n_pred <= n_true_found
    zyx = np.asarray(picks.data, float)
    scores = picks.features["score"].to_numpy()

    # exports re-read by the formats' own libraries land on the same voxels
    export = panel.export.export
    out = export(tmp_path / "picks.star", "RELION 4 STAR (.star, pixels)")
    df = starfile.read(out)
    df = df["particles"] if isinstance(df, dict) else df
    np.testing.assert_allclose(df[["rlnCoordinateX", "rlnCoordinateY", "rlnCoordinateZ"]].to_numpy(),
                               zyx[:, ::-1], atol=1e-3)
    np.testing.assert_allclose(df["rlnAutopickFigureOfMerit"], scores, atol=1e-5)
    out = export(tmp_path / "picks", "IMOD model (.mod)")
    assert out.suffix == ".mod"
    mod = imodmodel.read(out)
    np.testing.assert_allclose(mod[["x", "y", "z"]].to_numpy(),
                               zyx[:, ::-1] + [0.5, 0.5, 0.0], atol=1e-3)
    out = export(tmp_path / "picks.txt", "IMOD text (.txt)")
    np.testing.assert_allclose(np.loadtxt(out).reshape(-1, 3), zyx[:, ::-1] + [0.5, 0.5, 0.0], atol=1e-3)
    out = export(tmp_path / "picks.csv", "CSV with scores (.csv)")
    csv = pd.read_csv(out)
    np.testing.assert_allclose(csv[["x", "y", "z"]].to_numpy(), zyx[:, ::-1], atol=1e-3)
    np.testing.assert_allclose(csv["score"], scores, atol=1e-5)
    # the same columns as `cetpick detect` writes: the margin to the threshold too
    from napari_cetpick.utils import logit

    threshold = panel.state.current.threshold
    np.testing.assert_allclose(csv["margin"], np.round(logit(scores) - logit(threshold), 4), atol=2e-4)
    res = panel.state.current.result
    if res.cand_agreement is not None:  # two views: each pick's agreement, as the result has it
        assert "agreement" in csv.columns
        from scipy.spatial import cKDTree

        _, row = cKDTree(res.zyx).query(zyx)  # the pick each exported one is (positions as written)
        np.testing.assert_allclose(csv["agreement"], res.features["agreement"].to_numpy()[row], atol=1e-4)
    out = export(tmp_path / "picks5.star", "RELION 5 STAR (.star, centred Å)")
    df5 = starfile.read(out)
    df5 = df5["particles"] if isinstance(df5, dict) else df5
    centre = np.array([128, 128, 32]) / 2
    np.testing.assert_allclose(
        df5[["rlnCenteredCoordinateXAngst", "rlnCenteredCoordinateYAngst", "rlnCenteredCoordinateZAngst"]],
        (zyx[:, ::-1] - centre) * VOXEL_A, atol=1e-2)

    # the export button goes through a file dialog
    panel._ask_path = lambda *a, **k: str(tmp_path / "from_button.txt")
    panel.export._on_export_clicked()
    assert (tmp_path / "from_button.txt").is_file()

    # File > Save Layers uses the plugin's writer on the same layer
    viewer.layers.selection = {picks}
    viewer.layers.save(str(tmp_path / "saved.star"), selected=True, plugin="napari-cetpick")
    saved = starfile.read(tmp_path / "saved.star")
    saved = saved["particles"] if isinstance(saved, dict) else saved
    np.testing.assert_allclose(saved[["rlnCoordinateX", "rlnCoordinateY", "rlnCoordinateZ"]].to_numpy(),
                               zyx[:, ::-1], atol=1e-3)

    _assert_labels_unchanged(viewer, snap)
    assert not any("failed" in n.lower() for n in notes())


def test_threshold_and_distance_update_picks_without_detecting(viewer, panel, qtbot, checkpoint, monkeypatch):
    import napari_cetpick.detect as detect_mod

    calls = []
    real = detect_mod.detect

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(detect_mod, "detect", counting)
    panel.state.set_checkpoint(checkpoint)
    # one pass: more views average a barely trained model's scores narrower still
    panel.detect._views_choice.value = 1
    _detect(qtbot, panel)
    assert len(calls) == 1
    det = panel.detect
    picks = viewer.layers["sim picks"]
    rec = panel.state.current
    scores = rec.result.cand_scores
    assert det._threshold_slider.value == pytest.approx(rec.result.threshold, abs=1e-3)
    assert det._min_distance_spin.value == pytest.approx(0.5 * DIAMETER_A / VOXEL_A)
    n0 = len(picks.data)

    # the scores of a barely trained model sit in a narrow band (the slider resolves 0.001):
    # lower the threshold to 0 (every candidate), then raise it again just above the default
    det._threshold_slider.value = 0.0
    n_low = len(picks.data)
    assert n_low > n0 and len(calls) == 1
    # the slider's steps that keep some candidates but not all: take the middle one
    steps = np.unique(np.ceil(rec.result.cand_scores * 1000) / 1000)
    steps = steps[(steps > rec.result.cand_scores.min()) & (steps <= rec.result.cand_scores.max())]
    assert len(steps), "the candidates' scores lie within one step of the slider"
    high = float(steps[len(steps) // 2])
    det._threshold_slider.value = high
    assert not panel._busy
    n1 = len(picks.data)
    assert 0 < n1 < n_low
    assert np.all(picks.features["score"] >= high)
    assert det._pick_count_label.value.startswith(f"{n1} pick")
    assert det._histogram.threshold == pytest.approx(high)

    det._min_distance_spin.value = 30.0
    n2 = len(picks.data)
    assert n2 < n1
    d = np.linalg.norm(picks.data[:, None] - picks.data[None], axis=-1) + np.eye(n2) * 1e9
    assert d.min() >= 30.0

    # clicking the histogram moves the slider
    lo, hi = det._histogram.score_range
    assert lo <= scores.min() and scores.max() <= hi
    det._on_histogram_clicked(lo)
    assert det._threshold_slider.value == pytest.approx(lo)
    assert len(picks.data) >= n2
    assert len(calls) == 1  # never recomputed


def test_detect_all_open_tomograms(viewer, panel, qtbot, checkpoint, sim):
    viewer.add_image(sim.volume[:, :64, :96].copy(), name="second", metadata={META_KEY: meta(sim)})
    panel.state.set_checkpoint(checkpoint)
    panel.detect._detect_all_check.value = True
    _detect(qtbot, panel)
    assert {"sim picks", "second picks", "sim heatmap", "second heatmap"} <= {lay.name for lay in viewer.layers}
    assert sum(r.result is not None for r in panel.state.records.values()) == 2
    assert "in 2 tomograms" in panel.detect._pick_count_label.value
    # the tomogram lists never offer heatmaps
    assert all(lay.name.endswith(("sim", "second")) for _, lay in panel.data._tomogram_choices())


def test_export_lands_in_the_file_frame(viewer, panel, qtbot, checkpoint, sim, tmp_path):
    """An IMOD-unrotated tomogram (thickness = file axis 1) exports in the file's own axes."""
    tomo = viewer.layers["sim"]
    nz, ny, nx = sim.volume.shape
    tomo.metadata[META_KEY].update(thickness_axis=1, file_shape=[ny, nz, nx])
    panel.state.set_checkpoint(checkpoint)
    _detect(qtbot, panel)
    zyx = np.asarray(viewer.layers["sim picks"].data)
    out = panel.export.export(tmp_path / "unrotated.txt", "IMOD text (.txt)")
    xyz = np.loadtxt(out).reshape(-1, 3)
    # file axes (a0, a1, a2) = (y, z, x): IMOD x = a2 + 0.5, y = a1 + 0.5, z = a0
    np.testing.assert_allclose(xyz, np.c_[zyx[:, 2] + 0.5, zyx[:, 0] + 0.5, zyx[:, 1]], atol=1e-3)


# ---------------------------------------------------------------------------- cancel, models
def test_cancel_keeps_last_good_model_and_train_again(viewer, panel, qtbot, notes):
    snap = _labels_snapshot(viewer)
    train = panel.train
    train._max_steps_spin.value = 1000
    train._on_train_clicked()
    qtbot.waitUntil(lambda: train._loss_plot.n_points >= 1, timeout=TIMEOUT_MS)
    assert train._cancel_button.enabled and not train._train_button.enabled
    train._on_cancel_clicked()
    wait_idle(qtbot, panel)
    ckpt = panel._checkpoint
    assert ckpt is not None
    done = ckpt.info["steps"]
    assert 1 <= done < 1000
    assert "cancelled" in train._train_status_label.value
    assert train._train_button.enabled and panel.detect._detect_button.enabled and train._save_model_button.enabled
    # the toast says how far it got, not "Model ready"
    # planned: the 1000 steps asked for and the self-training round's 50
    assert any(f"cancelled after {done} of 1050 steps" in n for n in notes())
    assert not any("Model ready" in n for n in notes())

    # Train again, continuing from the cancelled model
    train._max_steps_spin.value = 2
    train._continue_check.value = True
    _train(qtbot, panel)
    assert panel._checkpoint is not ckpt
    assert panel._checkpoint.info["steps"] == done + 2

    # and fresh
    train._continue_check.value = False
    _train(qtbot, panel)
    assert panel._checkpoint.info["steps"] == 2
    _assert_labels_unchanged(viewer, snap)
    assert not any("failed" in n.lower() for n in notes())


def test_new_run_cancels_the_previous_one(viewer, panel, qtbot, checkpoint):
    panel.state.set_checkpoint(checkpoint)
    panel.train._max_steps_spin.value = 1000
    panel.train._on_train_clicked()
    qtbot.waitUntil(lambda: panel.train._loss_plot.n_points >= 1, timeout=TIMEOUT_MS)
    # pressing Detect while training (the button is disabled, but the callback is public)
    panel.detect._on_detect_clicked()
    wait_idle(qtbot, panel)
    assert "sim picks" in viewer.layers
    assert panel._checkpoint is checkpoint  # the abandoned training replaced nothing


def test_save_and_load_model(panel, checkpoint, tmp_path, qtbot, notes):
    panel.state.set_checkpoint(checkpoint)
    panel._ask_path = lambda *a, **k: str(tmp_path / "model")
    panel.train._on_save_model_clicked()
    assert (tmp_path / "model.ckpt").is_file()  # the CLI's suffix
    panel.state.checkpoint = None
    panel.data._diameter_spin.value = 99.0
    panel._ask_path = lambda *a, **k: str(tmp_path / "model.ckpt")
    panel.train._on_load_model_clicked()
    ckpt = panel._checkpoint
    assert ckpt is not None and ckpt.diameter_vox == pytest.approx(checkpoint.diameter_vox)
    text = panel.train._model_label.value
    assert "model.ckpt" in text and "voxel size 10 Å" in text and "150 Å" in text and TrainConfig().arch in text
    assert f"arch: {TrainConfig().arch}" in panel.train._model_label.tooltip
    assert panel.data._diameter_spin.value == pytest.approx(DIAMETER_A)
    assert notes()[-1] == f"Model model.ckpt loaded ({', '.join(ckpt.class_names)}). Press Detect."
    # models saved as .pt by earlier versions still load
    checkpoint.save(tmp_path / "old.pt")
    assert panel.train.load_model(tmp_path / "old.pt") is not None
    assert notes()[-1].startswith("Model old.pt loaded") and notes()[-1].endswith("Undo model goes back to it.")


# ---------------------------------------------------------------------------- errors
def test_errors_without_tomogram(make_napari_viewer, notes):
    viewer = make_napari_viewer()
    panel = open_panel(viewer)
    panel.train._on_train_clicked()
    panel.detect._on_detect_clicked()
    panel.data._on_new_labels_clicked()
    panel.export._on_export_clicked()
    panel.improve._on_improve_clicked()
    panel.review._on_start_clicked()
    messages = notes()
    assert any("No tomogram" in m for m in messages)
    assert any("No model" in m for m in messages)
    assert any("Open a tomogram" in m for m in messages)
    assert any("No picks to export" in m for m in messages)
    assert any("No picks to review" in m for m in messages)
    assert not panel._busy


def test_error_no_labels(viewer, panel, notes):
    viewer.layers.remove("labels")
    panel.train._on_train_clicked()
    assert any("No labels" in m for m in notes())
    panel.data._on_new_labels_clicked()  # an empty labels layer is no better
    panel.train._on_train_clicked()
    assert sum("No labels" in m for m in notes()) == 2
    assert not panel._busy and panel.train._train_button.enabled


def test_error_label_outside_volume(viewer, panel, notes):
    viewer.layers["labels"].add([[100.0, 10.0, 10.0]])
    snap = _labels_snapshot(viewer)
    panel.train._on_train_clicked()
    assert any("outside the tomogram" in m for m in notes())
    assert not panel._busy
    _assert_labels_unchanged(viewer, snap)


def test_error_model_for_another_voxel_size(viewer, panel, qtbot, checkpoint, notes):
    panel.state.set_checkpoint(checkpoint)
    panel.data._voxel_size_spin.value = 7.0  # 10 Å / 7 Å is no whole binning factor
    _detect(qtbot, panel)
    assert any("not a whole binning factor" in m for m in notes())
    assert "sim picks" not in viewer.layers
    assert panel.detect._detect_button.enabled
    panel.data._voxel_size_spin.value = VOXEL_A
    _detect(qtbot, panel)
    assert "sim picks" in viewer.layers


def test_error_inside_the_training_worker(viewer, panel, qtbot, notes, monkeypatch):
    from napari_cetpick import train

    def broken(self):
        raise RuntimeError("simulated failure in a training step")

    monkeypatch.setattr(train.Trainer, "_batch", broken)
    snap = _labels_snapshot(viewer)
    _train(qtbot, panel)
    assert any("simulated failure" in m for m in notes())
    assert "failed" in panel.train._train_status_label.value
    assert panel._checkpoint is None
    assert panel.train._train_button.enabled and not panel.train._cancel_button.enabled
    _assert_labels_unchanged(viewer, snap)
    monkeypatch.undo()
    _train(qtbot, panel)  # still usable
    assert panel._checkpoint is not None


def test_error_bad_model_file(panel, tmp_path, notes):
    bad = tmp_path / "bad.ckpt"
    bad.write_text("not a model")
    assert panel.train.load_model(bad) is None
    assert any("not a napari-cetpick model" in m for m in notes())


def test_importing_the_widgets_loads_no_torch():
    """Opening napari stays fast: torch loads only when a run starts."""
    import subprocess
    import sys

    code = ("import sys, napari_cetpick.widgets; "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "False"


@pytest.mark.parametrize("hi, lo", [(0.69351, 0.69312), (1.2e-5, 2e-6), (1534.0, 1210.0), (0.5, 0.1)])
def test_loss_axis_labels_tell_the_ends_apart_at_any_scale(hi, lo, qtbot):
    from napari_cetpick.widgets._plots import LossCurve, tick_labels

    a, b = tick_labels(hi, lo)
    assert a != b and float(a) == pytest.approx(hi, rel=1e-2) and float(b) == pytest.approx(lo, rel=1e-2)
    curve = LossCurve()
    qtbot.addWidget(curve)
    curve.resize(260, 120)
    curve.set_history(range(1, 51), np.linspace(hi, lo, 50))
    assert not curve.grab().isNull()  # paints without error


def test_network_auto_is_the_default_or_the_continued_models(panel):
    from napari_cetpick.config import TrainConfig

    adv = panel.train._advanced
    assert adv._arch_combo.value == "auto"
    assert adv.values()["arch"] == TrainConfig().arch == panel.train.train_config().arch
    assert adv.values(continued_arch="unet3d_small")["arch"] == "unet3d_small"  # Continue keeps the model's
    adv._arch_combo.value = "unet_small"
    assert adv.values(continued_arch="unet3d_small")["arch"] == "unet_small"  # a chosen network is kept


def test_the_panel_offers_every_view_count_detection_runs():
    from napari_cetpick.config import DetectConfig
    from napari_cetpick.detect import VIEWS
    from napari_cetpick.widgets._detect import VIEW_CHOICES

    assert sorted(v for _, v in VIEW_CHOICES) == sorted(VIEWS)
    assert DetectConfig().views in VIEWS
