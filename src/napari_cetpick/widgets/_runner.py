"""One worker runner for the whole panel: start, cancel, stale-result guard, error reporting.

Only one run at a time. A new run cancels the previous one and the records of a cancelled
run are dropped (each run has a token; callbacks of an old token are never called).
Errors and warnings raised inside a worker are shown once, as napari notifications.
"""
from __future__ import annotations

import contextlib
import inspect
import logging
from functools import partial

from napari.qt.threading import create_worker
from napari.utils.notifications import show_error, show_warning
from psygnal import Signal

from napari_cetpick.errors import CetpickError

log = logging.getLogger(__name__)

RUN_NAMES = {"train": "Training", "finalise": "Saving the last model", "detect": "Detection",
             "improve": "Improve", "improve-detect": "Detection after Improve", "explore": "Exploration"}


class WorkerRunner:
    """Runs the panel's generators in napari workers, one at a time.

    Attributes
    ----------
    kind : str or None
        What runs now (``train``, ``detect``, ``improve`` …), None when idle.
    user_cancelled : bool
        The user pressed Cancel during the current (or last) run.
    """

    busy_changed = Signal(object)  # the kind now running, or None

    def __init__(self):
        self.kind: str | None = None
        self.uses: set = set()  # keys (layer unique ids) of the tomograms the current run reads
        self.user_cancelled = False
        self.cancel_reason = ""  # why the run was cancelled, when not by the user's Cancel
        self._worker = None
        self._token = 0
        self._on_error = None

    @property
    def busy(self) -> bool:
        return self.kind is not None

    def start(self, kind: str, func, *, yielded=None, returned=None, aborted=None, on_error=None,
              keep_cancel: bool = False, uses=()) -> None:
        """Run ``func`` (a generator function or plain function) in a worker thread.

        Parameters
        ----------
        kind : str
            Names the run in messages and in :attr:`kind`.
        func : callable
            Called with no arguments in the worker; yields plain records and returns a value.
        yielded, returned, aborted : callable, optional
            Called on the main thread with each record, the returned value, or nothing after
            a cancel — only while this run is current.
        on_error : callable, optional
            ``on_error(kind, message)`` after the error was shown, e.g. to update a status line.
        keep_cancel : bool
            Keep :attr:`user_cancelled` from the previous run (a follow-up of a cancelled run).
        uses : iterable
            Keys of the tomograms the run reads (closing one of them cancels it).
        """
        from superqt.utils import FunctionWorker, GeneratorWorker

        cancelled = self.user_cancelled
        self.stop()
        token = self._token
        target = func.func if isinstance(func, partial) else func
        worker_class = GeneratorWorker if inspect.isgeneratorfunction(target) else FunctionWorker
        # superqt's plain classes: napari's subclasses relay errors to the notification
        # manager only when its hooks are installed, so this runner reports them itself
        worker = create_worker(func, _start_thread=False, _ignore_errors=True, _worker_class=worker_class)

        def current(callback):
            def call(*args):
                if token == self._token:
                    callback(*args)
            return call

        if yielded is not None:
            worker.yielded.connect(current(yielded))
        if returned is not None:
            worker.returned.connect(current(returned))
        if aborted is not None:
            worker.aborted.connect(current(aborted))
        worker.errored.connect(current(partial(self._on_errored, kind)))
        worker.warned.connect(current(self._on_warned))
        worker.finished.connect(current(partial(self._on_finished, kind)))
        self._worker = worker
        self.uses = set(uses)
        self._on_error = on_error
        self.user_cancelled = cancelled if keep_cancel else False
        self.cancel_reason = self.cancel_reason if keep_cancel else ""
        self._set_kind(kind)
        worker.start()

    def cancel(self, reason: str = "") -> bool:
        """Ask the running worker to stop at its next yield; False when nothing runs.
        ``reason`` (kept in :attr:`cancel_reason`) says why when the user did not press Cancel."""
        if self._worker is None:
            return False
        self.user_cancelled = True
        self.cancel_reason = reason
        with contextlib.suppress(RuntimeError):  # the worker's Qt object is already gone
            self._worker.quit()
        return True

    def stop(self) -> None:
        """Quit the current worker and forget it (its late records are dropped)."""
        self._token += 1
        if self._worker is not None:
            with contextlib.suppress(RuntimeError):
                self._worker.quit()
        self._worker = None
        self._set_kind(None)

    def _set_kind(self, kind: str | None) -> None:
        if kind != self.kind:
            self.kind = kind
            self.busy_changed.emit(kind)

    def _on_errored(self, kind: str, exc: Exception) -> None:
        what = RUN_NAMES.get(kind, kind)
        if isinstance(exc, CetpickError):
            message = str(exc)
        else:  # a bug or a resource problem: keep the traceback in the log
            log.error("%s failed", what, exc_info=(type(exc), exc, exc.__traceback__))
            message = f"{what} failed: {exc}"
        show_error(message)
        if self._on_error is not None:
            self._on_error(kind, f"{what} failed: {exc}")

    def _on_warned(self, showwarning_args: tuple) -> None:
        show_warning(str(showwarning_args[0]))

    def _on_finished(self, kind: str) -> None:
        if self.kind == kind:
            self._worker = None
            self._set_kind(None)
