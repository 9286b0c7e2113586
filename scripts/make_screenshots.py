"""Make the tutorial's screenshots from a real napari viewer running the whole loop.

Opens the sample tomogram and the picker panel (through Plugins, as a user does), adds
ribosome labels and a second class (proteasome) with its labels, opens a second simulated
tomogram, trains one real model for both classes, detects in both tomograms, reviews picks
and suggestions (deciding from the ground truth, as a careful user would), runs Improve,
draws an ignore region and an evaluation box, and saves PNGs into ``docs/images/``::

    python scripts/make_screenshots.py              # re-runs itself under xvfb-run if no display
    python scripts/make_screenshots.py --steps 300 --out docs/images

On a 2-core AMD EPYC the whole script took about 4 minutes (training 1 min 46 s with the four-level
network; 1 min 42 s to 1 min 58 s in five runs with the three-level one before it).
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

from napari_cetpick.config import DEFAULT_STEPS

ROOT = Path(__file__).resolve().parents[1]
SCREEN = "1600x1000x24"


def _ensure_display() -> None:
    """Re-run this script under Xvfb when there is no display."""
    if os.environ.get("DISPLAY") or os.environ.get("CETPICK_SCREENSHOTS_CHILD"):
        return
    xvfb = shutil.which("xvfb-run")
    if xvfb is None:
        sys.exit("No display and no xvfb-run: install xvfb or run on a desktop.")
    env = dict(os.environ, CETPICK_SCREENSHOTS_CHILD="1")
    cmd = [xvfb, "-a", "-s", f"-screen 0 {SCREEN}", sys.executable, *sys.argv]
    sys.exit(subprocess.call(cmd, env=env))


def _wait(app, condition, timeout_s: float, every=None) -> None:
    """Run the Qt event loop until ``condition()`` is true (``every()`` is called on the way)."""
    t0 = time.perf_counter()
    while not condition():
        app.processEvents()
        if every is not None:
            every()
        if time.perf_counter() - t0 > timeout_s:
            raise TimeoutError("timed out waiting for the panel")
        time.sleep(0.02)
    app.processEvents()


def _settle(app, seconds: float = 0.5) -> None:
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        app.processEvents()
        time.sleep(0.02)


def _decide(panel, truth_zyx, radius: float) -> bool:
    """A careful user's verdict on the item under review: is a true particle there?"""
    zyx = panel.review._queue[panel.review._index]
    return bool(len(truth_zyx)) and float(np.min(np.linalg.norm(truth_zyx - zyx, axis=1))) < radius


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "images", help="output folder")
    parser.add_argument("--steps", type=int, default=DEFAULT_STEPS, help="training steps (default: the panel's, %(default)s)")
    parser.add_argument("--model", type=Path, default=None,
                        help="load this model instead of training (no training screenshot)")
    parser.add_argument("--save-model", type=Path, default=None, help="save the trained model here")
    parser.add_argument("--extra-labels", type=int, default=12,
                        help="ribosomes clicked in addition to the sample's labels (default 12)")
    parser.add_argument("--review", type=int, default=8, help="suggestions to judge before Improve (default 8)")
    parser.add_argument("--second-class-labels", type=int, default=12,
                        help="proteasomes clicked as a second class (default 12; 0 = one class)")
    args = parser.parse_args(argv)
    _ensure_display()
    os.environ.setdefault("XDG_RUNTIME_DIR", tempfile.mkdtemp(prefix="xdg-"))
    os.environ.setdefault("CETPICK_AUTOSAVE_DIR", tempfile.mkdtemp(prefix="cetpick-autosave-"))
    warnings.simplefilter("ignore", FutureWarning)
    warnings.simplefilter("ignore", DeprecationWarning)

    import napari
    from qtpy.QtWidgets import QApplication

    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    viewer = napari.Viewer(show=True, title="napari-cetpick")
    app = QApplication.instance()
    viewer.window._qt_window.resize(1560, 960)
    viewer.open_sample("napari-cetpick", "synthetic")
    _, panel = viewer.window.add_plugin_dock_widget("napari-cetpick", "Particle picker")
    tomo = viewer.layers["synthetic tomogram"]
    labels = viewer.layers["labels"]
    truth = viewer.layers["truth: ribosome"]
    look_alikes = np.vstack([viewer.layers[f"truth: {c}"].data for c in ("proteasome", "shell", "globular")])

    def scroll_to(section) -> None:
        panel._scroll.ensureWidgetVisible(section.native, 0, 0)
        bar = panel._scroll.verticalScrollBar()
        bar.setValue(section.native.mapTo(panel._form.native, section.native.rect().topLeft()).y())
        _settle(app, 0.3)

    # "click" more ribosomes: take them from the ground truth, spread over the whole volume
    rng = np.random.default_rng(0)
    known = np.asarray(labels.data)
    far = [p for p in truth.data if len(known) == 0 or np.min(np.linalg.norm(known - p, axis=1)) > 5]
    extra = np.asarray(far)[rng.permutation(len(far))[: args.extra_labels]]
    if len(extra):
        labels.add(extra)
    print(f"{len(labels.data)} labels", flush=True)
    # a second class: proteasomes, clicked from their ground truth too (one model learns both)
    if args.second_class_labels:
        prot_truth = np.asarray(viewer.layers["truth: proteasome"].data)
        panel.classes.add_class("proteasome")
        panel.data._diameter_unit_combo.value = "Å"
        panel.data._diameter_spin.value = 150.0
        prot_labels = panel.data.new_points_layer("labels", announce=False)
        prot_labels.add(prot_truth[rng.permutation(len(prot_truth))[: args.second_class_labels]])
        prot_labels.mode = "pan_zoom"
        panel.classes._class_combo.value = "ribosome"
        print(f"{len(prot_labels.data)} proteasome labels", flush=True)
    # a second tomogram of the same kind (another seed): the model is applied to it too
    from napari_cetpick._napari.layers import META_KEY
    from napari_cetpick._napari.sample import SAMPLE_LABEL_FRACTION, SAMPLE_SHAPE, SAMPLE_SNR, SAMPLE_VOXEL_SIZE_A
    from napari_cetpick.synthetic import simulate_tomogram

    sim2 = simulate_tomogram(SAMPLE_SHAPE, voxel_size_a=SAMPLE_VOXEL_SIZE_A, snr=SAMPLE_SNR, seed=7,
                             label_fraction=SAMPLE_LABEL_FRACTION)
    meta2 = {"voxel_size_a": SAMPLE_VOXEL_SIZE_A, "thickness_axis": 0, "file_shape": list(SAMPLE_SHAPE),
             "path": None, "tomogram_name": "second"}
    viewer.add_image(sim2.volume, name="second tomogram", metadata={META_KEY: meta2}, visible=False)
    for name in ("ribosome", "proteasome"):
        viewer.add_points(sim2.particles[name], ndim=3, name=f"second truth: {name}", visible=False,
                          metadata={META_KEY: dict(meta2, truth_class=name)})
    viewer.layers.selection = {labels}

    # a slice through several labelled particles
    z = int(np.median(labels.data[:, 0]))
    viewer.dims.set_point(0, z)
    viewer.layers.selection = {labels}
    _settle(app, 1.0)
    viewer.window.screenshot(str(out / "01_sample_labels.png"), canvas_only=False)

    # ---------------------------------------------------------------- train
    if args.model is not None:
        panel.train.load_model(args.model)
    else:
        panel.train._max_steps_spin.value = args.steps
        panel.train._on_train_clicked()
        shot = {"done": False}

        def grab_mid_training():
            if not shot["done"] and panel.train._loss_plot.n_points >= max(10, args.steps // 3):
                panel.train.native.grab().save(str(out / "02_panel_training.png"))
                shot["done"] = True

        _wait(app, lambda: not panel._busy, timeout_s=3600, every=grab_mid_training)
        print(panel.train._train_status_label.value, flush=True)
    if panel._checkpoint is None:
        raise SystemExit("no model: " + panel.train._train_status_label.value)
    if args.save_model is not None:
        panel.train.save_model(args.save_model)

    # ---------------------------------------------------------------- detect (both tomograms)
    panel.detect._detect_all_check.value = True
    panel.detect._on_detect_clicked()
    _wait(app, lambda: not panel._busy, timeout_s=1800)
    print(panel.detect._detect_status_label.value, panel.detect._pick_count_label.value, flush=True)
    rec = panel.state.current
    for row in panel.tomograms.rows():
        print("table:", row, flush=True)
    if args.second_class_labels:
        # both classes' picks over the sample, the panel's top with the class list and the table
        prot = rec.view("proteasome")
        print(f"proteasome: {len(prot.picks.data)} picks at threshold {prot.result.threshold:.3f}", flush=True)
        viewer.layers.selection = {rec.picks}
        labels.visible = False
        scroll_to(panel.data)
        _settle(app, 1.0)
        viewer.window.screenshot(str(out / "12_two_classes_two_tomograms.png"), canvas_only=False)
        labels.visible = True
    print("evaluation:", panel.evaluate._eval_label.value, flush=True)
    best = panel.evaluate.last_evaluation
    if best is not None and np.isfinite(best.best_threshold):
        print(f"best F1 {best.best_f1:.2f} at threshold {best.best_threshold:.3f}", flush=True)

    viewer.layers.selection = {rec.picks}
    labels.visible = False
    scroll_to(panel.detect)
    _settle(app, 1.0)
    viewer.window.screenshot(str(out / "03_detect_2d_window.png"), canvas_only=False)
    viewer.screenshot(str(out / "04_detect_2d_canvas.png"), canvas_only=True)

    # ground truth over the picks for the evaluation figure
    truth.visible = True
    _settle(app, 0.5)
    viewer.screenshot(str(out / "05_evaluate_truth_2d.png"), canvas_only=True)
    truth.visible = False

    # ---------------------------------------------------------------- 3D
    # the heatmap glows inside the rings of the picks; the noisy tomogram is hidden
    viewer.dims.ndisplay = 3
    tomo.visible = False
    rec.heatmap.rendering = "mip"
    rec.heatmap.opacity = 1.0
    rec.heatmap.bounding_box.visible = True
    viewer.camera.angles = (-20, 25, 70)
    viewer.camera.zoom = viewer.camera.zoom * 1.1
    _settle(app, 1.5)
    viewer.screenshot(str(out / "06_detect_3d.png"), canvas_only=True)
    viewer.dims.ndisplay = 2
    rec.heatmap.opacity = 0.7
    rec.heatmap.bounding_box.visible = False
    tomo.visible = True
    labels.visible = True

    # ---------------------------------------------------------------- review
    # least certain picks first, then the suggestions; verdicts from the ground truth
    radius = 0.5 * panel.state.pick_size(rec)
    review = panel.review
    review._order_combo.value = "least certain first"  # starts the review
    # the review window on its first pick (replaced below by a suggestion when there is one)
    viewer.reset_view()
    review.go(0)
    scroll_to(review)
    _settle(app, 1.0)
    viewer.window.screenshot(str(out / "07_review_window.png"), canvas_only=False)
    for _ in range(min(3, len(review._queue))):
        review.accept() if _decide(panel, truth.data, radius) else review.reject()
    review._suggest_count_spin.value = max(args.review, 1)
    n_acc = n_rej = 0
    if review.suggest():
        # the picture shows a suggestion on a look-alike particle when there is one
        on_look = [i for i, p in enumerate(review._queue) if np.min(np.linalg.norm(look_alikes - p, axis=1)) < radius]
        shot_at = on_look[0] if on_look else min(2, len(review._queue) - 1)
        viewer.reset_view()
        for i in range(len(review._queue)):
            if i == shot_at:
                scroll_to(review)
                _settle(app, 1.0)
                viewer.window.screenshot(str(out / "07_review_window.png"), canvas_only=False)
            if _decide(panel, truth.data, radius):
                review.accept()
                n_acc += 1
            else:
                review.reject()
                n_rej += 1
    print(f"review: {len(labels.data)} labels, {rec.count('negatives')} negatives "
          f"(suggestions: {n_acc} accepted, {n_rej} rejected); near look-alikes: "
          f"{sum(np.min(np.linalg.norm(look_alikes - p, axis=1)) < radius for p in rec.picks.data)} picks",
          flush=True)

    # ---------------------------------------------------------------- improve
    t_improve = time.perf_counter()
    if panel.improve.improve():
        _wait(app, lambda: not panel._busy, timeout_s=1800)
        print(f"Improve, its detection included: {time.perf_counter() - t_improve:.0f} s", flush=True)
        print(panel.improve._improve_status_label.value, flush=True)
        print("evaluation:", panel.evaluate._eval_label.value, flush=True)
        scroll_to(review)
        _settle(app, 0.5)
        grab = panel._form.native.grab(review.native.geometry().united(panel.improve.native.geometry()))
        grab.save(str(out / "08_panel_review_improve.png"))
    else:
        print("Improve is not available in this engine; no 08 screenshot", flush=True)

    # ---------------------------------------------------------------- ignore region, evaluation box
    ny, nx = tomo.data.shape[1:]
    viewer.reset_view()
    viewer.dims.set_point(0, z)
    panel.mask._on_draw_clicked()
    ignore = viewer.layers["synthetic tomogram ignore"]
    zc = float(z)
    ignore.add_rectangles(np.array([[zc, 0, nx * 0.8], [zc, 0, nx - 1], [zc, ny * 0.35, nx - 1],
                                    [zc, ny * 0.35, nx * 0.8]]))
    panel.mask._z_to_spin.value = int(tomo.data.shape[0])
    ignore.mode = "pan_zoom"
    panel.evaluate._on_new_box_clicked()
    box = viewer.layers["synthetic tomogram evaluation box"]
    box.add_rectangles(np.array([[zc, ny * 0.45, nx * 0.05], [zc, ny * 0.45, nx * 0.6], [zc, ny * 0.95, nx * 0.6],
                                 [zc, ny * 0.95, nx * 0.05]]))
    box.mode = "pan_zoom"
    print("evaluation in the box:", panel.evaluate._eval_label.value, flush=True)
    viewer.layers.selection = {rec.picks}
    scroll_to(panel.mask)
    _settle(app, 1.0)
    viewer.window.screenshot(str(out / "09_regions_and_box_window.png"), canvas_only=False)

    # the whole panel after the run, in two halves
    _settle(app, 0.5)
    form = panel._form.native
    top = panel.data.native.geometry().united(panel.detect.native.geometry())
    bottom = panel.review.native.geometry().united(panel.evaluate.native.geometry())
    form.grab(top).save(str(out / "10_panel_top.png"))
    form.grab(bottom).save(str(out / "11_panel_bottom.png"))

    # Explore (no labels needed): the first tomogram's blobs of 100-300 Å, its largest-size cluster chosen
    panel.data._tomogram_combo.value = tomo
    panel.explore._min_diameter_spin.value = 100.0
    panel.explore._max_diameter_spin.value = 300.0
    assert panel.explore.explore()
    _wait(app, lambda: not panel.runner.busy, 600)
    ex = panel.explore.exploration()
    if ex is not None and ex.result.cluster_ids:
        res = ex.result
        big = max(res.cluster_ids, key=lambda c: float(np.median(res.diameter_vox[res.cluster == c])))
        panel.explore._clusters.choose_cluster(big)
        for layer in viewer.layers:  # the tomogram and its candidates only
            layer.visible = layer is tomo or layer is ex.layer
        viewer.dims.set_point(0, float(np.median(res.members(big)[:, 0])))
        scroll_to(panel.explore)
        viewer.window.screenshot(str(out / "13_explore.png"), canvas_only=False)
    viewer.close()
    print(f"screenshots in {out}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
