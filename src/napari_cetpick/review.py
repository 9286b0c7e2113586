"""Reviewing picks: hand edits that survive re-thresholding, review order, suggestions.

Pure numpy (no Qt, no napari, no torch), used by the panel's review section. Positions are
``(n, 3)`` zyx voxels of one tomogram, as everywhere in the package.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .utils import logit

REVIEW_ORDERS = ("score", "uncertain")
_EPS = 1e-4


def _points(zyx) -> np.ndarray:
    a = np.asarray(zyx, float)
    return np.zeros((0, 3)) if a.size == 0 else a.reshape(-1, 3)


def nearest_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Distance from each row of ``a`` to the nearest row of ``b`` (inf when ``b`` is empty)."""
    if len(b) == 0:
        return np.full(len(a), np.inf)
    if len(a) == 0:
        return np.zeros(0)
    from scipy.spatial import cKDTree

    d, _ = cKDTree(b).query(a, k=1)
    return np.asarray(d, float)


@dataclass
class PickEdits:
    """What the user changed in a tomogram's picks by hand or by reviewing.

    Attributes
    ----------
    removed : (n, 3) float
        Picks the user rejected or deleted; re-selection never brings them back.
    kept : (m, 3) float
        Picks the user accepted or added by hand; re-selection always keeps them.
    kept_scores : (m,) float
        Their scores (NaN for points added by hand).
    """

    removed: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))
    kept: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))
    kept_scores: np.ndarray = field(default_factory=lambda: np.zeros(0))

    def __len__(self) -> int:
        return len(self.removed) + len(self.kept)

    def remove(self, zyx) -> None:
        """Mark positions as removed (and no longer kept)."""
        zyx = _points(zyx)
        self._drop_kept(zyx)
        self.removed = np.vstack([self.removed, zyx])

    def keep(self, zyx, scores=None) -> None:
        """Mark positions as kept (and no longer removed)."""
        zyx = _points(zyx)
        scores = np.full(len(zyx), np.nan) if scores is None else np.asarray(scores, float).reshape(-1)
        self.unremove(zyx)
        self._drop_kept(zyx)
        self.kept = np.vstack([self.kept, zyx])
        self.kept_scores = np.r_[self.kept_scores, scores]

    def unremove(self, zyx) -> None:
        """Forget removals at these positions (undo)."""
        zyx = _points(zyx)
        if len(self.removed) and len(zyx):
            self.removed = self.removed[nearest_distance(self.removed, zyx) > _EPS]

    def unkeep(self, zyx) -> None:
        """Forget kept positions (undo)."""
        self._drop_kept(_points(zyx))

    def _drop_kept(self, zyx: np.ndarray) -> None:
        if len(self.kept) and len(zyx):
            stay = nearest_distance(self.kept, zyx) > _EPS
            self.kept, self.kept_scores = self.kept[stay], self.kept_scores[stay]

    def is_kept(self, zyx) -> np.ndarray:
        """Boolean per position: kept by the user."""
        return nearest_distance(_points(zyx), self.kept) <= _EPS


