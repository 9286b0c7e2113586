"""The particle picker panel: (Explore →) label → Train → Detect → Review → Improve → Export → Evaluate.

``PickerWidget`` only composes the sections and wires them to the viewer. Each section is
a magicgui ``Container`` in its own module with role-named controls and
``_on_<thing>_<event>`` callbacks; they share a :class:`~._state.PanelState` (psygnal
signals) and one :class:`~._runner.WorkerRunner`, and never touch each other's widgets.
"""
from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

from magicgui.widgets import Container
from napari.utils.notifications import show_info, show_warning
from qtpy.QtCore import Qt
from qtpy.QtWidgets import QFrame, QScrollArea, QVBoxLayout, QWidget

from napari_cetpick._napari.session import TOMOGRAM_LAYER_KINDS, PanelState
from napari_cetpick.widgets import _layers as L
from napari_cetpick.widgets._autosave import AutosaveBox
from napari_cetpick.widgets._classes import ClassRow
from napari_cetpick.widgets._data import DataSection
from napari_cetpick.widgets._detect import DetectSection
from napari_cetpick.widgets._evaluate import EvaluateSection
from napari_cetpick.widgets._explore import ExploreSection
from napari_cetpick.widgets._export import EXPORT_FORMATS, ExportSection
from napari_cetpick.widgets._import import ImportRow
from napari_cetpick.widgets._improve import ImproveSection
from napari_cetpick.widgets._mask import MaskSection
from napari_cetpick.widgets._review import ReviewSection
from napari_cetpick.widgets._runner import RUN_NAMES, WorkerRunner
from napari_cetpick.widgets._session_files import SessionFilesRow
from napari_cetpick.widgets._tomograms import TomogramTable
from napari_cetpick.widgets._tracking import LayerTracker
from napari_cetpick.widgets._train import TrainSection

if TYPE_CHECKING:
    import napari

__all__ = ["PickerWidget", "EXPORT_FORMATS"]


