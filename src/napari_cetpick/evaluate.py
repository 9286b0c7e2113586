"""Matching picks to true particles, and precision / recall / F1 / AP.

A pick and a true particle may be matched when their distance is strictly less than the
radius (``d < radius_vox``). The original cet_pick compares ``d**2 - r**3``, which mixes
units and accepts far too distant pairs for any radius above 1; we use the plain distance.

Matching is one-to-one. :func:`match_points` returns a maximum matching of minimum total
distance (Hungarian algorithm). For the precision-recall curve, :func:`evaluate` and
:func:`pr_curve` need, at every score threshold, the size of the maximum matching of the
picks above it. Adding picks in descending score order and keeping each one that can be
matched by an augmenting path (Kuhn's step) gives exactly that for every threshold in one
pass: the sets of picks that can be matched together form a matroid (a transversal
matroid), on which the greedy order is optimal for every prefix. It therefore agrees with
re-running the Hungarian algorithm at each threshold, at the cost of one pass. Greedy
nearest-neighbour matching by score (as in COCO) can undercount; this cannot.

Coordinates are ``(n, 3)`` z, y, x in voxels of the same tomogram.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components, min_weight_full_bipartite_matching
from scipy.spatial import cKDTree

from .errors import CetpickError, plain


def _points(zyx, name: str) -> np.ndarray:
    arr = np.asarray(zyx, dtype=np.float64)
    if arr.size == 0:
        return np.zeros((0, 3), np.float64)
    if arr.ndim != 2 or arr.shape[1] != 3:
        raise CetpickError(f"{name} must be an (n, 3) array of z, y, x coordinates, got shape {arr.shape}.")
    return arr


def _check_radius(radius_vox: float) -> float:
    r = float(radius_vox)
    if not (r > 0 and math.isfinite(r)):
        raise CetpickError(f"The matching radius must be a positive number of voxels, got {plain(radius_vox)}.")
    return r


def _close_pairs(pred: np.ndarray, true: np.ndarray, radius_vox: float):
    """All (pred, true) index pairs with distance < radius, and the distances."""
    if len(pred) == 0 or len(true) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0)
    sdm = cKDTree(pred).sparse_distance_matrix(cKDTree(true), radius_vox, output_type="ndarray")
    sdm = sdm[sdm["v"] < radius_vox]  # the tree includes d == r; we do not
    return sdm["i"].astype(np.int64), sdm["j"].astype(np.int64), sdm["v"].astype(np.float64)


# Largest group matched with a dense cost matrix (entries); bigger ones use a sparse solver.
_DENSE_MAX = 4_000_000


def _assign_sparse(lp: np.ndarray, lt: np.ndarray, w: np.ndarray, n_p: int, n_t: int):
    """Max-cardinality, min-distance matching of one big group with memory O(edges).

    A full bipartite matching always exists in this padded graph: rows are the picks then
    one dummy per truth, columns the truths then one dummy per pick. Pick i may take its
    own dummy column and truth j its own dummy row (cost ``big``: unmatched); each real
    edge (i, j) with cost w < 1 has a mirror edge (dummy j, dummy i) so that the two
    dummies left free by a real pair can pair with each other. Two ``big`` costs exceed
    any sum of real costs, so the optimum maximises the number of real pairs first.
    """
    big = float(n_p + n_t + 1)
    eps = 1e-9  # sparse solvers treat explicit zeros as missing edges
    rows = np.concatenate([lp, n_p + lt, np.arange(n_p), n_p + np.arange(n_t)])
    cols = np.concatenate([lt, n_t + lp, n_t + np.arange(n_p), np.arange(n_t)])
    vals = np.concatenate([w + eps, np.full(lp.size, eps), np.full(n_p + n_t, big)])
    graph = coo_matrix((vals, (rows, cols)), shape=(n_p + n_t, n_t + n_p)).tocsr()
    match = min_weight_full_bipartite_matching(graph)[1]
    r = np.arange(n_p)
    c = match[:n_p]
    real = c < n_t
    return r[real], c[real]


def match_points(pred_zyx, true_zyx, radius_vox: float) -> tuple[np.ndarray, np.ndarray]:
    """One-to-one matching of picks to true particles within a radius.

    Among the matchings with the most pairs, the one with the smallest total distance
    (Hungarian algorithm on each connected group of nearby points, so memory stays bounded
    by the largest group, not by ``n_pred × n_true``).

    Parameters
    ----------
    pred_zyx : (n, 3) float
        Picks.
    true_zyx : (m, 3) float
        True particle centres.
    radius_vox : float
        Pairs are allowed when their distance is strictly below this (not ``d**2 < r**3``,
        a bug of the original).

    Returns
    -------
    pred_idx, true_idx : (k,) int64
        Matched pairs, sorted by ``pred_idx``.
    """
    pred = _points(pred_zyx, "pred_zyx")
    true = _points(true_zyx, "true_zyx")
    r = _check_radius(radius_vox)
    pi, ti, d = _close_pairs(pred, true, r)
    if pi.size == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)

    n_p, n_t = len(pred), len(true)
    graph = coo_matrix((np.ones(pi.size), (pi, ti + n_p)), shape=(n_p + n_t, n_p + n_t))
    _, comp = connected_components(graph, directed=False)
    edge_comp = comp[pi]
    order = np.argsort(edge_comp, kind="stable")
    pi, ti, d, edge_comp = pi[order], ti[order], d[order], edge_comp[order]
    _, starts, counts = np.unique(edge_comp, return_index=True, return_counts=True)

    # A group with one edge is one isolated pair: the common case, handled in bulk.
    single = starts[counts == 1]
    out_p, out_t = [pi[single]], [ti[single]]
    for s, c in zip(starts[counts > 1], counts[counts > 1]):
        gp, gt, gd = pi[s : s + c], ti[s : s + c], d[s : s + c] / r
        up, lp = np.unique(gp, return_inverse=True)
        ut, lt = np.unique(gt, return_inverse=True)
        if len(up) * len(ut) > _DENSE_MAX:
            rows, cols = _assign_sparse(lp, lt, gd, len(up), len(ut))
            out_p.append(up[rows])
            out_t.append(ut[cols])
            continue
        # Forbidden pairs cost more than any set of allowed ones (each < 1), so the
        # assignment first maximises the number of allowed pairs, then minimises distance.
        big = float(min(len(up), len(ut)) + 1)
        cost = np.full((len(up), len(ut)), big)
        cost[lp, lt] = gd
        rows, cols = linear_sum_assignment(cost)
        ok = cost[rows, cols] < 1.0
        out_p.append(up[rows[ok]])
        out_t.append(ut[cols[ok]])
    mp, mt = np.concatenate(out_p), np.concatenate(out_t)
    order = np.argsort(mp, kind="stable")
    return mp[order], mt[order]


def _greedy_matchable(order: np.ndarray, pi: np.ndarray, ti: np.ndarray, d: np.ndarray, n_t: int) -> np.ndarray:
    """For picks taken in ``order``, whether each was added to the growing maximum matching.

    Kuhn's augmenting-path step per pick; a pick once matched stays matched (possibly to
    another truth), so ``cumsum`` of the result along ``order`` is the maximum matching
    size of every prefix.
    """
    n = order.size
    accepted = np.zeros(n, bool)
    if pi.size == 0:
        return accepted
    # Neighbour lists per pick, nearest truth first.
    srt = np.lexsort((d, pi))
    nbr = ti[srt].tolist()
    n_pick = int(pi.max()) + 1
    indptr = np.searchsorted(pi[srt], np.arange(n_pick + 1)).tolist()
    match_t = [-1] * n_t
    seen = [0] * n_t  # visit stamps, one stamp per search
    stamp = 0
    for rank, root in enumerate(order.tolist()):
        if root >= n_pick or indptr[root] == indptr[root + 1]:
            continue
        stamp += 1
        # Iterative depth-first search for an augmenting path from ``root``.
        path_p, path_k, path_t = [root], [indptr[root]], []
        while path_p:
            p = path_p[-1]
            k, end = path_k[-1], indptr[p + 1]
            descended = False
            while k < end:
                t = nbr[k]
                k += 1
                if seen[t] == stamp:
                    continue
                seen[t] = stamp
                owner = match_t[t]
                path_t.append(t)
                if owner < 0:
                    for pp, tt in zip(path_p, path_t):
                        match_t[tt] = pp
                    accepted[rank] = True
                    path_p = []
                    descended = True
                    break
                path_k[-1] = k
                path_p.append(owner)
                path_k.append(indptr[owner])
                descended = True
                break
            if not descended:
                path_p.pop()
                path_k.pop()
                if path_t:
                    path_t.pop()
    return accepted


def _in_box(zyx: np.ndarray, box, pad: float = 0.0) -> np.ndarray:
    lo = np.asarray(box[:3], float) - pad
    hi = np.asarray(box[3:], float) + pad
    return np.all((zyx >= lo) & (zyx < hi), axis=1)


def _check_box(box) -> tuple[float, ...] | None:
    if box is None:
        return None
    b = tuple(float(v) for v in box)
    if len(b) != 6 or not all(b[i] < b[i + 3] for i in range(3)):
        raise CetpickError(f"The evaluation box must be (z0, y0, x0, z1, y1, x1) with z0 < z1 etc., got {plain(box)}.")
    return b


@dataclass
class _Curve:
    thresholds: np.ndarray  # (m,) distinct scores, descending
    n_pred: np.ndarray  # (m,) picks counted at score >= threshold
    n_matched: np.ndarray  # (m,) matched picks at score >= threshold
    n_true: int


def _curve(pred_zyx, scores, true_zyx, radius_vox, box) -> _Curve:
    pred = _points(pred_zyx, "pred_zyx")
    true = _points(true_zyx, "true_zyx")
    r = _check_radius(radius_vox)
    if scores is None:
        sc = np.ones(len(pred), np.float64)
    else:
        sc = np.asarray(scores, dtype=np.float64).reshape(-1)
        if sc.shape[0] != len(pred):
            raise CetpickError(f"Got {len(pred)} picks but {sc.shape[0]} scores.")
    box = _check_box(box)
    counted_always = np.ones(len(pred), bool)
    if box is not None:
        true = true[_in_box(true, box)]
        # Picks just outside the box may still find a true particle inside it; they count
        # when matched (a true positive) and are ignored otherwise (nobody labelled there).
        near = _in_box(pred, box, pad=r)
        pred, sc = pred[near], sc[near]
        counted_always = _in_box(pred, box)

    order = np.argsort(-sc, kind="stable")
    pi, ti, d = _close_pairs(pred, true, r)
    accepted = _greedy_matchable(order, pi, ti, d, len(true))
    counted = counted_always[order] | accepted
    tp = np.cumsum(accepted)
    npred = np.cumsum(counted)
    s_sorted = sc[order]
    # Evaluate at the end of each group of equal scores: a threshold keeps all or none.
    last = np.flatnonzero(np.r_[s_sorted[1:] != s_sorted[:-1], True]) if len(s_sorted) else np.zeros(0, int)
    return _Curve(s_sorted[last], npred[last], tp[last], len(true))


def _ratio(a, b):
    a = np.asarray(a, float)
    b = np.asarray(b, float)
    out = np.zeros(np.broadcast(a, b).shape)
    np.divide(a, b, out=out, where=b > 0)
    return out


def pr_curve(pred_zyx, scores, true_zyx, radius_vox: float, box: Sequence[float] | None = None):
    """Precision and recall at every distinct score threshold.

    Parameters
    ----------
    pred_zyx : (n, 3) float
        Picks.
    scores : (n,) float or None
        Pick scores (None: all equal).
    true_zyx : (m, 3) float
        True particle centres.
    radius_vox : float
        Matching radius, ``d < radius_vox``.
    box : (z0, y0, x0, z1, y1, x1), optional
        Count only true particles and picks inside ``[z0, z1) × [y0, y1) × [x0, x1)``; see
        :func:`evaluate`.

    Returns
    -------
    thresholds : (k,) float64
        Distinct scores, descending; entry ``i`` counts the picks with ``score >= thresholds[i]``.
    precision, recall : (k,) float64
        0 where undefined (no picks, or no true particles).
    """
    c = _curve(pred_zyx, scores, true_zyx, radius_vox, box)
    return c.thresholds, _ratio(c.n_matched, c.n_pred), _ratio(c.n_matched, c.n_true)


@dataclass
class EvalResult:
    """Scores of a set of picks against true particles.

    ``precision``, ``recall``, ``f1``, ``n_pred`` and ``n_matched`` are at ``threshold``
    (all picks when it is None). ``best_f1`` is the maximum over thresholds, reached by
    keeping the picks with ``score >= best_threshold`` (NaN when there are no picks).
    ``ap`` = Σ precision · Δrecall over the score-sorted picks (no interpolation).
    Undefined ratios (no picks, no true particles) are 0.
    """

    precision: float
    recall: float
    f1: float
    best_f1: float
    best_threshold: float
    ap: float
    n_pred: int
    n_true: int
    n_matched: int
    threshold: float | None
    radius_vox: float

    def to_dict(self) -> dict:
        """Plain JSON-ready values (NaN becomes None)."""
        out = {}
        for k, v in asdict(self).items():
            if isinstance(v, (float, np.floating)):
                v = None if math.isnan(v) else float(v)
            elif isinstance(v, np.integer):
                v = int(v)
            out[k] = v
        return out


def evaluate(
    pred_zyx,
    scores,
    true_zyx,
    radius_vox: float,
    threshold: float | None = None,
    box: Sequence[float] | None = None,
) -> EvalResult:
    """Precision, recall, F1 at a threshold, best F1 and average precision.

    Parameters
    ----------
    pred_zyx : (n, 3) float
        Picks (tomogram voxels, z, y, x).
    scores : (n,) float or None
        Pick scores; higher is more confident. None: all equal.
    true_zyx : (m, 3) float
        True particle centres.
    radius_vox : float
        A pick matches a true particle when their distance is ``< radius_vox``.
    threshold : float, optional
        Report precision/recall/F1 for the picks with ``score >= threshold``.
    box : (z0, y0, x0, z1, y1, x1), optional
        A fully labelled region ``[z0, z1) × [y0, y1) × [x0, x1)``: only true particles
        inside it count, and only picks inside it, plus picks within ``radius_vox`` outside
        it that are matched to a true particle inside (they found a labelled particle;
        unmatched ones there are ignored as nobody labelled that area).

    Returns
    -------
    EvalResult
    """
    r = _check_radius(radius_vox)
    c = _curve(pred_zyx, scores, true_zyx, r, box)
    prec = _ratio(c.n_matched, c.n_pred)
    rec = _ratio(c.n_matched, c.n_true)
    f1 = _ratio(2 * prec * rec, prec + rec)

    rec_prev = np.r_[0.0, rec[:-1]]
    ap = float(np.sum(prec * (rec - rec_prev)))
    if f1.size:
        i_best = int(np.argmax(f1))
        best_f1, best_t = float(f1[i_best]), float(c.thresholds[i_best])
    else:
        best_f1, best_t = 0.0, float("nan")

    if threshold is None:
        i = c.thresholds.size - 1
    else:
        i = int(np.searchsorted(-c.thresholds, -float(threshold), side="right")) - 1
    if i >= 0:
        n_pred, n_matched = int(c.n_pred[i]), int(c.n_matched[i])
        p, rc, f = float(prec[i]), float(rec[i]), float(f1[i])
    else:  # no pick reaches the threshold
        n_pred = n_matched = 0
        p = rc = f = 0.0
    return EvalResult(
        precision=p, recall=rc, f1=f, best_f1=best_f1, best_threshold=best_t, ap=ap,
        n_pred=n_pred, n_true=int(c.n_true), n_matched=n_matched,
        threshold=None if threshold is None else float(threshold), radius_vox=r,
    )


#: The CZII cryo-ET challenge's F-beta: recall counts 4 times as much as precision.
CZII_BETA = 4.0


def fbeta(precision: float, recall: float, beta: float = CZII_BETA) -> float:
    """``(1 + β²) P R / (β² P + R)`` (0 when both are 0)."""
    b2 = float(beta) ** 2
    den = b2 * precision + recall
    return float((1 + b2) * precision * recall / den) if den > 0 else 0.0


def aggregate_fbeta(per_class: dict, weights: dict | None = None) -> float:
    """The weighted mean of each class's F-beta (the CZII challenge's aggregate; weights default 1).

    ``per_class`` maps each class name to its F-beta.
    """
    weights = weights or {}
    w = np.array([float(weights.get(k, 1.0)) for k in per_class])
    if w.sum() <= 0:
        return 0.0
    return float(np.dot(w, list(per_class.values())) / w.sum())


__all__ = ["match_points", "evaluate", "pr_curve", "EvalResult", "fbeta", "aggregate_fbeta", "CZII_BETA"]
