"""Tiled detection as a generator: yields :class:`DetectProgress`, returns :class:`DetectResult`.

Memory is bounded by the tile, not the tomogram: each tile (with a halo covering the
network's z context and part of its xy context) is read from the (memory-mapped) volume,
binned, normalised, run through the network, and its valid centre written into the
heatmap. The heatmap lives on the network's output grid; ``scale`` and ``translate`` map
grid indices to tomogram voxels (``zyx = index * scale + translate``).
"""
from __future__ import annotations

import contextlib
import math
import time
import warnings
from dataclasses import dataclass, field
from typing import Generator, NamedTuple

import numpy as np

from . import data as D
from . import device as _device  # noqa: F401  (sets OMP_WAIT_POLICY before torch loads)
from .checkpoint import Checkpoint
from .config import DEFAULT_CLASS, VIEWS, DetectConfig
from .errors import CetpickError
from .peaks import candidates, refine_centroid, select
from .utils import logit


@dataclass
class DetectProgress:
    tile: int
    n_tiles: int
    elapsed_s: float
    eta_s: float
    device: str
    message: str = ""


@dataclass
class DetectResult:
    """Heatmap, cached peak candidates and the current picks of one tomogram.

    ``zyx``/``scores`` are the picks at ``threshold`` and ``min_distance_vox``; call
    :meth:`reselect` to change those instantly from the cached candidates.
    ``cand_agreement`` (with two or four views) is, per candidate, 1 minus the difference
    between the mean scores of the mirror halves (unmirrored views, mirrored views) there.
    ``expected_particles`` is the count the model's labels imply for a tomogram of this xy
    area (None when the model does not know it).
    ``model_threshold`` is the threshold the detection started from (read off this
    tomogram's scores, the model's default or the one given), kept when the user moves
    ``threshold``; ``threshold_source`` says how it was chosen (:func:`choose_threshold`).
    """

    heatmap: np.ndarray
    scale: np.ndarray
    translate: np.ndarray
    cand_zyx: np.ndarray
    cand_scores: np.ndarray
    threshold: float
    min_distance_vox: float
    K: int | None
    tomogram_shape: tuple
    voxel_size_a: float | None
    diameter_vox: float
    elapsed_s: float = 0.0
    zyx: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))
    scores: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    warnings: list = field(default_factory=list)
    cand_agreement: np.ndarray | None = None
    expected_particles: float | None = None
    keep_idx: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    model_threshold: float | None = None
    threshold_source: str = "given"
    first_view: tuple | None = None  # (zyx, scores) of the first view alone, unshifted (detect(first_view=True))
    class_name: str = DEFAULT_CLASS
    radius_vox: float = 0.0  # half the class's diameter, this tomogram's voxels (overlaps between classes)
    runner_up: np.ndarray | None = None  # per pick: the class that lost this place to it ("" none); several classes
    runner_up_score: np.ndarray | None = None  # per pick: that class's score there (NaN none)
    cand_profile_excess: np.ndarray | None = None  # per candidate: what the profile check charged (NaN unchecked)
    profile_moved: int | None = None  # candidates the profile check moved below the threshold (None: no check)
    profile_raised: int | None = None  # ... and from below it to above it
    profile_gain: float | None = None  # the class's contrast the check read here, × the labels' (None: no check)
    profile_negatives: int = 0  # the user's negatives (rejections) the profile check's model learned from
    profile_mined: int = 0  # the look-alikes calibration found that it learned from too (0 and 0: the labels alone)

    def reselect(self, threshold: float | None = None, min_distance_vox: float | None = None,
                 K: int | None | str = "keep") -> tuple[np.ndarray, np.ndarray]:
        """Re-threshold and re-suppress the cached candidates; updates and returns the picks."""
        if threshold is not None:
            self.threshold = float(threshold)
        if min_distance_vox is not None:
            self.min_distance_vox = float(min_distance_vox)
        if K != "keep":
            self.K = K
        keep = select(self.cand_zyx, self.cand_scores, self.threshold, self.min_distance_vox, self.K)
        self.keep_idx = keep
        self.zyx, self.scores = self.cand_zyx[keep], self.cand_scores[keep]
        self.runner_up = self.runner_up_score = None
        return self.zyx, self.scores

    @property
    def margins(self) -> np.ndarray:
        """Per pick, logit(score) − logit(threshold)."""
        return logit(self.scores) - logit(self.threshold)

    def keep_only(self, keep: np.ndarray) -> None:
        """Drop the picks where ``keep`` (bool, per pick) is False (overlaps with another class)."""
        keep = np.asarray(keep, bool)
        self.keep_idx, self.zyx, self.scores = self.keep_idx[keep], self.zyx[keep], self.scores[keep]
        if self.runner_up is not None:
            self.runner_up, self.runner_up_score = self.runner_up[keep], self.runner_up_score[keep]

    @property
    def features(self):
        """Per-pick columns for review and export (a pandas DataFrame, one row per pick).

        ``score``: the detector's score. ``margin``: logit(score) − logit(threshold), the
        distance to the threshold in the score's natural units (0 at the threshold; a
        review of the least certain picks goes by ``|margin|``). ``agreement`` (two or four
        views only): 1 − |difference of the mirror halves' mean scores| at the pick.
        ``runner_up``, ``runner_up_score`` (several classes): the class whose pick at the
        same place lost to this one (:func:`resolve_classes`), and its score.
        """
        import pandas as pd

        cols = {"score": self.scores.astype(float), "margin": np.round(self.margins, 4)}
        if self.cand_agreement is not None:
            cols["agreement"] = np.round(self.cand_agreement[self.keep_idx].astype(float), 4)
        if self.cand_profile_excess is not None:
            cols["profile_excess"] = np.round(self.cand_profile_excess[self.keep_idx].astype(float), 3)
        if self.runner_up is not None:
            cols["runner_up"] = self.runner_up.astype(object)
            cols["runner_up_score"] = np.round(self.runner_up_score.astype(float), 4)
        return pd.DataFrame(cols)


