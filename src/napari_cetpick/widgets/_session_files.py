"""Save session… / Open session…: a tomogram's session to and from a file of the user's choice
(the same file autosave writes; see :mod:`napari_cetpick._napari.session_file`)."""
from __future__ import annotations

from pathlib import Path

from magicgui.widgets import Container, PushButton
from napari.utils.notifications import show_error, show_info

from napari_cetpick._napari.session import PanelState, TomogramRecord
from napari_cetpick._napari.session_file import SUFFIX, read_session, write_session
from napari_cetpick.errors import CetpickError
from napari_cetpick.widgets._common import row

SESSION_FILTER = f"cetpick session (*{SUFFIX});;All files (*)"


class SessionFilesRow(Container):
    """Two buttons under autosave."""

    def __init__(self, state: PanelState, autosave, ask_path):
        super().__init__(labels=False)
        self._state, self._autosave, self._ask_path = state, autosave, ask_path
        self._save_session_button = PushButton(
            text="Save session…", tooltip="Write the selected tomogram's session (every class's labels, negatives "
                                          "and decisions, ignore shapes, thresholds, model file) to a file.")
        self._open_session_button = PushButton(
            text="Open session…", tooltip="Add a saved session's classes, labels, negatives, ignore shapes and "
                                          "decisions to the selected tomogram (same shape).")
        self.margins = (0, 0, 0, 0)
        self.append(row(self._save_session_button, self._open_session_button))
        self._save_session_button.changed.connect(self._on_save_session_clicked)
        self._open_session_button.changed.connect(self._on_open_session_clicked)

    def _on_save_session_clicked(self, *_) -> None:
        rec = self._state.current
        if rec is None:
            show_error("Open a tomogram first.")
            return
        path = self._ask_path(True, "Save session", SESSION_FILTER, str(self._autosave.path(rec, for_writing=True)))
        if path:
            self.save_session(path)

    def save_session(self, path, rec: TomogramRecord | None = None) -> Path | None:
        rec = rec or self._state.current
        path = Path(path)
        if not path.name.endswith(".json"):
            path = path.with_name(path.name + SUFFIX)
        try:
            out = write_session(path, self._state.snapshot(rec))
        except OSError as err:
            show_error(f"Could not save the session: {err}")
            return None
        show_info(f"Session of {rec.name} saved to {out}")
        return out

    def _on_open_session_clicked(self, *_) -> None:
        if self._state.current is None:
            show_error("Open the session's tomogram first: a session is added to the selected tomogram.")
            return
        path = self._ask_path(False, "Open session", SESSION_FILTER)
        if path:
            self.open_session(path)

    def open_session(self, path, rec: TomogramRecord | None = None) -> int | None:
        """Add a session file to a tomogram (the current one); the number of points added."""
        rec = rec or self._state.current
        try:
            data = read_session(path, rec.shape)
        except CetpickError as err:
            show_error(str(err))
            return None
        n = self._autosave.take(rec, data)
        show_info(f"Opened {Path(path).name} onto {rec.name}: {data.describe()}.")
        return n
