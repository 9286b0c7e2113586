"""Peak picking on 3D score maps (numpy/scipy only).

Two stages, so that the GUI can re-threshold instantly:

1. :func:`candidates` finds every local maximum of the score map above a low floor, refines
   it to sub-voxel precision and maps it to the tomogram frame. This is the slow part
   (one pass over the volume) and its result is cached.
2. :func:`select` thresholds the cached candidates, applies greedy non-maximum suppression
   with a minimum distance tied to the particle size and keeps the best ``top_k``. It only
   touches the candidate list, so it runs in milliseconds.

:func:`pick_peaks` is ``candidates`` followed by ``select``; :func:`suppress` is the
suppression alone on any list of points.

Frames: the heatmap index ``(i, j, k)`` maps to the tomogram coordinate
``zyx = (i, j, k) * scale + translate`` (for example ``scale=(1, 2, 2)`` for a heatmap at
stride 2 in y and x). All returned coordinates are ``(n, 3)`` float64 z, y, x in the
tomogram frame; distances and margins are in tomogram voxels.
"""
from __future__ import annotations

from typing import Sequence, Union

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

from .errors import CetpickError, plain

Triple = Union[float, Sequence[float]]

# Ranks per block of the greedy suppression (first block, then doubling up to the cap):
# the cap bounds the memory of the neighbour-pair list inside a block.
_NMS_BLOCK_FIRST = 4096
_NMS_BLOCK_MAX = 65536
# Vectorised rounds before the exact greedy falls back to a plain loop (only reached on
# long chains of mutually overlapping points, e.g. a ridge of near-equal scores).
_NMS_ROUNDS = 48


def _triple(value: Triple | None, name: str, default: float = 0.0) -> np.ndarray:
    """A per-axis (z, y, x) float array from a scalar or a 3-sequence."""
    if value is None:
        value = default
    arr = np.asarray(value, dtype=np.float64)
    if arr.ndim == 0:
        arr = np.repeat(arr, 3)
    if arr.shape != (3,) or not np.all(np.isfinite(arr)):
        raise CetpickError(f"{name} must be a number or three numbers (z, y, x), got {plain(value)}.")
    return arr


def _distance_triple(min_distance_vox: Triple | None) -> np.ndarray | None:
    """Per-axis suppression distance, or None when there is no suppression."""
    d = _triple(min_distance_vox, "min_distance_vox")
    if np.any(d < 0):
        raise CetpickError(f"min_distance_vox must not be negative, got {plain(min_distance_vox)}.")
    if np.all(d == 0):
        return None
    if np.any(d == 0):
        raise CetpickError(
            f"min_distance_vox must be positive on every axis or zero on all, got {plain(min_distance_vox)}."
        )
    return d


# --------------------------------------------------------------------------- candidates


def _max3(a: np.ndarray) -> np.ndarray:
    """3×3×3 maximum filter; voxels outside the volume are ignored.

    Separable maxima of shifted views: several times faster than
    ``ndimage.maximum_filter`` on large volumes because numpy's ``maximum`` is vectorised.
    """
    src = a.copy()
    out = np.empty_like(a)
    for ax in range(a.ndim):
        n = a.shape[ax]
        if n == 1:
            continue

        def sl(lo, hi, ax=ax):
            return tuple(slice(lo, hi) if i == ax else slice(None) for i in range(a.ndim))

        out[...] = src
        np.maximum(out[sl(0, n - 1)], src[sl(1, n)], out=out[sl(0, n - 1)])
        np.maximum(out[sl(1, n)], src[sl(0, n - 1)], out=out[sl(1, n)])
        src, out = out, src
    return src