def _bin_for_volume(ckpt: Checkpoint, voxel_size_a: float | None) -> tuple[int, list[str]]:
    """Binning that brings this tomogram to the model's working voxel size."""
    notes = []
    if ckpt.voxel_size_differs(voxel_size_a):
        ratio = ckpt.bin_xy * ckpt.voxel_size_a / voxel_size_a
        b = round(ratio)
        if b < 1 or abs(ratio / b - 1) > 0.05:
            raise CetpickError(
                f"The model was trained at {ckpt.voxel_size_a:g} Å/voxel (working {ckpt.bin_xy * ckpt.voxel_size_a:g} Å) "
                f"but this tomogram has {voxel_size_a:g} Å/voxel; the ratio {ratio:.2f} is not a whole binning "
                f"factor. Rescale the tomogram or set its voxel size if the header is wrong.")
        notes.append(f"Tomogram voxel size {voxel_size_a:g} Å differs from the model's {ckpt.voxel_size_a:g} Å: "
                     f"binning by {b} instead of {ckpt.bin_xy} to match.")
        return b, notes
    if ckpt.voxel_size_a and not voxel_size_a:
        notes.append(f"The tomogram's voxel size is unknown: assuming the model's {ckpt.voxel_size_a:g} Å "
                     f"(binning by {ckpt.bin_xy}); set the voxel size if it differs.")
    elif voxel_size_a and not ckpt.voxel_size_a:
        notes.append(f"The model's voxel size is unknown: assuming this tomogram's {voxel_size_a:g} Å is the "
                     f"one it was trained at (binning by {ckpt.bin_xy}).")
    return ckpt.bin_xy, notes


def _file_map(volume):
    """The ``mmap.mmap`` behind a (view of a) memory-mapped array, or None."""
    import mmap

    a = volume
    for _ in range(16):
        m = getattr(a, "_mmap", None)
        if isinstance(m, mmap.mmap):
            return m
        if isinstance(a, mmap.mmap):
            return a
        a = getattr(a, "base", None)
        if a is None:
            return None
    return None


def _is_read_only(file_map) -> bool:
    """True for a map opened read-only (``ACCESS_READ``); False for writable or copy-on-write maps."""
    try:
        with memoryview(file_map) as view:
            return bool(view.readonly)
    except (TypeError, ValueError):  # closed or not a buffer
        return False


def _release(file_map) -> bool:
    """Drop the pages of a read-only file map from this process's memory (they stay on disk).

    Reading a large memory-mapped tomogram tile by tile otherwise leaves every page read
    resident and counted in the process's RSS until the map is closed. Only read-only maps
    are advised: on a copy-on-write map ``MADV_DONTNEED`` discards the pages changed in
    memory (they revert to the file), and writable maps are left alone too. Returns True
    when the pages were released.
    """
    import mmap

    if file_map is None or not hasattr(mmap, "MADV_DONTNEED") or not _is_read_only(file_map):
        return False
    # where the advice is refused the OS still reclaims the clean pages under pressure
    with contextlib.suppress(OSError, ValueError):
        file_map.madvise(mmap.MADV_DONTNEED)
        return True
    return False


def chunked_candidates(heat: np.ndarray, floor: float, margin_zyx, scale, translate, refine: bool | str, shape_zyx,
                       chunk: int = 32, radius_cells=None) -> tuple[np.ndarray, np.ndarray]:
    """:func:`~napari_cetpick.peaks.candidates` over z-chunks of the heatmap.

    Each chunk is searched with one slice of halo on each side and keeps the maxima whose
    voxel (integer index; a plateau's first voxel) lies in its own slices, so each peak is
    kept once and the temporaries are bounded by the chunk, not the heatmap. Margins are
    applied afterwards against the tomogram's borders.

    ``refine="centroid"`` (with ``radius_cells``, the response's half-width per axis in
    heatmap voxels) places each peak at the centre of its response on the whole heatmap
    (:func:`~napari_cetpick.peaks.refine_centroid`); other values are passed to
    ``candidates``.
    """
    scale, translate = np.asarray(scale, float), np.asarray(translate, float)
    centroid = refine == "centroid"
    out_zyx, out_s, out_vox = [], [], []
    nz = heat.shape[0]
    for z0 in range(0, nz, chunk):
        z1 = min(nz, z0 + chunk)
        a, b = max(0, z0 - 1), min(nz, z1 + 1)
        t = translate.copy()
        t[0] += a * scale[0]
        zyx, sc, vox = candidates(heat[a:b], floor=floor, margin_vox=0, scale=scale, translate=t,
                                  refine=False if centroid else refine, return_index=True)
        # the chunk owning a peak is the one holding the slice of its maximum (an integer), not
        # the slice of its refined position: a plateau seen through the halo has a different
        # centroid from each side and, rounded, could be kept twice or not at all
        iz = vox[:, 0] + a
        own = (iz >= z0) & (iz < z1)
        out_zyx.append(zyx[own])
        out_s.append(sc[own])
        out_vox.append(vox[own] + np.array([a, 0, 0]))
    zyx = np.concatenate(out_zyx) if out_zyx else np.zeros((0, 3))
    sc = np.concatenate(out_s) if out_s else np.zeros(0, np.float32)
    if centroid and len(zyx):
        # the window starts on each maximum (a plateau: on its centroid, already in zyx)
        grid = refine_centroid(heat, np.concatenate(out_vox), radius_cells, start=(zyx - translate) / scale)
        zyx = grid * scale + translate
    m = np.asarray(margin_zyx, float)
    keep = np.ones(len(zyx), bool)
    if np.any(m > 0):
        keep = np.all((zyx >= m) & (zyx <= np.asarray(shape_zyx, float) - 1 - m), axis=1)
    order = np.argsort(-sc[keep], kind="stable")
    return zyx[keep][order], sc[keep][order]


#: Axes of the detection block (batch, channel, z, y, x) the mirrored views flip: all three,
#: a point reflection, under which any constant shift of the model's response changes sign.
_FLIP_DIMS = (-3, -2, -1)
#: Axes of the quarter turn in xy of views 3 and 4 (the z axis, with the missing wedge, stays).
_TURN_DIMS = (-2, -1)


