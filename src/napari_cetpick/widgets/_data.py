"""Section 1 · Data: the tomogram, its voxel size, the particle diameter, labels, negatives."""
from __future__ import annotations

import numpy as np
from magicgui.widgets import ComboBox, Container, FloatSpinBox, PushButton
from napari.utils.notifications import show_error, show_info

from napari_cetpick._napari.layers import layer_cetpick_meta
from napari_cetpick._napari.styles import restyle
from napari_cetpick.review import nearest_distance
from napari_cetpick.widgets import _layers as L
from napari_cetpick.widgets._common import heading, narrow, plural, row, status_label
from napari_cetpick._napari.session import DIAMETER_UNITS, PanelState
from napari_cetpick.widgets._tracking import LayerTracker


class DataSection(Container):
    """Which tomogram, at which voxel size, which particle, which clicks."""

    def __init__(self, state: PanelState, tracker: LayerTracker, class_row=None):
        super().__init__(labels=True)
        self._state, self._tracker = state, tracker
        self._updating = False
        self._choosing_for = None  # the record whose layers are being chosen (before it is current)
        self._tomogram_combo = ComboBox(
            label="Tomogram", choices=self._tomogram_choices, nullable=True,
            tooltip="The tomogram to label, train on and detect in (any open 3D image layer).")
        self._voxel_size_spin = FloatSpinBox(
            label="Voxel size (Å)", min=0.0, max=10000.0, step=0.01, value=0.0,
            tooltip="Voxel size of the selected tomogram in Å, from its header; correct it here when the "
                    "header is wrong (0 or 1 often mean unknown). 0 = unknown. Stored in the model and "
                    "used for exports.")
        self._tomogram_info_label = status_label(
            "no tomogram", "Shape as napari shows it (z = thickness first) and which file axis holds the thickness.")
        self._tomogram_info_label.label = "Geometry"
        self._diameter_spin = FloatSpinBox(
            min=0.0, max=100000.0, step=1.0, value=state.diameter,
            tooltip="Particle diameter (the original's --bbox). Sets the size of every mark, the training "
                    "targets and the default minimum distance between picks.")
        self._diameter_unit_combo = ComboBox(
            choices=DIAMETER_UNITS, value=state.diameter_unit,
            tooltip="Unit of the particle diameter; switching converts the value with the voxel size.")
        self._labels_combo = ComboBox(
            label="Labels", choices=self._labels_choices, nullable=True,
            tooltip="Points layer with your clicked particle centres (yellow circles). Train reads it; "
                    "Accept in Review adds to it.")
        self._new_labels_button = PushButton(
            text="New labels", tooltip="Add an empty labels layer in 'add' mode over the tomogram, points as "
                                       "large as the particle.")
        self._labels_count_label = status_label("0 labels", "Number of points in the labels layer.")
        self._negatives_combo = ComboBox(
            label="Negatives", choices=self._negatives_choices, nullable=True,
            tooltip="Points layer of places that are NOT the particle (magenta crosses): rejected picks and "
                    "'not a particle' clicks. Training and Improve learn from them.")
        self._new_negatives_button = PushButton(
            text="New negatives", tooltip="Add an empty negatives layer over the tomogram.")
        self._negatives_count_label = status_label("0 negatives", "Number of points in the negatives layer.")
        narrow(self._tomogram_combo, self._labels_combo, self._negatives_combo, self._diameter_unit_combo)
        self.extend([
            heading("1 · Data and labels"), self._tomogram_combo, self._voxel_size_spin,
            self._tomogram_info_label, *([class_row] if class_row is not None else []),
            row(self._diameter_spin, self._diameter_unit_combo, label="Particle diameter"),
            self._labels_combo, row(self._new_labels_button, self._labels_count_label, label=" "),
            self._negatives_combo, row(self._new_negatives_button, self._negatives_count_label, label=" "),
        ])
        self._tomogram_combo.changed.connect(self._on_tomogram_changed)
        self._voxel_size_spin.changed.connect(self._on_voxel_size_changed)
        self._diameter_spin.changed.connect(self._on_diameter_changed)
        self._diameter_unit_combo.changed.connect(self._on_diameter_unit_changed)
        self._labels_combo.changed.connect(self._on_labels_layer_changed)
        self._negatives_combo.changed.connect(self._on_negatives_layer_changed)
        self._new_labels_button.changed.connect(self._on_new_labels_clicked)
        self._new_negatives_button.changed.connect(self._on_new_negatives_clicked)
        state.points_changed.connect(self._on_points_changed)
        state.diameter_changed.connect(self._on_state_diameter_changed)
        state.class_changed.connect(lambda name: self._adopt_points_layers())

    # ------------------------------------------------------------------ choices
    def _layers(self):
        return [L.unwrap(layer) for layer in self._state.viewer.layers]

    def _tomogram_choices(self, widget=None) -> list:
        return [(layer.name, layer) for layer in self._layers() if L.is_tomogram_layer(layer)]

    def _points_choices(self, exclude_roles) -> list:
        rec = self._choosing_for or self._state.current  # another tomogram's layers are not offered
        return [(layer.name, layer) for layer in self._layers()
                if L.is_points_layer(layer) and L.layer_role(layer) not in (*exclude_roles, "candidates")
                and not layer_cetpick_meta(layer).get("truth_class")
                and layer_cetpick_meta(layer).get("kind") not in ("truth", "picks")
                and not (rec is not None and self._state.belongs_elsewhere(layer, rec))]

    def _labels_choices(self, widget=None) -> list:
        out = [c for c in self._points_choices(("picks", "negatives", "cursor"))
               if layer_cetpick_meta(c[1]).get("kind") != "negatives"]
        out.sort(key=lambda c: (L.layer_role(c[1]) != "labels", "label" not in c[0].lower()))
        return out

    def _negatives_choices(self, widget=None) -> list:
        return [c for c in self._points_choices(("picks", "labels", "cursor"))
                if L.layer_role(c[1]) == "negatives" or layer_cetpick_meta(c[1]).get("kind") == "negatives"
                or "negative" in c[0].lower()]

    def reset_choices(self, *_) -> None:
        """Refresh the layer lists; keep current choices that still exist."""
        self._updating = True
        try:
            super().reset_choices()
            if self._tomogram_combo.value is None and self._tomogram_combo.choices[1:]:
                self._tomogram_combo.value = self._tomogram_combo.choices[1]
        finally:
            self._updating = False
        tomo = self._tomogram_combo.value
        if L.unwrap(tomo) is not (None if self._state.current is None else self._state.current.layer):
            self._on_tomogram_changed(tomo)
        else:
            self._adopt_points_layers()
            if self._state.current is not None:
                self._state.points_changed.emit(self._state.current)

    # ------------------------------------------------------------------ tomogram
    def _on_tomogram_changed(self, layer=None) -> None:
        if self._updating:
            return
        layer = L.unwrap(layer)
        rec = self._state.record(layer)
        self._updating = True
        try:
            if layer is None:
                self._voxel_size_spin.value = 0.0
                self._tomogram_info_label.value = "no tomogram: open one (File › Open) or the sample"
            else:
                meta = layer_cetpick_meta(layer)
                self._voxel_size_spin.value = float(meta.get("voxel_size_a") or 0.0)
                shape = " × ".join(str(int(s)) for s in layer.data.shape)
                axis, header = meta.get("thickness_axis"), meta.get("header_voxel_size_a")
                parts = [f"{shape} (z y x)"]
                if axis is not None:
                    parts.append(f"thickness = file axis {axis}" + (" (IMOD unrotated)" if axis == 1 else ""))
                if header is not None:
                    parts.append(f"header {header:g} Å")
                self._tomogram_info_label.value = " · ".join(parts)
        finally:
            self._updating = False
        self._adopt_points_layers(rec)  # before the others hear of the new tomogram
        self._state.set_current(layer)
        if rec is not None:
            self._state.points_changed.emit(rec)

    def _adopt_points_layers(self, rec=None) -> None:
        """Show a tomogram's labels and negatives, choosing sensible layers the first time."""
        rec = self._state.current if rec is None else rec
        self._updating, self._choosing_for = True, rec
        try:
            super().reset_choices()
            if rec is not None:
                if rec.labels is None or not self._state.live(rec.labels):
                    rec.labels = self._state.default_points_layer([c[1] for c in self._labels_choices()], rec, fallback=True)
                    self._state.name_default_class(rec)
                if rec.negatives is None or not self._state.live(rec.negatives):
                    rec.negatives = self._state.default_points_layer([c[1] for c in self._negatives_choices()], rec, fallback=False)
            for combo, layer in ((self._labels_combo, None if rec is None else rec.labels),
                                 (self._negatives_combo, None if rec is None else rec.negatives)):
                combo.value = layer if layer is not None and any(c is layer for c in combo.choices) else None
        finally:
            self._updating, self._choosing_for = False, None
        if rec is not None:
            for layer in (rec.labels, rec.negatives):
                self._tracker.watch(layer)
                if layer is not None and str(getattr(layer, "projection_mode", "")).startswith("rescale"):
                    L.ensure_thick_slice(self._state.viewer, layer)
            self._restyle_read_layers(rec)
        self._on_points_changed(None)

    def _restyle_read_layers(self, rec) -> None:
        """Coordinate files opened with File › Open become particle-sized in their kind's look."""
        d = self._state.diameter_vox(rec)
        for layer in (rec.labels, rec.negatives):
            meta = layer_cetpick_meta(layer) if layer is not None else {}
            if d and meta.get("points_path") and not meta.get("restyled"):
                restyle(layer, "negatives" if layer is rec.negatives else "labels", d)
                layer.metadata["cetpick"]["restyled"] = True

    def _on_voxel_size_changed(self, value: float) -> None:
        rec = self._state.current
        if self._updating or rec is None:
            return
        self._state.set_voxel_size(rec, float(value) if value and value > 0 else None)

    # ------------------------------------------------------------------ diameter
    def _on_diameter_changed(self, value: float = 0.0) -> None:
        if not self._updating:
            self._state.set_diameter(float(self._diameter_spin.value), str(self._diameter_unit_combo.value))

    def _on_diameter_unit_changed(self, unit: str) -> None:
        """Convert the diameter to the new unit so that it stays the same length."""
        if self._updating:
            return
        rec = self._state.current
        vs = None if rec is None else rec.voxel_size_a
        value = float(self._diameter_spin.value)
        self._updating = True
        try:
            if vs:
                self._diameter_spin.value = value / vs if unit == "voxels" else value * vs
        finally:
            self._updating = False
        self._state.set_diameter(float(self._diameter_spin.value), str(unit))

    def _on_state_diameter_changed(self) -> None:
        """Show a diameter set elsewhere (e.g. a loaded model's); resize the panel's marks."""
        self._updating = True
        try:
            self._diameter_unit_combo.value = self._state.diameter_unit
            self._diameter_spin.value = self._state.diameter
        finally:
            self._updating = False
        self._update_point_sizes()

    def _update_point_sizes(self) -> None:
        """The panel's own labels and negatives layers follow the particle diameter."""
        for rec in self._state.records.values():
            d = self._state.diameter_vox(rec)
            for layer in (rec.labels, rec.negatives):
                if d and layer is not None and L.layer_role(layer) in ("labels", "negatives") \
                        and self._state.live(layer):
                    layer.current_size = d
                    if len(layer.data):
                        layer.size = np.full(len(layer.data), d)

    # ------------------------------------------------------------------ labels, negatives
    def _on_labels_layer_changed(self, layer=None) -> None:
        self._set_points_layer("labels", layer)

    def _on_negatives_layer_changed(self, layer=None) -> None:
        self._set_points_layer("negatives", layer)

    def _set_points_layer(self, what: str, layer) -> None:
        rec = self._state.current
        if self._updating or rec is None:
            return
        setattr(rec, what, L.unwrap(layer))
        self._tracker.watch(L.unwrap(layer))
        if layer is not None and str(getattr(layer, "projection_mode", "")).startswith("rescale"):
            L.ensure_thick_slice(self._state.viewer, layer)
        self._state.points_changed.emit(rec)

    def _on_points_changed(self, rec=None) -> None:
        if rec is not None and rec is not self._state.current:
            return
        cur = self._state.current
        n_lab = 0 if cur is None else cur.count("labels")
        n_neg = 0 if cur is None else cur.count("negatives")
        self._labels_count_label.value = plural(n_lab, "label")
        self._negatives_count_label.value = plural(n_neg, "negative")

    def new_points_layer(self, what: str, announce: bool = True, rec=None):
        """Make an empty labels or negatives layer for a tomogram (the current one) and select it."""
        rec = rec or self._state.current
        if rec is None:
            show_error("Open a tomogram (or File › Open Sample › cetpick) before adding labels.")
            return None
        size = self._state.diameter_vox(rec, rec.active) or 10.0
        others = [r for r in self._state.records.values() if not r.same(rec) and self._state.live(r.layer)]
        cls = self._state.named_class(rec.active)
        words = [rec.name] if (others or cls or what != "labels") else []
        name = " ".join(words + ([cls] if cls else []) + [what])
        colour = self._state.particle_class(rec.active).colour if (cls and what == "labels") else None
        layer = L.add_points_layer(self._state.viewer, rec.layer, what, size, name=name, class_name=rec.active,
                                   color=colour)
        layer.mode = "add"
        setattr(rec, what, layer)
        self._tracker.watch(layer)
        self.reset_choices()
        self._state.points_changed.emit(rec)
        if announce and what == "labels":
            show_info(f"Click particle centres in the '{layer.name}' layer; a few dozen across the tomogram is plenty.")
        return layer

    def restore_points(self, rec, what: str, zyx) -> int:
        """Add tomogram-voxel positions to a record's labels or negatives layer (made when it has
        none), skipping positions already there; returns how many were added."""
        zyx = np.asarray(zyx, float).reshape(-1, 3)
        layer = getattr(rec, what)
        if layer is None or not self._state.live(layer):
            layer = self.new_points_layer(what, announce=False, rec=rec)
            layer.mode = "pan_zoom"
        zyx = zyx[nearest_distance(zyx, rec.points(what)) > 1e-3]  # not twice
        if len(zyx):
            self._tracker.add_point(layer, rec, zyx)
        return len(zyx)

    def _on_new_labels_clicked(self, *_) -> None:
        self.new_points_layer("labels")

    def _on_new_negatives_clicked(self, *_) -> None:
        self.new_points_layer("negatives")