def _refine_offsets(hm: np.ndarray, idx: np.ndarray, method: str) -> np.ndarray:
    """Sub-voxel offsets (n, 3) in heatmap voxels from the 3 neighbours along each axis.

    A 1D parabola through (f[-1], f[0], f[+1]) per axis; ``gaussian`` fits the parabola to
    log values instead, which is exact for a Gaussian peak. Offsets are clamped to ±0.5
    (a larger shift means the voxel was not the true maximum) and left at 0 on borders and
    flat tops, where the fit is undefined.
    """
    off = np.zeros(idx.shape, dtype=np.float64)
    flat_hm = hm.reshape(-1)
    flat = np.ravel_multi_index(tuple(idx.T), hm.shape)
    f0_all = flat_hm[flat].astype(np.float64)
    for ax in range(3):
        inner = np.flatnonzero((idx[:, ax] > 0) & (idx[:, ax] < hm.shape[ax] - 1))
        if inner.size == 0:
            continue
        step = hm.strides[ax] // hm.itemsize
        f0 = f0_all[inner]
        fm = flat_hm[flat[inner] - step].astype(np.float64)
        fp = flat_hm[flat[inner] + step].astype(np.float64)
        if method == "gaussian":
            f0, fm, fp = (np.log(np.maximum(v, 1e-12)) for v in (f0, fm, fp))
        curv = fm - 2.0 * f0 + fp
        shift = np.zeros_like(curv)
        np.divide(0.5 * (fm - fp), curv, out=shift, where=curv < 0)
        off[inner, ax] = np.clip(shift, -0.5, 0.5)
    return off


def refine_centroid(heatmap: np.ndarray, idx: np.ndarray, radius_cells: Triple, level: float = 0.5,
                    iterations: int = 2, start: np.ndarray | None = None, chunk: int = 4096) -> np.ndarray:
    """Sub-voxel positions (n, 3), heatmap voxels: each peak's response centre of mass above half its height.

    A detector trained on hard ball targets answers with a flat-topped blob: which voxel of
    the top is the maximum depends on tiny differences that change from one trained model
    (and CPU) to the next, so a fit through the maximum and its neighbours moves by up to
    half a voxel. The centre of the whole response above ``level`` × the peak's value, within
    an ellipsoid of ``radius_cells`` (per axis) around the current estimate, averages those
    differences out. ``iterations`` re-centre the window on the estimate.

    Parameters
    ----------
    heatmap : (Z, Y, X) array
        Score map (0..1).
    idx : (n, 3) int
        The maxima (heatmap voxels).
    radius_cells : float or (rz, ry, rx)
        Window half-width per axis in heatmap voxels: about the response's radius plus one.
    level : float
        Share of the peak value subtracted from the window (weights ``max(h − level·peak, 0)``).
    iterations : int
    start : (n, 3) float, optional
        Where each window starts (default ``idx``; e.g. a plateau's centroid).
    chunk : int
        Peaks per vectorised batch (bounds the temporaries).
    """
    hm = np.asarray(heatmap)
    idx = np.asarray(idx, np.int64).reshape(-1, 3)
    r = _triple(radius_cells, "radius_cells")
    if np.any(r <= 0):
        raise CetpickError(f"radius_cells must be positive, got {plain(radius_cells)}.")
    half = np.ceil(r).astype(int)
    offs = np.stack(np.meshgrid(*[np.arange(-h, h + 1) for h in half], indexing="ij"), -1).reshape(-1, 3)
    # a window's centre lies within half a voxel of the voxel it is rounded to: cells further
    # than that from every such centre never fall inside the ellipsoid (about 40 % of the box);
    # only zero weights go, so the centres stay the same up to the sums' rounding
    offs = offs[((np.clip(np.abs(offs) - 0.5, 0.0, None) / r) ** 2).sum(-1) <= 1.0]
    shape = np.asarray(hm.shape)
    out = idx.astype(np.float64) if start is None else np.array(start, np.float64).reshape(-1, 3)
    for a in range(0, len(idx), chunk):
        sl = slice(a, a + chunk)
        peak = hm[tuple(idx[sl].T)].astype(np.float64)
        c = out[sl].copy()
        for _ in range(max(1, int(iterations))):
            pos = np.round(c).astype(np.int64)[:, None, :] + offs[None]
            inside = np.all((pos >= 0) & (pos < shape), axis=-1)
            inside &= (((pos - c[:, None, :]) / r) ** 2).sum(-1) <= 1.0
            h = hm[tuple(np.clip(pos, 0, shape - 1).transpose(2, 0, 1))].astype(np.float64)
            w = np.clip(h - level * peak[:, None], 0.0, None) * inside
            tot = w.sum(1)
            ok = tot > 0
            c[ok] = (w[ok, :, None] * pos[ok]).sum(1) / tot[ok, None]
        out[sl] = c
    return out


