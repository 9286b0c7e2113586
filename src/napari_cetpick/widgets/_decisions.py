"""The user's decisions on picks: accept (→ labels), reject (→ negatives), undo.

No widgets: the review section calls these with the item under review. Every decision is
recorded so that ``u`` takes back the last one, including negatives clicked by hand in
"not a particle" mode.
"""
from __future__ import annotations

import numpy as np

from napari_cetpick.widgets import _layers as L
from napari_cetpick._napari.session import PanelState, TomogramRecord
from napari_cetpick.widgets._tracking import LayerTracker


class Decisions:
    """Accept, reject and undo on a tomogram's labels, negatives and picks."""

    def __init__(self, state: PanelState, tracker: LayerTracker, new_points_layer):
        self._state, self._tracker = state, tracker
        self._new_points_layer = new_points_layer  # callable(kind, announce=...) -> layer
        self._undo: list[tuple] = []
        self._negatives_seen: dict[int, int] = {}
        self._acting = False

    def layer_for(self, rec: TomogramRecord, kind: str):
        """The record's labels or negatives layer, made when it has none (the active layer stays)."""
        layer = getattr(rec, kind)
        if layer is None or not self._state.live(layer):
            active = self._state.viewer.layers.selection.active
            layer = self._new_points_layer(kind, announce=False, rec=rec)
            if active is not None:  # keep reviewing on the picks layer
                self._state.viewer.layers.selection.active = active
                layer.mode = "pan_zoom"
        return layer

    def accept(self, rec: TomogramRecord, zyx, score: float) -> None:
        """A particle: it joins the labels and stays a pick whatever the threshold (an earlier
        rejection of the same place leaves the negatives: the later decision holds)."""
        labels = self.layer_for(rec, "labels")
        self._acting = True
        try:
            replaced = self._tracker.remove_point(rec.negatives, rec, zyx)
            self._tracker.add_point(labels, rec, zyx)
            rec.edits.keep(zyx[None], [score])
            self._refresh_picks(rec)
        finally:
            self._acting = False
        self._negatives_seen[id(rec)] = rec.count("negatives")
        self._undo.append(("accept", rec, zyx, score, False, replaced))

    def reject(self, rec: TomogramRecord, zyx, score: float) -> None:
        """Not a particle: it joins the negatives and leaves the picks."""
        negatives = self.layer_for(rec, "negatives")
        was_pick = self._is_pick(rec, zyx)
        self._acting = True
        try:
            # an earlier acceptance of the same place leaves the labels: the later decision holds
            replaced = self._tracker.remove_point(rec.labels, rec, zyx)
            if replaced:
                rec.edits.unkeep(zyx[None])
            self._tracker.add_point(negatives, rec, zyx)
            self._tracker.remove_pick(rec, zyx)
        finally:
            self._acting = False
        self._negatives_seen[id(rec)] = rec.count("negatives")
        self._undo.append(("reject", rec, zyx, score, was_pick, replaced))

    def move(self, rec: TomogramRecord, zyx, score: float, to: str) -> None:
        """Another class: not this class (a negative of it, out of its picks) and a label of ``to``,
        a pick of ``to`` whatever its threshold (as an accepted one)."""
        self.reject(rec, zyx, score)
        target = rec.view(to)
        labels = self.layer_for(target, "labels")
        self._acting = True
        try:
            # a negative of ``to`` at this place gives way: the later decision holds
            replaced = self._tracker.remove_point(target.negatives, target, zyx)
            self._tracker.add_point(labels, target, zyx)
            target.edits.keep(zyx[None], [score])
            self._refresh_picks(target)
        finally:
            self._acting = False
        self._undo.append(("move", target, zyx, score, False, replaced))

    def undo(self):
        """Take back the last decision; returns ``(action, record, zyx)`` or None."""
        if not self._undo:
            return None
        action, rec, zyx, score, was_pick, replaced = self._undo.pop()
        if action == "move":  # the label of the other class (and its negative it replaced), then the rejection
            self._acting = True
            try:
                self._tracker.remove_point(rec.labels, rec, zyx)
                rec.edits.unkeep(zyx[None])
                if replaced:
                    self._tracker.add_point(self.layer_for(rec, "negatives"), rec, zyx)
                self._refresh_picks(rec)
            finally:
                self._acting = False
            undone = self.undo()
            return ("move", undone[1], zyx) if undone else None
        self._acting = True
        try:
            if action == "accept":
                self._tracker.remove_point(rec.labels, rec, zyx)
                rec.edits.unkeep(zyx[None])
                if replaced:  # the rejection it replaced: a negative again, out of the picks again
                    self._tracker.add_point(self.layer_for(rec, "negatives"), rec, zyx)
                    rec.edits.remove(zyx[None])
                self._refresh_picks(rec)
            else:
                self._tracker.remove_point(rec.negatives, rec, zyx)
                if was_pick:
                    self._tracker.restore_pick(rec, zyx, score)
                else:
                    rec.edits.unremove(zyx[None])
                if replaced:  # the acceptance it replaced
                    self._tracker.add_point(self.layer_for(rec, "labels"), rec, zyx)
                    rec.edits.keep(zyx[None], [score])
                    self._refresh_picks(rec)
        finally:
            self._acting = False
        self._negatives_seen[id(rec)] = rec.count("negatives")
        return action, rec, zyx

    # ------------------------------------------------------------------ "not a particle" clicks
    def watch_clicks(self, rec: TomogramRecord) -> None:
        """From now on, a negative added by hand to this record is an undoable decision."""
        self._negatives_seen[id(rec)] = rec.count("negatives")

    def note_clicks(self, rec: TomogramRecord) -> None:
        """Called when a record's points changed: record a negative clicked by hand."""
        if self._acting or rec.negatives is None:
            return
        seen, now = self._negatives_seen.get(id(rec)), rec.count("negatives")
        if seen is not None and now == seen + 1:
            zyx = L.points_in_image_frame(rec.negatives, rec.layer)[-1]
            self._undo.append(("click", rec, zyx, float("nan"), False, False))
        self._negatives_seen[id(rec)] = now

    # ------------------------------------------------------------------ helpers
    def _is_pick(self, rec, zyx) -> bool:
        if rec.picks is None or not self._state.live(rec.picks) or len(rec.picks.data) == 0:
            return False
        return bool(np.min(np.linalg.norm(np.asarray(rec.picks.data, float) - zyx, axis=1)) < 1e-3)

    def _refresh_picks(self, rec: TomogramRecord) -> None:
        if rec.result is not None:
            self._tracker.reselect(rec)
        else:
            self._state.picks_changed.emit(rec)
