"""Section 4 · Review: step through picks (or suggestions) and accept or reject them.

Keys on the picks layer: ``a`` accept (the pick joins the labels of its class), ``r`` reject
(not this class: it goes to the class's negatives), ``m`` move it to the next class (a label
there, a negative here), ``n`` / ``p`` next / previous, ``u`` undo. The view centres on each pick
(its slice and the camera). "Not a particle" clicks add negatives directly.
"""
from __future__ import annotations

import numpy as np
from magicgui.widgets import CheckBox, ComboBox, Container, PushButton, SpinBox
from napari.utils.notifications import show_error, show_info

from napari_cetpick.errors import CetpickError
from napari_cetpick.widgets import _layers as L
from napari_cetpick.widgets._common import heading, narrow, row, status_label
from napari_cetpick.widgets._decisions import Decisions
from napari_cetpick.widgets._legend import PointsLegend
from napari_cetpick.widgets._review_queue import ORDERS, picks_queue, suggestions
from napari_cetpick._napari.session import PanelState, TomogramRecord
from napari_cetpick.widgets._tracking import LayerTracker

REVIEW_KEYS = {"a": "accept", "r": "reject", "m": "move", "n": "next", "p": "previous", "u": "undo"}


#: What Undo takes back, in its message.
UNDONE = {"accept": "the acceptance", "reject": "the rejection", "move": "the move to another class",
          "click": "the 'not a particle' click"}


