"""Keeps the panel's picture of each tomogram's points in step with the layers.

- Picks: the panel writes a selection (threshold, distance) into the picks layer; anything
  the user changes there by hand (deletes, adds, moves) is recorded as an edit and
  survives the next re-selection.
- Labels and negatives: their counts follow every change (``PanelState.points_changed``).

Layers are compared by identity after unwrapping napari's plugin proxies, so this works
when the panel is opened through Plugins.
"""
from __future__ import annotations

import contextlib

import numpy as np

from napari_cetpick.review import apply_edits, diff_points
from napari_cetpick.widgets import _layers as L
from napari_cetpick._napari.session import PanelState, TomogramRecord

EDIT_TOLERANCE_VOX = 1.0  # at least: a re-selected pick this close to an edited one is the same pick


class LayerTracker:
    """Connects to the points layers of every record and turns their changes into state."""

    def __init__(self, state: PanelState):
        self.state = state
        self._connected: dict[int, object] = {}  # id(layer) -> layer
        self._writing = False
        state.detection_changed.connect(self._on_detection_changed)

    # ------------------------------------------------------------------ connections
    def watch(self, layer) -> None:
        """Follow a labels, negatives or picks layer's data changes."""
        if layer is None or id(layer) in self._connected:
            return
        layer.events.data.connect(self._on_points_data)
        self._connected[id(layer)] = layer

    def unwatch_all(self) -> None:
        for layer in self._connected.values():
            with contextlib.suppress(TypeError, ValueError, RuntimeError):
                layer.events.data.disconnect(self._on_points_data)
        self._connected.clear()

    def _on_detection_changed(self, rec: TomogramRecord) -> None:
        self.watch(rec.picks)

    def _on_points_data(self, event=None) -> None:
        source = L.unwrap(getattr(event, "source", None))
        if source is None or self._writing:
            return
        for rec in list(self.state.records.values()):
            for name, track in list(rec.per_class.items()):
                view = rec if name == rec.active else rec.view(name)
                if source is track.picks:
                    self._record_hand_edits(view)
                    self.state.picks_changed.emit(view)
                if source is track.labels or source is track.negatives:
                    self.state.points_changed.emit(view)

    def _record_hand_edits(self, rec: TomogramRecord) -> None:
        if rec.shown is None:
            rec.shown = np.asarray(rec.picks.data, float).copy()
            return
        now = np.asarray(rec.picks.data, float).reshape(-1, 3)
        removed, added = diff_points(rec.shown, now)
        if len(removed):
            rec.edits.remove(removed)
        if len(added):
            scores = _scores_at(rec.picks, added)
            rec.edits.keep(added, scores)
        rec.shown = now.copy()

    # ------------------------------------------------------------------ writing picks
    def write_picks(self, rec: TomogramRecord, zyx, scores) -> None:
        """Put these picks into the record's picks layer (made again if the user deleted it),
        with the detection's columns for the picks it found (hand-added ones: unknown)."""
        zyx = np.asarray(zyx, float).reshape(-1, 3)
        scores = np.nan_to_num(np.asarray(scores, float).reshape(-1), nan=1.0)
        threshold = None if rec.result is None else float(rec.result.threshold)
        extra = None if rec.result is None else _detection_columns(rec.result, zyx)
        self._writing = True
        try:
            if rec.picks is None or not self.state.live(rec.picks):
                cls = self.state.named_class(rec.active)
                tint = L.tint_of(self.state.particle_class(rec.active).colour) if cls else None
                rec.picks = L.show_picks(self.state.viewer, rec.layer, zyx, scores, self.state.pick_size(rec),
                                         threshold, class_name=cls, extra=extra, tint=tint)
            else:
                L.set_picks(rec.picks, zyx, scores, threshold, extra)
                L.rename(self.state.viewer, rec.picks, L.picks_name(rec.layer, self.state.named_class(rec.active)))
        finally:
            self._writing = False
        self.watch(rec.picks)
        rec.shown = zyx.copy()

    def reselect(self, rec: TomogramRecord, threshold: float | None = None,
                 min_distance: float | None = None) -> None:
        """Re-threshold the cached candidates and re-apply the user's edits; no new detection."""
        if rec.result is None:
            return
        rec.result.reselect(threshold=threshold, min_distance_vox=min_distance)
        group = rec.track().group
        views = [rec]
        if group is not None and len(group) > 1:
            # one place is one class: overlaps with the other classes' picks are resolved again
            from napari_cetpick.detect import resolve_classes

            resolve_classes(group.results.values())
            views += [rec.view(n) for n in group.names if n != rec.active and rec.track(n).result is group[n]]
        for view in views:
            res = view.result
            # within the minimum distance a pick is the one the user judged (a new model finds it
            # a voxel away): it stays removed, or stands for the accepted one
            tol = max(EDIT_TOLERANCE_VOX, float(res.min_distance_vox))
            zyx, scores = apply_edits(res.zyx, res.scores, view.edits, tol)
            self.write_picks(view, zyx, scores)
            self.state.picks_changed.emit(view)

    def remove_pick(self, rec: TomogramRecord, zyx) -> float:
        """Take the pick at ``zyx`` out of the picks layer (recorded as removed); returns its score."""
        zyx = np.asarray(zyx, float).reshape(3)
        score = float(_scores_at(rec.picks, zyx[None])[0]) if rec.picks is not None else float("nan")
        rec.edits.remove(zyx[None])
        if rec.picks is not None and self.state.live(rec.picks):
            data = np.asarray(rec.picks.data, float).reshape(-1, 3)
            keep = np.linalg.norm(data - zyx, axis=1) > 1e-3
            scores = rec.picks.features["score"].to_numpy(float) if "score" in rec.picks.features else np.ones(len(data))
            self.write_picks(rec, data[keep], scores[keep])
        self.state.picks_changed.emit(rec)
        return score

    def restore_pick(self, rec: TomogramRecord, zyx, score: float) -> None:
        """Undo :meth:`remove_pick`."""
        zyx = np.asarray(zyx, float).reshape(1, 3)
        rec.edits.unremove(zyx)
        if rec.picks is not None and self.state.live(rec.picks):
            data = np.asarray(rec.picks.data, float).reshape(-1, 3)
            scores = rec.picks.features["score"].to_numpy(float) if "score" in rec.picks.features else np.ones(len(data))
            self.write_picks(rec, np.vstack([data, zyx]), np.r_[scores, score])
        self.state.picks_changed.emit(rec)

    # ------------------------------------------------------------------ labels, negatives
    def add_point(self, layer, rec: TomogramRecord, zyx) -> None:
        """Append tomogram-voxel positions (one or ``(n, 3)``) to a labels or negatives layer."""
        pos = L.image_to_points_frame(np.asarray(zyx, float).reshape(-1, 3), rec.layer, layer)
        if len(pos) == 0:
            return
        self._writing = True
        try:
            layer.add(pos)
        finally:
            self._writing = False
        self.state.points_changed.emit(rec)

    def remove_point(self, layer, rec: TomogramRecord, zyx) -> bool:
        """Remove the point of a labels or negatives layer nearest to ``zyx`` (undo)."""
        if layer is None or not self.state.live(layer) or len(layer.data) == 0:
            return False
        pts = L.points_in_image_frame(layer, rec.layer)
        i = int(np.argmin(np.linalg.norm(pts - np.asarray(zyx, float).reshape(3), axis=1)))
        if np.linalg.norm(pts[i] - np.asarray(zyx, float).reshape(3)) > 1e-2:
            return False
        self._writing = True
        try:
            layer.selected_data = {i}
            layer.remove_selected()
        finally:
            self._writing = False
        self.state.points_changed.emit(rec)
        return True


