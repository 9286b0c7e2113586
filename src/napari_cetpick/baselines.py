"""Baseline pickers without learning, scored with the same peak picking and evaluation.

Difference of Gaussians (DoG) blob picker
-----------------------------------------
For a solid ball of diameter ``D`` the scale-normalised Laplacian of Gaussian peaks at
``sigma* = D / (2 √3)`` (radius / √3 in 3D). A DoG ``G(s1) - G(k s1)`` approximates a
Laplacian at the geometric mean of its two sigmas, so we centre it there:
``s1 = sigma* / √k`` and ``s2 = k s1`` with ``k = 1.6`` (the usual DoG ratio).

Steps: bin the volume by an integer factor when the particle is large (a blob
``s1 >= 2`` voxels across survives binning, and the filters get 8× cheaper per factor 2);
z-score and clip to ±3 (as the detector's preprocessing, which also stops gold fiducials
from dominating); invert when particles are dark; DoG; turn the response into a score in
0..1; local maxima with sub-voxel refinement; threshold, distance suppression, top k.

Score: ``z`` = (DoG − median) / (1.4826 · MAD), the response in robust noise units over
the volume, mapped by ``z / (z + 4)`` (0 for ``z <= 0``). It is monotone, so rankings and
AP are those of the raw response; 0.5 means "4 noise sigmas", the default threshold.
"""
from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

from .errors import CetpickError, plain
from .peaks import Triple, candidates, select

DOG_SIGMA_RATIO = 1.6
DOG_Z_HALF = 4.0  # robust z of the DoG response that maps to score 0.5
_TRUNCATE = 3.0  # Gaussian kernel half-width in sigmas: ±3 sigma holds 99.7 % of the mass
_STATS_SAMPLES = 2_000_000


def dog_sigmas(diameter_vox: float, sigma_ratio: float = DOG_SIGMA_RATIO) -> tuple[float, float]:
    """The two DoG sigmas (voxels) for a particle of ``diameter_vox``; see the module doc."""
    sigma_star = float(diameter_vox) / (2.0 * math.sqrt(3.0))
    s1 = sigma_star / math.sqrt(sigma_ratio)
    return s1, s1 * sigma_ratio


