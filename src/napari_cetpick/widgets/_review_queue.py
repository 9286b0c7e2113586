"""What Review steps through: the current tomogram's picks in the chosen order, or the places
Suggest lists. The ordering itself is the core's (:mod:`napari_cetpick.review`,
:mod:`napari_cetpick.descriptors`); this module only reads the layers."""
from __future__ import annotations

import numpy as np

from napari_cetpick.errors import CetpickError
from napari_cetpick.review import lookalike_order, review_order, suggest_locations
from napari_cetpick.widgets import _layers as L
from napari_cetpick._napari.session import PanelState, TomogramRecord

ORDERS = {"highest score first": "score", "least certain first": "uncertain",
          "like my rejections first": "lookalike", "suggestions": "suggest"}


def _points(state: PanelState, rec: TomogramRecord, *layers) -> np.ndarray:
    pts = [L.points_in_image_frame(layer, rec.layer) for layer in layers if layer is not None and state.live(layer)]
    return np.vstack(pts) if pts else np.zeros((0, 3))


def _once(*arrays) -> np.ndarray:
    """The rows of ``arrays``, each place once (a rejected pick is also a negative click)."""
    rows = np.vstack([np.asarray(a, float).reshape(-1, 3) for a in arrays])
    return rows[np.sort(np.unique(np.round(rows, 3), axis=0, return_index=True)[1])] if len(rows) else rows


def _profiles(rec: TomogramRecord, zyx: np.ndarray, diameter: float, cache: dict | None) -> np.ndarray:
    """Radial profiles of these places, each computed once per tomogram and size (``cache``:
    the review re-sorts after every decision, and a place's profile never changes); the
    tomogram's local background is built once per tomogram and size too (a large file's read)."""
    from napari_cetpick.descriptors import Background, radial_profiles

    if cache is None:
        return radial_profiles(rec.layer.data, zyx, diameter)
    key = (rec.layer.unique_id, round(float(diameter), 3))
    known = cache.setdefault(key, {})
    keys = [tuple(np.round(p, 3)) for p in zyx]
    missing = [i for i, k in enumerate(keys) if k not in known]
    if missing:
        if ("background",) + key not in cache:
            cache[("background",) + key] = Background.of(rec.layer.data, diameter)
        rows = radial_profiles(rec.layer.data, zyx[missing], diameter, background=cache[("background",) + key])
        for i, row in zip(missing, rows):
            known[keys[i]] = row
    return np.array([known[k] for k in keys]).reshape(len(zyx), -1)


def picks_queue(state: PanelState, rec: TomogramRecord, order: str,
                cache: dict | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The picks of ``rec``'s active class in review order: ``(zyx, scores)``.

    ``lookalike`` leaves out the picks already accepted and puts first those most like the
    rejected picks and negative clicks (:func:`~napari_cetpick.review.lookalike_order` on
    :func:`~napari_cetpick.descriptors.radial_profiles` of the tomogram, kept in ``cache``). Raises
    :class:`CetpickError` with what to do when there is nothing to order.
    """
    if rec is None or rec.picks is None or not state.live(rec.picks):
        raise CetpickError("No picks to review: run Detect (or Import picks) first.")
    zyx = np.asarray(rec.picks.data, float).reshape(-1, 3)
    if len(zyx) == 0:
        raise CetpickError("No picks at this threshold: lower the score threshold, or Suggest where to look.")
    feats = rec.picks.features
    scores = feats["score"].to_numpy(float) if "score" in feats.columns else np.ones(len(zyx))
    if order != "lookalike":
        margin = feats["margin"].to_numpy(float) if "margin" in feats.columns else None
        threshold = rec.threshold if rec.threshold is not None else 0.5
        idx = review_order(scores, threshold, order, margin=margin)
        return zyx[idx], scores[idx]
    rejected = _once(rec.edits.removed, _points(state, rec, rec.negatives))
    if len(rejected) == 0:
        raise CetpickError("“Like my rejections” needs something rejected: reject a pick (r) or click a "
                           "“not a particle” first.")
    accepted = _once(rec.edits.kept, _points(state, rec, rec.labels))
    open_ = ~rec.edits.is_kept(zyx)
    if not open_.any():
        raise CetpickError("Every pick is accepted already: Improve, or Suggest where to look.")
    zyx, scores = zyx[open_], scores[open_]
    desc = _profiles(rec, np.vstack([zyx, rejected, accepted]), state.pick_size(rec), cache)
    n, m = len(zyx), len(rejected)
    idx = lookalike_order(desc[:n], desc[n:n + m], desc[n + m:])
    return zyx[idx], scores[idx]


def suggestions(state: PanelState, rec: TomogramRecord, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The places Suggest lists (:func:`~napari_cetpick.review.suggest_locations`): ``(zyx, scores)``."""
    if rec is None or rec.result is None:
        raise CetpickError("Suggestions need a detection: press Detect first.")
    # labels, negatives and the picks themselves: a place within a particle of one of them
    # (a pick's rim peak, a pick, a judged place) is nothing new to look at
    known = _points(state, rec, rec.labels, rec.negatives, rec.picks)
    res = rec.result
    idx = suggest_locations(res.cand_zyx, res.cand_scores, res.threshold, known, state.pick_size(rec), n=n,
                            shape_zyx=rec.shape)
    return res.cand_zyx[idx], res.cand_scores[idx]
