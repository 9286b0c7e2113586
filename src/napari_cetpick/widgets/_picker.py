"""The particle picker panel: label → Train → Detect → Export → Evaluate in one dock widget.

The panel is thin: it reads layers, fills a :class:`~napari_cetpick.config.TrainConfig` or
:class:`~napari_cetpick.config.DetectConfig`, and runs the engine's generators in napari
workers (see :mod:`._workers`). Records from the workers arrive on the main thread, where
layers are added or updated. Only one run at a time: a new run cancels the previous one
and results of a cancelled run are dropped.
"""
from __future__ import annotations

import contextlib

import inspect
import logging
import math
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FloatSlider,
    FloatSpinBox,
    Label,
    ProgressBar,
    PushButton,
    SpinBox,
)
from napari.qt.threading import create_worker
from qtpy.QtCore import Qt
from qtpy.QtWidgets import QFrame, QScrollArea, QSizePolicy, QVBoxLayout, QWidget
from napari.utils.notifications import show_error, show_info, show_warning

from napari_cetpick._napari.layers import META_KEY, layer_cetpick_meta, layout_from_meta
from napari_cetpick.checkpoint import Checkpoint
from napari_cetpick.config import ARCHS, DetectConfig, TrainConfig

_TRAIN_DEFAULTS = TrainConfig()  # the panel starts from the engine's defaults
from napari_cetpick.device import DEVICES
from napari_cetpick.errors import CetpickError
from napari_cetpick.widgets import _layers as L
from napari_cetpick.widgets._plots import LossCurve, ScoreHistogram
from napari_cetpick.widgets._workers import (
    DetectDone,
    DetectFailed,
    DetectItem,
    DetectStep,
    TrainJob,
    TrainStarted,
    detect_job,
)

if TYPE_CHECKING:
    import napari

log = logging.getLogger(__name__)

DIAMETER_UNITS = ("Å", "voxels")
DEFAULT_DIAMETER_A = 250.0  # a ribosome, the sample's labelled class
EXPORT_FORMATS = {
    "IMOD text (.txt)": ("imod", ".txt"),
    "IMOD model (.mod)": ("mod", ".mod"),
    "RELION 4 STAR (.star, pixels)": ("star", ".star"),
    "RELION 5 STAR (.star, centred Å)": ("star5", ".star"),
    "CSV with scores (.csv)": ("csv", ".csv"),
}
MODEL_FILTER = "cetpick model (*.pt);;All files (*)"


def _fmt_duration(seconds: float) -> str:
    """``75`` -> ``"1 min 15 s"``."""
    if not math.isfinite(seconds):
        return "?"
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, s = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {s:02d} s"
    hours, m = divmod(minutes, 60)
    return f"{hours} h {m:02d} min"


def _row(*widgets, label: str = "") -> Container:
    """A horizontal row of widgets with no margins."""
    row = Container(layout="horizontal", labels=False, widgets=list(widgets), label=label)
    row.margins = (0, 0, 0, 0)
    return row


def _holder(qwidget, label: str = "") -> Container:
    """A magicgui container holding a plain QWidget (the plots, the collapsible)."""
    box = Container(labels=False, label=label)
    box.margins = (0, 0, 0, 0)
    box.native.layout().addWidget(qwidget)
    return box


def _heading(text: str) -> Container:
    return _row(Label(value=f"<b>{text}</b>"))


@dataclass
class _Detection:
    """What the panel keeps per tomogram after a detection."""

    tomogram: object  # napari Image layer
    result: object  # DetectResult (cached candidates for instant re-selection)
    heatmap: object  # napari Image layer
    picks: object  # napari Points layer