def _auto_bin(diameter_vox: float, sigma_ratio: float) -> int:
    s1, _ = dog_sigmas(diameter_vox, sigma_ratio)
    return max(1, int(s1 // 2.0))


def _bin_float32(volume: np.ndarray, f: int) -> np.ndarray:
    """Mean-pool by ``f`` on every axis in z-slabs (float32; trailing remainders dropped).

    Works slab by slab so a memory-mapped volume is never loaded whole.
    """
    if f == 1:
        return np.asarray(volume, dtype=np.float32)
    z, y, x = (s // f for s in volume.shape)
    out = np.empty((z, y, x), np.float32)
    for i in range(z):
        slab = np.asarray(volume[i * f : (i + 1) * f, : y * f, : x * f], dtype=np.float32)
        out[i] = slab.reshape(f, y, f, x, f).mean(axis=(0, 2, 4), dtype=np.float32)
    return out


def _sample(a: np.ndarray) -> np.ndarray:
    flat = a.reshape(-1)
    step = max(1, flat.size // _STATS_SAMPLES)
    return flat[::step]


def _prepared(vol: np.ndarray, f: int, dark_particles: bool, background_vox: float | None = None) -> np.ndarray:
    """Bin by ``f``, z-score, invert dark particles and clip to ±3 (a float32 copy); with
    ``background_vox``, less the local background of that diameter (tomogram voxels;
    :class:`~napari_cetpick.descriptors.Background`) first."""
    v = _bin_float32(vol, f)
    if np.may_share_memory(v, vol):
        v = v.copy()  # normalised in place
    if background_vox:
        from .descriptors import Background

        Background.of(v, background_vox / f).subtract_from(v)
    sample = _sample(v)
    mean, std = float(sample.mean()), float(sample.std())
    v -= mean
    v *= (-1.0 if dark_particles else 1.0) / (std if std > 0 else 1.0)
    np.clip(v, -3.0, 3.0, out=v)
    return v


def dog_score_map(
    volume_zyx: np.ndarray,
    diameter_vox: float,
    dark_particles: bool = True,
    bin_factor: int | str = "auto",
    sigma_ratio: float = DOG_SIGMA_RATIO,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """DoG blob score map of a tomogram, in 0..1, possibly binned.

    Parameters
    ----------
    volume_zyx : (Z, Y, X) array
        Tomogram (any real dtype; memory maps are read slab by slab when binning).
    diameter_vox : float
        Particle diameter in tomogram voxels.
    dark_particles : bool
        Particles are darker than the background (protein in cryo-ET); inverted first.
    bin_factor : int or "auto"
        Integer binning before filtering; ``auto`` bins while the smaller sigma stays at
        least 2 binned voxels.
    sigma_ratio : float
        ``s2 / s1`` of the DoG.

    Returns
    -------
    score : (Z // b, Y // b, X // b) float32
        Blob score, 0..1.
    scale, translate : (3,) float64
        Score-map index → tomogram coordinate (``index * scale + translate``); the centre
        of binned voxel ``w`` is tomogram ``b * w + (b - 1) / 2``.
    """
    vol = volume_zyx if isinstance(volume_zyx, np.ndarray) else np.asarray(volume_zyx)
    if vol.ndim != 3:
        raise CetpickError(f"The tomogram must be 3D (z, y, x), got shape {vol.shape}.")
    d = float(diameter_vox)
    if not (d > 0 and math.isfinite(d)):
        raise CetpickError(f"The particle diameter must be a positive number of voxels, got {plain(diameter_vox)}.")
    if not sigma_ratio > 1:
        raise CetpickError(f"The DoG sigma ratio must be above 1, got {plain(sigma_ratio)}.")
    f = _auto_bin(d, sigma_ratio) if bin_factor == "auto" else int(bin_factor)
    if f < 1 or min(vol.shape) // f < 3:
        raise CetpickError(f"Binning by {plain(bin_factor)} leaves too small a volume from shape {vol.shape}.")

    v = _prepared(vol, f, dark_particles)

    s1, s2 = dog_sigmas(d / f, sigma_ratio)
    dog = ndimage.gaussian_filter(v, s1, mode="reflect", truncate=_TRUNCATE)
    ndimage.gaussian_filter(v, s2, output=v, mode="reflect", truncate=_TRUNCATE)
    dog -= v
    del v

    dog = _robust_score(dog)

    scale = np.full(3, float(f))
    translate = np.full(3, (f - 1) / 2.0)
    return dog, scale, translate


def dog_picker(
    volume_zyx: np.ndarray,
    diameter_vox: float,
    threshold: float | None = None,
    min_distance_vox: Triple | None = None,
    margin_vox: Triple = 0,
    dark_particles: bool = True,
    top_k: int | None = None,
    bin_factor: int | str = "auto",
    sigma_ratio: float = DOG_SIGMA_RATIO,
    refine: bool | str = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Pick blobs of a given diameter with a difference of Gaussians (no learning).

    Parameters
    ----------
    volume_zyx : (Z, Y, X) array
        Tomogram.
    diameter_vox : float
        Particle diameter in tomogram voxels.
    threshold : float, optional
        Score threshold in 0..1; None = 0.5 (a response 4 robust noise sigmas high).
    min_distance_vox : float or (dz, dy, dx), optional
        No two picks closer than this (tomogram voxels); None = half the diameter.
    margin_vox : float or (mz, my, mx)
        Drop picks closer than this to the tomogram borders.
    dark_particles : bool
        Particles darker than the background (cryo-ET protein).
    top_k : int, optional
        Keep at most this many picks.
    bin_factor, sigma_ratio
        See :func:`dog_score_map`.
    refine : bool or str
        Sub-voxel refinement, see :func:`napari_cetpick.peaks.candidates`.

    Returns
    -------
    zyx : (n, 3) float64
        Picks in tomogram voxels, best first.
    scores : (n,) float32
        Scores in 0..1.
    """
    thr = 0.5 if threshold is None else float(threshold)
    dist = 0.5 * float(diameter_vox) if min_distance_vox is None else min_distance_vox
    score, scale, translate = dog_score_map(volume_zyx, diameter_vox, dark_particles, bin_factor, sigma_ratio)
    zyx, sc = candidates(
        score, floor=thr, margin_vox=margin_vox, scale=scale, translate=translate, refine=refine,
        shape_zyx=tuple(np.shape(volume_zyx)),
    )
    del score
    keep = select(zyx, sc, thr, dist, top_k)
    return zyx[keep], sc[keep]


def _robust_z(resp: np.ndarray) -> np.ndarray:
    """The robust z-score of a response map, (x - median) / (1.4826 MAD), in place."""
    sample = _sample(resp).astype(np.float64)
    med = float(np.median(sample))
    mad = float(np.median(np.abs(sample - med))) * 1.4826
    if not mad > 0:
        mad = float(sample.std()) or 1.0
    resp -= med
    resp /= mad
    return resp


def _robust_score(resp: np.ndarray) -> np.ndarray:
    """``z / (z + 4)`` of the robust z-score of a response map (in place; 0 where z <= 0)."""
    _robust_z(resp)
    np.maximum(resp, 0.0, out=resp)
    resp /= resp + DOG_Z_HALF
    return resp


def log_score_map(
    volume_zyx: np.ndarray,
    diameter_vox: float,
    dark_particles: bool = True,
    bin_factor: int | str = "auto",
    scale_step: float = 2 ** 0.25,
    n_side: int = 4,
    n_band: int = 1,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Scale-selective blob score: the normalised LoG at the particle's scale, kept only
    where that scale responds most.

    The scale-normalised Laplacian of Gaussian ``-s² ∇²(G_s * v)`` of a solid ball of
    diameter ``D`` peaks at ``s* = D / (2 √3)``. It is computed at ``n_side`` scales on each
    side of ``s*`` (ratio ``scale_step``: a factor 2 either way by default). The particle's
    band is ``s*`` and ``n_band`` scales on each side (real particles are not solid balls,
    and the missing wedge stretches them in z); a voxel keeps its best response in the band
    only when no scale outside the band responds more, so blobs of clearly other sizes
    (larger or smaller look-alikes) score 0 instead of a weaker but still high response.
    The score is the robust z-score of the kept response mapped by ``z / (z + 4)``, as
    :func:`dog_score_map`.

    Returns the score map, ``scale`` and ``translate`` (index → tomogram voxel), as
    :func:`dog_score_map`.
    """
    vol = volume_zyx if isinstance(volume_zyx, np.ndarray) else np.asarray(volume_zyx)
    if vol.ndim != 3:
        raise CetpickError(f"The tomogram must be 3D (z, y, x), got shape {vol.shape}.")
    d = float(diameter_vox)
    if not (d > 0 and math.isfinite(d)):
        raise CetpickError(f"The particle diameter must be a positive number of voxels, got {diameter_vox!r}.")
    f = _auto_bin(d, DOG_SIGMA_RATIO) if bin_factor == "auto" else int(bin_factor)
    if f < 1 or min(vol.shape) // f < 3:
        raise CetpickError(f"Binning by {bin_factor!r} leaves too small a volume from shape {vol.shape}.")
    v = _prepared(vol, f, dark_particles)

    s_star = d / f / (2.0 * math.sqrt(3.0))

    def response(s: float) -> np.ndarray:
        r = ndimage.gaussian_laplace(v, s, mode="reflect", truncate=_TRUNCATE)
        r *= -(s * s)
        return r

    centre = response(s_star)
    best_other = np.full_like(centre, -np.inf)
    for k in range(1, n_side + 1):
        into = centre if k <= n_band else best_other  # in the particle's band, or outside it
        for s in (s_star * scale_step**k, s_star / scale_step**k):
            np.maximum(into, response(s), out=into)
    centre[centre < best_other] = 0.0
    del best_other
    score = _robust_score(centre)
    return score, np.full(3, float(f)), np.full(3, (f - 1) / 2.0)


def log_scale_space(volume_zyx, diameter_range_vox, dark_particles: bool = True, bin_factor: int | str = "auto",
                    scale_step: float = 2 ** (1 / 3), background_vox: float | None = None
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """:func:`iter_log_scale_space` run to its end."""
    from .utils import run_generator

    return run_generator(iter_log_scale_space(volume_zyx, diameter_range_vox, dark_particles, bin_factor, scale_step,
                                              background_vox))


def log_scale_diameters(diameter_range_vox: tuple[float, float], scale_step: float = 2 ** (1 / 3)) -> np.ndarray:
    """The diameters :func:`iter_log_scale_space` looks at: the range in steps of ``scale_step``."""
    lo, hi = (float(d) for d in diameter_range_vox)
    n = max(1, int(math.ceil(math.log(hi / lo) / math.log(scale_step) - 1e-9)) + 1)
    return np.geomspace(lo, hi, n) if n > 1 else np.array([lo])


def iter_log_scale_space(
    volume_zyx: np.ndarray,
    diameter_range_vox: tuple[float, float],
    dark_particles: bool = True,
    bin_factor: int | str = "auto",
    scale_step: float = 2 ** (1 / 3),
    background_vox: float | None = None,
):
    """Blobs of any size in a range: per voxel the best LoG response and its diameter.

    The response ``-∇²(G_s * v)`` is computed at scales ``s = D / (2 √3)`` from the smallest
    to the largest diameter of the range (ratio ``scale_step``), each in its own robust noise
    units (z-score over the volume: white noise answers a small scale more than a large one,
    so the usual ``s²`` normalisation would let small noise blobs win inside large
    particles); each voxel keeps its strongest z and the diameter of that scale. The score
    maps that z by ``z / (z + 4)``, as :func:`dog_score_map`. ``bin_factor`` ``auto`` bins
    for the smallest diameter, as the DoG does. With ``background_vox`` (tomogram voxels), the
    tomogram's local background of that diameter is taken off first: at the large scales the
    noise answers so little that a slow change of density across the tomogram (ice thickness,
    a lamella's slope) outweighed the particles and decided their size.

    A generator: yields ``(k, n)`` after each of the ``n`` scales (progress; closing it stops
    there), and returns the score map, the diameter map (tomogram voxels, float32), and
    ``scale`` and ``translate`` (index → tomogram voxel).
    """
    vol = volume_zyx if isinstance(volume_zyx, np.ndarray) else np.asarray(volume_zyx)
    if vol.ndim != 3:
        raise CetpickError(f"The tomogram must be 3D (z, y, x), got shape {vol.shape}.")
    lo, hi = (float(d) for d in diameter_range_vox)
    if not (0 < lo <= hi and math.isfinite(hi)):
        raise CetpickError(f"The diameter range must be two positive numbers, smallest first; got {lo:g}, {hi:g}.")
    f = _auto_bin(lo, DOG_SIGMA_RATIO) if bin_factor == "auto" else int(bin_factor)
    if f < 1 or min(vol.shape) // f < 3:
        raise CetpickError(f"Binning by {plain(bin_factor)} leaves too small a volume from shape {vol.shape}.")
    v = _prepared(vol, f, dark_particles, background_vox)
    diameters = log_scale_diameters((lo, hi), scale_step)
    n = len(diameters)
    best = np.full(v.shape, -np.inf, np.float32)
    which = np.zeros(v.shape, np.uint8)
    for k, d in enumerate(diameters):
        s = d / f / (2.0 * math.sqrt(3.0))
        r = ndimage.gaussian_laplace(v, s, mode="reflect", truncate=_TRUNCATE)
        r *= -1.0
        _robust_z(r)  # noise responds more at small scales: compare scales in their own noise units
        better = r > best
        best[better] = r[better]
        which[better] = k
        del r, better
        yield k + 1, n
    del v
    np.maximum(best, 0.0, out=best)
    best /= best + DOG_Z_HALF
    return best, diameters.astype(np.float32)[which], np.full(3, float(f)), np.full(3, (f - 1) / 2.0)


def log_picker(
    volume_zyx: np.ndarray,
    diameter_vox: float,
    threshold: float | None = None,
    min_distance_vox: Triple | None = None,
    margin_vox: Triple = 0,
    dark_particles: bool = True,
    top_k: int | None = None,
    bin_factor: int | str = "auto",
    refine: bool | str = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Pick blobs of one size with the scale-selective LoG (:func:`log_score_map`).

    Parameters and returns as :func:`dog_picker`.
    """
    thr = 0.5 if threshold is None else float(threshold)
    dist = 0.5 * float(diameter_vox) if min_distance_vox is None else min_distance_vox
    score, scale, translate = log_score_map(volume_zyx, diameter_vox, dark_particles, bin_factor)
    zyx, sc = candidates(
        score, floor=max(thr, 1e-6), margin_vox=margin_vox, scale=scale, translate=translate, refine=refine,
        shape_zyx=tuple(np.shape(volume_zyx)),
    )
    del score
    keep = select(zyx, sc, thr, dist, top_k)
    return zyx[keep], sc[keep]


__all__ = ["dog_picker", "dog_score_map", "dog_sigmas", "log_picker", "log_score_map", "DOG_SIGMA_RATIO"]