def candidates(
    heatmap: np.ndarray,
    floor: float = 0.05,
    margin_vox: Triple = 0,
    scale: Triple = (1.0, 1.0, 1.0),
    translate: Triple = (0.0, 0.0, 0.0),
    refine: bool | str = True,
    shape_zyx: Sequence[int] | None = None,
    return_index: bool = False,
):
    """All local maxima of a 3D score map at or above ``floor``, in the tomogram frame.

    A voxel is a local maximum when it equals the maximum of its 3×3×3 neighbourhood.
    Adjacent maxima form a plateau of equal values (e.g. a sigmoid saturated at 1.0); each
    plateau gives one candidate at its centroid.

    Parameters
    ----------
    heatmap : (Z, Y, X) array
        Score map, usually 0..1, finite (a NaN hides the maxima next to it).
    floor : float
        Lowest score kept. Keep it below any threshold the user may choose later.
    margin_vox : float or (mz, my, mx)
        Drop candidates closer than this to the borders, in tomogram voxels.
    scale, translate : float or (z, y, x)
        Heatmap index → tomogram coordinate: ``zyx = index * scale + translate``.
    refine : bool or {"quadratic", "gaussian"}
        Sub-voxel refinement by a 1D parabola per axis through the 3 neighbours (``True`` =
        ``"quadratic"``; ``"gaussian"`` fits log values, exact for Gaussian peaks).
    shape_zyx : (3,) ints, optional
        Shape of the tomogram; its borders (0 and shape - 1) are used for the margin.
        Default: the centres of the first and last heatmap voxels mapped to the tomogram.
    return_index : bool
        Also return the integer heatmap index of each maximum (for a plateau, its first
        voxel in C order), e.g. to decide which chunk of a split heatmap owns a peak.

    Returns
    -------
    zyx : (n, 3) float64
        Candidate positions in tomogram voxels, sorted by descending score.
    scores : (n,) float32
        Heatmap value at each candidate's voxel.
    index : (n, 3) int64
        Only with ``return_index``: the heatmap voxel of each maximum.
    """
    hm = np.ascontiguousarray(heatmap)
    if hm.ndim != 3:
        raise CetpickError(f"The heatmap must be 3D (z, y, x), got shape {hm.shape}.")
    if hm.dtype not in (np.float32, np.float64):
        hm = hm.astype(np.float32)
    if refine is True:
        refine = "quadratic"
    if refine not in (False, None, "quadratic", "gaussian"):
        raise CetpickError(f"refine must be True, False, 'quadratic' or 'gaussian', got {refine!r}.")
    scale_a = _triple(scale, "scale")
    translate_a = _triple(translate, "translate")
    margin_a = _triple(margin_vox, "margin_vox")
    if np.any(scale_a <= 0):
        raise CetpickError(f"scale must be positive, got {plain(scale)}.")

    # Border voxels compete only with the neighbours that exist.
    local_max = _max3(hm)
    mask = (hm == local_max) & (hm >= floor)
    del local_max
    idx = np.argwhere(mask)
    if idx.shape[0] == 0:
        empty = (np.zeros((0, 3), np.float64), np.zeros(0, np.float32))
        return (*empty, np.zeros((0, 3), np.int64)) if return_index else empty

    # Two neighbouring maxima must have equal values, so connected maxima are plateaus.
    labels, n_lab = ndimage.label(mask, structure=np.ones((3, 3, 3), bool))
    del mask
    if n_lab == idx.shape[0]:
        pos = idx.astype(np.float64)
        if refine:
            pos += _refine_offsets(hm, idx, refine)
        scores = hm[tuple(idx.T)].astype(np.float32)
        vox = idx
    else:
        lab = labels[tuple(idx.T)] - 1
        counts = np.bincount(lab, minlength=n_lab)
        pos = np.stack([np.bincount(lab, weights=idx[:, ax], minlength=n_lab) for ax in range(3)], 1)
        pos /= counts[:, None]
        _, first = np.unique(lab, return_index=True)  # every label has a maximum
        rep = idx[first]
        vox = rep
        scores = hm[tuple(rep.T)].astype(np.float32)
        if refine:
            single = counts == 1
            pos[single] += _refine_offsets(hm, rep[single], refine)
    del labels

    zyx = pos * scale_a + translate_a
    if np.any(margin_a > 0):
        if shape_zyx is None:
            lo = translate_a
            hi = translate_a + (np.asarray(hm.shape, float) - 1.0) * scale_a
        else:
            lo = np.zeros(3)
            hi = np.asarray(shape_zyx, float) - 1.0
        keep = np.all((zyx - lo >= margin_a) & (hi - zyx >= margin_a), axis=1)
        zyx, scores, vox = zyx[keep], scores[keep], vox[keep]

    order = np.argsort(-scores, kind="stable")
    if return_index:
        return zyx[order], scores[order], vox[order].astype(np.int64)
    return zyx[order], scores[order]