class PickerWidget(QWidget):
    """Dock widget running the whole picking loop on the open tomograms.

    A QWidget holding a scroll area around a magicgui form (napari docks a magicgui
    container's inner widget, which would drop a ``scrollable=True`` container's scroll
    area and make the window as tall as the panel). Controls are private, role-named
    magicgui widgets (``_train_button``, ``_threshold_slider`` …) with ``_on_<thing>_<event>``
    callbacks, so tests set values and call callbacks directly.

    Parameters
    ----------
    viewer : napari.viewer.Viewer
        The viewer the panel works on (napari passes it).
    """

    def __init__(self, viewer: napari.viewer.Viewer):
        super().__init__()
        self._form = Container(labels=False)
        self._viewer = viewer
        self._checkpoint: Checkpoint | None = None
        self._worker = None
        self._job: TrainJob | None = None
        self._run_token = 0
        self._run_kind: str | None = None
        self._user_cancelled = False
        self._detections: dict[int, _Detection] = {}
        self._watched_labels = None
        self._updating = False  # set while the panel itself writes into its controls
        self._labels_layers_made: list = []
        self._last_evaluation = None  # EvalResult of the current picks, when scored

        self._build_data_section()
        self._build_train_section()
        self._build_detect_section()
        self._build_export_section()
        self._build_evaluate_section()
        self._build_scroll_area()
        self._connect()
        self.reset_choices()
        self._on_tomogram_changed(self._tomogram_combo.value)
        self._on_labels_layer_changed(self._labels_combo.value)
        self._set_running(None)

    # ================================================================== building
    def _build_data_section(self) -> None:
        self._tomogram_combo = ComboBox(
            label="Tomogram", choices=self._tomogram_choices, nullable=True,
            tooltip="The tomogram to label, train on and detect in (any open 3D image layer).")
        self._voxel_size_spin = FloatSpinBox(
            label="Voxel size (Å)", min=0.0, max=10000.0, step=0.01, value=0.0,
            tooltip="Voxel size of the selected tomogram in Å, from its header; correct it here when the "
                    "header is wrong (0 or 1 often mean unknown). 0 = unknown. Stored in the model and "
                    "used for exports.")
        self._tomogram_info_label = Label(
            label="Geometry", value="no tomogram",
            tooltip="Shape as napari shows it (z = thickness first) and which file axis holds the thickness.")
        self._diameter_spin = FloatSpinBox(
            min=0.0, max=100000.0, step=1.0, value=DEFAULT_DIAMETER_A,
            tooltip="Particle diameter (the original's --bbox). Sets the labels' point size, the size of "
                    "the training targets and the default minimum distance between picks.")
        self._diameter_unit_combo = ComboBox(
            choices=DIAMETER_UNITS, value="Å",
            tooltip="Unit of the particle diameter; switching converts the value with the voxel size.")
        self._diameter_row = _row(self._diameter_spin, self._diameter_unit_combo, label="Particle diameter")
        self._labels_combo = ComboBox(
            label="Labels", choices=self._labels_choices, nullable=True,
            tooltip="Points layer with your clicked particle centres (only read, never changed).")
        self._new_labels_button = PushButton(
            text="New labels layer",
            tooltip="Add an empty Points layer in 'add' mode over the tomogram, points as large as the "
                    "particle and visible a little above and below their slice.")
        self._labels_count_label = Label(value="0 labels", tooltip="Number of points in the labels layer.")
        self._data_section = Container(widgets=[
            _heading("1 · Data and labels"), self._tomogram_combo, self._voxel_size_spin,
            self._tomogram_info_label, self._diameter_row, self._labels_combo,
            _row(self._new_labels_button, self._labels_count_label),
        ])
        self._form.append(self._data_section)

    def _build_train_section(self) -> None:
        self._expected_particles_spin = SpinBox(
            label="Expected particles", min=0, max=10_000_000, value=0,
            tooltip="Roughly how many particles the tomogram holds; sets the class prior τ. "
                    "0 = estimate τ from the labels (assuming you labelled about half of the "
                    "particles in the region you worked in).")
        self._tau_spin = FloatSpinBox(
            label="Prior τ", min=0.0, max=0.5, step=0.001, value=0.0,
            tooltip="Class prior of the positive-unlabelled loss: the fraction of heatmap voxels that "
                    "are particle. Overrides 'Expected particles'. 0 = automatic.")
        self._epochs_spin = SpinBox(
            label="Epochs", min=1, max=100_000, value=_TRAIN_DEFAULTS.num_epochs,
            tooltip="One epoch draws one crop pair per label; training stops after this many epochs or "
                    "'Max steps', whichever comes first.")
        self._max_steps_spin = SpinBox(
            label="Max steps", min=0, max=10_000_000, value=_TRAIN_DEFAULTS.max_steps or 0,
            tooltip="Upper limit on optimiser steps (0 = no limit). 400 steps take about two minutes on a 2-core CPU.")
        self._lr_spin = FloatSpinBox(
            label="Learning rate", min=1e-6, max=1.0, step=1e-4, value=_TRAIN_DEFAULTS.lr,
            tooltip="Adam learning rate.")
        self._device_combo = ComboBox(
            label="Device", choices=DEVICES, value="auto",
            tooltip="auto = CUDA GPU, then Apple MPS, then CPU. Also used for detection.")
        # method settings most users never change
        self._contrastive_check = CheckBox(
            text="Contrastive regulariser", value=_TRAIN_DEFAULTS.contrastive,
            tooltip="Use the debiased contrastive regulariser of cet_pick on top of the PU loss.")
        self._cr_weight_spin = FloatSpinBox(
            label="Contrastive weight", min=0.0, max=10.0, step=0.01, value=_TRAIN_DEFAULTS.cr_weight,
            tooltip="Weight of the contrastive term (the original's --cr_weight).")
        self._temp_spin = FloatSpinBox(
            label="Temperature", min=0.001, max=10.0, step=0.001, value=_TRAIN_DEFAULTS.temp,
            tooltip="Temperature of the contrastive loss (--temp).")
        self._thresh_spin = FloatSpinBox(
            label="Positive thresh", min=0.0, max=1.0, step=0.01, value=_TRAIN_DEFAULTS.thresh,
            tooltip="Target value above which a voxel counts as a positive in the contrastive loss (--thresh).")
        self._gauss_spin = FloatSpinBox(
            label="Gaussian σ", min=0.0, max=10.0, step=0.1, value=_TRAIN_DEFAULTS.gauss,
            tooltip="3D Gaussian pre-filter in working voxels (--gauss); 0 = none. Try 1 on very noisy data.")
        self._compress_check = CheckBox(
            text="Compress z (bin slices by 2)", value=_TRAIN_DEFAULTS.compress,
            tooltip="Average consecutive slice pairs before the network (--compress).")
        self._arch_combo = ComboBox(
            label="Architecture", choices=ARCHS, value=_TRAIN_DEFAULTS.arch,
            tooltip="unet_small is fast and the default; unet_4 / unet_5 are the published networks.")
        self._batch_size_spin = SpinBox(
            label="Batch size", min=1, max=256, value=_TRAIN_DEFAULTS.batch_size, tooltip="Crop pairs per optimiser step.")
        self._crop_xy_spin = SpinBox(
            label="Crop xy", min=32, max=512, step=16, value=_TRAIN_DEFAULTS.crop_xy,
            tooltip="Training crop width in working voxels (multiple of 16).")
        self._crop_z_spin = SpinBox(
            label="Crop z", min=3, max=128, value=_TRAIN_DEFAULTS.crop_z, tooltip="Training crop depth in slices.")
        self._seed_spin = SpinBox(
            label="Seed", min=0, max=2**31 - 1, value=_TRAIN_DEFAULTS.seed,
            tooltip="Seed of all random draws; the same seed gives the same model on a CPU.")
        self._advanced = Container(widgets=[
            self._contrastive_check, self._cr_weight_spin, self._temp_spin, self._thresh_spin,
            self._gauss_spin, self._compress_check, self._arch_combo, self._batch_size_spin,
            self._crop_xy_spin, self._crop_z_spin, self._seed_spin,
        ])
        from superqt import QCollapsible

        self._advanced_collapsible = QCollapsible("Advanced training settings")
        self._advanced_collapsible.addWidget(self._advanced.native)
        self._continue_check = CheckBox(
            text="Continue from the current model", value=False,
            tooltip="Start from the current model's weights instead of a fresh network (same architecture).")
        self._train_button = PushButton(
            text="Train", tooltip="Train a detector on the labels of the selected tomogram, in the background.")
        self._cancel_button = PushButton(
            text="Cancel", tooltip="Stop after the current step; the last good model is kept.")
        self._train_progress = ProgressBar(min=0, max=1, value=0, tooltip="Training steps done.")
        self._train_status_label = Label(value="not trained", tooltip="Step, loss and time left.")
        self._device_label = Label(value="Device: chosen when training starts",
                                   tooltip="Where the network runs.")
        self._loss_plot = LossCurve()
        self._save_model_button = PushButton(
            text="Save model…", tooltip="Save the model with its voxel size, diameter and settings (.pt).")
        self._load_model_button = PushButton(
            text="Load model…", tooltip="Load a model saved by napari-cetpick (panel or command line).")
        self._model_label = Label(value="No model yet.", tooltip="The current model.")
        self._model_label.native.setWordWrap(True)
        self._train_status_label.native.setWordWrap(True)
        self._device_label.native.setWordWrap(True)
        self._train_section = Container(widgets=[
            _heading("2 · Train"), self._expected_particles_spin, self._tau_spin, self._epochs_spin,
            self._max_steps_spin, self._lr_spin, self._device_combo, _holder(self._advanced_collapsible),
            self._continue_check, _row(self._train_button, self._cancel_button), self._train_progress,
            _row(self._train_status_label), _row(self._device_label), _holder(self._loss_plot),
            _row(self._save_model_button, self._load_model_button), _row(self._model_label),
        ])
        self._form.append(self._train_section)

    def _build_detect_section(self) -> None:
        self._detect_all_check = CheckBox(
            text="All open tomograms", value=False,
            tooltip="Detect in every open tomogram instead of the selected one.")
        self._detect_button = PushButton(
            text="Detect", tooltip="Run the model over the whole tomogram (tiled, in the background).")
        self._detect_cancel_button = PushButton(text="Cancel", tooltip="Stop the detection.")
        self._detect_progress = ProgressBar(min=0, max=1, value=0, tooltip="Tiles done.")
        self._detect_status_label = Label(value="", tooltip="Detection progress.")
        self._threshold_slider = FloatSlider(
            label="Score threshold", min=0.0, max=1.0, step=0.001, value=0.5,
            tooltip="Keep picks scoring at least this much (selected tomogram). Updates the picks "
                    "instantly from the cached heatmap; hand edits to the picks are replaced.")
        self._min_distance_spin = FloatSpinBox(
            label="Min. distance (voxels)", min=0.0, max=10000.0, step=0.5, value=0.0,
            tooltip="No two picks closer than this (tomogram voxels); defaults to half the particle "
                    "diameter. Updates the picks instantly.")
        readout = getattr(getattr(self._threshold_slider, "_widget", None), "_readout_widget", None)
        if readout is not None and hasattr(readout, "setDecimals"):
            readout.setDecimals(3)  # barely trained models score in a narrow band
        self._pick_count_label = Label(value="no picks", tooltip="Number of picks in the selected tomogram.")
        self._histogram = ScoreHistogram()
        self._detect_section = Container(widgets=[
            _heading("3 · Detect"), self._detect_all_check,
            _row(self._detect_button, self._detect_cancel_button), self._detect_progress,
            _row(self._detect_status_label), self._threshold_slider, self._min_distance_spin,
            _row(self._pick_count_label), _holder(self._histogram),
        ])
        self._form.append(self._detect_section)

    def _build_export_section(self) -> None:
        self._export_format_combo = ComboBox(
            label="Format", choices=list(EXPORT_FORMATS), value=next(iter(EXPORT_FORMATS)),
            tooltip="IMOD text is model2point's x y z (3dmod frame); .mod opens in 3dmod; RELION 4 "
                    "STAR has pixel coordinates, RELION 5 centred Å; CSV keeps the scores.")
        self._export_binning_spin = FloatSpinBox(
            label="Scale coordinates ×", min=0.01, max=64.0, step=0.5, value=1.0,
            tooltip="Multiply pixel coordinates by this factor, e.g. 4 to export picks made on a "
                    "bin-4 tomogram into the unbinned frame (not used for RELION 5).")
        self._export_button = PushButton(
            text="Export picks…", tooltip="Write the selected tomogram's picks, in its file's frame.")
        self._export_section = Container(widgets=[
            _heading("4 · Export"), self._export_format_combo, self._export_binning_spin, self._export_button,
            _row(Label(value="<small>File › Save Selected Layers also writes .txt .mod .star .csv</small>")),
        ])
        self._form.append(self._export_section)

    def _build_evaluate_section(self) -> None:
        self._truth_combo = ComboBox(
            label="Ground truth", choices=self._truth_choices, nullable=True,
            tooltip="Points layer with the true particle centres (the sample has 'truth: <class>').")
        self._match_radius_spin = FloatSpinBox(
            label="Match radius (voxels)", min=0.0, max=10000.0, step=0.5, value=0.0,
            tooltip="A pick finds a true particle closer than this. 0 = half the particle diameter.")
        self._eval_label = Label(value="", tooltip="Precision, recall and F1 of the current picks.")
        self._eval_label.native.setWordWrap(True)
        self._evaluate_section = Container(widgets=[
            _heading("5 · Evaluate"), self._truth_combo, self._match_radius_spin, _row(self._eval_label),
        ])
        self._form.append(self._evaluate_section)

    def _build_scroll_area(self) -> None:
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        scroll.setFrameShape(QFrame.Shape.NoFrame)
        scroll.setWidget(self._form.native)
        scroll.setMinimumWidth(self._form.native.minimumSizeHint().width() + 24)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(scroll)
        self._scroll = scroll
        for label in (self._train_status_label, self._device_label, self._model_label,
                      self._detect_status_label, self._pick_count_label, self._eval_label,
                      self._tomogram_info_label, self._labels_count_label):
            # magicgui labels are fixed-size; status lines should use the panel's width
            label.native.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Preferred)
            label.native.setAlignment(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter)
            label.native.setWordWrap(True)

    def _connect(self) -> None:
        self._tomogram_combo.changed.connect(self._on_tomogram_changed)
        self._voxel_size_spin.changed.connect(self._on_voxel_size_changed)
        self._diameter_spin.changed.connect(self._on_diameter_changed)
        self._diameter_unit_combo.changed.connect(self._on_diameter_unit_changed)
        self._labels_combo.changed.connect(self._on_labels_layer_changed)
        self._new_labels_button.changed.connect(self._on_new_labels_clicked)
        self._train_button.changed.connect(self._on_train_clicked)
        self._cancel_button.changed.connect(self._on_cancel_clicked)
        self._detect_cancel_button.changed.connect(self._on_cancel_clicked)
        self._save_model_button.changed.connect(self._on_save_model_clicked)
        self._load_model_button.changed.connect(self._on_load_model_clicked)
        self._contrastive_check.changed.connect(self._on_contrastive_changed)
        self._detect_button.changed.connect(self._on_detect_clicked)
        self._threshold_slider.changed.connect(self._on_threshold_changed)
        self._min_distance_spin.changed.connect(self._on_min_distance_changed)
        self._histogram.threshold_clicked.connect(self._on_histogram_clicked)
        self._export_button.changed.connect(self._on_export_clicked)
        self._truth_combo.changed.connect(self._on_truth_changed)
        self._match_radius_spin.changed.connect(self._on_truth_changed)
        events = self._viewer.layers.events
        events.inserted.connect(self._on_layers_inserted)
        events.removed.connect(self._on_layers_removed)
        for layer in self._viewer.layers:
            layer.events.name.connect(self._on_layer_renamed)
        self.destroyed.connect(self._on_panel_destroyed)

    # ================================================================== choices
    def _tomogram_choices(self, widget=None) -> list:
        return [(layer.name, layer) for layer in self._viewer.layers if L.is_tomogram_layer(layer)]

    def _labels_choices(self, widget=None) -> list:
        out = [(layer.name, layer) for layer in self._viewer.layers
               if L.is_points_layer(layer) and L.layer_role(layer) != "picks"
               and not layer_cetpick_meta(layer).get("truth_class")]
        # a sensible default first: the panel's own labels layers, then anything called labels
        out.sort(key=lambda c: (L.layer_role(c[1]) != "labels", "label" not in c[0].lower()))
        return out

    def _truth_choices(self, widget=None) -> list:
        return [(layer.name, layer) for layer in self._viewer.layers
                if L.is_points_layer(layer) and L.layer_role(layer) not in ("picks", "labels")]

    def reset_choices(self, *_) -> None:
        """Refresh the layer lists; keep current choices that still exist."""
        self._updating = True
        try:
            self._form.reset_choices()
            if self._tomogram_combo.value is None and self._tomogram_combo.choices[1:]:
                self._tomogram_combo.value = self._tomogram_combo.choices[1]
            if self._labels_combo.value is None and self._labels_combo.choices[1:]:
                self._labels_combo.value = self._labels_combo.choices[1]
            if self._truth_combo.value is None:
                truth = self._default_truth()
                if truth is not None:
                    self._truth_combo.value = truth
        finally:
            self._updating = False

    def _default_truth(self):
        """The sample's ground truth for the labelled class, when present."""
        labels = self._labels_combo.value
        wanted = layer_cetpick_meta(labels).get("label_class") if labels is not None else None
        candidates = [layer for _, layer in self._truth_choices()
                      if layer_cetpick_meta(layer).get("truth_class")]
        for layer in candidates:
            if wanted and layer_cetpick_meta(layer).get("truth_class") == wanted:
                return layer
        return candidates[0] if candidates else None

    # ================================================================== viewer events
    def _on_layers_inserted(self, event) -> None:
        event.value.events.name.connect(self._on_layer_renamed)
        self._refresh_after_layer_change()

    def _on_layers_removed(self, event) -> None:
        layer = event.value
        for key, det in list(self._detections.items()):
            if det.tomogram is layer:
                del self._detections[key]
        if layer is self._watched_labels:
            self._watch_labels(None)
        self._refresh_after_layer_change()

    def _on_layer_renamed(self, event=None) -> None:
        self._refresh_after_layer_change()

    def _refresh_after_layer_change(self) -> None:
        old = (self._tomogram_combo.value, self._labels_combo.value, self._truth_combo.value)
        self.reset_choices()
        new = (self._tomogram_combo.value, self._labels_combo.value, self._truth_combo.value)
        if new[0] is not old[0]:
            self._on_tomogram_changed(new[0])
        if new[1] is not old[1]:
            self._on_labels_layer_changed(new[1])
        if new[2] is not old[2]:
            self._update_evaluation()

    def _on_panel_destroyed(self, *_) -> None:
        self._stop_worker()

    # ================================================================== data section
    def _voxel_size_a(self, layer=None) -> float | None:
        """Voxel size (Å) of a tomogram layer (the selected one by default), None if unknown."""
        layer = self._tomogram_combo.value if layer is None else layer
        if layer is None:
            return None
        value = layer_cetpick_meta(layer).get("voxel_size_a")
        return float(value) if value else None

    def _diameter_vox(self, layer=None) -> float | None:
        """Particle diameter in voxels of a tomogram layer, None when it cannot be known."""
        value = float(self._diameter_spin.value)
        if value <= 0:
            return None
        if self._diameter_unit_combo.value == "voxels":
            return value
        vs = self._voxel_size_a(layer)
        return value / vs if vs else None

    def _on_tomogram_changed(self, layer=None) -> None:
        if self._updating:
            return
        self._updating = True
        try:
            if layer is None:
                self._voxel_size_spin.value = 0.0
                self._tomogram_info_label.value = "no tomogram: open one (File › Open) or the sample"
            else:
                meta = layer_cetpick_meta(layer)
                self._voxel_size_spin.value = float(meta.get("voxel_size_a") or 0.0)
                shape = " × ".join(str(int(s)) for s in layer.data.shape)
                axis = meta.get("thickness_axis")
                header = meta.get("header_voxel_size_a")
                parts = [f"{shape} (z y x)"]
                if axis is not None:
                    parts.append(f"thickness = file axis {axis}" + (" (IMOD unrotated)" if axis == 1 else ""))
                if header is not None:
                    parts.append(f"header {header:g} Å")
                self._tomogram_info_label.value = " · ".join(parts)
        finally:
            self._updating = False
        self._show_current_detection()

    def _on_voxel_size_changed(self, value: float) -> None:
        if self._updating:
            return
        layer = self._tomogram_combo.value
        if layer is None:
            return
        vs = float(value) if value and value > 0 else None
        # the tomogram layer's metadata is where exports and the writer look for it
        meta = layer.metadata.setdefault(META_KEY, {})
        meta["voxel_size_a"] = vs
        for det in self._detections.values():
            if det.tomogram is layer:
                det.picks.metadata.setdefault(META_KEY, {})["voxel_size_a"] = vs
        self._update_labels_size()

    def _on_diameter_changed(self, value: float = 0.0) -> None:
        if self._updating:
            return
        self._update_labels_size()

    def _on_diameter_unit_changed(self, unit: str) -> None:
        """Convert the diameter to the new unit so that it stays the same length."""
        vs = self._voxel_size_a()
        value = float(self._diameter_spin.value)
        if vs:
            self._updating = True
            try:
                self._diameter_spin.value = value / vs if unit == "voxels" else value * vs
            finally:
                self._updating = False

    def _update_labels_size(self) -> None:
        """Point size of the panel's own labels layers follows the particle diameter."""
        d = self._diameter_vox()
        if not d:
            return
        for layer in self._labels_layers_made:
            if layer in self._viewer.layers:
                layer.current_size = d
                if len(layer.data):
                    layer.size = np.full(len(layer.data), d)

    def _on_new_labels_clicked(self, *_) -> None:
        tomo = self._tomogram_combo.value
        if tomo is None:
            show_error("Open a tomogram (or File › Open Sample › cetpick) before adding labels.")
            return
        size = self._diameter_vox() or 10.0
        meta = dict(L.tomogram_meta(tomo), **{L.ROLE_KEY: "labels"})
        layer = self._viewer.add_points(
            np.zeros((0, 3)), ndim=3, name="labels", size=size, face_color="transparent",
            border_color="yellow", border_width=0.1, scale=tomo.scale,
            translate=tomo.translate, metadata={META_KEY: meta})
        layer.current_size = size
        L.show_out_of_slice(self._viewer, layer, size)
        layer.mode = "add"
        self._labels_layers_made.append(layer)
        self._labels_combo.value = layer
        show_info("Click particle centres in the 'labels' layer; a few dozen across the tomogram is plenty.")

    def _on_labels_layer_changed(self, layer=None) -> None:
        if self._updating:
            return
        self._watch_labels(layer)

    def _watch_labels(self, layer) -> None:
        if self._watched_labels is not None:
            try:
                self._watched_labels.events.data.disconnect(self._on_labels_data_changed)
            except (TypeError, ValueError, RuntimeError):
                pass
        self._watched_labels = layer
        if layer is not None:
            layer.events.data.connect(self._on_labels_data_changed)
            if str(getattr(layer, "projection_mode", "")).startswith("rescale"):
                # the layer asks for out-of-slice display; napari 0.9 needs a thick slice for it
                L.ensure_thick_slice(self._viewer, layer)
        self._on_labels_data_changed()

    def _on_labels_data_changed(self, event=None) -> None:
        layer = self._watched_labels
        n = 0 if layer is None else len(layer.data)
        self._labels_count_label.value = f"{n} label{'s' if n != 1 else ''}"

    # ================================================================== running workers
    @property
    def _busy(self) -> bool:
        """True while a worker (training, its finalisation or detection) runs."""
        return self._run_kind is not None

    def _set_running(self, kind: str | None) -> None:
        self._run_kind = kind
        idle = kind is None
        self._train_button.enabled = idle
        self._detect_button.enabled = idle
        self._load_model_button.enabled = idle
        self._cancel_button.enabled = kind == "train"
        self._detect_cancel_button.enabled = kind == "detect"
        self._save_model_button.enabled = idle and self._checkpoint is not None

    def _stop_worker(self) -> None:
        """Quit the current worker and forget it (its late records are dropped)."""
        self._run_token += 1
        if self._worker is not None:
            # RuntimeError: the worker's Qt object is already gone, so there is nothing to quit
            with contextlib.suppress(RuntimeError):
                self._worker.quit()
        self._worker = None
        self._run_kind = None

    def _start_worker(self, kind: str, func, *, yielded=None, returned=None, aborted=None) -> None:
        """Run ``func`` (a generator or plain function) in a napari worker.

        Callbacks receive the record and run only while this run is current. The workers
        are superqt's plain classes (napari's subclasses relay errors to the notification
        manager only when its hooks are installed), so the panel reports errors and
        warnings itself, once, as napari notifications.
        """
        from superqt.utils import FunctionWorker, GeneratorWorker

        self._stop_worker()
        token = self._run_token
        target = func.func if isinstance(func, partial) else func
        worker_class = GeneratorWorker if inspect.isgeneratorfunction(target) else FunctionWorker
        worker = create_worker(func, _start_thread=False, _ignore_errors=True, _worker_class=worker_class)

        def current(callback):
            def call(*args):
                if token == self._run_token:
                    callback(*args)
            return call

        if yielded is not None:
            worker.yielded.connect(current(yielded))
        if returned is not None:
            worker.returned.connect(current(returned))
        if aborted is not None:
            worker.aborted.connect(current(aborted))
        worker.errored.connect(current(partial(self._on_worker_errored, kind)))
        worker.warned.connect(current(self._on_worker_warned))
        worker.finished.connect(current(partial(self._on_worker_finished, kind)))
        self._worker = worker
        self._user_cancelled = False
        self._set_running(kind)
        worker.start()

    def _on_worker_errored(self, kind: str, exc: Exception) -> None:
        what = {"train": "Training", "finalise": "Saving the last model", "detect": "Detection"}.get(kind, kind)
        if isinstance(exc, CetpickError):
            message = str(exc)
        else:  # a bug or a resource problem: keep the traceback in the log
            log.error("%s failed", what, exc_info=(type(exc), exc, exc.__traceback__))
            message = f"{what} failed: {exc}"
        show_error(message)
        status = f"{what} failed: {exc}"
        if kind in ("train", "finalise"):
            self._train_status_label.value = status
        else:
            self._detect_status_label.value = status

    def _on_worker_warned(self, showwarning_args: tuple) -> None:
        show_warning(str(showwarning_args[0]))

    def _on_worker_finished(self, kind: str) -> None:
        if self._run_kind == kind:
            self._worker = None
            self._set_running(None)

    def _on_cancel_clicked(self, *_) -> None:
        if self._worker is None:
            return
        self._user_cancelled = True
        if self._run_kind == "train":
            self._train_status_label.value = "Cancelling after the current step…"
        else:
            self._detect_status_label.value = "Cancelling…"
        self._worker.quit()

    # ================================================================== training
    def _train_config(self) -> TrainConfig:
        """A TrainConfig from the panel's controls."""
        unit_is_a = self._diameter_unit_combo.value == "Å"
        diameter = float(self._diameter_spin.value)
        return TrainConfig(
            bbox=None if unit_is_a else diameter,
            diameter_a=diameter if unit_is_a else None,
            tau=float(self._tau_spin.value) or None,
            expected_particles=int(self._expected_particles_spin.value) or None,
            thresh=float(self._thresh_spin.value),
            contrastive=bool(self._contrastive_check.value),
            cr_weight=float(self._cr_weight_spin.value),
            temp=float(self._temp_spin.value),
            num_epochs=int(self._epochs_spin.value),
            max_steps=int(self._max_steps_spin.value) or None,
            lr=float(self._lr_spin.value),
            arch=str(self._arch_combo.value),
            batch_size=int(self._batch_size_spin.value),
            crop_xy=int(self._crop_xy_spin.value),
            crop_z=int(self._crop_z_spin.value),
            gauss=float(self._gauss_spin.value),
            compress=bool(self._compress_check.value),
            seed=int(self._seed_spin.value),
        )

    def _require_tomogram(self):
        tomo = self._tomogram_combo.value
        if tomo is None:
            raise CetpickError("No tomogram: open one (File › Open) or the sample (File › Open Sample).")
        return tomo

    def _training_labels(self, tomo) -> np.ndarray:
        """The labels as (n, 3) zyx voxels of ``tomo``; CetpickError when unusable."""
        from napari_cetpick.train import check_labels

        layer = self._labels_combo.value
        if layer is None or len(layer.data) == 0:
            raise CetpickError("No labels: add a labels layer ('New labels layer') and click at least "
                               "one particle before training.")
        zyx = L.points_in_image_frame(layer, tomo)
        return check_labels(zyx, tomo.data.shape, f"Labels layer '{layer.name}'")

    def _on_train_clicked(self, *_) -> None:
        from napari_cetpick.train import resolve_diameter_vox

        try:
            tomo = self._require_tomogram()
            labels = self._training_labels(tomo)
            config = self._train_config()
            config.validate()
            vs = self._voxel_size_a(tomo)
            resolve_diameter_vox(config, vs)
        except CetpickError as err:
            show_error(str(err))
            return
        init = self._checkpoint if (self._continue_check.value and self._checkpoint is not None) else None
        self._job = TrainJob([tomo.data], [labels], config, vs, device=str(self._device_combo.value), init=init)
        self._loss_plot.clear()
        self._train_progress.value = 0
        start = "Continuing from the current model" if init is not None else "Preparing"
        self._train_status_label.value = f"{start}: reading and binning the tomogram…"
        self._start_worker("train", self._job.run, yielded=self._on_train_yielded,
                           returned=self._on_train_returned, aborted=self._on_train_aborted)

    def _on_train_yielded(self, record) -> None:
        if isinstance(record, TrainStarted):
            self._train_progress.max = max(record.total_steps, 1)
            self._train_progress.value = 0
            self._device_label.value = f"Device: {record.device}"
            self._train_status_label.value = (f"Training {record.total_steps} steps on {record.n_labels} labels "
                                              f"(bin {record.bin_xy}, τ {record.tau:.3g})…")
            return
        if record.message:
            show_warning(record.message)
        self._train_progress.value = min(record.step, self._train_progress.max)
        self._loss_plot.append(record.step, record.loss)
        self._train_status_label.value = (f"step {record.step}/{record.total} · loss {record.loss:.4f} · "
                                          f"{_fmt_duration(record.eta_s)} left")

    def _on_train_returned(self, ckpt: Checkpoint | None) -> None:
        self._job = None
        if ckpt is None:
            self._train_status_label.value = "Cancelled before the first step; the previous model is kept."
            return
        self._set_checkpoint(ckpt)
        info = ckpt.info
        status = "cancelled" if self._user_cancelled else str(info.get("status", "finished"))
        self._train_status_label.value = (f"Training {status}: {info.get('steps', 0)} steps in "
                                          f"{_fmt_duration(info.get('elapsed_s', 0.0))}; default threshold "
                                          f"{ckpt.default_threshold:.2f}.")
        show_info(f"Model ready ({info.get('steps', 0)} steps). Press Detect.")

    def _on_train_aborted(self) -> None:
        """After Cancel: fetch the last good model from the Trainer, off the main thread."""
        job = self._job
        if not self._user_cancelled or job is None:
            return
        self._train_status_label.value = "Cancelled; keeping the model of the last finished step…"
        self._start_worker("finalise", job.last_good_checkpoint, returned=self._on_train_returned)
        self._user_cancelled = True  # _start_worker reset it; the record says "cancelled"

    def _set_checkpoint(self, ckpt: Checkpoint, origin: str = "") -> None:
        self._checkpoint = ckpt
        self._model_label.value = (origin + ckpt.summary())
        self._model_label.tooltip = "\n".join(f"{k}: {v}" for k, v in ckpt.config.to_dict().items())
        self._save_model_button.enabled = not self._busy
        self._check_model_voxel_size()

    def _check_model_voxel_size(self) -> None:
        ckpt, vs = self._checkpoint, self._voxel_size_a()
        if ckpt is None or not ckpt.voxel_size_a or not vs:
            return
        if abs(vs / ckpt.voxel_size_a - 1) > 0.02:
            show_warning(f"The model was trained at {ckpt.voxel_size_a:g} Å/voxel but the selected tomogram "
                         f"has {vs:g} Å/voxel; detection rebins when the ratio is a whole number and refuses "
                         f"otherwise. Correct the voxel size if the header is wrong.")

    # ------------------------------------------------------------------ model files
    def _ask_path(self, save: bool, caption: str, file_filter: str, default: str = "") -> str:
        """A file name from a dialog ('' when cancelled). Tests replace this method."""
        from qtpy.QtWidgets import QFileDialog

        if save:
            path, _ = QFileDialog.getSaveFileName(self, caption, default, file_filter)
        else:
            path, _ = QFileDialog.getOpenFileName(self, caption, default, file_filter)
        return path

    def _on_save_model_clicked(self, *_) -> None:
        if self._checkpoint is None:
            show_error("No model to save: train or load one first.")
            return
        path = self._ask_path(True, "Save model", MODEL_FILTER, "cetpick_model.pt")
        if path:
            self._save_model(path)

    def _save_model(self, path) -> Path | None:
        try:
            out = self._checkpoint.save(Path(path).with_suffix(".pt") if not Path(path).suffix else path)
        except (CetpickError, OSError) as err:
            show_error(f"Could not save the model: {err}")
            return None
        show_info(f"Model saved to {out}")
        return out

    def _on_load_model_clicked(self, *_) -> None:
        path = self._ask_path(False, "Load model", MODEL_FILTER)
        if path:
            self._load_model(path)

    def _load_model(self, path) -> Checkpoint | None:
        try:
            ckpt = Checkpoint.load(path)
        except CetpickError as err:
            show_error(str(err))
            return None
        self._set_checkpoint(ckpt, origin=f"{Path(path).name}: ")
        history = ckpt.info.get("loss_history") or []
        self._loss_plot.set_history(range(1, len(history) + 1), history)
        self._apply_model_settings(ckpt)
        return ckpt

    def _apply_model_settings(self, ckpt: Checkpoint) -> None:
        """Show the model's own settings in the panel (so 'continue' trains the same network)."""
        cfg = ckpt.config
        self._updating = True
        try:
            if self._diameter_unit_combo.value == "Å" and ckpt.diameter_a:
                self._diameter_spin.value = round(ckpt.diameter_a, 2)
            else:
                self._diameter_unit_combo.value = "voxels"
                self._diameter_spin.value = round(ckpt.diameter_vox, 2)
            self._arch_combo.value = cfg.arch
            self._gauss_spin.value = cfg.gauss
            self._compress_check.value = cfg.compress
            self._contrastive_check.value = cfg.contrastive
            self._cr_weight_spin.value = cfg.cr_weight
            self._temp_spin.value = cfg.temp
            self._thresh_spin.value = cfg.thresh
        finally:
            self._updating = False
        self._update_labels_size()

    def _on_contrastive_changed(self, value: bool) -> None:
        self._cr_weight_spin.enabled = bool(value)
        self._temp_spin.enabled = bool(value)

    # ================================================================== detection
    def _on_detect_clicked(self, *_) -> None:
        try:
            if self._checkpoint is None:
                raise CetpickError("No model: train one (Train) or load one (Load model…) first.")
            if self._detect_all_check.value:
                tomos = [layer for _, layer in self._tomogram_choices()]
                if not tomos:
                    raise CetpickError("No tomogram is open.")
            else:
                tomos = [self._require_tomogram()]
        except CetpickError as err:
            show_error(str(err))
            return
        items = [DetectItem(id(t), t.name, t.data, self._voxel_size_a(t)) for t in tomos]
        self._detect_progress.value = 0
        self._detect_status_label.value = "Starting…"
        job = partial(detect_job, self._checkpoint, items, DetectConfig(), str(self._device_combo.value))
        self._start_worker("detect", job, yielded=self._on_detect_yielded, returned=self._on_detect_returned)

    def _tomogram_by_key(self, key: int):
        for layer in self._viewer.layers:
            if id(layer) == key and L.is_tomogram_layer(layer):
                return layer
        return None

    def _on_detect_yielded(self, record) -> None:
        if isinstance(record, DetectStep):
            p = record.progress
            self._detect_progress.max = max(p.n_tiles, 1)
            self._detect_progress.value = p.tile
            prefix = f"{record.name} ({record.index + 1}/{record.count}): " if record.count > 1 else ""
            self._detect_status_label.value = (f"{prefix}tile {p.tile}/{p.n_tiles} · "
                                               f"{_fmt_duration(p.eta_s)} left · {p.device.split(' —')[0]}")
        elif isinstance(record, DetectFailed):
            show_error(f"{record.name}: {record.message}")
        elif isinstance(record, DetectDone):
            tomo = self._tomogram_by_key(record.key)
            if tomo is not None:  # the layer may have been closed meanwhile
                self._add_detection(tomo, record.result)

    def _on_detect_returned(self, n_ok: int) -> None:
        self._update_pick_count()
        det = self._current_detection()
        if det is not None:
            self._detect_status_label.value = (f"Done in {_fmt_duration(det.result.elapsed_s)}: "
                                               f"{len(det.result.cand_scores)} candidate peaks cached.")
        elif not n_ok:
            self._detect_status_label.value = "No tomogram could be processed."

    def _pick_size(self, tomo, result) -> float:
        """Point size of the picks: the model's particle diameter in this tomogram's voxels."""
        ckpt, vs = self._checkpoint, self._voxel_size_a(tomo)
        ratio = ckpt.voxel_size_a / vs if (ckpt is not None and ckpt.voxel_size_a and vs) else 1.0
        return float(result.diameter_vox * ratio)

    def _add_detection(self, tomo, result) -> None:
        heatmap = L.show_heatmap(self._viewer, tomo, result)
        picks = L.show_picks(self._viewer, tomo, result.zyx, result.scores, self._pick_size(tomo, result))
        old = self._detections.get(id(tomo))
        if old is None or old.picks is not picks:
            picks.events.data.connect(self._on_picks_edited)
        self._detections[id(tomo)] = _Detection(tomo, result, heatmap, picks)
        if tomo is self._tomogram_combo.value:
            self._show_current_detection()

    def _current_detection(self) -> _Detection | None:
        tomo = self._tomogram_combo.value
        return None if tomo is None else self._detections.get(id(tomo))

    def _show_current_detection(self) -> None:
        """Put the selected tomogram's detection into the threshold controls and plots."""
        det = self._current_detection()
        self._updating = True
        try:
            if det is None:
                self._histogram.set_scores(None)
                self._pick_count_label.value = "no picks: press Detect"
            else:
                self._threshold_slider.value = round(det.result.threshold, 3)
                self._min_distance_spin.value = float(det.result.min_distance_vox)
                self._histogram.set_scores(det.result.cand_scores)
        finally:
            self._updating = False
        self._update_pick_count()
        self._update_evaluation()

    def _reselect(self, threshold: float | None = None, min_distance: float | None = None) -> None:
        """Re-threshold the cached candidates of the selected tomogram; no new detection."""
        det = self._current_detection()
        if det is None:
            return
        zyx, scores = det.result.reselect(threshold=threshold, min_distance_vox=min_distance)
        if det.picks not in self._viewer.layers:  # the user deleted it: bring it back
            det.picks = L.show_picks(self._viewer, det.tomogram, zyx, scores,
                                     self._pick_size(det.tomogram, det.result))
            det.picks.events.data.connect(self._on_picks_edited)
        else:
            L.set_picks(det.picks, zyx, scores)
        self._update_pick_count()
        self._update_evaluation()

    def _on_threshold_changed(self, value: float) -> None:
        if not self._updating:
            self._reselect(threshold=float(value))

    def _on_min_distance_changed(self, value: float) -> None:
        if not self._updating:
            self._reselect(min_distance=float(value))

    def _on_histogram_clicked(self, value: float) -> None:
        self._threshold_slider.value = round(value, 3)

    def _on_picks_edited(self, event=None) -> None:
        det = self._current_detection()
        if det is not None and event is not None and getattr(event, "source", None) is det.picks:
            self._update_pick_count()
            self._update_evaluation()

    def _update_pick_count(self) -> None:
        det = self._current_detection()
        if det is None:
            return
        n = len(det.picks.data) if det.picks in self._viewer.layers else len(det.result.zyx)
        total = sum(len(d.picks.data) for d in self._detections.values())
        extra = f" ({total} in {len(self._detections)} tomograms)" if len(self._detections) > 1 else ""
        self._pick_count_label.value = f"{n} pick{'s' if n != 1 else ''}{extra}"
        self._histogram.set_threshold(det.result.threshold, n)

    # ================================================================== export
    def _on_export_clicked(self, *_) -> None:
        det = self._current_detection()
        if det is None:
            show_error("No picks to export: run Detect on the selected tomogram first.")
            return
        key = str(self._export_format_combo.value)
        fmt, ext = EXPORT_FORMATS[key]
        stem = layer_cetpick_meta(det.tomogram).get("path")
        base = Path(stem).with_suffix("") if stem else Path.cwd() / det.tomogram.name.replace(" ", "_")
        default = f"{base}_picks{'_relion5' if fmt == 'star5' else ''}{ext}"
        path = self._ask_path(True, "Export picks", f"{key.split(' (')[0]} (*{ext});;All files (*)", default)
        if path:
            self._export_picks(path, key)

    def _export_picks(self, path, format_key: str | None = None) -> Path | None:
        """Write the selected tomogram's picks in its file's frame; returns the path written."""
        det = self._current_detection()
        if det is None:
            show_error("No picks to export: run Detect on the selected tomogram first.")
            return None
        from napari_cetpick.io import write_points

        fmt, ext = EXPORT_FORMATS[format_key or str(self._export_format_combo.value)]
        path = Path(path)
        if path.suffix.lower() != ext:
            path = path.with_name(path.name + ext)
        tomo, picks = det.tomogram, det.picks
        zyx = L.points_in_image_frame(picks, tomo)
        features = picks.features
        features = features[["score"]] if "score" in features.columns else None
        meta = L.tomogram_meta(tomo)
        try:
            out = write_points(path, zyx, features=features, fmt=fmt, layout=layout_from_meta(meta),
                               voxel_size_a=self._voxel_size_a(tomo),
                               tomogram_name=meta.get("tomogram_name") or tomo.name,
                               shape_zyx=tuple(tomo.data.shape),
                               binning=1.0 if fmt == "star5" else float(self._export_binning_spin.value))
        except (CetpickError, OSError) as err:
            show_error(f"Export failed: {err}")
            return None
        show_info(f"Exported {len(zyx)} picks to {out}")
        return out

    # ================================================================== evaluation
    def _on_truth_changed(self, *_) -> None:
        if not self._updating:
            self._update_evaluation()

    def _update_evaluation(self) -> None:
        from napari_cetpick.evaluate import evaluate

        truth, det = self._truth_combo.value, self._current_detection()
        if truth is None:
            self._eval_label.value = "Choose a ground-truth Points layer to score the picks."
            return
        if det is None:
            self._eval_label.value = "Detect to score the picks against the ground truth."
            return
        radius = float(self._match_radius_spin.value) or 0.5 * self._pick_size(det.tomogram, det.result)
        picks = det.picks if det.picks in self._viewer.layers else None
        if picks is not None:
            pred = L.points_in_image_frame(picks, det.tomogram)
            scores = picks.features["score"].to_numpy(float) if "score" in picks.features.columns else None
        else:
            pred, scores = det.result.zyx, det.result.scores
        true = L.points_in_image_frame(truth, det.tomogram)
        try:
            res = evaluate(pred, scores, true, radius)
        except CetpickError as err:
            self._eval_label.value = str(err)
            return
        self._eval_label.value = (f"precision {res.precision:.2f} · recall {res.recall:.2f} · "
                                  f"<b>F1 {res.f1:.2f}</b><br>{res.n_matched} of {res.n_true} true particles "
                                  f"found by {res.n_pred} picks (match radius {radius:.1f} voxels)")
        self._last_evaluation = res
