"""Make the tutorial's screenshots from a real napari viewer running the whole loop.

Opens the sample tomogram, the picker panel, adds labels, trains a real (short) model,
detects, and saves PNGs into ``docs/images/``::

    python scripts/make_screenshots.py              # re-runs itself under xvfb-run if no display
    python scripts/make_screenshots.py --steps 400 --out docs/images

On a 2-core CPU the default training (400 steps, the panel's default) takes 2–4 minutes.
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


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "images", help="output folder")
    parser.add_argument("--steps", type=int, default=400, help="training steps (default 400, as the panel)")
    parser.add_argument("--model", type=Path, default=None,
                        help="load this model instead of training (no training screenshot)")
    parser.add_argument("--save-model", type=Path, default=None, help="save the trained model here")
    parser.add_argument("--extra-labels", type=int, default=12,
                        help="ribosomes clicked in addition to the sample's labels (default 12)")
    args = parser.parse_args(argv)
    _ensure_display()
    os.environ.setdefault("XDG_RUNTIME_DIR", tempfile.mkdtemp(prefix="xdg-"))
    warnings.simplefilter("ignore", FutureWarning)
    warnings.simplefilter("ignore", DeprecationWarning)

    import numpy as np
    import napari
    from qtpy.QtWidgets import QApplication

    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    viewer = napari.Viewer(show=True, title="napari-cetpick")
    app = QApplication.instance()
    viewer.window._qt_window.resize(1560, 960)
    viewer.open_sample("napari-cetpick", "synthetic")
    _, panel = viewer.window.add_plugin_dock_widget("napari-cetpick", "Particle picker")
    dock = viewer.window._dock_widgets["Particle picker (napari-cetpick)"] \
        if "Particle picker (napari-cetpick)" in viewer.window._dock_widgets else None
    if dock is not None:
        dock.setMinimumWidth(430)
    tomo = viewer.layers["synthetic tomogram"]
    labels = viewer.layers["labels"]
    truth = viewer.layers["truth: ribosome"]

    # "click" more ribosomes: take them from the ground truth, spread over the whole volume
    rng = np.random.default_rng(0)
    known = np.asarray(labels.data)
    far = [p for p in truth.data if len(known) == 0 or np.min(np.linalg.norm(known - p, axis=1)) > 5]
    extra = np.asarray(far)[rng.permutation(len(far))[: args.extra_labels]]
    if len(extra):
        labels.add(extra)
    print(f"{len(labels.data)} labels", flush=True)

    # a slice through several labelled particles
    z = int(np.median(labels.data[:, 0]))
    viewer.dims.set_point(0, z)
    viewer.layers.selection = {labels}
    _settle(app, 1.0)
    viewer.window.screenshot(str(out / "01_sample_labels.png"), canvas_only=False)

    # ---------------------------------------------------------------- train
    if args.model is not None:
        panel._load_model(args.model)
    else:
        panel._max_steps_spin.value = args.steps
        panel._on_train_clicked()
        shot = {"done": False}

        def grab_mid_training():
            if not shot["done"] and panel._loss_plot.n_points >= max(10, args.steps // 3):
                panel._form.native.grab().save(str(out / "02_panel_training.png"))
                shot["done"] = True

        _wait(app, lambda: not panel._busy, timeout_s=3600, every=grab_mid_training)
        print(panel._train_status_label.value, flush=True)
    if panel._checkpoint is None:
        raise SystemExit("no model: " + panel._train_status_label.value)
    if args.save_model is not None:
        panel._save_model(args.save_model)

    # ---------------------------------------------------------------- detect
    panel._on_detect_clicked()
    _wait(app, lambda: not panel._busy, timeout_s=1800)
    print(panel._detect_status_label.value, panel._pick_count_label.value, flush=True)
    det = panel._current_detection()
    best = getattr(panel, "_last_evaluation", None)
    print("evaluation:", panel._eval_label.value, flush=True)
    if best is not None and np.isfinite(best.best_threshold):
        print(f"best F1 {best.best_f1:.2f} at threshold {best.best_threshold:.3f}", flush=True)

    viewer.layers.selection = {det.picks}
    labels.visible = False
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
    det.heatmap.rendering = "mip"
    det.heatmap.opacity = 1.0
    det.heatmap.bounding_box.visible = True
    viewer.camera.angles = (-20, 25, 70)
    viewer.camera.zoom = viewer.camera.zoom * 1.1
    _settle(app, 1.5)
    viewer.screenshot(str(out / "06_detect_3d.png"), canvas_only=True)
    viewer.dims.ndisplay = 2
    det.heatmap.opacity = 0.7
    det.heatmap.bounding_box.visible = False
    tomo.visible = True
    labels.visible = True

    # the whole panel, after the run
    _settle(app, 0.5)
    panel._form.native.grab().save(str(out / "07_panel.png"))
    viewer.close()
    print(f"screenshots in {out}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