# --------------------------------------------------------------------------- suppression


def _greedy_block(n: int, a: np.ndarray, b: np.ndarray, state: np.ndarray) -> None:
    """Greedy NMS inside one block, in place.

    Items are numbered by rank (0 = best). ``(a, b)`` with ``a < b`` are the pairs closer
    than the minimum distance. ``state`` is 0 undecided, 1 kept, 2 suppressed.

    Vectorised form of the sequential greedy: in each round, an undecided item none of
    whose better neighbours is still undecided is kept (its better neighbours are all
    suppressed), then every undecided neighbour of a kept item is suppressed. This gives
    exactly the sequential result.
    """
    live = (state[a] == 0) & (state[b] == 0)
    a, b = a[live], b[live]
    for _ in range(_NMS_ROUNDS):
        undecided = state == 0
        if not undecided.any():
            return
        blocked = np.zeros(n, bool)
        blocked[b] = True
        state[undecided & ~blocked] = 1
        state[b[state[a] == 1]] = 2
        live = (state[a] == 0) & (state[b] == 0)
        a, b = a[live], b[live]
    # Rare long chains: finish sequentially on what is left.
    order = np.argsort(a, kind="stable")
    a, b = a[order], b[order]
    starts = np.searchsorted(a, np.arange(n + 1))
    for i in np.flatnonzero(state == 0):
        if state[i] == 0:
            state[i] = 1
            nb = b[starts[i] : starts[i + 1]]
            state[nb[state[nb] == 0]] = 2


def _greedy_nms(zyx_scaled: np.ndarray, max_keep: int | None) -> np.ndarray:
    """Ranks (rows of ``zyx_scaled``, best first) kept by greedy NMS at distance 1.

    Points are processed in blocks of consecutive ranks (doubling in size, so the kept set
    is re-indexed O(log n) times). A block's points within distance 1 of points kept in
    earlier blocks are suppressed first; only the survivors are paired and resolved inside
    the block. With a large distance most points fall in the first step, so the pair list
    (the memory cost) stays small in both regimes.
    """
    n = zyx_scaled.shape[0]
    kept: list[np.ndarray] = []
    tree = None  # on all points kept so far, rebuilt once per block
    n_kept = 0
    start, size = 0, _NMS_BLOCK_FIRST
    while start < n:
        stop = min(n, start + size)
        alive = np.arange(start, stop)
        if tree is not None:
            d, _ = tree.query(zyx_scaled[alive], k=1, distance_upper_bound=1.0)
            alive = alive[~(d < 1.0)]
        if alive.size > 1:
            pts = zyx_scaled[alive]
            pairs = cKDTree(pts).query_pairs(1.0, output_type="ndarray")
            state = np.zeros(alive.size, np.int8)
            if pairs.shape[0]:
                dist = np.linalg.norm(pts[pairs[:, 0]] - pts[pairs[:, 1]], axis=1)
                pairs = pairs[dist < 1.0]  # "closer than": a pair exactly at the distance survives
                _greedy_block(alive.size, pairs.min(axis=1), pairs.max(axis=1), state)
            else:
                state[:] = 1
            alive = alive[state == 1]
        if alive.size:
            kept.append(alive)
            n_kept += alive.size
            if max_keep is not None and n_kept >= max_keep:
                break
            if stop < n:
                tree = cKDTree(zyx_scaled[np.concatenate(kept)])
        start, size = stop, min(2 * size, _NMS_BLOCK_MAX)
    out = np.concatenate(kept) if kept else np.zeros(0, np.int64)
    return out[:max_keep] if max_keep is not None else out