def _view_scores(net, x, mirrored: bool, turns: int, layout=None) -> np.ndarray:
    """Scores ``(K, z, y, x)`` of one view of block ``x``, mapped back onto the block's own cells.

    The block spans whole grid cells on every axis (padded to the network's multiple), so a
    mirror or a quarter turn maps cells onto cells and back.
    """
    import torch

    if mirrored:
        x = torch.flip(x, dims=_FLIP_DIMS)
    if turns:
        x = torch.rot90(x, turns, dims=_TURN_DIMS)
        if layout is not None:
            x = x.contiguous(memory_format=layout)  # a turn leaves strides the blocks' layout has not
    hm, _ = net(x, with_proj=False)
    p = torch.sigmoid(hm)
    if turns:
        p = torch.rot90(p, -turns, dims=_TURN_DIMS)
    if mirrored:
        p = torch.flip(p, dims=_FLIP_DIMS)
    return p[0].float().cpu().numpy()


def response_radius_cells(ckpt: Checkpoint, stride) -> np.ndarray:
    """Half-width (heatmap cells, per axis) of the window that holds a peak's response.

    The target's radius (working voxels) plus one cell of the coarsest axis.
    """
    stride = np.asarray(stride, float)
    blob = D.blob_spec(ckpt.diameter_vox / ckpt.bin_xy, ckpt.config.blob)
    r_work = blob.radius_work * (stride if blob.in_cells else 1.0)
    return (r_work + stride.max()) / stride


def centre_shift(ckpt: Checkpoint, geometry: D.Geometry, views: int) -> np.ndarray:
    """The shift (tomogram voxels, zyx) to subtract from one view's picks: the model's own offset.

    Calibration measures how far the model's peaks sit from the labelled particles
    (``info["centre_offset_work"]``, working voxels, shrunk towards 0 by its standard error;
    :mod:`napari_cetpick.calibration`). Two or four views come in mirror pairs and
    cancel it by construction, so they are not shifted.
    """
    off = ckpt.info.get("centre_offset_work")
    if views != 1 or not off:
        return np.zeros(3)
    return np.asarray(off, float) * np.asarray(geometry.bin_zyx, float)


