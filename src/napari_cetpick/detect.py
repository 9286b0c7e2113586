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
from typing import Generator

import numpy as np

from . import data as D
from . import device as _device  # noqa: F401  (sets OMP_WAIT_POLICY before torch loads)
from .checkpoint import Checkpoint
from .config import DetectConfig
from .errors import CetpickError
from .peaks import candidates, select

Z_HALO = 4  # the 3D head and the output heads see ±3 slices


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
        self.zyx, self.scores = self.cand_zyx[keep], self.cand_scores[keep]
        return self.zyx, self.scores


def _bin_for_volume(ckpt: Checkpoint, voxel_size_a: float | None) -> tuple[int, list[str]]:
    """Binning that brings this tomogram to the model's working voxel size."""
    notes = []
    if ckpt.voxel_size_a and voxel_size_a and abs(voxel_size_a / ckpt.voxel_size_a - 1) > 0.02:
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


def chunked_candidates(heat: np.ndarray, floor: float, margin_zyx, scale, translate, refine: bool, shape_zyx,
                       chunk: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """:func:`~napari_cetpick.peaks.candidates` over z-chunks of the heatmap.

    Each chunk is searched with one slice of halo on each side and keeps the maxima whose
    voxel (integer index; a plateau's first voxel) lies in its own slices, so each peak is
    kept once and the temporaries are bounded by the chunk, not the heatmap. Margins are
    applied afterwards against the tomogram's borders.
    """
    scale, translate = np.asarray(scale, float), np.asarray(translate, float)
    out_zyx, out_s = [], []
    nz = heat.shape[0]
    for z0 in range(0, nz, chunk):
        z1 = min(nz, z0 + chunk)
        a, b = max(0, z0 - 1), min(nz, z1 + 1)
        t = translate.copy()
        t[0] += a * scale[0]
        zyx, sc, vox = candidates(heat[a:b], floor=floor, margin_vox=0, scale=scale, translate=t, refine=refine,
                                  return_index=True)
        # the chunk owning a peak is the one holding the slice of its maximum (an integer), not
        # the slice of its refined position: a plateau seen through the halo has a different
        # centroid from each side and, rounded, could be kept twice or not at all
        iz = vox[:, 0] + a
        own = (iz >= z0) & (iz < z1)
        out_zyx.append(zyx[own])
        out_s.append(sc[own])
    zyx = np.concatenate(out_zyx) if out_zyx else np.zeros((0, 3))
    sc = np.concatenate(out_s) if out_s else np.zeros(0, np.float32)
    m = np.asarray(margin_zyx, float)
    keep = np.ones(len(zyx), bool)
    if np.any(m > 0):
        keep = np.all((zyx >= m) & (zyx <= np.asarray(shape_zyx, float) - 1 - m), axis=1)
    order = np.argsort(-sc[keep], kind="stable")
    return zyx[keep][order], sc[keep][order]


def _tiles(n: int, size: int, align: int = 1):
    """Start/stop pairs covering range(n) in steps of ``size`` (starts aligned)."""
    size = max(align, size - size % align)
    return [(s, min(n, s + size)) for s in range(0, n, size)]


def detect(ckpt: Checkpoint, volume, config: DetectConfig | None = None, voxel_size_a: float | None = None,
           device=None) -> Generator[DetectProgress, None, DetectResult]:
    """Detect particles in a whole tomogram.

    Parameters
    ----------
    ckpt : Checkpoint
        A trained model.
    volume : (Z, Y, X) array
        The tomogram in napari order (a memory map is read tile by tile).
    config : DetectConfig, optional
    voxel_size_a : float, optional
        This tomogram's voxel size; compared with the model's (rescaled by binning or refused).
    device : str, optional
    """
    import torch

    from .device import configure_threads, describe, resolve_device

    config = config or DetectConfig()
    shape = tuple(int(s) for s in volume.shape)
    if len(shape) != 3:
        raise CetpickError(f"Detection needs a 3D tomogram, got an array of shape {shape}.")
    bin_xy, notes = _bin_for_volume(ckpt, voxel_size_a)
    for n in notes:
        warnings.warn(n, stacklevel=2)
    geom = D.make_geometry(bin_xy, ckpt.config.compress)
    work = geom.work_shape(shape)
    if min(work[1], work[2]) < 16 or work[0] < 1:
        raise CetpickError(f"The tomogram {shape} is too small to detect in after binning by {geom.bin_zyx}.")
    dev = resolve_device(device)
    if dev.type == "cpu":
        configure_threads()
    net = ckpt.build(dev)
    mult = net.multiple
    stats = D.compute_norm_stats(volume, geom, ckpt.config.gauss)
    g_halo = int(math.ceil(3 * ckpt.config.gauss)) if ckpt.config.gauss > 0 else 0
    hz = Z_HALO + g_halo
    # tile starts and halos are multiples of the network's multiple, so every block starts on
    # the max-pool grid of the whole volume: tiles then agree with one untiled pass (no seams)
    hxy = -(-(32 + 2 * g_halo) // mult) * mult
    grid_shape = (work[0], work[1] // 2, work[2] // 2)
    heat = np.zeros(grid_shape, np.float32)
    ztiles = _tiles(work[0], config.tile_z)
    ytiles = _tiles(grid_shape[1] * 2, config.tile_xy, mult)
    xtiles = _tiles(grid_shape[2] * 2, config.tile_xy, mult)
    tiles = [(z, y, x) for z in ztiles for y in ytiles for x in xtiles]
    t0 = time.perf_counter()
    dev_name = describe(dev)
    b = np.array(geom.bin_zyx)
    file_map = _file_map(volume)
    with torch.inference_mode():
        for i, ((z0, z1), (y0, y1), (x0, x1)) in enumerate(tiles):
            # working-frame region with halo, clipped to the volume
            za, zb = max(0, z0 - hz), min(work[0], z1 + hz)
            ya, yb = max(0, y0 - hxy), min(work[1] - work[1] % 2, y1 + hxy)
            xa, xb = max(0, x0 - hxy), min(work[2] - work[2] % 2, x1 + hxy)
            raw = np.asarray(volume[za * b[0] : zb * b[0], ya * b[1] : yb * b[1], xa * b[2] : xb * b[2]])
            blk = stats.apply(D.bin_block(raw, b))
            del raw
            _release(file_map)
            if not np.all(np.isfinite(blk)):
                raise CetpickError("The tomogram contains NaN or infinite values; fix or mask them first.")
            py = (-blk.shape[1]) % mult
            px = (-blk.shape[2]) % mult
            if py or px:
                blk = np.pad(blk, ((0, 0), (0, py), (0, px)), mode="reflect" if min(blk.shape[1:]) > max(py, px) else "edge")
            x = torch.from_numpy(np.ascontiguousarray(blk))[None, None].to(dev)
            hm, _ = net(x, with_proj=False)
            p = torch.sigmoid(hm)[0, 0].float().cpu().numpy()
            gz0, gz1 = z0 - za, z0 - za + (z1 - z0)
            gy0, gx0 = (y0 - ya) // 2, (x0 - xa) // 2
            ny, nx = (y1 - y0) // 2, (x1 - x0) // 2
            heat[z0:z1, y0 // 2 : y0 // 2 + ny, x0 // 2 : x0 // 2 + nx] = p[gz0:gz1, gy0 : gy0 + ny, gx0 : gx0 + nx]
            el = time.perf_counter() - t0
            yield DetectProgress(i + 1, len(tiles), el, el / (i + 1) * (len(tiles) - i - 1), dev_name)
    scale, translate = geom.grid_scale, geom.grid_translate
    margin = (config.margin_z, config.margin_xy, config.margin_xy)
    czyx, cscores = chunked_candidates(heat, config.candidate_floor, margin, scale, translate, config.refine, shape)
    threshold = ckpt.default_threshold if config.threshold is None else float(config.threshold)
    if config.min_distance_vox is not None:
        min_d = float(config.min_distance_vox)
    else:
        # half a particle diameter, in this tomogram's voxels
        vs_ratio = ckpt.voxel_size_a / voxel_size_a if (ckpt.voxel_size_a and voxel_size_a) else 1.0
        min_d = 0.5 * ckpt.diameter_vox * vs_ratio
    res = DetectResult(heatmap=heat, scale=scale, translate=translate, cand_zyx=czyx, cand_scores=cscores,
                       threshold=threshold, min_distance_vox=min_d, K=config.K, tomogram_shape=shape,
                       voxel_size_a=voxel_size_a, diameter_vox=ckpt.diameter_vox,
                       elapsed_s=time.perf_counter() - t0, warnings=notes)
    res.reselect()
    return res