class PickerWidget(QWidget):
    """Dock widget running the whole picking loop on the open tomograms.

    A QWidget holding a scroll area around the sections (napari docks a magicgui
    container's inner widget, which would drop a ``scrollable=True`` container's scroll
    area and make the window as tall as the panel).

    Parameters
    ----------
    viewer : napari.viewer.Viewer
        The viewer the panel works on (napari passes it; through Plugins, as a proxy).
    """

    def __init__(self, viewer: napari.viewer.Viewer):
        super().__init__()
        self._viewer = viewer
        ask_path = lambda *a, **k: self._ask_path(*a, **k)  # noqa: E731 (tests replace _ask_path)
        ask_folder = lambda *a, **k: self._ask_folder(*a, **k)  # noqa: E731
        self.state = PanelState(viewer)
        self.runner = WorkerRunner()
        self.tracker = LayerTracker(self.state)
        self.classes = ClassRow(self.state)
        self.data = DataSection(self.state, self.tracker, self.classes)
        self.importer = ImportRow(self.state, self.tracker, ask_path, self.data.new_points_layer)
        self.tomograms = TomogramTable(self.state, self._select_tomogram)
        self.explore = ExploreSection(self.state, self.runner, self.data.restore_points,
                                      lambda: self._show_selected_tomogram())
        self.train = TrainSection(self.state, self.runner, ask_path)
        self.detect = DetectSection(self.state, self.runner, self.tracker, self._device)
        self.review = ReviewSection(self.state, self.tracker, self.data.new_points_layer)
        self.improve = ImproveSection(self.state, self.runner, self.detect.detect, self._device)
        self.mask = MaskSection(self.state, ask_path)
        self.autosave = AutosaveBox(self.state, self.tracker, ask_folder, self.data.restore_points,
                                    self.mask.add_shapes_layer, self.train.load_model)
        self.session_files = SessionFilesRow(self.state, self.autosave, ask_path)
        self.export = ExportSection(self.state, ask_path, ask_folder)
        self.evaluate = EvaluateSection(self.state)
        self.sections = [self.data, self.importer, self.explore, self.train, self.detect, self.review, self.mask,
                         self.export, self.evaluate]
        self._form = Container(labels=False, widgets=[
            self.data, self.importer, self.tomograms, self.autosave, self.session_files, self.explore, self.train,
            self.detect, self.review, self.improve, self.mask, self.export, self.evaluate])
        self._build_scroll_area()
        events = viewer.layers.events
        events.inserted.connect(self._on_layers_inserted)
        events.removed.connect(self._on_layers_removed)
        self.state.closed.connect(self._on_tomogram_closed)
        self._auto_hidden: dict = {}  # id(layer) -> layer the panel hid because its tomogram is not selected
        self.state.current_changed.connect(self._show_selected_tomogram)
        self.state.detection_changed.connect(self._show_selected_tomogram)
        for layer in viewer.layers:
            layer.events.name.connect(self._on_layer_renamed)
        self.destroyed.connect(self._on_panel_destroyed)
        self.reset_choices()
        self._show_selected_tomogram()  # what the panel works on is what the viewer shows, from the start

    def _build_scroll_area(self) -> None:
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        scroll.setFrameShape(QFrame.Shape.NoFrame)
        scroll.setWidget(self._form.native)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(scroll)
        self._scroll = scroll
        self._fit_width()

    def _fit_width(self) -> None:
        """Wide enough for the form's minimum plus the vertical scroll bar, so nothing is clipped."""
        self._form.native.ensurePolished()
        bar = self._scroll.verticalScrollBar().sizeHint().width()
        self._scroll.setMinimumWidth(self._form.native.minimumSizeHint().width() + bar + 4)

    def showEvent(self, event) -> None:  # noqa: N802 (Qt name)
        # fonts and styles are final only once shown; the minimum width follows them
        self._fit_width()
        super().showEvent(event)

    # ------------------------------------------------------------------ wiring
    def _device(self) -> str:
        return str(self.train._device_combo.value)

    def _select_tomogram(self, layer) -> None:
        self.data._tomogram_combo.value = layer

    def _show_selected_tomogram(self, *_) -> None:
        """Tomograms share napari's world: show the selected one with its layers (every class's,
        its candidates), hide the others' (and show again only what the panel itself hid)."""
        cur = self.state.current
        if cur is None or not self.state.live(cur.layer):
            return
        for rec in self.state.records.values():
            if not self.state.live(rec.layer):
                continue
            mine = rec.same(cur)
            for layer in [rec.layer, *rec.layers_held(TOMOGRAM_LAYER_KINDS), *self.explore.layers_of(rec)]:
                if layer is None or not self.state.live(layer):
                    continue
                if mine and id(layer) in self._auto_hidden:
                    self._auto_hidden.pop(id(layer)).visible = True
                elif not mine and layer.visible and not cur.holds(layer):
                    layer.visible = False
                    self._auto_hidden[id(layer)] = layer
        for layer in L.tomogram_layers(self.state.viewer):  # tomograms the panel has not met yet
            if layer is not cur.layer and layer.visible and self.state.record(layer, create=False) is None:
                layer.visible = False
                self._auto_hidden[id(layer)] = layer
        active = L.unwrap(self.state.viewer.layers.selection.active)
        if active is not None and id(active) in self._auto_hidden:  # not a hidden layer of another tomogram
            self.state.viewer.layers.selection.active = cur.picks if self.state.live(cur.picks) else cur.layer

    def reset_choices(self, *_) -> None:
        """Refresh every section's layer lists (napari calls this when layers change)."""
        for section in (self.data, self.mask, self.evaluate):
            section.reset_choices()
        self.state.layers_changed.emit()

    def _on_layers_inserted(self, event) -> None:
        layer = L.unwrap(event.value)
        layer.events.name.connect(self._on_layer_renamed)
        self.reset_choices()
        cur = self.state.current
        if L.is_tomogram_layer(layer) and cur is not None and cur.layer is not layer and self.state.live(cur.layer):
            # the canvas keeps showing the tomogram the panel works on, not the one opened over it
            self._show_selected_tomogram()
            show_info(f"{layer.name} is open, hidden: the panel works on {cur.name}. Click {layer.name}'s row in "
                      "the table (or pick it under Tomogram) to work on it.")

    def _on_layers_removed(self, event) -> None:
        layer = L.unwrap(event.value)
        if L.is_tomogram_layer(layer):
            self.state.forget(layer)
        self.reset_choices()

    def _on_layer_renamed(self, event=None) -> None:
        self.reset_choices()

    def _on_tomogram_closed(self, rec) -> None:
        """A tomogram layer was removed: stop work that uses it, then remove its own layers
        (picks, heatmap, labels and negatives made for it, regions, box; autosave has saved
        them first) and nothing else."""
        from qtpy.QtCore import QTimer

        key = rec.layer.unique_id
        if self.runner.busy and key in self.runner.uses:
            what = RUN_NAMES.get(self.runner.kind, self.runner.kind)
            self.runner.cancel(reason=f"{rec.name} was closed")
            show_warning(f"{rec.name} was closed: {what} stopped.")
        owned = self.state.owned_layers(rec)
        self.state.closing.update(id(layer) for layer in owned)  # no other tomogram adopts them meanwhile

        def remove():
            for layer in owned:
                self.state.closing.discard(id(layer))
                if self.state.live(layer):
                    self.state.viewer.layers.remove(layer)
            # vispy (seen with Mesa's software GL) can crash on the next draw of a layer left after an
            # image and a points layer were removed, unless its visual is hidden and shown again: every
            # shown layer, points too (images alone: a crash drawing the points layer left)
            shown = [lay for lay in self.state.viewer.layers if lay.visible]

            def toggle(visible: bool):
                for lay in shown:
                    if self.state.live(lay):
                        lay.visible = visible

            QTimer.singleShot(300, lambda: toggle(False))
            QTimer.singleShot(500, lambda: toggle(True))

        QTimer.singleShot(0, remove)  # not inside napari's own removal event

    def _on_panel_destroyed(self, *_) -> None:
        self.runner.stop()
        with contextlib.suppress(RuntimeError):
            self.autosave.save_now()

    # ------------------------------------------------------------------ dialogs (tests replace these)
    def _ask_path(self, save: bool, caption: str, file_filter: str, default: str = "") -> str:
        """A file name from a dialog ('' when cancelled)."""
        from qtpy.QtWidgets import QFileDialog

        if save:
            path, _ = QFileDialog.getSaveFileName(self, caption, default, file_filter)
        else:
            path, _ = QFileDialog.getOpenFileName(self, caption, default, file_filter)
        return path

    def _ask_folder(self, caption: str) -> str:
        """A folder from a dialog ('' when cancelled)."""
        from qtpy.QtWidgets import QFileDialog

        return QFileDialog.getExistingDirectory(self, caption)

    # ------------------------------------------------------------------ for scripts and tests
    @property
    def _busy(self) -> bool:
        return self.runner.busy

    @property
    def _checkpoint(self):
        return self.state.checkpoint

    def _stop_worker(self) -> None:
        self.runner.stop()