def _tiles(n: int, size: int, align: int = 1):
    """Start/stop pairs covering range(n) with as few tiles of at most ``size`` as it takes,
    all of one size (a multiple of ``align``, so starts are aligned) but the last, which is no
    thin remainder where ``size`` holds several ``align``: 500 slices in tiles of up to 160 are
    four of 128, not three of 160 and 20 (each tile is read with its halo, so a thin one costs
    nearly a whole one)."""
    if n <= 0:
        return []
    size = max(align, size - size % align)
    count = -(-n // size)
    size = _round_up(-(-n // count), align)
    return [(s, min(n, s + size)) for s in range(0, n, size)]


def expected_count(ckpt: Checkpoint, shape_zyx, voxel_size_a: float | None = None) -> float | None:
    """Particles the model's labels imply for a tomogram of this xy extent (None if unknown).

    The model stores the density of particles per xy area of its training tomograms
    (:mod:`napari_cetpick.counts`); a tomogram at another voxel size covers an area scaled
    by the squared ratio.
    """
    d = ckpt.info.get("density_per_vox2")
    if not d:
        return None
    r = (voxel_size_a / ckpt.voxel_size_a) if (voxel_size_a and ckpt.voxel_size_a) else 1.0
    return float(d) * float(shape_zyx[1]) * float(shape_zyx[2]) * r * r


def _round_up(v: int, m: int) -> int:
    return -(-int(v) // int(m)) * int(m)


def mask_keeps(mask, zyx: np.ndarray) -> np.ndarray:
    """Which points (tomogram voxels) fall where ``mask`` (same shape, nonzero = keep) keeps."""
    zyx = np.asarray(zyx, float).reshape(-1, 3)
    if mask is None or len(zyx) == 0:
        return np.ones(len(zyx), bool)
    idx = np.clip(np.floor(zyx + 0.5).astype(int), 0, np.asarray(mask.shape) - 1)
    return np.asarray(mask[tuple(idx.T)]) != 0


@dataclass
class TilePlan:
    """How one tomogram is cut into network blocks: the geometry, the grid and the tiles.

    Tile starts and halos are multiples of the network's multiple (itself a multiple of the
    output stride), so every block starts on the max-pool grid of the whole volume and its
    grid is a piece of the volume's grid: tiles agree with one untiled pass (no seams).
    """

    geometry: D.Geometry
    stride: np.ndarray  # output stride (working voxels), zyx
    multiple: np.ndarray  # input sizes the network takes, zyx
    grid_shape: tuple
    used: np.ndarray  # working voxels covered by whole grid cells, zyx
    halo: list  # working voxels read around each tile, zyx
    tiles: list  # ((z0, z1), (y0, y1), (x0, x1)) working voxels


@dataclass
class NetworkPass:
    """One run of the network over a whole tomogram, kept for the detection that follows.

    A correction round's calibration runs the new model over each training tomogram's
    labelled region; after a review across a tomogram that region is the whole tomogram, and
    the panel's next detection there would run the same pass again (about a quarter of an
    Improve on a 512 × 512 × 160 tomogram; docs/benchmark.md, "Round 10"). :func:`detect_classes`
    takes a kept pass instead of running the network when it ran on the very same array
    (``volume``, by identity) with the same tiles, views, device and arithmetic (``key``,
    :meth:`make_key`); either way every kept pass is dropped at the start of the next
    detection (:meth:`napari_cetpick.checkpoint.Checkpoint.take_passes`).
    """

    volume: object
    key: tuple
    heat: np.ndarray
    heat_b: np.ndarray | None

    @staticmethod
    def make_key(plan: "TilePlan", views: int, dev, dtype, flatten: float = 0.0) -> tuple:
        """What the pass depends on besides the weights and the tomogram."""
        return (tuple(tuple(tuple(int(v) for v in ax) for ax in t) for t in plan.tiles), tuple(plan.grid_shape),
                tuple(int(h) for h in plan.halo), tuple(float(b) for b in plan.geometry.bin_zyx), int(views),
                str(dev), str(dtype), float(flatten))


def plan_tiles(ckpt: Checkpoint, net, shape, bin_xy: int, config: DetectConfig) -> TilePlan:
    """The :class:`TilePlan` of a tomogram of ``shape`` (zyx) binned by ``bin_xy``."""
    stride = np.asarray(net.out_stride, int)
    mult = np.asarray(net.multiple_zyx, int)
    geom = D.make_geometry(bin_xy, ckpt.config.compress, net.out_stride)
    work = geom.work_shape(shape)
    grid_shape = tuple(int(w // s) for w, s in zip(work, stride))
    if min(work[1], work[2]) < 16 or min(grid_shape) < 1:
        raise CetpickError(f"The tomogram {shape} is too small to detect in after binning by {geom.bin_zyx}.")
    used = np.asarray(grid_shape) * stride
    g_halo = int(math.ceil(3 * ckpt.config.prefilter)) if ckpt.config.prefilter > 0 else 0
    halo = [_round_up(c + (g_halo if ax == 0 else 2 * g_halo), m)
            for ax, (c, m) in enumerate(zip(net.context_zyx, mult))]
    sizes = (config.tile_z, config.tile_xy, config.tile_xy)
    axes = [_tiles(int(used[ax]), int(sizes[ax]), int(mult[ax])) for ax in range(3)]
    tiles = [(z, y, x) for z in axes[0] for y in axes[1] for x in axes[2]]
    return TilePlan(geom, stride, mult, grid_shape, used, halo, tiles)


def run_tiles(plan: TilePlan, net, volume, stats, views: int, dev, layout=None, dtype=None, keep_first: bool = False):
    """Run the network over every tile; yields :class:`DetectProgress`, returns ``(heat, heat_b, heat_first)``.

    ``heat`` is the score map of each class on the output grid, ``(K, *grid_shape)``: the
    mean of the :data:`VIEWS` of ``views`` (1, 2 or 4); ``heat_b`` the mean of the mirrored
    views alone (None with one view), for each pick's agreement between the mirror halves;
    ``heat_first`` the first view alone with ``keep_first`` (the one view whose offset
    calibration measures), else None. ``layout`` is the blocks' memory format
    (:func:`napari_cetpick.model.fast_layout`); ``dtype`` the arithmetic of the pass
    (:func:`napari_cetpick.device.inference_dtype`; None: float32).
    """
    import torch

    from .device import autocast, describe

    k = int(net.hm.out_channels)
    heat = np.zeros((k, *plan.grid_shape), np.float32)
    chosen = VIEWS[views]
    n_mirrored = sum(1 for mirrored, _ in chosen if mirrored)
    heat_b = np.zeros((k, *plan.grid_shape), np.float32) if views > 1 else None
    heat_first = np.zeros((k, *plan.grid_shape), np.float32) if keep_first and views > 1 else None
    stride, mult, b = plan.stride, plan.multiple, np.array(plan.geometry.bin_zyx)
    t0 = time.perf_counter()
    dev_name = describe(dev, dtype)  # says what the pass ran in
    file_map = _file_map(volume)
    with torch.inference_mode(), autocast(dev, dtype):
        for i, tile in enumerate(plan.tiles):
            # working-frame region with halo, clipped to the volume
            lo = [max(0, t[0] - h) for t, h in zip(tile, plan.halo)]
            hi = [min(int(u), t[1] + h) for t, h, u in zip(tile, plan.halo, plan.used)]
            raw = np.asarray(volume[lo[0] * b[0] : hi[0] * b[0], lo[1] * b[1] : hi[1] * b[1], lo[2] * b[2] : hi[2] * b[2]])
            blk = stats.apply(D.bin_block(raw, b))
            del raw
            _release(file_map)
            if not np.all(np.isfinite(blk)):
                raise CetpickError("The tomogram contains NaN or infinite values; fix or mask them first.")
            pads = [(0, int((-n) % m)) for n, m in zip(blk.shape, mult)]
            if any(p[1] for p in pads):
                mode = "reflect" if all(n > p[1] for n, p in zip(blk.shape, pads)) else "edge"
                blk = np.pad(blk, pads, mode=mode)
            x = torch.from_numpy(np.ascontiguousarray(blk))[None, None].to(dev)
            if layout is not None:
                x = x.contiguous(memory_format=layout)
            dst, src = [slice(None)], [slice(None)]
            for ax in range(3):
                g0, g1 = tile[ax][0] // stride[ax], tile[ax][1] // stride[ax]
                off = (tile[ax][0] - lo[ax]) // stride[ax]
                dst.append(slice(g0, g1))
                src.append(slice(off, off + g1 - g0))
            dst, src = tuple(dst), tuple(src)
            # each view's scores back on the block's cells: a shift the model learned is
            # mirrored in the mirrored views and cancels in the mean
            p = p_b = None
            for j, (mirrored, turns) in enumerate(chosen):
                pv = _view_scores(net, x, mirrored, turns, layout)[src]
                if j == 0 and heat_first is not None:
                    heat_first[dst] = pv
                p = pv if p is None else p + pv
                if mirrored:
                    p_b = pv if p_b is None else p_b + pv
            if heat_b is not None:
                heat_b[dst] = p_b / n_mirrored
            heat[dst] = p / len(chosen)
            el = time.perf_counter() - t0
            yield DetectProgress(i + 1, len(plan.tiles), el, el / (i + 1) * (len(plan.tiles) - i - 1), dev_name)
    return heat, heat_b, (heat if views == 1 else heat_first) if keep_first else None


def find_candidates(ckpt: Checkpoint, plan: TilePlan, heat, heat_b, config: DetectConfig, shape, mask=None,
                    shift: bool = True):
    """Every peak of the heatmap above the floor, centred, shifted by the model's offset and masked.

    ``shift=False`` leaves the model's calibrated offset (:func:`centre_shift`) in.

    Returns ``(zyx, scores, agreement)`` (tomogram voxels, best first; ``agreement`` None
    with one view).
    """
    geom = plan.geometry
    scale, translate = geom.grid_scale, geom.grid_translate
    margin = (config.margin_z, config.margin_xy, config.margin_xy)
    refine = "centroid" if config.refine is True else config.refine
    czyx, cscores = chunked_candidates(heat, config.candidate_floor, margin, scale, translate, refine, shape,
                                       radius_cells=response_radius_cells(ckpt, plan.stride))
    offset = centre_shift(ckpt, geom, config.views) if shift else np.zeros(3)
    if np.any(offset):
        czyx = czyx - offset
    if mask is not None:
        keep = mask_keeps(mask, czyx)
        czyx, cscores = czyx[keep], cscores[keep]
    agreement = None
    if heat_b is not None:
        # where the mirror halves disagree most: the unmirrored views' mean is 2 x mean - heat_b
        cell = np.clip(np.floor((czyx - translate) / scale + 0.5).astype(int), 0, np.asarray(plan.grid_shape) - 1)
        agreement = (1.0 - np.abs(2.0 * (heat[tuple(cell.T)] - heat_b[tuple(cell.T)]))).astype(np.float32)
    return czyx, cscores, agreement


#: The profile check looks at the best ``PROFILE_POOL_FACTOR`` × the expected count of
#: candidates (at least :data:`PROFILE_POOL_MIN`); the rest stay below every one of them.
PROFILE_POOL_FACTOR = 4
PROFILE_POOL_MIN = 1000
#: Candidates whose radial profiles are read between two releases of a memory map's pages.
PROFILE_SLAB = 512
#: What detection says when the profile check is asked for but the model cannot do it.
PROFILE_SKIPPED = ("no profile check for {name}: the model holds no profile of its labels (it needs 5 labels "
                   "or more, and a model file of this version)")


class Checked(NamedTuple):
    """:func:`profile_check`'s candidates, best first: positions, scores after the check, their
    agreement (None: none given), what the check charged each (NaN: not checked; None: no
    check), :meth:`~napari_cetpick.descriptors.ProfileModel.excess` of each (how far beyond
    typical and towards a look-alike: what calibration mines look-alikes by) and the network's
    own score and position in the input of each, and the contrast the check read the tomogram at."""

    zyx: np.ndarray
    scores: np.ndarray
    agreement: np.ndarray | None
    excess: np.ndarray | None
    beyond: np.ndarray | None
    network: np.ndarray
    index: np.ndarray
    gain: float = 1.0  # the class's contrast here against the labels' (ProfileModel.gain)

    def one_sided(self, weight: float) -> "Checked":
        """The same candidates scored by ``beyond`` instead of the charge (the labels' term
        one-sided, without the tomogram's candidates: the order calibration mines look-alikes
        in), from the same reads."""
        if self.beyond is None:
            return self
        back = np.argsort(self.index)
        agreement = None if self.agreement is None else self.agreement[back]
        return _ranked(self.zyx[back], self.network[back], agreement, self.beyond[back], self.beyond[back], weight,
                       self.gain)

    def crossed(self, threshold: float) -> tuple[int, int]:
        """``(moved below, raised above)``: candidates the check took from above ``threshold``
        to below it, and from below to above."""
        before, after = np.asarray(self.network) >= threshold, np.asarray(self.scores) >= threshold
        return int(np.sum(before & ~after)), int(np.sum(~before & after))


def _ranked(zyx, scores, agreement, charge, beyond, weight: float, gain: float = 1.0) -> Checked:
    """The candidates best first by ``logit(score) − weight · charge`` where ``charge`` is finite
    (checked), the rest capped just below the lowest of those."""
    from scipy.special import expit  # 1 / (1 + e^-x) without overflow for a large excess

    done = np.isfinite(charge)
    z = logit(np.asarray(scores, float))
    new = z.copy()
    new[done] = z[done] - weight * charge[done]
    if (~done).any():
        new[~done] = np.minimum(z[~done], new[done].min())
    out = expit(new).astype(np.float32)
    order = np.argsort(-out, kind="stable")
    return Checked(zyx[order], out[order], None if agreement is None else agreement[order], charge[order],
                   beyond[order], np.asarray(scores)[order], order, gain)


def profile_check(ckpt: Checkpoint, volume, zyx, scores, agreement, weight: float, voxel_size_a=None,
                  expected: float | None = None, contrast: bool = True) -> Checked:
    """Rescore the best candidates by how much their radial profile looks like the labels'.

    The network's score is a local judgement at the working resolution; the radial profile
    (:mod:`napari_cetpick.descriptors`) averages hundreds of voxels per shell around the
    candidate at the tomogram's full resolution, so a 12 nm shell, a 15 nm barrel and a
    25 nm ribosome differ there where the network confuses them. Each of the best
    candidates gets ``logit(score) − weight · charge``
    (:meth:`~napari_cetpick.descriptors.ProfileModel.charge`: how much less its profile looks
    like the labels' than the candidates' own — the tomogram's checked candidates, what the
    network proposes here — beyond what the labels themselves do, and how much more like a
    look-alike; a profile more like the labels gains); the remaining candidates are capped
    just below the lowest of those. Measured in docs/benchmark.md ("The profile check",
    "Round 17").

    With ``contrast``, the class's contrast in this tomogram is read first on the best
    candidates (:meth:`~napari_cetpick.descriptors.ProfileModel.gain`) and the labels' side
    scaled to it (``Checked.gain``): a noisier tomogram's particles are weaker, not unlike the
    labels (docs/benchmark.md, "Round 21"). Without, the labels' own contrast: calibration and
    the self-training round, on the labels' own tomograms.

    :meth:`Checked.one_sided`: the labels' term one-sided, without the tomogram's candidates
    (how calibration orders the picks it mines look-alikes among). Without a profile model or
    with ``weight`` 0, the input, ``excess`` and ``beyond`` None.
    """
    from .descriptors import GAIN_CANDIDATES, ProfileModel, ProfileReads, model_profiles

    model = ProfileModel.from_info(ckpt.info.get("profile_model"))
    if model is None or weight <= 0 or len(scores) == 0:
        return Checked(zyx, scores, agreement, None, None, scores, np.arange(len(scores)))
    ratio = ckpt.voxel_size_a / voxel_size_a if (ckpt.voxel_size_a and voxel_size_a) else 1.0
    diameter = ckpt.diameter_vox * ratio
    n = int(min(len(scores), max(PROFILE_POOL_MIN, PROFILE_POOL_FACTOR * (expected or 0))))
    top = np.argsort(-np.asarray(scores), kind="stable")[:n]
    # read in slabs along z, each slab's pages of a memory-mapped file dropped after it: the
    # candidates' cubes reach over the whole tomogram, and a 2.1 GB file read at once stayed
    # resident (peak RSS 2.7 GB detecting 1024 × 1024 × 500; docs/benchmark.md, "Round 9")
    file_map = _file_map(volume)
    stats = D.compute_norm_stats(volume, D.make_geometry(1, False))  # once, not per slab
    background = model.background_of(volume, diameter)
    _release(file_map)
    gain = 1.0
    if contrast:
        best = top[:GAIN_CANDIDATES]
        gain = model.gain(*model_profiles(volume, np.asarray(zyx)[best], diameter, stats, return_inside=True,
                                          background=background))[0]
        model = model.at_gain(gain)
        _release(file_map)
    by_z = top[np.argsort(np.asarray(zyx)[top, 0], kind="stable")]
    reads = []
    for part in np.array_split(by_z, max(1, -(-len(by_z) // PROFILE_SLAB))):
        reads.append(model.read(volume, zyx[part], diameter, stats, background))
        _release(file_map)
    reads = ProfileReads.concat(reads)
    charge, beyond = np.full(len(scores), np.nan), np.full(len(scores), np.nan)
    charge[by_z], beyond[by_z] = model.charge(reads, reads.pool())
    return _ranked(zyx, scores, agreement, charge, beyond, weight, gain)


THRESHOLD_FROM = ("tomogram", "model")


def choose_threshold(ckpt: Checkpoint, zyx, scores, min_distance_vox: float, config: DetectConfig,
                     checked: tuple | None = None) -> tuple[float, str]:
    """``(threshold, how it was chosen)`` for one tomogram's candidates.

    A threshold given in ``config`` wins. Else, with ``threshold_from="tomogram"``, the
    point where this tomogram's own pick scores (suppressed at ``min_distance_vox``) split
    into background and particles (:func:`napari_cetpick.counts.split_scores`): the
    model's labelled share and density need not hold here. Where the scores show no clear
    split, where the split lies in the body of the background's scores
    (:func:`napari_cetpick.counts.in_background_body`: the picks above it are mostly
    background, so no population of particles stood out; a model of a class it barely tells
    from the noise split so in a tomogram without the class and kept 943 picks, where its
    default kept 84: docs/benchmark.md, "Round 27"), where the split keeps a handful against
    the model default's many (:func:`napari_cetpick.counts.split_holds`), and with
    ``threshold_from="model"``, the model's default. ``checked``: the same candidates'
    ``(zyx, scores)`` after the profile check; the default's many and the split's handful
    are then both counted on what the check leaves above each (picks the check finds unlike
    the labels are not the particles the guard protects, nor the particles a split keeps),
    and where the checked scores split too, keeping within
    :data:`~napari_cetpick.counts.SHOWN_SPLIT_WITHIN` times as many picks, the threshold is
    theirs (:func:`napari_cetpick.counts.refine_on_shown`; where the network's split fitted
    the background's flank, only a lower one).
    """
    from .counts import count_above, in_background_body, refine_on_shown, split_holds, split_scores

    if config.threshold is not None:
        return float(config.threshold), "given"
    if config.threshold_from not in THRESHOLD_FROM:
        raise CetpickError(f"threshold_from must be one of {', '.join(THRESHOLD_FROM)}, got {config.threshold_from!r}.")
    model = float(ckpt.default_threshold)
    if config.threshold_from == "model":
        return model, "the model's default"
    kept = np.asarray(scores)[select(zyx, scores, 0.0, min_distance_vox)]
    split = split_scores(kept, floor=config.candidate_floor)
    if split is None:
        return model, "the model's default: no clear split in this tomogram's scores"
    floor = config.candidate_floor
    if in_background_body(kept, split.threshold, floor=floor):
        # a split whose picks are mostly background: no population of particles stood out of it
        return model, "the model's default: this tomogram's split lies in the body of its background"
    # the picks shown: the checked candidates suppressed (above any threshold, the same picks as
    # suppressed at it: a pick is only suppressed by a better one)
    shown = None if checked is None else np.asarray(checked[1])[select(*checked, 0.0, min_distance_vox)]
    reference = kept if shown is None else shown
    # the split's picks as shown too: the check may take most of the network's top scores below
    # it (look-alikes the network ranks first; round 25: 127 split picks, 31 shown)
    n_split = split.n_above if shown is None else count_above(shown, split.threshold, floor=floor)
    if not split_holds(kept, split, model, floor=floor, reference_scores=reference, split_count=n_split):
        n_model = count_above(reference, model, floor=floor)
        after = "" if checked is None else " after the profile check"
        return model, (f"the model's default: this tomogram's split kept too few picks ({n_split}, "
                       f"against {n_model} at the default{after})")
    placed = ""
    if shown is not None:
        # placed on the scores shown, where their own split keeps about as many (other) picks,
        # and not a handful against the default's many either
        refined = refine_on_shown(shown, split, floor=floor)
        if refined is not None and split_holds(kept, split, model, floor=floor, reference_scores=reference,
                                               split_count=count_above(shown, refined.threshold, floor=floor)):
            split, placed = refined, ", placed after the profile check"
    how = "this tomogram's scores"
    if split.kind == "tail":
        how += " (the particles overlap the background: its flank fitted)"
    return split.threshold, how + placed


def default_min_distance(ckpt: Checkpoint, voxel_size_a: float | None) -> float:
    """Half a particle diameter, in this tomogram's voxels."""
    vs_ratio = ckpt.voxel_size_a / voxel_size_a if (ckpt.voxel_size_a and voxel_size_a) else 1.0
    return 0.5 * ckpt.diameter_vox * vs_ratio


def resolve_classes(results) -> int:
    """One place is never two classes: where picks of two classes lie within the larger of
    their radii, the one further above its own threshold (the higher ``margin``) stays.

    ``results`` are the :class:`DetectResult` of each class of one tomogram (their picks
    are changed in place). Each staying pick records the best pick it displaced
    (``runner_up``: that class, ``runner_up_score``: its score; "" and NaN when none).
    A class at threshold 0 (every candidate asked for, with its score) takes no part.
    Returns the number of picks dropped.
    """
    from scipy.spatial import cKDTree

    results = list(results)
    for r in results:
        r.runner_up = np.full(len(r.zyx), "", dtype=object)
        r.runner_up_score = np.full(len(r.zyx), np.nan, np.float32)
    results = [r for r in results if r.threshold > 0]
    if len(results) < 2:
        return 0
    cls = np.concatenate([np.full(len(r.zyx), i) for i, r in enumerate(results)])
    if len(cls) == 0:
        return 0
    zyx = np.concatenate([r.zyx for r in results])
    margin = np.concatenate([r.margins for r in results])
    local = np.concatenate([np.arange(len(r.zyx)) for r in results])
    radius = np.array([r.radius_vox for r in results], float)
    order = np.argsort(-margin, kind="stable")
    tree = cKDTree(zyx)
    kept = np.zeros(len(cls), bool)
    for i in order:
        near = [j for j in tree.query_ball_point(zyx[i], float(radius.max()))
                if kept[j] and cls[j] != cls[i]
                and np.linalg.norm(zyx[j] - zyx[i]) <= max(radius[cls[i]], radius[cls[j]])]
        if not near:
            kept[i] = True
            continue
        w = max(near, key=lambda j: margin[j])
        r = results[cls[w]]
        if r.runner_up[local[w]] == "":
            r.runner_up[local[w]] = results[cls[i]].class_name
            r.runner_up_score[local[w]] = results[cls[i]].scores[local[i]]
    for c, r in enumerate(results):
        r.keep_only(kept[cls == c])
    return int((~kept).sum())


@dataclass
class ClassDetections:
    """The detections of every class of a model in one tomogram (one network pass).

    ``results`` maps each class name to its :class:`DetectResult` (its own heatmap,
    candidates, threshold and picks); overlaps between classes are resolved
    (:func:`resolve_classes`) after every :meth:`reselect`.
    """

    results: dict
    resolve: bool = True
    network_pass: "NetworkPass | None" = None  # with ``keep_pass``: the network's scores, for reuse

    def __post_init__(self):
        if self.resolve:
            resolve_classes(self.results.values())

    def __getitem__(self, name) -> DetectResult:
        return self.results[name]

    def __iter__(self):
        return iter(self.results.values())

    def __len__(self) -> int:
        return len(self.results)

    @property
    def names(self) -> list[str]:
        return list(self.results)

    def only(self) -> DetectResult:
        """The one result of a detection of one class."""
        if len(self.results) != 1:
            raise CetpickError(f"This detection holds {len(self.results)} classes ({', '.join(self.results)}).")
        return next(iter(self.results.values()))

    def reselect(self, threshold=None, min_distance_vox: float | None = None) -> None:
        """Re-threshold every class (``threshold``: one for all or a dict per class), then resolve overlaps."""
        for name, r in self.results.items():
            t = threshold.get(name) if isinstance(threshold, dict) else threshold
            r.reselect(t, min_distance_vox)
        if self.resolve:
            resolve_classes(self.results.values())

    @property
    def n_picks(self) -> int:
        return int(sum(len(r.zyx) for r in self.results.values()))

    def table(self):
        """Every pick of every class: ``z, y, x`` (tomogram voxels), ``class`` and the features."""
        import pandas as pd

        frames = []
        for name, r in self.results.items():
            f = r.features
            f.insert(0, "class", name)
            for ax, col in enumerate("zyx"):
                f.insert(ax, col, r.zyx[:, ax] if len(r.zyx) else np.zeros(0))
            frames.append(f)
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def _check_thresholds(ckpt: Checkpoint, config: DetectConfig) -> None:
    if isinstance(config.threshold, dict):
        unknown = [n for n in config.threshold if n not in ckpt.class_names]
        if unknown:
            raise CetpickError(f"The model has no class {unknown[0]!r} (threshold given for it); its classes: "
                               f"{', '.join(ckpt.class_names)}.")


def detect_classes(ckpt: Checkpoint, volume, config: DetectConfig | None = None, voxel_size_a: float | None = None,
                   device=None, mask=None, first_view: bool = False, classes=None,
                   resolve: bool = True, keep_pass: bool = False) -> Generator[DetectProgress, None, ClassDetections]:
    """Detect every class of a model in a whole tomogram in one network pass.

    Each class is found on its own heatmap channel with its own size, threshold (chosen per
    class as ``config`` says; ``config.threshold`` may be a dict per class name) and
    minimum distance, then overlaps between classes are resolved (``resolve``). Parameters
    as :func:`detect`; ``classes`` (names or indices) limits which classes are reported.
    ``keep_pass``: the result's ``network_pass`` keeps the network's scores
    (:class:`NetworkPass`) for a later detection of the same array. A pass the model kept
    for this very array and settings is used instead of running the network; every pass it
    kept is dropped either way (:meth:`~napari_cetpick.checkpoint.Checkpoint.take_passes`).

    Yields :class:`DetectProgress`, returns :class:`ClassDetections`.
    """
    from dataclasses import replace

    from .device import configure_threads, inference_dtype, resolve_device

    config = config or DetectConfig()
    pending = ckpt.take_passes()  # dropped even where this detection refuses its input below
    shape = tuple(int(s) for s in volume.shape)
    if len(shape) != 3:
        raise CetpickError(f"Detection needs a 3D tomogram, got an array of shape {shape}.")
    if mask is not None and tuple(np.shape(mask)) != shape:
        raise CetpickError(f"The mask has shape {tuple(int(s) for s in np.shape(mask))} but the tomogram has "
                           f"{shape} (z, y, x); it must match voxel for voxel.")
    if config.views not in VIEWS:
        raise CetpickError(f"views must be one of {', '.join(str(v) for v in VIEWS)}, got {config.views}.")
    if not config.profile_weight >= 0:
        raise CetpickError(f"The profile weight must be 0 (off) or more, got {config.profile_weight}.")
    if not config.flatten >= 0:
        raise CetpickError(f"flatten must be 0 (off) or a number of particle diameters, got {config.flatten}.")
    _check_thresholds(ckpt, config)
    wanted = list(range(ckpt.n_classes)) if classes is None else [ckpt.class_index(c) for c in classes]
    bin_xy, notes = _bin_for_volume(ckpt, voxel_size_a)
    views = config.views
    if any(turns for _, turns in VIEWS[views]) and ckpt.config.augment != "full":
        # a model trained without quarter turns in xy (augment "flip", the published recipe)
        # has not learnt to score a turned tile: its mirror pair only
        views = max(v for v in VIEWS if not any(t for _, t in VIEWS[v]))
        notes.append(f"This model was trained without quarter turns in xy (augment {ckpt.config.augment!r}): "
                     f"detecting with {views} views instead of {config.views}.")
    for n in notes:
        warnings.warn(n, stacklevel=2)
    dev = resolve_device(device)
    if dev.type == "cpu":
        configure_threads()
    from .model import fast_layout, fold_batchnorm

    net = fold_batchnorm(ckpt.build(dev))
    layout = fast_layout(net, dev)
    dtype = inference_dtype(dev, config.precision)
    plan = plan_tiles(ckpt, net, shape, bin_xy, config)
    t0 = time.perf_counter()
    key = NetworkPass.make_key(plan, views, dev, dtype, config.flatten)
    kept = next((p for p in pending if p.volume is volume and p.key == key), None)
    if kept is not None and not first_view:
        heat_all, heat_b_all, heat_first_all = kept.heat, kept.heat_b, None
        el = time.perf_counter() - t0
        yield DetectProgress(len(plan.tiles), len(plan.tiles), el, 0.0, "the calibration's pass, reused")
    else:
        net_volume = volume
        if config.flatten > 0:  # what the network sees: the tomogram less its local background
            from .descriptors import Background, Flattened

            largest = max(ckpt.for_class(k).diameter_vox for k in range(ckpt.n_classes))
            net_volume = Flattened(volume, Background.of(volume, config.flatten * largest, linear=True))
        stats = D.compute_norm_stats(net_volume, plan.geometry, ckpt.config.prefilter)
        heat_all, heat_b_all, heat_first_all = yield from run_tiles(plan, net, net_volume, stats, views, dev, layout,
                                                                    dtype, keep_first=first_view)
    results = {}
    for k in wanted:
        view = ckpt.for_class(k)
        cfg = config.for_class(view.class_name)
        heat = heat_all[k]
        heat_b = None if heat_b_all is None else heat_b_all[k]
        czyx, cscores, agreement = find_candidates(view, plan, heat, heat_b, cfg, shape, mask)
        first = None
        if first_view:
            # the first view alone, without the model's offset (what calibration measures it on)
            fz, fs, _ = find_candidates(view, plan, heat_first_all[k], None, replace(cfg, views=1), shape, mask,
                                        shift=False)
            first = (fz, fs)
        half_d = default_min_distance(view, voxel_size_a)
        min_d = half_d if cfg.min_distance_vox is None else float(cfg.min_distance_vox)
        expected = expected_count(view, shape, voxel_size_a)
        checked = profile_check(view, volume, czyx, cscores, agreement, cfg.profile_weight, voxel_size_a, expected,
                                cfg.profile_contrast)
        # the threshold from the network's own scores (where they split into background and
        # particles), placed on the checked scores where those split alike (choose_threshold)
        threshold, source = choose_threshold(view, czyx, cscores, min_d, cfg,
                                             None if checked.excess is None else (checked.zyx, checked.scores))
        czyx, cscores, agreement, excess = checked.zyx, checked.scores, checked.agreement, checked.excess
        moved, raised = (None, None) if excess is None else checked.crossed(threshold)
        negatives = view.profile_negatives if excess is not None else 0
        mined = view.profile_mined if excess is not None else 0
        res = DetectResult(heatmap=heat, scale=plan.geometry.grid_scale, translate=plan.geometry.grid_translate,
                           cand_zyx=czyx, cand_scores=cscores, threshold=threshold, min_distance_vox=min_d,
                           K=cfg.K, tomogram_shape=shape, voxel_size_a=voxel_size_a, diameter_vox=view.diameter_vox,
                           elapsed_s=time.perf_counter() - t0, warnings=notes, cand_agreement=agreement,
                           expected_particles=expected, cand_profile_excess=excess, profile_moved=moved,
                           profile_raised=raised, profile_gain=None if excess is None else checked.gain,
                           profile_negatives=negatives, profile_mined=mined,
                           model_threshold=threshold, threshold_source=source, first_view=first,
                           class_name=view.class_name, radius_vox=half_d)
        if excess is None and cfg.profile_weight > 0 and len(cscores):
            res.warnings = notes + [PROFILE_SKIPPED.format(name=view.class_name)]
        res.reselect()
        results[view.class_name] = res
    found = ClassDetections(results, resolve=resolve)
    if keep_pass:
        found.network_pass = NetworkPass(volume, key, heat_all, heat_b_all)
    del heat_b_all, heat_first_all
    return found


def detect(ckpt: Checkpoint, volume, config: DetectConfig | None = None, voxel_size_a: float | None = None,
           device=None, mask=None, first_view: bool = False) -> Generator[DetectProgress, None, DetectResult]:
    """Detect particles of one class in a whole tomogram: plan the tiles, run them, find the candidates.

    Parameters
    ----------
    ckpt : Checkpoint
        A trained model of one class, or one class of a model of several
        (:meth:`Checkpoint.for_class`; :func:`detect_classes` detects them all at once).
    volume : (Z, Y, X) array
        The tomogram in napari order (a memory map is read tile by tile).
    config : DetectConfig, optional
    voxel_size_a : float, optional
        This tomogram's voxel size; compared with the model's (rescaled by binning or refused).
    device : str, optional
    mask : (Z, Y, X) array, optional
        Same shape as ``volume``; nonzero = keep. Picks where it is zero are dropped.
    first_view : bool
        Also keep the candidates of the first view alone in ``result.first_view`` (what
        calibration measures the model's own centre offset on, whatever ``views`` is).
    """
    if ckpt.n_classes > 1 and ckpt.channel is None:
        raise CetpickError(f"This model detects {ckpt.n_classes} classes ({', '.join(ckpt.class_names)}): choose "
                           "one (Checkpoint.for_class) or detect them all (detect_classes).")
    found = yield from detect_classes(ckpt, volume, config, voxel_size_a, device, mask, first_view,
                                      classes=[ckpt.channel or 0], resolve=False)
    return found.only()
