"""Import coordinates onto the selected tomogram: labels, negatives or picks.

Files are read in the tomogram's own file layout, voxel size and shape (an unrotated IMOD
volume keeps its thickness in the middle file axis; RELION 5 needs the voxel size and the
shape), so an export of any format re-imports onto the same voxels.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from magicgui.widgets import ComboBox, Container, PushButton
from napari.utils.notifications import show_error, show_info

from napari_cetpick.errors import CetpickError
from napari_cetpick.widgets import _layers as L
from napari_cetpick.widgets._common import narrow, plural, row
from napari_cetpick._napari.session import PanelState
from napari_cetpick.widgets._tracking import LayerTracker

IMPORT_KINDS = ("labels", "negatives", "picks")
COORDINATE_FILTER = ("Coordinates (*.txt *.mod *.star *.csv *.coords);;IMOD (*.txt *.mod);;"
                     "RELION STAR (*.star);;CSV (*.csv);;All files (*)")


class ImportRow(Container):
    """"Import as [labels ▾] [Import…]" under the data section."""

    def __init__(self, state: PanelState, tracker: LayerTracker, ask_path, new_points_layer):
        super().__init__(labels=True)
        self._state, self._tracker, self._ask_path = state, tracker, ask_path
        self._new_points_layer = new_points_layer
        self._import_kind_combo = ComboBox(
            choices=IMPORT_KINDS, value="labels",
            tooltip="What the imported coordinates are: your labels, negatives, or picks to review — of the "
                    "class selected above.")
        self._import_button = PushButton(
            text="Import…", tooltip="Read IMOD .txt/.mod, RELION 4/5 STAR or CSV coordinates onto the selected "
                                    "tomogram, in its file's axes, voxel size and shape.")
        narrow(self._import_kind_combo)
        self.append(row(self._import_kind_combo, self._import_button, label="Import as"))
        self._import_button.changed.connect(self._on_import_clicked)

    def _on_import_clicked(self, *_) -> None:
        if self._state.current is None:
            show_error("Open a tomogram first: coordinates are read onto the selected tomogram.")
            return
        path = self._ask_path(False, "Import coordinates", COORDINATE_FILTER)
        if path:
            self.import_coordinates(path, str(self._import_kind_combo.value))

    def import_coordinates(self, path, kind: str):
        """Read a coordinate file onto the current tomogram as labels, negatives or picks.

        Returns the layer the points went to, or None after an error (shown as a notification).
        """
        from napari_cetpick._napari.reader import read_points_for_tomogram

        rec = self._state.current
        if rec is None:
            show_error("Open a tomogram first: coordinates are read onto the selected tomogram.")
            return None
        try:
            ps = read_points_for_tomogram(path, L.tomogram_meta(rec.layer))
        except CetpickError as err:
            show_error(str(err))
            return None
        if kind == "picks":
            scores = ps.features["score"].to_numpy(float) if "score" in ps.features.columns \
                else np.ones(len(ps.zyx))
            layer = L.add_points_layer(self._state.viewer, rec.layer, "picks", self._state.pick_size(rec),
                                       name=f"{rec.name} picks {Path(path).stem}", zyx=ps.zyx,
                                       features=ps.features.assign(score=scores), class_name=rec.active)
            if rec.picks is None or not self._state.live(rec.picks):
                rec.picks, rec.shown = layer, np.asarray(ps.zyx, float).copy()
                self._state.detection_changed.emit(rec)
            self._state.picks_changed.emit(rec)
        else:
            layer = getattr(rec, kind)
            if layer is None or not self._state.live(layer):
                layer = self._new_points_layer(kind, announce=False)
            self._tracker.add_point(layer, rec, ps.zyx)
        cls = self._state.named_class(rec.active)
        show_info(f"Imported {plural(len(ps.zyx), 'point')} from {Path(path).name} as {kind} of {rec.name}"
                  f"{f' (class {cls})' if cls else ''}.")
        return layer