def apply_edits(zyx, scores, edits: PickEdits | None, tol_vox: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Picks of a fresh selection with the user's edits applied.

    Selected picks within ``tol_vox`` of a removed position are dropped; kept positions
    are added unless a selected pick lies within ``tol_vox`` of them (the same particle,
    found again — e.g. by an improved model, a voxel away). Use the minimum distance
    between picks as ``tol_vox`` so that one particle never shows twice.

    Returns
    -------
    zyx : (k, 3) float
    scores : (k,) float
    """
    zyx, scores = _points(zyx), np.asarray(scores, float).reshape(-1)
    if edits is None or len(edits) == 0:
        return zyx, scores
    if len(edits.removed):
        keep = nearest_distance(zyx, edits.removed) > tol_vox
        zyx, scores = zyx[keep], scores[keep]
    if len(edits.kept):
        new = nearest_distance(edits.kept, zyx) > max(tol_vox, _EPS)
        zyx = np.vstack([zyx, edits.kept[new]])
        scores = np.r_[scores, edits.kept_scores[new]]
    return zyx, scores


def diff_points(before, after, tol_vox: float = 1e-3) -> tuple[np.ndarray, np.ndarray]:
    """Positions that disappeared from ``before`` and appeared in ``after``.

    Returns
    -------
    removed : (n, 3) float
        Rows of ``before`` with no row of ``after`` within ``tol_vox``.
    added : (m, 3) float
        Rows of ``after`` with no row of ``before`` within ``tol_vox``.
    """
    before, after = _points(before), _points(after)
    removed = before[nearest_distance(before, after) > tol_vox]
    added = after[nearest_distance(after, before) > tol_vox]
    return removed, added


def uncertainty_distance(scores, threshold: float) -> np.ndarray:
    """How far each score is from the threshold, in logits (0 = on the threshold)."""
    d = np.abs(logit(scores) - logit(threshold))
    return np.where(np.isfinite(np.asarray(scores, float)), d, np.inf)


def review_order(scores, threshold: float, by: str = "score", margin=None) -> np.ndarray:
    """Indices of the picks in the order to review them.

    Parameters
    ----------
    scores : (n,) float
        Pick scores (NaN for points added by hand: reviewed last).
    threshold : float
        The current score threshold.
    by : {"score", "uncertain"}
        ``score``: highest score first. ``uncertain``: least certain first, i.e. the
        smallest ``margin`` (or, without it, the score closest to the threshold in logits).
    margin : (n,) float, optional
        A detector's own certainty per pick (larger = more certain), used by ``uncertain``.
    """
    s = np.asarray(scores, float).reshape(-1)
    if by not in REVIEW_ORDERS:
        raise ValueError(f"unknown review order {by!r}; choose one of {REVIEW_ORDERS}")
    if by == "score":
        key = np.where(np.isfinite(s), -s, np.inf)
    else:
        m = None if margin is None else np.abs(np.asarray(margin, float).reshape(-1))
        key = uncertainty_distance(s, threshold) if m is None or len(m) != len(s) else np.where(
            np.isfinite(m), m, np.inf)
    return np.argsort(key, kind="stable")


def lookalike_order(descriptors, rejected, accepted=None) -> np.ndarray:
    """Indices of the picks, the most like a rejected one (and the least like an accepted one) first.

    One wrong pick rarely comes alone: gold beads, a smaller complex, the rim of a vesicle
    come back wherever they occur. Ordering the picks still to be judged by how closely
    they resemble what the user has rejected puts their look-alikes first, so a few
    rejections find the rest. Resemblance is the Euclidean distance between descriptors
    (e.g. :func:`~napari_cetpick.descriptors.radial_profiles`), each feature scaled by its
    spread over all rows given; the key is the relative closeness to a rejection,
    ``d_rejected / (d_rejected + d_accepted)`` (distances to the nearest rejected and accepted
    row: 0 on a rejected one, 1 on an accepted one, ½ for something like neither), smallest
    first; without accepted rows, ``d_rejected``.

    Parameters
    ----------
    descriptors : (n, k) float
        The picks to order.
    rejected : (m, k) float
        Descriptors of rejected picks and negative clicks (m ≥ 1).
    accepted : (p, k) float, optional
        Descriptors of accepted picks and labels.
    """
    d = np.asarray(descriptors, float)
    rej = np.asarray(rejected, float).reshape(-1, d.shape[1] if d.ndim == 2 else 0)
    acc = np.zeros((0, rej.shape[1])) if accepted is None else np.asarray(accepted, float).reshape(-1, rej.shape[1])
    if len(d) == 0:
        return np.zeros(0, int)
    if len(rej) == 0:
        raise ValueError("look-alikes need at least one rejected pick or negative click")
    every = np.vstack([d, rej, acc])
    centre = np.nanmean(every, axis=0)
    spread = np.nanstd(every, axis=0)
    spread = np.where(np.isfinite(spread) & (spread > 0), spread, 1.0)

    def scaled(a):
        return np.nan_to_num((a - centre) / spread)

    from scipy.spatial import cKDTree

    key = cKDTree(scaled(rej)).query(scaled(d), k=1)[0]
    if len(acc):
        d_acc = cKDTree(scaled(acc)).query(scaled(d), k=1)[0]
        with np.errstate(invalid="ignore"):
            key = np.where(key + d_acc > 0, key / (key + d_acc), 0.5)
    return np.argsort(key, kind="stable")


def suggest_locations(cand_zyx, cand_scores, threshold: float, known_zyx, diameter_vox: float,
                      n: int = 20, max_logit_distance: float = 3.0, spread_vox: float | None = None,
                      exclude_vox: float | None = None, shape_zyx=None) -> np.ndarray:
    """Indices of the candidates most worth a look, best first.

    A candidate is informative when the model is unsure about it (its score is close to
    the threshold), nobody has judged anything near it yet (it is far from the labels and
    negatives) and it is not next to another suggestion (suggestions spread over the
    volume). Greedy: each next suggestion maximises

        closeness · spread,   closeness = exp(-|logit(s) - logit(t)|),
                              spread = 1 - exp(-d / spread_vox),

    where ``d`` is the distance to the nearest label, negative or earlier suggestion.

    Parameters
    ----------
    cand_zyx : (n, 3) float
        Peak candidates (e.g. ``DetectResult.cand_zyx``), both sides of the threshold.
    cand_scores : (n,) float
    threshold : float
    known_zyx : (m, 3) float
        Labels and negatives: places the user has already judged.
    diameter_vox : float
        Particle diameter in voxels.
    n : int
        Number of suggestions at most.
    max_logit_distance : float
        Candidates further from the threshold than this (in logits; 3 ≈ a score of 0.05
        or 0.95 around a 0.5 threshold) are certain enough to skip.
    spread_vox : float, optional
        Distance scale of the spread term; default four particle diameters.
    exclude_vox : float, optional
        Candidates closer than this to a known point are skipped; default one diameter.
    shape_zyx : tuple, optional
        The tomogram's shape: candidates within a particle radius of its faces are skipped
        (a particle cut by the border is a poor example, and the network sees padding there).
    """
    zyx, s = _points(cand_zyx), np.asarray(cand_scores, float).reshape(-1)
    known = _points(known_zyx)
    diameter_vox = max(float(diameter_vox), 1.0)
    spread_vox = spread_vox or 4.0 * diameter_vox
    exclude_vox = diameter_vox if exclude_vox is None else exclude_vox
    u = uncertainty_distance(s, threshold)
    inside = np.ones(len(zyx), bool)
    if shape_zyx is not None and len(zyx):
        r = 0.5 * diameter_vox
        inside = np.all((zyx >= r - 0.5) & (zyx <= np.asarray(shape_zyx, float) - 0.5 - r), axis=1)
    pool = np.flatnonzero((u <= max_logit_distance) & inside & (nearest_distance(zyx, known) > exclude_vox))
    if len(pool) == 0 or n <= 0:
        return np.zeros(0, int)
    closeness = np.exp(-u[pool])
    d = nearest_distance(zyx[pool], known)
    chosen: list[int] = []
    alive = np.ones(len(pool), bool)
    for _ in range(min(n, len(pool))):
        gain = closeness * (1.0 - np.exp(-d / spread_vox))
        gain[~alive] = -1.0
        best = int(np.argmax(gain))
        if gain[best] < 0:
            break
        chosen.append(int(pool[best]))
        alive[best] = False
        # two suggestions on one particle are one suggestion
        step = np.linalg.norm(zyx[pool] - zyx[pool[best]], axis=1)
        alive &= step > exclude_vox
        d = np.minimum(d, step)
    return np.asarray(chosen, int)


__all__ = ["PickEdits", "apply_edits", "diff_points", "lookalike_order", "review_order", "suggest_locations",
           "uncertainty_distance", "REVIEW_ORDERS"]
