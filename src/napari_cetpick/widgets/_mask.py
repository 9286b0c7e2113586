"""Section 5 · Ignore regions: gold, carbon edges, cracks — left out of training and detection.

Regions are drawn on a Shapes layer (rectangles, polygons, ellipses applied over a z range)
or painted on a Labels layer. The resulting mask (1 = keep, 0 = ignore, the tomogram's
shape) goes to Train, Improve and Detect, and can be saved as an MRC in the tomogram
file's own layout for ``cetpick train/detect --mask``.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from magicgui.widgets import CheckBox, ComboBox, Container, PushButton, SpinBox
from napari.utils.notifications import show_error, show_info

from napari_cetpick._napari.layers import META_KEY, layer_cetpick_meta, layout_from_meta
from napari_cetpick._napari.masks import ignore_mask, keep_mask, z_slices
from napari_cetpick.errors import CetpickError
from napari_cetpick.widgets import _layers as L
from napari_cetpick.widgets._common import heading, narrow, row, status_label
from napari_cetpick._napari.session import PanelState, TomogramRecord

MASK_FILTER = "MRC mask (*.mrc);;All files (*)"


class MaskSection(Container):
    """Choose or draw the ignore regions of the selected tomogram; save them as a mask."""

    def __init__(self, state: PanelState, ask_path):
        super().__init__(labels=True)
        self._state, self._ask_path = state, ask_path
        self._updating = False
        self._layer_combo = ComboBox(
            label="Regions", choices=self._choices, nullable=True,
            tooltip="A Shapes layer (rectangles, polygons, ellipses) or a painted Labels layer marking what to "
                    "leave out. None = use the whole tomogram.")
        self._draw_button = PushButton(text="Draw regions", tooltip="Add a Shapes layer over the tomogram in "
                                                                    "rectangle mode; draw over what to ignore.")
        self._paint_button = PushButton(text="Paint regions", tooltip="Add a Labels layer of the tomogram's shape "
                                                                      "in paint mode; paint what to ignore.")
        self._z_from_spin = SpinBox(min=0, max=100_000, value=0, tooltip="First slice the shapes apply to.")
        self._z_to_spin = SpinBox(
            min=0, max=100_000, value=0, tooltip="Slice after the last one the shapes apply to; 0 = to the last slice.")
        self._use_check = CheckBox(text="Use in Train, Improve and Detect", value=True,
                                   tooltip="Training treats ignored voxels as neither particle nor background; "
                                           "detection drops picks there.")
        self._save_button = PushButton(text="Save mask…", tooltip="Write the mask (1 = keep, 0 = ignore) as an MRC "
                                                                  "in the tomogram file's own axes, for "
                                                                  "`cetpick train/detect --mask`.")
        self._summary_label = status_label("No ignore regions.", "How much of the tomogram is left out.")
        narrow(self._layer_combo)
        self.extend([
            heading("5 · Ignore regions"), self._layer_combo, row(self._draw_button, self._paint_button, label=" "),
            row(self._z_from_spin, self._z_to_spin, label="Shapes over z"), row(self._use_check),
            row(self._save_button, self._summary_label),
        ])
        self._layer_combo.changed.connect(self._on_layer_changed)
        self._draw_button.changed.connect(self._on_draw_clicked)
        self._paint_button.changed.connect(self._on_paint_clicked)
        self._z_from_spin.changed.connect(self._on_z_range_changed)
        self._z_to_spin.changed.connect(self._on_z_range_changed)
        self._use_check.changed.connect(self._on_z_range_changed)
        self._save_button.changed.connect(self._on_save_clicked)
        state.mask_source = self.mask_for
        state.current_changed.connect(self._on_current_changed)
        self._watched = None

    def _choices(self, widget=None) -> list:
        layers = [L.unwrap(lay) for lay in self._state.viewer.layers]
        out = [(lay.name, lay) for lay in layers
               if lay.__class__.__name__ in ("Shapes", "Labels") and L.layer_role(lay) != "box"
               and lay.ndim in (2, 3)]
        out.sort(key=lambda c: L.layer_role(c[1]) != "ignore")
        return out

    def reset_choices(self, *_) -> None:
        """Refresh the layer list, showing the selected tomogram's regions."""
        self._on_current_changed(self._state.current)

    # ------------------------------------------------------------------ the mask
    def _z_range(self):
        return int(self._z_from_spin.value), int(self._z_to_spin.value)

    def regions_of(self, rec: TomogramRecord):
        """A tomogram's ignore-regions layer: the one chosen for it, else one drawn for it."""
        if rec.ignore is not None and self._state.live(rec.ignore):
            return rec.ignore
        rec.ignore = next((lay for _, lay in self._choices() if L.layer_role(lay) == "ignore"
                           and layer_cetpick_meta(lay).get("source") == rec.name), None)
        if rec.ignore is not None:
            z = layer_cetpick_meta(rec.ignore).get("z_range")
            rec.ignore_z_range = tuple(int(v) for v in z) if z else (0, 0)
        return rec.ignore

    def mask_for(self, rec: TomogramRecord):
        """The keep mask of a tomogram (uint8, 1 = keep), or None when it has no ignore regions."""
        if not self._use_check.value or rec is None:
            return None
        layer = self.regions_of(rec)
        if layer is None:
            return None
        ignore = ignore_mask(layer, rec.layer, rec.ignore_z_range)
        return keep_mask(ignore) if ignore.any() else None

    def _on_layer_changed(self, layer=None) -> None:
        rec = self._state.current
        if self._updating or rec is None:
            return
        layer = L.unwrap(layer)
        rec.ignore = layer
        self._watch(layer)
        if layer is not None and layer.__class__.__name__ == "Shapes":
            z = layer_cetpick_meta(layer).get("z_range")
            if z:
                self._show_z_range(z)
        self._on_z_range_changed()

    def _show_z_range(self, z) -> None:
        self._updating = True
        try:
            self._z_from_spin.value, self._z_to_spin.value = int(z[0]), int(z[1])
        finally:
            self._updating = False

    def _watch(self, layer) -> None:
        if layer is self._watched:
            return
        if self._watched is not None:
            try:
                self._watched.events.data.disconnect(self._on_z_range_changed)
            except (TypeError, ValueError, RuntimeError):
                pass
        self._watched = layer
        if layer is not None:
            layer.events.data.connect(self._on_z_range_changed)
            if layer.__class__.__name__ == "Labels":
                layer.events.paint.connect(self._on_z_range_changed)

    def _on_z_range_changed(self, *_) -> None:
        rec = self._state.current
        if self._updating or rec is None:
            return
        layer = rec.ignore
        rec.ignore_z_range = self._z_range()
        if layer is not None and layer.__class__.__name__ == "Shapes":
            layer.metadata.setdefault(META_KEY, {})["z_range"] = list(self._z_range())
        self._update_summary()
        self._state.mask_changed.emit()

    def _on_current_changed(self, rec=None) -> None:
        """Show the selected tomogram's own regions (and nothing of another tomogram's)."""
        layer = None if rec is None else self.regions_of(rec)
        self._updating = True
        try:
            super().reset_choices()
            self._layer_combo.value = layer if any(c is layer for c in self._layer_combo.choices) else None
        finally:
            self._updating = False
        if rec is not None:
            self._show_z_range(rec.ignore_z_range)
        self._watch(layer)
        self._update_summary()

    def _update_summary(self) -> None:
        rec = self._state.current
        try:
            mask = self.mask_for(rec) if rec is not None else None
        except CetpickError as err:
            self._summary_label.value = str(err)
            return
        if mask is None:
            self._summary_label.value = "No ignore regions." if self._use_check.value else "Regions not used."
            return
        share = 1.0 - float(mask.mean())
        zs = z_slices(rec.ignore_z_range, rec.shape[0])
        where = f" over z {zs.start}–{zs.stop}" if rec.ignore.__class__.__name__ == "Shapes" else ""
        self._summary_label.value = f"{share:.1%} of the tomogram ignored{where}."

    # ------------------------------------------------------------------ drawing layers
    def _require_tomogram(self):
        rec = self._state.current
        if rec is None:
            show_error("Open a tomogram before drawing ignore regions.")
        return rec

    def _on_draw_clicked(self, *_) -> None:
        rec = self._require_tomogram()
        if rec is None:
            return
        self.add_shapes_layer(rec, z_range=self._z_range()).mode = "add_rectangle"

    def add_shapes_layer(self, rec: TomogramRecord, shapes=(), z_range=(0, 0)):
        """A Shapes layer of ignore regions over a tomogram (with saved ``{"type", "vertices"}``
        shapes, if given), made that tomogram's regions."""
        meta = {L.ROLE_KEY: "ignore", "source": rec.name, "z_range": [int(v) for v in z_range]}
        layer = L.unwrap(self._state.viewer.add_shapes(
            ndim=3, name=f"{rec.name} ignore", scale=rec.layer.scale, translate=rec.layer.translate,
            edge_color="red", face_color=[1.0, 0.0, 0.0, 0.25], edge_width=2, metadata={META_KEY: meta}))
        if len(shapes):
            layer.add([np.asarray(s["vertices"], float) for s in shapes], shape_type=[s["type"] for s in shapes],
                      edge_color="red", face_color=[1.0, 0.0, 0.0, 0.25], edge_width=2)
        rec.ignore, rec.ignore_z_range = layer, tuple(int(v) for v in z_range)
        if rec is self._state.current:
            self._on_current_changed(rec)
        self._state.mask_changed.emit()
        return layer

    def _on_paint_clicked(self, *_) -> None:
        rec = self._require_tomogram()
        if rec is None:
            return
        layer = L.unwrap(self._state.viewer.add_labels(
            np.zeros(rec.shape, np.uint8), name=f"{rec.name} ignore (painted)", scale=rec.layer.scale,
            translate=rec.layer.translate, opacity=0.4,
            metadata={META_KEY: {L.ROLE_KEY: "ignore", "source": rec.name}}))
        layer.brush_size = max(5, int(self._state.diameter_vox(rec) or 10))
        layer.mode = "paint"
        rec.ignore = layer
        self._on_current_changed(rec)

    # ------------------------------------------------------------------ saving
    def _on_save_clicked(self, *_) -> None:
        rec = self._require_tomogram()
        if rec is None:
            return
        meta = L.tomogram_meta(rec.layer)
        stem = Path(meta["path"]).with_suffix("") if meta.get("path") else Path.cwd() / rec.name.replace(" ", "_")
        path = self._ask_path(True, "Save mask", MASK_FILTER, f"{stem}_mask.mrc")
        if path:
            self.save_mask(path)

    def save_mask(self, path) -> Path | None:
        """Write the current tomogram's keep mask as MRC in its file's layout; returns the path."""
        from napari_cetpick.io import write_tomogram

        rec = self._state.current
        try:
            if rec is None:
                raise CetpickError("No tomogram selected.")
            layer = self.regions_of(rec)
            if layer is None:
                raise CetpickError("No ignore regions to save: draw or paint some first.")
            mask = keep_mask(ignore_mask(layer, rec.layer, rec.ignore_z_range))
            meta = L.tomogram_meta(rec.layer)
            out = write_tomogram(path, mask, voxel_size_a=rec.voxel_size_a, layout=layout_from_meta(meta))
        except (CetpickError, OSError) as err:
            show_error(f"Could not save the mask: {err}")
            return None
        show_info(f"Mask saved to {out} (1 = keep, 0 = ignore; {1.0 - float(mask.mean()):.1%} ignored).")
        return out