def _scores_at(picks_layer, zyx) -> np.ndarray:
    """The ``score`` feature of the picks layer's points at these positions (1 if unknown)."""
    zyx = np.asarray(zyx, float).reshape(-1, 3)
    if picks_layer is None or "score" not in picks_layer.features.columns or len(picks_layer.data) == 0:
        return np.ones(len(zyx))
    data = np.asarray(picks_layer.data, float).reshape(-1, 3)
    scores = picks_layer.features["score"].to_numpy(float)
    idx = [int(np.argmin(np.linalg.norm(data - p, axis=1))) for p in zyx]
    return np.nan_to_num(scores[idx], nan=1.0)


def _detection_columns(result, zyx):
    """The detection's own columns other than score and margin (``agreement``, ``runner_up`` …)
    for these positions: a pick's row where it is one of the result's picks, else empty."""
    feats = result.features.drop(columns=["score", "margin"], errors="ignore")
    if feats.shape[1] == 0:
        return None
    rows = np.full(len(zyx), -1)
    if len(zyx) and len(result.zyx):
        from scipy.spatial import cKDTree

        dist, nearest = cKDTree(np.asarray(result.zyx, float)).query(zyx)
        rows = np.where(dist < 1e-6, nearest, -1)
    out = feats.iloc[np.maximum(rows, 0)].reset_index(drop=True) if len(feats) else feats.reindex(range(len(zyx)))
    out.loc[rows < 0, :] = np.nan
    return out
