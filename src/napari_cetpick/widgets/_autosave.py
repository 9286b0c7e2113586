"""Autosave of each tomogram's labels and negatives, offered back when it is reopened.

Clicks are precious: a second or two after every change the labels and negatives of the
changed tomogram are written as CSV in the tomogram file's own frame (readable by Import,
File › Open and ``cetpick train``) — beside the tomogram file, or in a session folder the
user chooses, or (for tomograms without a file, or a read-only folder) in
``~/.cache/napari-cetpick/autosave`` (``CETPICK_AUTOSAVE_DIR`` overrides it).
"""
from __future__ import annotations

import contextlib
import datetime as dt
import os
import re
from pathlib import Path

from magicgui.widgets import Container, PushButton
from napari.utils.notifications import show_error, show_info
from qtpy.QtCore import QTimer

from napari_cetpick._napari.layers import layout_from_meta
from napari_cetpick.errors import CetpickError
from napari_cetpick.widgets import _layers as L
from napari_cetpick.widgets._common import plural, row, status_label
from napari_cetpick.widgets._state import PanelState, TomogramRecord
from napari_cetpick.widgets._tracking import LayerTracker

KINDS = ("labels", "negatives")
DELAY_MS = 1500


def default_folder() -> Path:
    return Path(os.environ.get("CETPICK_AUTOSAVE_DIR") or Path.home() / ".cache" / "napari-cetpick" / "autosave")


def _stem(rec: TomogramRecord) -> str:
    path = L.tomogram_meta(rec.layer).get("path")
    name = Path(path).stem if path else rec.name
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)