class ReviewSection(Container):
    """Accept or reject picks one by one, with the view following; undo; suggestions."""

    def __init__(self, state: PanelState, tracker: LayerTracker, new_points_layer):
        super().__init__(labels=True)
        self._state, self._tracker = state, tracker
        self._new_points_layer = new_points_layer  # callable(kind) -> layer (the data section's)
        self._queue = np.zeros((0, 3))
        self._queue_scores = np.zeros(0)
        self._queue_record: TomogramRecord | None = None
        self._index = -1
        self._decisions = Decisions(state, tracker, new_points_layer)
        self._bound: set[int] = set()
        self._cursor = None  # the ring around the item under review
        self._profile_cache: dict = {}  # radial profiles of places, per tomogram (look-alike order)
        self._order_combo = ComboBox(
            label="Order", choices=list(ORDERS), value="highest score first",
            tooltip="Review the picks from the highest score down, the least certain first (scores closest "
                    "to the threshold), or those that look most like the picks you rejected first (after a few "
                    "rejections: their look-alikes); 'suggestions' steps through the places Suggest listed.")
        self._start_button = PushButton(
            text="Review picks", tooltip="Select the picks layer and go to the first pick; then use the keys "
                                         "a (accept), r (reject), n (next), p (previous), u (undo).")
        self._prev_button = PushButton(text="◀ p", tooltip="Previous pick (key p).")
        self._accept_button = PushButton(text="Accept a", tooltip="A particle: add it to the labels (key a).")
        self._reject_button = PushButton(text="Reject r", tooltip="Not this class: move it to the class's negatives "
                                                                   "(key r).")
        self._move_button = PushButton(text="Move m", tooltip="Another class: a label of the next class, a negative "
                                                               "of this one (key m; with several classes).")
        self._next_button = PushButton(text="n ▶", tooltip="Next pick (key n).")
        self._undo_button = PushButton(text="Undo u", tooltip="Undo the last accept, reject or 'not a particle' "
                                                               "click (key u).")
        self._position_label = status_label("Detect, then press Review picks.", "Where you are in the review.")
        self._not_particle_check = CheckBox(
            text="“Not a particle” clicks", value=False,
            tooltip="Clicks in the viewer add negatives (magenta crosses) instead of labels: mark gold, "
                    "carbon edges or look-alikes the model should learn to ignore.")
        self._suggest_count_spin = SpinBox(
            min=1, max=500, value=20, tooltip="How many places Suggest lists at most.")
        self._suggest_button = PushButton(
            text="Suggest where to look", tooltip="List the most informative places to judge next: candidates "
                                                  "near the threshold, far from your labels and negatives, "
                                                  "spread over the volume. Step through them with the same keys.")
        self._legend = PointsLegend(state)
        narrow(self._order_combo)
        self.extend([
            heading("4 · Review picks"), self._order_combo, row(self._start_button, self._undo_button),
            row(self._prev_button, self._accept_button, self._reject_button, self._move_button, self._next_button),
            row(self._position_label), row(self._not_particle_check),
            row(self._suggest_button, self._suggest_count_spin), self._legend,
        ])
        for button, callback in ((self._start_button, self._on_start_clicked),
                                 (self._prev_button, lambda *_: self.go(self._index - 1)),
                                 (self._accept_button, self._on_accept_clicked),
                                 (self._reject_button, self._on_reject_clicked),
                                 (self._move_button, self._on_move_clicked),
                                 (self._next_button, lambda *_: self.go(self._index + 1)),
                                 (self._undo_button, self._on_undo_clicked),
                                 (self._suggest_button, self._on_suggest_clicked)):
            button.changed.connect(callback)
        self._order_combo.changed.connect(self._on_order_changed)
        self._not_particle_check.changed.connect(self._on_not_particle_changed)
        state.points_changed.connect(self._on_points_changed)
        state.current_changed.connect(self._on_current_changed)
        state.detection_changed.connect(self._on_detection_changed)

    # ------------------------------------------------------------------ queue
    def _on_detection_changed(self, rec: TomogramRecord) -> None:
        for track in rec.per_class.values():
            self._bind_keys(track.picks)

    def _on_current_changed(self, rec=None) -> None:
        self._queue_record, self._index = None, -1
        if self._state.live(self._cursor):  # the ring marked a place in the tomogram reviewed before
            self._cursor.data = np.zeros((0, 3))
        self._position_label.value = "Press Review picks to step through this tomogram's picks."

    def _on_order_changed(self, value=None) -> None:
        if ORDERS.get(str(value)) != "suggest":
            self.start()

    def _on_start_clicked(self, *_) -> None:
        self.start()

    def start(self) -> bool:
        """Fill the queue with the current tomogram's picks in the chosen order; go to the first."""
        order = ORDERS[str(self._order_combo.value)]
        if order == "suggest":
            return self.suggest()
        try:
            zyx, scores = picks_queue(self._state, self._state.current, order, self._profile_cache)
        except CetpickError as exc:
            show_error(str(exc))
            return False
        self._set_queue(self._state.current, zyx, scores)
        return True

    def _on_suggest_clicked(self, *_) -> None:
        self.suggest()

    def suggest(self) -> bool:
        """Queue the most informative places to judge next (see :func:`~napari_cetpick.review.suggest_locations`)."""
        rec = self._state.current
        try:
            zyx, scores = suggestions(self._state, rec, int(self._suggest_count_spin.value))
        except CetpickError as exc:
            show_error(str(exc))
            return False
        if len(zyx) == 0:
            show_info("Nothing to suggest: no candidate close to the threshold lies away from your picks, labels "
                      "and negatives.")
            return False
        self._order_combo.changed.disconnect(self._on_order_changed)
        try:
            self._order_combo.value = "suggestions"
        finally:
            self._order_combo.changed.connect(self._on_order_changed)
        self._set_queue(rec, zyx, scores)
        return True

    def _set_queue(self, rec: TomogramRecord, zyx, scores) -> None:
        self._queue_record, self._queue, self._queue_scores = rec, np.asarray(zyx, float), np.asarray(scores, float)
        self._bind_keys(rec.picks)
        if rec.picks is not None and self._state.live(rec.picks):
            self._state.viewer.layers.selection.active = rec.picks
            rec.picks.mode = "pan_zoom"
        self.go(0)

    def go(self, index: int) -> None:
        """Show item ``index`` of the queue: centre the view on it and select it."""
        rec, n = self._queue_record, len(self._queue)
        if rec is None or n == 0:
            self._position_label.value = "Nothing to review."
            return
        self._index = int(np.clip(index, 0, n - 1))
        zyx = self._queue[self._index]
        world = np.asarray(rec.layer.data_to_world(zyx), float)
        viewer = self._state.viewer
        viewer.dims.set_point(viewer.dims.ndim - 3, world[0])
        viewer.camera.center = tuple(world[-2:]) if viewer.dims.ndisplay == 2 else tuple(world[-3:])
        self._show_cursor(rec, zyx)
        kind = "suggestion" if ORDERS[str(self._order_combo.value)] == "suggest" else "pick"
        status = self._status_of(rec, zyx)
        self._position_label.value = (f"{kind.capitalize()} {self._index + 1} of {n} · score "
                                      f"{self._queue_scores[self._index]:.3f} · z {zyx[0]:.0f}{status}")

    def _show_cursor(self, rec: TomogramRecord, zyx) -> None:
        """A thin white ring around the item under review (picks and suggestions alike)."""
        cursor = self._cursor if self._state.live(self._cursor) else None
        self._cursor = L.show_cursor(self._state.viewer, rec.layer, zyx, 1.5 * self._state.pick_size(rec), cursor)

    def _advance(self) -> None:
        """To the next item after a decision; after the last one, say so and hide the ring."""
        if self._index + 1 < len(self._queue):
            self.go(self._index + 1)
            return
        if self._state.live(self._cursor):
            self._cursor.data = np.zeros((0, 3))
        kind = "suggestions" if ORDERS[str(self._order_combo.value)] == "suggest" else "picks"
        rec = self._queue_record
        judged = sum(bool(self._status_of(rec, zyx)) for zyx in self._queue) if rec is not None else 0
        if judged == len(self._queue):
            head = f"All {len(self._queue)} {kind} judged."
        else:  # skipped items (n) stay unjudged
            head = f"End of the {kind}: {judged} of {len(self._queue)} judged, {len(self._queue) - judged} skipped."
        self._position_label.value = f"{head} Improve, Suggest more, or press p to go back."

    def _status_of(self, rec, zyx) -> str:
        if rec.edits.is_kept(zyx[None])[0]:
            return " · accepted"
        if len(rec.edits.removed) and np.min(np.linalg.norm(rec.edits.removed - zyx, axis=1)) < 1e-3:
            return " · rejected"
        return ""

    def _current_item(self):
        if self._queue_record is None or not 0 <= self._index < len(self._queue):
            show_error("Nothing to review: press Review picks (or Suggest) first.")
            return None
        return self._queue_record, self._queue[self._index].copy(), float(self._queue_scores[self._index])

    # ------------------------------------------------------------------ decisions
    def _on_accept_clicked(self, *_) -> None:
        self.accept()

    def accept(self) -> None:
        """The current item is a particle: add it to the labels and keep it as a pick."""
        item = self._current_item()
        if item is not None:
            self._decisions.accept(*item)
            self._next_after_decision()

    def _on_reject_clicked(self, *_) -> None:
        self.reject()

    def reject(self) -> None:
        """The current item is not a particle: add it to the negatives and drop it from the picks."""
        item = self._current_item()
        if item is not None:
            self._decisions.reject(*item)
            self._next_after_decision()

    def _next_after_decision(self) -> None:
        """The next item; in the look-alike order the rest is sorted again first (every decision
        changes what the rejections look like)."""
        if ORDERS[str(self._order_combo.value)] == "lookalike" and self._queue_record is self._state.current:
            self.start()
        else:
            self._advance()

    def _on_move_clicked(self, *_) -> None:
        self.move_to(None)

    def move_to(self, name: str | None) -> bool:
        """The current item is of class ``name`` (None: the next class): a label there, a
        negative of its class here."""
        item = self._current_item()
        if item is None:
            return False
        names, active = self._state.class_names, item[0].active
        if name is None:
            others = names[names.index(active) + 1:] + names[:names.index(active)]
            name = others[0] if others else None
        if name is None or name == active or name not in names:
            show_error("Add another class first (Class › Add class): a pick moves to another class.")
            return False
        self._decisions.move(*item, name)
        show_info(f"Moved to {name}.")
        self._advance()
        return True

    def _on_undo_clicked(self, *_) -> None:
        self.undo()

    def undo(self) -> None:
        """Take back the last accept, reject or "not a particle" click."""
        undone = self._decisions.undo()
        if undone is None:
            show_info("Nothing to undo.")
            return
        action, rec, zyx = undone
        show_info(f"Undone: {UNDONE.get(action, action)}.")
        if rec is self._queue_record and action != "click":
            hits = np.flatnonzero(np.linalg.norm(self._queue - zyx, axis=1) < 1e-3)
            if len(hits):
                self.go(int(hits[0]))

    # ------------------------------------------------------------------ keys, clicks, legend
    def _bind_keys(self, layer) -> None:
        """The review keys on a picks layer (instance keymap, so napari's own keys elsewhere stay)."""
        if layer is None or id(layer) in self._bound:
            return
        actions = {"accept": self.accept, "reject": self.reject, "undo": self.undo, "move": lambda: self.move_to(None),
                   "next": lambda: self.go(self._index + 1), "previous": lambda: self.go(self._index - 1)}
        for key, name in REVIEW_KEYS.items():
            layer.bind_key(key, lambda _layer, _do=actions[name]: _do(), overwrite=True)
        self._bound.add(id(layer))

    def _on_not_particle_changed(self, on: bool) -> None:
        rec = self._state.current
        if rec is None:
            return
        if on:
            layer = self._decisions.layer_for(rec, "negatives")
            self._decisions.watch_clicks(rec)
            self._state.viewer.layers.selection.active = layer
            layer.mode = "add"
        elif rec.negatives is not None and self._state.live(rec.negatives):
            rec.negatives.mode = "pan_zoom"
            if rec.picks is not None and self._state.live(rec.picks):
                self._state.viewer.layers.selection.active = rec.picks

    def _on_points_changed(self, rec=None) -> None:
        """Negatives clicked by hand become undoable."""
        if rec is not None:
            self._decisions.note_clicks(rec)