def select(
    cands_zyx: np.ndarray,
    cands_scores: np.ndarray,
    threshold: float = 0.5,
    min_distance_vox: Triple | None = 0.0,
    top_k: int | None = None,
) -> np.ndarray:
    """Indices of the candidates to keep: threshold, greedy NMS, then the best ``top_k``.

    Thresholding before suppression gives the same picks as after, because a point can only
    be suppressed by a better one.

    Parameters
    ----------
    cands_zyx : (n, 3) float
        Candidate positions (tomogram voxels), in any order.
    cands_scores : (n,) float
        Candidate scores.
    threshold : float
        Keep scores ``>= threshold``.
    min_distance_vox : float or (dz, dy, dx), optional
        No two picks end up closer than this. Per-axis values define an ellipsoid: points
        are closer when ``sum(((p - q) / d) ** 2) < 1``. ``0`` or ``None``: no suppression.
    top_k : int, optional
        Keep at most this many picks.

    Returns
    -------
    (m,) int64
        Indices into the candidate arrays, best score first (ties keep input order).
    """
    zyx = np.asarray(cands_zyx, dtype=np.float64).reshape(-1, 3)
    scores = np.asarray(cands_scores).reshape(-1)
    if scores.shape[0] != zyx.shape[0]:
        raise CetpickError(f"Got {zyx.shape[0]} positions but {scores.shape[0]} scores.")
    if top_k is not None and top_k < 0:
        raise CetpickError(f"top_k must not be negative, got {top_k}.")
    dist = _distance_triple(min_distance_vox)
    above = np.flatnonzero(scores >= threshold)
    order = above[np.argsort(-scores[above], kind="stable")]
    if dist is None or order.size < 2:
        return order[:top_k] if top_k is not None else order
    keep = _greedy_nms(zyx[order] / dist, top_k)
    return order[keep]


def suppress(zyx: np.ndarray, scores: np.ndarray, min_distance_vox: Triple) -> np.ndarray:
    """Greedy non-maximum suppression of a point list.

    Parameters
    ----------
    zyx : (n, 3) float
        Positions in voxels.
    scores : (n,) float
        Higher is better.
    min_distance_vox : float or (dz, dy, dx)
        See :func:`select`.

    Returns
    -------
    (m,) int64
        Indices of the kept points, best score first.
    """
    return select(zyx, scores, threshold=-np.inf, min_distance_vox=min_distance_vox)


def pick_peaks(
    heatmap: np.ndarray,
    threshold: float = 0.5,
    min_distance_vox: Triple | None = 0.0,
    top_k: int | None = None,
    margin_vox: Triple = 0,
    scale: Triple = (1.0, 1.0, 1.0),
    translate: Triple = (0.0, 0.0, 0.0),
    refine: bool | str = True,
    shape_zyx: Sequence[int] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Picks from a 3D score map: local maxima, threshold, distance suppression, top k.

    Equivalent to :func:`candidates` with ``floor=threshold`` followed by :func:`select`.
    See those for the parameters.

    Returns
    -------
    zyx : (n, 3) float64
        Picks in tomogram voxels (``index * scale + translate``), best score first.
    scores : (n,) float32
        Their scores.
    """
    zyx, scores = candidates(
        heatmap, floor=threshold, margin_vox=margin_vox, scale=scale, translate=translate,
        refine=refine, shape_zyx=shape_zyx,
    )
    keep = select(zyx, scores, threshold, min_distance_vox, top_k)
    return zyx[keep], scores[keep]


__all__ = ["candidates", "refine_centroid", "select", "suppress", "pick_peaks"]
