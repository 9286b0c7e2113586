"""Autosave of each tomogram's session, offered back when the tomogram is opened again.

Clicks are precious: a moment after every change, the changed tomogram's session (labels,
negatives, ignore shapes, review decisions, chosen threshold, model file; see
:mod:`napari_cetpick._napari.session_file`) is written atomically as
``{stem}.cetpick-session.json`` — beside the tomogram file, or in a session folder the user
chooses, or (tomograms without a file, read-only folders) in
``~/.cache/napari-cetpick/autosave`` (``CETPICK_AUTOSAVE_DIR`` overrides it).

When a tomogram with a saved session is opened, nothing is written for it until the user
chose: Restore adds the saved points to its layers (merged, no duplicates); Dismiss moves
the old file aside (``….previous.json``) and autosave starts afresh. Nothing is ever deleted.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import os
from pathlib import Path

from magicgui.widgets import Container, PushButton
from napari.utils.notifications import show_error, show_info
from qtpy.QtCore import QTimer

from napari_cetpick._napari.session import PanelState, TomogramRecord
from napari_cetpick._napari.session_file import (
    SessionData,
    keep_previous,
    read_legacy_autosave,
    read_session,
    safe_stem,
    session_file_name,
    write_session,
)
from napari_cetpick.errors import CetpickError
from napari_cetpick.widgets import _layers as L
from napari_cetpick.widgets._common import row, status_label
from napari_cetpick.widgets._tracking import LayerTracker

DELAY_MS = 1500


def default_folder() -> Path:
    return Path(os.environ.get("CETPICK_AUTOSAVE_DIR") or Path.home() / ".cache" / "napari-cetpick" / "autosave")


def _stem(rec: TomogramRecord) -> str:
    path = L.tomogram_meta(rec.layer).get("path")
    return safe_stem(Path(path).stem if path else rec.name)


class AutosaveBox(Container):
    """Where sessions are saved, and the offer to restore one.

    Parameters
    ----------
    restore_points : callable(record, kind, zyx) -> int
        Adds positions to a record's labels or negatives layer (made when missing), skipping
        ones already there; returns how many were added.
    add_ignore_shapes : callable(record, shapes, z_range)
        Makes the record's ignore-regions layer from saved shapes.
    load_model : callable(path) -> Checkpoint or None
    """

    def __init__(self, state: PanelState, tracker: LayerTracker, ask_folder, restore_points, add_ignore_shapes,
                 load_model):
        super().__init__(labels=False)
        self._state, self._tracker, self._ask_folder = state, tracker, ask_folder
        self._restore_points, self._add_ignore_shapes, self._load_model = restore_points, add_ignore_shapes, load_model
        self.session_folder: Path | None = None
        self._dirty: dict[int, TomogramRecord] = {}
        self._offers: dict[int, tuple[Path, SessionData]] = {}  # id(record) -> the saved session offered
        self._timer = QTimer()
        self._timer.setSingleShot(True)
        self._timer.setInterval(DELAY_MS)
        self._timer.timeout.connect(self.save_now)
        self._folder_label = status_label("Autosave: beside each tomogram file.",
                                          "Each tomogram's labels, negatives, ignore shapes, decisions and threshold "
                                          "are saved a moment after every change.")
        self._folder_button = PushButton(text="Folder…", tooltip="Autosave into a session folder of your choice "
                                                                "instead of beside the tomograms.")
        self._restore_label = status_label("", "A saved session was found for this tomogram.")
        self._restore_button = PushButton(text="Restore", tooltip="Add the saved labels, negatives, ignore shapes "
                                                                  "and decisions to this tomogram's layers.")
        self._dismiss_button = PushButton(text="Dismiss", tooltip="Start afresh: the saved session is kept aside "
                                                                  "as ….previous.json, never deleted.")
        self._restore_row = row(self._restore_label, self._restore_button, self._dismiss_button)
        self.extend([row(self._folder_label, self._folder_button), self._restore_row])
        self._restore_row.visible = False
        self._folder_button.changed.connect(self._on_folder_clicked)
        self._restore_button.changed.connect(self._on_restore_clicked)
        self._dismiss_button.changed.connect(self._on_dismiss_clicked)
        for signal in (state.points_changed, state.picks_changed, state.detection_changed):
            signal.connect(self._on_record_changed)
        state.mask_changed.connect(lambda: self._on_record_changed(state.current))
        state.current_changed.connect(self._on_current_changed)
        state.closed.connect(self._on_closed)

    # ------------------------------------------------------------------ where
    def _folders(self, rec: TomogramRecord) -> list[Path]:
        folders = [self.session_folder] if self.session_folder else []
        path = L.tomogram_meta(rec.layer).get("path")
        if not self.session_folder and path:
            folders.append(Path(path).parent)
        folders.append(default_folder())
        return folders

    def path(self, rec: TomogramRecord, for_writing: bool = False) -> Path:
        """The session file of a tomogram: the first existing one, or the first writable folder's."""
        name = session_file_name(_stem(rec))
        for folder in self._folders(rec):
            if for_writing:
                with contextlib.suppress(OSError):
                    folder.mkdir(parents=True, exist_ok=True)
                    if os.access(folder, os.W_OK):
                        return folder / name
            elif (folder / name).is_file():
                return folder / name
        return default_folder() / name

    def _on_folder_clicked(self, *_) -> None:
        folder = self._ask_folder("Autosave sessions into")
        if folder:
            self.set_session_folder(folder)

    def set_session_folder(self, folder) -> None:
        self.session_folder = Path(folder)
        self._folder_label.value = f"Autosave: {self.session_folder}"
        for rec in self._state.records.values():
            if rec.autosave == "clear" and id(rec) not in self._offers:
                self._dirty[id(rec)] = rec  # write into the new folder too
        rec = self._state.current
        if rec is not None and rec.autosave == "clear" and self._state.snapshot(rec).is_empty():
            rec.autosave = "unchecked"  # nothing of the user's yet: look for a session there
        self._on_current_changed(rec)

    # ------------------------------------------------------------------ saving
    def _on_record_changed(self, rec=None) -> None:
        rec = None if rec is None else self._state.record(rec.layer, create=False)  # the record, not a class view
        if rec is not None:
            self._dirty[id(rec)] = rec
            self._timer.start()

    def save_now(self) -> list[Path]:
        """Write the changed tomograms' sessions now (not those whose saved session awaits the
        user's choice); returns the files written."""
        self._timer.stop()
        written, failed = [], []
        for key, rec in list(self._dirty.items()):
            if not self._state.live(rec.layer):
                self._dirty.pop(key, None)
                continue
            if rec.autosave == "unchecked":
                self._check(rec)
            if rec.autosave != "clear":
                continue  # waits for Restore or Dismiss
            self._dirty.pop(key, None)
            try:
                out = self._write(rec)
            except (CetpickError, OSError) as err:
                failed.append(f"{rec.name}: {err}")
                continue
            if out is not None:
                written.append(out)
        if failed:
            self._folder_label.value = "Autosave failed: " + "; ".join(failed)
        elif written:
            stamp = dt.datetime.now().strftime("%H:%M:%S")
            self._folder_label.value = f"Autosaved at {stamp} in {self.session_folder or written[-1].parent}"
        return written

    def _write(self, rec: TomogramRecord) -> Path | None:
        data = self._state.snapshot(rec)
        path = self.path(rec, for_writing=True)
        if data.is_empty() and not path.is_file():
            return None  # nothing of the user's yet: no file
        return write_session(path, data)

    def _on_closed(self, rec: TomogramRecord) -> None:
        """A tomogram is being closed: save it now, while its layers are still there."""
        self._offers.pop(id(rec), None)
        self._dirty.pop(id(rec), None)
        if rec.autosave == "clear":
            with contextlib.suppress(CetpickError, OSError):
                self._write(rec)
        if self._state.current is rec:
            self._restore_row.visible = False

    # ------------------------------------------------------------------ offering back
    def _check(self, rec: TomogramRecord) -> None:
        """Look for a saved session of a tomogram opened in this panel; offer it when it holds
        something the open layers do not."""
        rec.autosave = "clear"
        path = self.path(rec)
        try:
            data = read_session(path, rec.shape) if path.is_file() else self._legacy(rec)
        except CetpickError as err:
            moved = keep_previous(path)
            show_error(f"Could not read the saved session of {rec.name}: {err}. It was kept as {moved.name}.")
            return
        if data is None or not data.adds_to(self._state.snapshot(rec)):
            return
        rec.autosave = "offered"
        self._offers[id(rec)] = (path, data)

    def _legacy(self, rec: TomogramRecord) -> SessionData | None:
        """The labels and negatives CSVs that versions before the session file autosaved."""
        return read_legacy_autosave(self._folders(rec), _stem(rec), L.tomogram_meta(rec.layer), rec.shape,
                                    self._state.active_class)

    def _on_current_changed(self, rec=None) -> None:
        if rec is not None and rec.autosave == "unchecked":
            self._check(rec)
        offer = None if rec is None else self._offers.get(id(rec))
        self._restore_row.visible = offer is not None
        if offer is not None:
            path, data = offer
            when = data.saved_at.replace("T", " ")[:16] if data.saved_at else \
                dt.datetime.fromtimestamp(path.stat().st_mtime).strftime("%Y-%m-%d %H:%M") if path.is_file() else ""
            self._restore_label.value = f"Saved session of {rec.name}{f' ({when})' if when else ''}: {data.describe()}."
            self._restore_label.tooltip = str(path)

    def _on_restore_clicked(self, *_) -> None:
        self.restore()

    def restore(self, rec: TomogramRecord | None = None) -> int:
        """Add the offered session to the tomogram (the current one by default); returns the
        number of points added."""
        rec = rec or self._state.current
        offer = None if rec is None else self._offers.pop(id(rec), None)
        if offer is None:
            return 0
        n = self.apply(rec, offer[1])
        self._settle(rec)
        show_info(f"Restored {n} point{'' if n == 1 else 's'} for {rec.name} ({offer[1].describe()} saved).")
        return n

    def _on_dismiss_clicked(self, *_) -> None:
        self.dismiss()

    def dismiss(self, rec: TomogramRecord | None = None) -> Path | None:
        """Start afresh: move the offered session file aside and let autosave write again."""
        rec = rec or self._state.current
        offer = None if rec is None else self._offers.pop(id(rec), None)
        if offer is None:
            return None
        moved = keep_previous(offer[0]) if offer[0].name.endswith(".json") else None
        self._settle(rec)
        if moved is not None:
            show_info(f"The saved session of {rec.name} was kept as {moved}.")
        return moved

    def _settle(self, rec: TomogramRecord) -> None:
        rec.autosave = "clear"
        if rec is self._state.current:
            self._restore_row.visible = False
        self._dirty[id(rec)] = rec
        self.save_now()

    def apply(self, rec: TomogramRecord, data: SessionData) -> int:
        """Put a session's classes, points, shapes, decisions, thresholds and model into a tomogram."""
        n = 0
        for c in data.classes:
            if c.name not in self._state.class_names:
                self._state.add_class(c.name, c.diameter, c.unit, c.colour, activate=False)
            view = rec.view(c.name)
            for kind in ("labels", "negatives"):
                if len(getattr(c, kind)):
                    n += self._restore_points(view, kind, getattr(c, kind))
            if len(c.removed):
                view.edits.remove(c.removed)
            if len(c.kept):
                view.edits.keep(c.kept, c.kept_scores)
            view.restored = {k: v for k, v in (("threshold", c.threshold), ("min_distance_vox", c.min_distance_vox))
                             if v is not None}
            if view.result is not None:
                view.chosen.update({"threshold": "threshold", "min_distance_vox": "min_distance"}[k]
                                   for k in view.restored)
                self._tracker.reselect(view, threshold=view.restored.get("threshold"),
                                       min_distance=view.restored.get("min_distance_vox"))
        if data.ignore and (rec.ignore is None or not self._state.live(rec.ignore)):
            self._add_ignore_shapes(rec, data.ignore, data.ignore_z_range)
        if self._state.checkpoint is None and data.model_path and Path(data.model_path).is_file():
            self._load_model(data.model_path)
        self._state.detection_changed.emit(rec)
        return n

    def take(self, rec: TomogramRecord, data: SessionData) -> int:
        """Add a session (e.g. one the user opened) to a tomogram in place of any offer; autosave
        then writes the merged session."""
        self._offers.pop(id(rec), None)
        n = self.apply(rec, data)
        self._settle(rec)
        return n