class AutosaveBox(Container):
    """Where autosaves go, and the offer to restore them."""

    def __init__(self, state: PanelState, tracker: LayerTracker, ask_folder, new_points_layer):
        super().__init__(labels=False)
        self._state, self._tracker, self._ask_folder = state, tracker, ask_folder
        self._new_points_layer = new_points_layer
        self.session_folder: Path | None = None
        self._dirty: dict[int, TomogramRecord] = {}
        self._offered: set = set()
        self._offer: tuple | None = None  # (record, {kind: path})
        self._timer = QTimer()
        self._timer.setSingleShot(True)
        self._timer.setInterval(DELAY_MS)
        self._timer.timeout.connect(self.save_now)
        self._folder_label = status_label("Autosave: beside each tomogram file.",
                                          "Labels and negatives are saved a moment after every change.")
        self._folder_button = PushButton(text="Folder…", tooltip="Autosave into a session folder of your choice "
                                                                "instead of beside the tomograms.")
        self._restore_label = status_label("", "Autosaved clicks found for this tomogram.")
        self._restore_button = PushButton(text="Restore", tooltip="Add the autosaved labels and negatives.")
        self._dismiss_button = PushButton(text="Dismiss", tooltip="Keep the layers as they are.")
        self._restore_row = row(self._restore_label, self._restore_button, self._dismiss_button)
        self.extend([row(self._folder_label, self._folder_button), self._restore_row])
        self._restore_row.visible = False
        self._folder_button.changed.connect(self._on_folder_clicked)
        self._restore_button.changed.connect(self._on_restore_clicked)
        self._dismiss_button.changed.connect(self._on_dismiss_clicked)
        state.points_changed.connect(self._on_points_changed)
        state.current_changed.connect(self._on_current_changed)

    # ------------------------------------------------------------------ where
    def paths(self, rec: TomogramRecord, for_writing: bool = False) -> dict[str, Path]:
        """The autosave files of a tomogram's labels and negatives."""
        stem = _stem(rec)
        folders = [self.session_folder] if self.session_folder else []
        path = L.tomogram_meta(rec.layer).get("path")
        if not self.session_folder and path:
            folders.append(Path(path).parent)
        folders.append(default_folder())
        for folder in folders:
            files = {k: folder / f"{stem}_cetpick_{k}.csv" for k in KINDS}
            if for_writing:
                with contextlib.suppress(OSError):
                    folder.mkdir(parents=True, exist_ok=True)
                    if os.access(folder, os.W_OK):
                        return files
            elif any(f.is_file() for f in files.values()):
                return files
        return {k: default_folder() / f"{stem}_cetpick_{k}.csv" for k in KINDS}

    def _on_folder_clicked(self, *_) -> None:
        folder = self._ask_folder("Autosave labels and negatives into")
        if folder:
            self.set_session_folder(folder)

    def set_session_folder(self, folder) -> None:
        self.session_folder = Path(folder)
        self._folder_label.value = f"Autosave: {self.session_folder}"
        self._offered.clear()
        self._on_current_changed(self._state.current)

    # ------------------------------------------------------------------ saving
    def _on_points_changed(self, rec=None) -> None:
        if rec is not None:
            self._dirty[id(rec)] = rec
            self._timer.start()

    def save_now(self) -> list[Path]:
        """Write the changed tomograms' labels and negatives now; returns the files written."""
        from napari_cetpick.io import write_points

        self._timer.stop()
        written = []
        dirty, self._dirty = list(self._dirty.values()), {}
        for rec in dirty:
            if not self._state.live(rec.layer):
                continue
            meta = L.tomogram_meta(rec.layer)
            for kind, path in self.paths(rec, for_writing=True).items():
                layer = getattr(rec, kind)
                try:
                    if layer is None or not self._state.live(layer) or len(layer.data) == 0:
                        path.unlink(missing_ok=True)
                        continue
                    zyx = L.points_in_image_frame(layer, rec.layer)
                    written.append(write_points(path, zyx, fmt="csv", layout=layout_from_meta(meta),
                                                tomogram_name=meta.get("tomogram_name"), shape_zyx=rec.shape))
                except (CetpickError, OSError) as err:
                    self._folder_label.value = f"Autosave failed: {err}"
        if written:
            stamp = dt.datetime.now().strftime("%H:%M:%S")
            where = self.session_folder or written[-1].parent
            self._folder_label.value = f"Autosaved at {stamp} in {where}"
        return written

    # ------------------------------------------------------------------ restoring
    def _on_current_changed(self, rec=None) -> None:
        """Offer the autosaved clicks of a tomogram seen for the first time in this panel."""
        self._restore_row.visible = False
        self._offer = None
        if rec is None or id(rec) in self._offered:
            return
        self._offered.add(id(rec))
        files = {k: p for k, p in self.paths(rec).items() if p.is_file()}
        counts = {k: _count_rows(p) for k, p in files.items()}
        if not files or all(counts[k] <= rec.count(k) for k in files):
            return
        stamp = dt.datetime.fromtimestamp(max(p.stat().st_mtime for p in files.values())).strftime("%d %b %H:%M")
        what = " and ".join(plural(counts[k], k[:-1]) for k in files)
        self._restore_label.value = f"Autosaved {what} of {rec.name} ({stamp})."
        self._offer = (rec, files)
        self._restore_row.visible = True

    def _on_restore_clicked(self, *_) -> None:
        self.restore()

    def restore(self) -> int:
        """Add the offered autosaved points to the tomogram's labels and negatives layers."""
        from napari_cetpick._napari.reader import read_points_for_tomogram

        if self._offer is None:
            return 0
        rec, files = self._offer
        n = 0
        for kind, path in files.items():
            try:
                ps = read_points_for_tomogram(path, L.tomogram_meta(rec.layer))
            except CetpickError as err:
                show_error(f"Could not restore {path.name}: {err}")
                continue
            layer = getattr(rec, kind)
            if layer is None or not self._state.live(layer) or len(layer.data):
                layer = self._new_points_layer(kind, announce=False)
                layer.name = f"{kind} (restored)"
                layer.mode = "pan_zoom"
            self._tracker.add_point(layer, rec, ps.zyx)
            n += len(ps.zyx)
        self._on_dismiss_clicked()
        show_info(f"Restored {plural(n, 'point')} for {rec.name}.")
        return n

    def _on_dismiss_clicked(self, *_) -> None:
        self._offer = None
        self._restore_row.visible = False


def _count_rows(path: Path) -> int:
    with contextlib.suppress(OSError):
        with open(path, encoding="utf-8") as fh:
            return max(sum(1 for line in fh if line.strip()) - 1, 0)  # minus the header
    return 0
