"""Helpers shared by the panel's tests (the fixtures are in this folder's conftest.py)."""
from __future__ import annotations

import numpy as np

from napari_cetpick._napari.layers import META_KEY

VOXEL_A = 10.0
DIAMETER_A = 150.0  # proteasome
TIMEOUT_MS = 120_000

__all__ = ["META_KEY", "VOXEL_A", "DIAMETER_A", "TIMEOUT_MS", "meta", "open_panel", "wait_idle", "press", "rows",
           "tiny"]


def meta(sim, **extra) -> dict:
    """``metadata["cetpick"]`` of the simulated tomogram as the reader would give it."""
    out = {"voxel_size_a": VOXEL_A, "header_voxel_size_a": VOXEL_A, "thickness_axis": 0,
           "file_shape": list(sim.volume.shape), "path": None, "tomogram_name": "sim"}
    out.update(extra)
    return out


def open_panel(viewer):
    """The panel as users open it: through Plugins, which hands it a proxy of the viewer."""
    _, widget = viewer.window.add_plugin_dock_widget("napari-cetpick", "Particle picker")
    return widget


def wait_idle(qtbot, panel) -> None:
    qtbot.waitUntil(lambda: not panel._busy, timeout=TIMEOUT_MS)


def press(viewer, key: str) -> None:
    """A key press as the canvas delivers it (to the active layer's keymap, then the viewer's)."""
    viewer.window._qt_viewer._key_map_handler.press_key(key)


def rows(a) -> list:
    """Points as sorted rows, rounded (to compare sets of positions)."""
    return sorted(map(tuple, np.round(np.asarray(a, float).reshape(-1, 3), 3)))


def tiny(panel, steps: int = 3) -> None:
    """Training settings of a few steps on small crops: the plumbing, not the model."""
    panel.data._diameter_unit_combo.value = "Å"
    panel.data._diameter_spin.value = DIAMETER_A
    panel.train._max_steps_spin.value = steps
    panel.train._epochs_spin.value = 10_000
    adv = panel.train._advanced
    adv._crop_xy_spin.value = 32
    adv._crop_z_spin.value = 16
    adv._batch_size_spin.value = 2
    panel.train._device_combo.value = "cpu"
