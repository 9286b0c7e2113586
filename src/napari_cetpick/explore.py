"""Exploration before any label: what blob-like things a tomogram holds, grouped by their look.

1. **Candidates**: every blob at the sizes asked for, from the scale-normalised Laplacian of
   Gaussian over a range of scales (:func:`~napari_cetpick.baselines.log_scale_space`, the
   tomogram's local background at the range's largest size taken off first): the
   local maxima of each voxel's best response, each with the diameter of its best scale, the
   weaker of two closer than half the larger one's diameter suppressed; then each moved to
   where the density around it is most nearly radially symmetric, when that is clearly more
   so (:func:`iter_symmetry_centres`: a hollow particle's LoG peaks on its wall).
2. **Embedding**: per candidate, numbers that do not depend on its orientation —
   ``profiles``: the radial profile (:func:`~napari_cetpick.descriptors.radial_profiles`:
   mean density in thin shells, polar caps and equatorial belt apart, against the local
   background) out to the range's largest size, plus the blob's size; or ``encoder``: a small 3D network trained on the
   tomogram's own candidates without labels (:mod:`napari_cetpick.explore_encoder`), plus the
   size. The profiles are the default: they separated the classes as well or better in the
   benchmark, in seconds instead of minutes (docs/benchmark.md, "Exploration").
3. **Clusters and map** (scikit-learn): HDBSCAN on the standardised embedding (reduced by PCA
   to 5 components) finds groups of any shape and leaves what belongs to none as noise
   (cluster -1); its "leaf" selection keeps the small, dense groups (pure clusters, more
   candidates left out) rather than merging them into a few large ones. t-SNE draws the 2D
   map the user looks at. Clusters are numbered by size, largest first.
4. **Class averages**: per cluster, the mean of its members' central xy slices.

Core module: numpy, scipy, scikit-learn, no Qt or napari. :func:`explore` is a generator
that yields :class:`ExploreProgress` and returns an :class:`ExploreResult`; closing it
(Cancel) stops at the next stage or scale and writes nothing.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Generator

import numpy as np

from .errors import CetpickError, plain

#: The embeddings :func:`explore` offers.
EMBEDDINGS = ("profiles", "encoder")
#: Sizes looked for when the user gives none (Å): from small complexes to ribosomes.
DEFAULT_DIAMETER_RANGE_A = (60.0, 300.0)
#: Blob score (robust z of the LoG response mapped by z / (z + 4)) a candidate needs: z ≈ 1.7.
CANDIDATE_FLOOR = 0.3
#: The file names an exploration folder holds.
CANDIDATES_FILE = "candidates.csv"
SUMMARY_FILE = "explore.json"
OVERVIEW_FILE = "overview.html"
AVERAGES_FILE = "class_averages.npz"
ENCODER_FILE = "encoder.pt"
#: The radial profile's shells and reach (in the range's largest diameter).
_N_SHELLS = 12
_REACH = 0.6
#: Centring: a candidate moves to where the density around it is most nearly radially
#: symmetric (hollow particles peak in the LoG on their walls), when that place is more
#: significant than where it stands by more than 95 % of places in background alone would
#: gain by moving (noise of the tomogram's own spectrum: :meth:`_SymmetryWindows.calibrate`),
#: and by at least 3 standard units.
_CENTRING_GAIN = 3.0
_CENTRING_NULL_QUANTILE = 0.95
_CENTRING_NULL_PLACES = 256
#: The symmetry windows' largest radius in working voxels (larger ranges are binned to it), and
#: how far a candidate may move, in those windows' largest radius.
_CENTRING_MAX_RADIUS = 9
_CENTRING_REACH = 0.45
#: A shell belongs to the particle when its mean differs from the background by this many
#: of its own standard deviations (the particle's extent, for a candidate that moved).
_SHELL_Z = 3.0
#: Progress units per LoG scale (and for the centring) while looking for candidates.
_STEP = 10
#: Weight of the (standardised) log size against each standardised profile value.
_SIZE_WEIGHT = 3.0
#: Principal components the clustering sees.
_N_COMPONENTS = 5
#: The smallest cluster by default: this share of the candidates, at least 10.
_MIN_CLUSTER_SHARE = 0.0075


@dataclass
class ExploreConfig:
    """Settings of an exploration.

    Parameters
    ----------
    diameter_range_a : (float, float)
        Smallest and largest particle diameter looked for (Å).
    max_candidates : int
        Keep at most this many candidates, the strongest blobs first.
    floor : float
        Lowest blob score a candidate needs (0..1; 0.5 = a response 4 robust sigmas up).
    embedding : {"profiles", "encoder"}
        What the clusters are made of (see the module doc).
    min_cluster_size : int, optional
        The smallest group HDBSCAN calls a cluster; default 0.75 % of the candidates, at least 10.
    dark_particles : bool
        Particles darker than the background (protein in cryo-ET).
    encoder_steps : int
        Training steps of the ``encoder`` embedding.
    seed : int
        Seed of the map, the clusters' PCA and the encoder.
    """

    diameter_range_a: tuple[float, float] = DEFAULT_DIAMETER_RANGE_A
    max_candidates: int = 4000
    floor: float = CANDIDATE_FLOOR
    embedding: str = "profiles"
    min_cluster_size: int | None = None
    dark_particles: bool = True
    encoder_steps: int = 300
    seed: int = 0

    def validate(self) -> "ExploreConfig":
        lo, hi = (float(d) for d in self.diameter_range_a)
        if not (0 < lo <= hi and math.isfinite(hi)):
            raise CetpickError(f"The diameter range must be two positive sizes in Å, smallest first; got "
                               f"{plain(self.diameter_range_a[0])} and {plain(self.diameter_range_a[1])}.")
        if self.max_candidates < 2:
            raise CetpickError(f"max_candidates must be at least 2, got {self.max_candidates}.")
        if not 0 <= self.floor < 1:
            raise CetpickError(f"The blob score floor must lie in 0..1, got {plain(self.floor)}.")
        if self.embedding not in EMBEDDINGS:
            raise CetpickError(f"Unknown embedding {self.embedding!r}: use one of {', '.join(EMBEDDINGS)}.")
        if self.min_cluster_size is not None and self.min_cluster_size < 2:
            raise CetpickError(f"min_cluster_size must be at least 2, got {self.min_cluster_size}.")
        return self


@dataclass
class ExploreProgress:
    """One step of an exploration: ``stage`` (candidates, embedding, clusters, map), ``done``
    of ``total`` within it, and a line for the user."""

    stage: str
    done: int
    total: int
    message: str


@dataclass
class ExploreResult:
    """Candidates with their embedding, map position and cluster (``-1``: none).

    ``zyx`` (n, 3) tomogram voxels; ``diameter_vox`` (n,) each blob's best LoG size; ``score``
    (n,) its blob score; ``embedding`` (n, k); ``map_xy`` (n, 2); ``cluster`` (n,) ints;
    ``averages`` {cluster: 2D mean central xy slice}; ``info``: settings and figures;
    ``encoder``: with the ``encoder`` embedding, its weights and metadata (``encoder.pt``).
    """

    zyx: np.ndarray
    diameter_vox: np.ndarray
    score: np.ndarray
    embedding: np.ndarray
    map_xy: np.ndarray
    cluster: np.ndarray
    averages: dict
    voxel_size_a: float
    shape_zyx: tuple
    info: dict = field(default_factory=dict)
    encoder: dict | None = None

    @property
    def cluster_ids(self) -> list[int]:
        return sorted(int(c) for c in np.unique(self.cluster) if c >= 0)

    def members(self, cluster_id: int) -> np.ndarray:
        """The zyx of one cluster's members; a clear error for a cluster that does not exist."""
        return self.zyx[members_of(self.cluster, cluster_id)]

    def features(self):
        """Per candidate: size (Å), blob score, cluster, map position and embedding (a DataFrame)."""
        import pandas as pd

        cols = {"diameter_a": np.round(self.diameter_vox * self.voxel_size_a, 1),
                "score": np.round(self.score, 4), "cluster": self.cluster.astype(int),
                "map_x": np.round(self.map_xy[:, 0], 3), "map_y": np.round(self.map_xy[:, 1], 3)}
        for k in range(self.embedding.shape[1]):
            cols[f"emb_{k}"] = np.round(self.embedding[:, k], 4)
        return pd.DataFrame(cols)


def members_of(cluster: np.ndarray, cluster_id: int) -> np.ndarray:
    """Mask of the candidates in ``cluster_id``; :class:`CetpickError` naming the clusters there are."""
    ids = sorted(int(c) for c in np.unique(cluster) if c >= 0)
    if int(cluster_id) not in ids:
        there = ", ".join(map(str, ids)) if ids else "none"
        raise CetpickError(f"There is no cluster {plain(cluster_id)}: the clusters are {there}.")
    return np.asarray(cluster) == int(cluster_id)


def diameter_range_vox(config: ExploreConfig, voxel_size_a: float, shape_zyx) -> tuple[float, float]:
    """The range in voxels; an error when it cannot fit in the tomogram or is under 3 voxels."""
    lo, hi = (float(d) / float(voxel_size_a) for d in config.diameter_range_a)
    if hi > min(shape_zyx) or hi > 0.5 * max(shape_zyx):
        raise CetpickError(f"The largest diameter ({config.diameter_range_a[1]:g} Å = {hi:.0f} voxels at "
                           f"{voxel_size_a:g} Å) does not fit in the tomogram {tuple(shape_zyx)}: give a smaller "
                           "diameter range.")
    if lo < 3:
        raise CetpickError(f"The smallest diameter ({config.diameter_range_a[0]:g} Å = {lo:.1f} voxels at "
                           f"{voxel_size_a:g} Å) is under 3 voxels: give a larger diameter range.")
    return lo, hi


def find_candidates(volume, range_vox: tuple[float, float], max_candidates: int = 4000,
                    floor: float = CANDIDATE_FLOOR, dark_particles: bool = True):
    """:func:`iter_find_candidates` run to its end."""
    from .utils import run_generator

    return run_generator(iter_find_candidates(volume, range_vox, max_candidates, floor, dark_particles))


def iter_find_candidates(volume, range_vox: tuple[float, float], max_candidates: int = 4000,
                         floor: float = CANDIDATE_FLOOR, dark_particles: bool = True):
    """Blob candidates over a range of sizes (module doc, step 1).

    A generator: yields ``(k, n)`` as the scales and the centring (:func:`iter_symmetry_centres`)
    go (``_STEP`` per scale and for the centring), and returns ``zyx`` (n, 3)
    tomogram voxels, ``diameter_vox`` (n,) and ``score`` (n,), strongest first; candidates
    whose blob would reach past the tomogram's border are left out.
    """
    from .baselines import iter_log_scale_space, log_scale_diameters
    from .peaks import candidates
    from .utils import relay

    n_scales = len(log_scale_diameters(range_vox))
    total = _STEP * (n_scales + 1)  # progress: each scale one step, the centring one more
    score, size, scale, translate = yield from relay(
        iter_log_scale_space(volume, range_vox, dark_particles, background_vox=range_vox[1]),
        lambda s: (_STEP * s[0], total))
    zyx, sc, idx = candidates(score, floor=max(floor, 1e-6), scale=scale, translate=translate,
                              shape_zyx=tuple(np.shape(volume)), return_index=True)
    del score
    diam = size[tuple(np.asarray(idx).T)] if len(zyx) else np.zeros(0, np.float32)
    shape = np.asarray(np.shape(volume), float)
    zyx, sc, diam = _inside(zyx, diam, shape, sc)
    zyx, sc, diam = _suppress(zyx, diam, np.arange(len(zyx)), sc)  # the weaker of two blobs goes (best first)
    zyx, sc, diam = zyx[:max_candidates], sc[:max_candidates], diam[:max_candidates]
    # hollow particles: from their wall to their centre; parts of one particle become one
    zyx, diam, signif = yield from relay(iter_symmetry_centres(volume, zyx, diam, range_vox),
                                         lambda s: (_STEP * n_scales + (_STEP * s[0]) // s[1], total))
    zyx, sc, signif, diam = _inside(zyx, diam, shape, sc, signif)
    zyx, sc, diam = _suppress(zyx, diam, np.argsort(-signif, kind="stable"), sc)  # most symmetric first
    order = np.argsort(-sc, kind="stable")
    return zyx[order], diam[order].astype(np.float32), sc[order].astype(np.float32)


def _inside(zyx, diam, shape, *more):
    """The candidates whose whole blob lies inside: half its diameter from every border (in z a
    third: the lamella is thin); ``(zyx, *more, diam)`` of those."""
    half = 0.5 * np.asarray(diam, float)[:, None] * np.array([2 / 3, 1.0, 1.0])
    ok = np.all((zyx >= half) & (zyx <= np.asarray(shape) - 1 - half), axis=1)
    return (zyx[ok], *(m[ok] for m in more), diam[ok])


def _suppress(zyx, diam, order, *more):
    """Greedy in ``order``: of two candidates closer than half the larger one's diameter, the
    later goes; ``(zyx, *more, diam)`` of those kept, in their former order."""
    from scipy.spatial import cKDTree

    keep = np.ones(len(zyx), bool)
    if len(zyx):
        rank = np.empty(len(zyx), int)
        rank[np.asarray(order)] = np.arange(len(zyx))
        tree = cKDTree(zyx)
        reach = 0.5 * float(np.max(diam))
        for i in order:
            if not keep[i]:
                continue
            near = [k for k in tree.query_ball_point(zyx[i], reach) if rank[k] > rank[i] and keep[k]
                    and np.linalg.norm(zyx[k] - zyx[i]) < 0.5 * max(diam[i], diam[k])]
            keep[near] = False
    return (zyx[keep], *(m[keep] for m in more), diam[keep])


def iter_symmetry_centres(volume, zyx, diameter_vox, range_vox: tuple[float, float], batch: int = 256,
                          rounds: int = 3, seed: int = 0):
    """Move each candidate to where the density around it is most nearly radially symmetric.

    Around a place, the sums ``S_r`` of the z-scored density over shells one voxel thick
    explain the energy ``E_R = Σ_{r ≤ R} S_r² / n_r`` within radius ``R``. Where there is only
    background, the ``S_r`` are Gaussian with a covariance that follows from the tomogram's
    own power spectrum (estimated once from random cubes, so correlated noise — the CTF, the
    reconstruction's filters — and the crowd of other particles count as background), which
    gives the mean and variance of ``E_R``; matched to a scaled χ², its Wilson–Hilferty normal
    score is the significance of the symmetry there. A hollow particle's LoG peaks on its
    wall, where this is low; at its centre it is high; a solid ball's centre is already its
    best place. Each candidate scores every place within a few voxels for three window radii
    (0.6 × the smallest diameter to 0.3 × the largest; the volume binned when they would
    exceed ``_CENTRING_MAX_RADIUS``, rounding may merge them) and moves to the best one when it
    beats its own place by more than 95 % of places in background alone would gain (noise of
    the same spectrum, simulated; at least ``_CENTRING_GAIN`` standard units); one that moved
    searches again from there (at most ``rounds`` searches in all). A shell partly outside the
    tomogram counts its energy per voxel inside.

    A candidate that moves takes the larger of its ``diameter_vox`` and the extent of its
    density there (``(2 r + 1) b``: out to the last shell ``r`` whose mean differs from the
    background by ``_SHELL_Z`` of its spread, before two that do not), within the range: a
    hollow particle's LoG size is its wall's, and the windows reach only half the range's
    largest size.

    A generator: yields ``(k, n)`` per batch of the first search; returns the new ``zyx``, its
    diameter, and the significance of the symmetry where each candidate ends.
    """
    pts = np.asarray(zyx, float).reshape(-1, 3).copy()
    size = np.asarray(diameter_vox, float).reshape(-1).copy()
    signif = np.full(len(pts), -np.inf)
    if len(pts) == 0:
        return pts, size, signif
    win = _SymmetryWindows(range_vox)
    vol, b = win.working_volume(volume), win.b
    win.calibrate(vol, np.random.default_rng(seed))
    pending = np.arange(len(pts))
    n_first = int(math.ceil(len(pts) / batch))
    for round_ in range(max(1, rounds)):
        moved = []
        for k in range(0, len(pending), batch):
            idx = pending[k:k + batch]
            cell = np.rint((pts[idx] - (b - 1) / 2.0) / b).astype(int)  # the working voxel of each
            off, here, best, window = win.search(vol, cell)
            move = best - here >= win.min_gain
            signif[idx] = np.where(move, best, np.maximum(here, signif[idx]))
            pts[idx[move]] = (cell[move] + off[move]) * b + (b - 1) / 2.0
            size[idx[move]] = np.fmax(window[move], size[idx[move]])
            moved.append(idx[move])
            if round_ == 0:
                yield k // batch + 1, n_first
        pending = np.concatenate(moved)
        if len(pending) == 0:
            break
    np.clip(pts, 0, np.asarray(np.shape(volume)) - 1, out=pts)
    return pts, np.clip(size, *range_vox), signif


class _SymmetryWindows:
    """The centring's windows for a diameter range (:func:`iter_symmetry_centres`): bin factor
    ``b``, window radii and reach (working voxels), the shells' transforms, and — once
    :meth:`calibrate` has seen the tomogram — the background's mean and variance of ``E_R``."""

    def __init__(self, range_vox: tuple[float, float]):
        lo, hi = (float(d) for d in range_vox)
        radii = np.geomspace(0.6 * lo, max(0.3 * hi, 0.6 * lo), 3)  # a small particle whole … half the largest
        self.b = max(1, int(math.ceil(radii[-1] / _CENTRING_MAX_RADIUS - 1e-9)))
        self.radii = sorted({max(2, int(round(r / self.b))) for r in radii})
        self.reach = max(1, int(round(_CENTRING_REACH * self.radii[-1])))
        self.h = self.radii[-1] + self.reach
        self.n = 2 * self.h + 1
        ax = np.arange(self.n) - self.h
        rr = np.sqrt(ax[:, None, None] ** 2 + ax[None, :, None] ** 2 + ax[None, None, :] ** 2)
        shell = np.floor(rr + 0.5).astype(int)
        self.counts = np.bincount(shell.ravel())[: self.radii[-1] + 1].astype(float)
        self.kernels = np.fft.ifftshift(np.stack([shell == r for r in range(self.radii[-1] + 1)]).astype(np.float32),
                                        axes=(1, 2, 3))
        self._kernels_rf = None  # their real FFT, made on the first search
        self.scale = self.dof = self.sd_shell = self.min_gain = None

    def working_volume(self, volume) -> np.ndarray:
        """The tomogram binned by ``b`` (itself at bin 1), float32."""
        from .baselines import _bin_float32

        return _bin_float32(volume, self.b) if self.b > 1 else volume

    def _cubes(self, vol, cells: np.ndarray):
        """Cubes of side ``n`` about working voxels ``cells``, z-scored by the tomogram's
        statistics, clipped to ±3, less their mean; zero outside the tomogram. Returns the
        cubes and, when any reaches outside, which voxels lie inside (else None)."""
        h, n = self.h, self.n
        shape = np.asarray(vol.shape)
        cubes = np.zeros((len(cells), n, n, n), np.float32)
        inside = np.zeros(cubes.shape, bool)
        for c, m, q in zip(cubes, inside, cells):
            lo, hi = q - h, q + h + 1
            a, z = np.maximum(lo, 0), np.minimum(hi, shape)
            if np.all(z > a):
                part = (slice(a[0] - lo[0], z[0] - lo[0]), slice(a[1] - lo[1], z[1] - lo[1]),
                        slice(a[2] - lo[2], z[2] - lo[2]))
                c[part] = (np.asarray(vol[a[0]:z[0], a[1]:z[1], a[2]:z[2]], np.float32) - self._mean) / self._std
                m[part] = True
        np.clip(cubes, -3.0, 3.0, out=cubes)
        filled = np.maximum(inside.sum(axis=(1, 2, 3), keepdims=True), 1)
        cubes -= (cubes.sum(axis=(1, 2, 3), keepdims=True) / filled) * inside
        return cubes, (None if inside.all() else inside)

    def calibrate(self, vol, rng, n_cubes: int = 64) -> None:
        """The background's ``E_R`` mean and variance from the power spectrum of random cubes."""
        stats = volume_stats(vol)
        self._mean, self._std = float(stats.mean1), float(stats.std1)
        shape = np.asarray(vol.shape)
        lo = np.minimum(self.h, shape // 2)
        cells = rng.integers(lo, np.maximum(shape - lo, lo + 1), size=(n_cubes, 3))
        cubes, inside = self._cubes(vol, cells)
        share = 1.0 if inside is None else np.maximum(inside.mean(axis=(1, 2, 3)), 1e-3)[:, None, None, None]
        power = np.mean(np.abs(np.fft.fftn(cubes, axes=(1, 2, 3))) ** 2 / share, axis=0)  # as if all inside
        kf = np.fft.fftn(self.kernels, axes=(1, 2, 3)).reshape(len(self.kernels), -1)
        big_n = float(self.n ** 3)
        cov = np.real((kf * power.reshape(1, -1)) @ kf.conj().T) / big_n ** 2  # Cov(S_r, S_q)
        w = 1.0 / self.counts
        mean_e, var_e = [], []
        for r in range(len(self.counts)):
            c = cov[: r + 1, : r + 1] * w[: r + 1][None, :]  # W Σ, W = diag(1 / n_r)
            mean_e.append(float(np.trace(c)))
            var_e.append(2.0 * float(np.sum(c * c.T)))
        mean_e, var_e = np.maximum(mean_e, 1e-12), np.maximum(var_e, 1e-24)
        self.scale = var_e / (2 * mean_e)  # E_R ≈ scale · χ²(dof)
        self.dof = 2 * mean_e ** 2 / var_e
        self.sd_shell = np.sqrt(np.maximum(np.diag(cov), 1e-24))  # of each S_r
        # what moving gains in background alone (noise of this spectrum): the gain to beat
        white = rng.standard_normal((_CENTRING_NULL_PLACES,) + (self.n,) * 3)
        noise = np.real(np.fft.ifftn(np.fft.fftn(white, axes=(1, 2, 3)) * np.sqrt(power / big_n), axes=(1, 2, 3)))
        noise -= noise.mean(axis=(1, 2, 3), keepdims=True)
        _, here, best, _ = self._search_cubes(noise.astype(np.float32), None)
        self.min_gain = max(_CENTRING_GAIN, float(np.quantile(best - here, _CENTRING_NULL_QUANTILE)))

    def _significance(self, energy: np.ndarray, r: int) -> np.ndarray:
        """Wilson–Hilferty normal score of ``energy / scale`` as a χ² with ``dof`` degrees."""
        x, nu = energy / self.scale[r], self.dof[r]
        a = 2.0 / (9.0 * nu)
        return (np.cbrt(np.maximum(x, 0.0) / nu) - (1.0 - a)) / math.sqrt(a)

    def search(self, vol, cells: np.ndarray):
        """For candidates at working voxels ``cells``: the best place's offset (working voxels),
        the significance at ``cells`` and at the best place, and the diameter (tomogram voxels)
        of the best place's most significant window."""
        return self._search_cubes(*self._cubes(vol, cells))

    def _search_cubes(self, cubes: np.ndarray, inside: np.ndarray | None = None):
        """:meth:`search` on prepared cubes (``n``³, z-scored, clipped, mean-free; ``inside``:
        which voxels lie in the tomogram, None for all). A shell partly outside counts its
        energy per voxel inside (``S_r² / n_r,in``: the same expectation in background), and a
        place outside the tomogram is never the best."""
        import scipy.fft as sfft

        n, reach = self.n, self.reach
        cf = sfft.rfftn(cubes, axes=(1, 2, 3))
        mf = None if inside is None else sfft.rfftn(inside.astype(np.float32), axes=(1, 2, 3))
        if self._kernels_rf is None:
            self._kernels_rf = sfft.rfftn(self.kernels, axes=(1, 2, 3))
        kf = self._kernels_rf
        inner = slice(self.h - reach, self.h + reach + 1)
        m = len(cubes)
        energy = np.zeros((m, (2 * reach + 1) ** 3))
        best = np.full(energy.shape, -np.inf)
        sums = []  # S_r at every place
        for r in range(self.radii[-1] + 1):
            s_r = sfft.irfftn(cf * kf[r], s=(n, n, n), axes=(1, 2, 3))[:, inner, inner, inner].reshape(m, -1)
            sums.append(s_r)
            if mf is None:
                energy += s_r * s_r / self.counts[r]
            else:
                n_in = sfft.irfftn(mf * kf[r], s=(n, n, n), axes=(1, 2, 3))[:, inner, inner, inner].reshape(m, -1)
                energy += s_r * s_r / np.maximum(np.rint(n_in), 1.0)
            if r in self.radii:
                np.maximum(best, self._significance(energy, r), out=best)
        if inside is not None:  # the places themselves must lie in the tomogram
            best[~inside[:, inner, inner, inner].reshape(m, -1)] = -np.inf
        top = best.argmax(axis=1)
        rows = np.arange(m)
        off = np.stack(np.unravel_index(top, (2 * reach + 1,) * 3), axis=1) - reach
        z_shell = np.stack([s[rows, top] for s in sums], axis=1) / self.sd_shell[None, :]
        return off, best[:, best.shape[1] // 2], best[rows, top], self._extent(z_shell)

    def _extent(self, z_shell: np.ndarray) -> np.ndarray:
        """Diameter (tomogram voxels) out to the last shell whose density differs from the
        background by ``_SHELL_Z`` before two shells in a row that do not (NaN: none does)."""
        m, k = z_shell.shape
        last = np.full(m, -1)
        quiet = np.zeros(m, int)
        open_ = np.ones(m, bool)
        for r in range(k):
            loud = np.abs(z_shell[:, r]) >= _SHELL_Z
            last = np.where(open_ & loud, r, last)
            quiet = np.where(loud, 0, quiet + 1)
            open_ &= ~((last >= 0) & (quiet >= 2))
        return np.where(last >= 0, (2 * last + 1.0) * self.b, np.nan)


def _robust_standardise(a: np.ndarray) -> np.ndarray:
    med = np.median(a, axis=0)
    mad = np.median(np.abs(a - med), axis=0) * 1.4826
    sd = np.where(mad > 1e-9, mad, np.maximum(a.std(axis=0), 1e-9))
    return (a - med) / sd


def profile_embedding(volume, zyx, diameter_vox, largest_vox: float) -> np.ndarray:
    """Radial profiles out to the range's largest size, then the log size (module doc, step 2)."""
    from .descriptors import radial_profiles

    # against the local background at the range's largest size, as the profile check reads
    # (docs/benchmark.md, "Round 23": a slope across the tomogram spread the clusters)
    prof = np.nan_to_num(radial_profiles(volume, zyx, largest_vox, n_shells=_N_SHELLS, reach=_REACH))
    size = np.log(np.asarray(diameter_vox, float))[:, None]
    return np.hstack([prof, size]).astype(np.float32)


def cluster_embedding(embedding: np.ndarray, min_cluster_size: int | None = None, seed: int = 0):
    """HDBSCAN clusters of the standardised embedding after PCA (module doc, step 3).

    Returns the cluster of each row (``-1`` for none), numbered by size, largest first, and
    the PCA-reduced coordinates the map is drawn from.
    """
    from sklearn.cluster import HDBSCAN
    from sklearn.decomposition import PCA

    n = len(embedding)
    z = _robust_standardise(np.asarray(embedding, float))
    z[:, -1] *= _SIZE_WEIGHT
    k = min(_N_COMPONENTS, z.shape[1], n)
    reduced = PCA(n_components=k, random_state=seed).fit_transform(z) if n > 2 else z
    m = min_cluster_size or max(10, int(round(_MIN_CLUSTER_SHARE * n)))
    if n < 2 * m:
        return np.full(n, -1, int), reduced
    labels = HDBSCAN(min_cluster_size=m, min_samples=min(5, m), cluster_selection_method="leaf",
                     copy=True).fit_predict(reduced)
    ids, counts = np.unique(labels[labels >= 0], return_counts=True)
    order = ids[np.argsort(-counts, kind="stable")]
    renum = np.full(labels.max() + 2 if len(labels) else 1, -1)
    renum[order] = np.arange(len(order))
    return np.where(labels >= 0, renum[labels], -1), reduced


def map_2d(reduced: np.ndarray, seed: int = 0) -> np.ndarray:
    """t-SNE map of the reduced embedding (2D; a line for fewer than 5 candidates)."""
    from sklearn.manifold import TSNE

    n = len(reduced)
    if n < 5 or not float(np.max(np.std(reduced, axis=0))) > 1e-12:  # too few, or all alike: a line
        return np.column_stack([np.arange(n, dtype=float), np.zeros(n)])
    perplexity = float(min(30.0, max(2.0, (n - 1) / 3.0)))
    return TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(reduced)


def volume_stats(volume):
    """The tomogram's mean and standard deviation as the network reads them (a central block):
    its units for the averages, and its fingerprint in ``explore.json``."""
    from .data import compute_norm_stats, make_geometry

    return compute_norm_stats(volume, make_geometry(1, False))


#: What is said of a cluster :func:`likely_noise` flags.
LIKELY_NOISE = "weak blobs at the smallest size: likely noise"


def likely_noise(diameter_vox, score, smallest_vox: float, all_scores) -> bool:
    """A cluster of blobs at the range's smallest size, weaker than the typical candidate: what
    noise gives (white noise answers the smallest scale most); say so before it becomes labels."""
    return bool(len(score) and np.median(diameter_vox) <= 1.01 * smallest_vox
                and np.median(score) < np.median(all_scores))


def volume_fingerprint(volume) -> list[float]:
    """The density at a fixed 6 × 6 × 6 grid of places (10–90 % of each axis): tells a
    tomogram from another of the same size and statistics (a flipped or re-processed copy)."""
    idx = [np.unique(np.rint(np.linspace(0.1, 0.9, 6) * (n - 1)).astype(int)) for n in np.shape(volume)]
    pts = np.stack(np.meshgrid(*idx, indexing="ij"), -1).reshape(-1, 3)
    return [round(float(volume[tuple(p)]), 6) for p in pts]


def class_averages(volume, zyx, cluster, half_box: int, stats=None) -> dict:
    """Per cluster, the mean central xy slice (three slices thick) of its members, z-scored
    (``stats``: :func:`volume_stats` when already computed)."""
    stats = stats or volume_stats(volume)
    shape = np.asarray(np.shape(volume))
    out = {}
    for c in sorted(int(c) for c in np.unique(cluster) if c >= 0):
        acc, n = np.zeros((2 * half_box + 1, 2 * half_box + 1)), 0
        for p in np.rint(zyx[np.asarray(cluster) == c]).astype(int):
            lo = p - np.array([1, half_box, half_box])
            hi = p + np.array([2, half_box + 1, half_box + 1])
            if np.any(lo < 0) or np.any(hi > shape):
                continue
            acc += np.asarray(volume[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]], float).mean(0)
            n += 1
        out[c] = ((acc / max(n, 1)) - stats.mean1) / stats.std1 if n else acc
    return out


def _relay(steps, stage: str, say):
    """Drive a ``(k, n)``-yielding generator, yielding :class:`ExploreProgress` (``say(k, n)``:
    its line, or a word for "word k of n"); return its value."""
    from .utils import relay

    line = say if callable(say) else (lambda k, n: f"{say} {k} of {n}")
    return (yield from relay(steps, lambda s: ExploreProgress(stage, s[0], s[1] + 1, line(*s))))


def explore(volume, voxel_size_a: float, config: ExploreConfig | None = None
            ) -> Generator[ExploreProgress, None, ExploreResult]:
    """Candidates, embedding, clusters, map and class averages of one tomogram.

    Parameters
    ----------
    volume : (Z, Y, X) array
        The tomogram (a memory map is fine).
    voxel_size_a : float
        Voxel size (Å): turns the diameter range into voxels.
    config : ExploreConfig, optional

    Yields :class:`ExploreProgress`; returns :class:`ExploreResult`. Raises
    :class:`CetpickError` for a range that does not fit, or when no blobs are found.
    """
    import time

    cfg = (config or ExploreConfig()).validate()
    if not (voxel_size_a and float(voxel_size_a) > 0):
        raise CetpickError("The tomogram's voxel size is unknown: give it (Å) to turn the diameter range into voxels.")
    shape = tuple(int(s) for s in np.shape(volume))
    lo, hi = diameter_range_vox(cfg, voxel_size_a, shape)
    t0 = time.perf_counter()
    yield ExploreProgress("candidates", 0, 1, f"looking for blobs of {cfg.diameter_range_a[0]:g}–"
                                              f"{cfg.diameter_range_a[1]:g} Å")
    zyx, diam, score = yield from _relay(
        iter_find_candidates(volume, (lo, hi), cfg.max_candidates, cfg.floor, cfg.dark_particles),
        "candidates", lambda k, n: f"looking for blobs and their centres: {100 * k // n} %")
    yield ExploreProgress("candidates", 1, 1, f"{len(zyx)} candidates")
    if len(zyx) < 2:
        raise CetpickError(f"Found {len(zyx)} blob{'s' * (len(zyx) != 1)} of {cfg.diameter_range_a[0]:g}–"
                           f"{cfg.diameter_range_a[1]:g} Å: check the diameter range and the voxel size "
                           f"({voxel_size_a:g} Å), or lower the blob score floor.")
    if cfg.embedding == "encoder":
        from .explore_encoder import train_encoder

        feats, encoder = yield from _relay(train_encoder(volume, zyx, hi, steps=cfg.encoder_steps, seed=cfg.seed),
                                           "embedding", "encoder step")
        emb = np.hstack([feats, np.log(diam.astype(float))[:, None]]).astype(np.float32)
    else:
        emb, encoder = profile_embedding(volume, zyx, diam, hi), None
    yield ExploreProgress("embedding", 1, 1, f"{emb.shape[1]} numbers per candidate ({cfg.embedding})")
    cluster, reduced = cluster_embedding(emb, cfg.min_cluster_size, cfg.seed)
    n_clusters = int(cluster.max()) + 1 if len(cluster) else 0
    yield ExploreProgress("clusters", 1, 1, f"{n_clusters} clusters, {int((cluster < 0).sum())} candidates in none")
    xy = map_2d(reduced, cfg.seed)
    yield ExploreProgress("map", 1, 1, "2D map drawn")
    half_box = int(math.ceil(_REACH * hi))
    stats = volume_stats(volume)
    averages = class_averages(volume, zyx, cluster, half_box, stats)
    info = {"config": {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(cfg).items()},
            "diameter_range_vox": [round(lo, 2), round(hi, 2)], "n_candidates": int(len(zyx)),
            "n_clusters": n_clusters, "n_unclustered": int((cluster < 0).sum()),
            "clusters": {str(c): {"members": int((cluster == c).sum()),
                                  "median_diameter_a": round(float(np.median(diam[cluster == c])) * voxel_size_a, 1),
                                  "median_score": round(float(np.median(score[cluster == c])), 3),
                                  "likely_noise": likely_noise(diam[cluster == c], score[cluster == c], lo, score)}
                         for c in range(n_clusters)},
            "volume_stats": [float(stats.mean1), float(stats.std1)],
            "fingerprint": volume_fingerprint(volume),
            "elapsed_s": round(time.perf_counter() - t0, 1)}
    return ExploreResult(zyx, diam, score, emb, np.asarray(xy, float), cluster.astype(int), averages,
                         float(voxel_size_a), shape, info, encoder)


def write_exploration(out_dir, result: ExploreResult, layout=None, tomogram_path=None) -> dict:
    """Write an exploration folder: candidates (CSV, x y z in the tomogram file's frame, with
    size, score, cluster, map position and embedding), a summary (JSON), the class averages
    (npz), an overview (HTML: the map coloured by cluster, each cluster's average) and, with
    the ``encoder`` embedding, the encoder (``encoder.pt``, loads with ``weights_only=True``).

    Everything is written to a temporary folder beside ``out_dir`` first and moved in at the
    end, so a failure leaves no half-written files. Returns the paths written.
    """
    from .io.points import write_points

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".explore-", dir=out))
    try:
        paths = {"candidates": tmp / CANDIDATES_FILE, "summary": tmp / SUMMARY_FILE,
                 "averages": tmp / AVERAGES_FILE, "overview": tmp / OVERVIEW_FILE}
        write_points(paths["candidates"], result.zyx, features=result.features(), fmt="csv", layout=layout,
                     shape_zyx=result.shape_zyx)
        summary = {**result.info, "voxel_size_a": result.voxel_size_a, "shape_zyx": list(result.shape_zyx),
                   "tomogram": str(tomogram_path) if tomogram_path else None}
        paths["summary"].write_text(json.dumps(summary, indent=2))
        np.savez(paths["averages"], **{f"cluster_{c}": a.astype(np.float32) for c, a in result.averages.items()})
        from ._explore_overview import overview_html

        paths["overview"].write_text(overview_html(result, tomogram=Path(tomogram_path).name if tomogram_path else None,
                                                   folder=out))
        if result.encoder is not None:
            import torch

            paths["encoder"] = tmp / ENCODER_FILE
            torch.save(result.encoder, paths["encoder"])
        final = {}
        for key, p in paths.items():
            os.replace(p, out / p.name)
            final[key] = out / p.name
        if result.encoder is None:  # an earlier exploration's encoder does not belong to these candidates
            (out / ENCODER_FILE).unlink(missing_ok=True)
        return final
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def read_cluster_labels(spec: str, layout=None, shape_zyx=None, voxel_size_a: float | None = None,
                        tomogram=None, volume=None) -> np.ndarray:
    """The zyx of one cluster's members from ``DIR:ID`` (an exploration folder and a cluster).

    With ``shape_zyx`` / ``voxel_size_a`` / ``volume``: a clear error when the exploration was of
    another tomogram — another shape, voxel size, or density (mean and spread of the central
    block, :func:`volume_stats`: tomograms of one data set often share their size) — whose
    positions would mean other places here.
    """
    from .checkpoint import voxel_sizes_differ
    from .io.points import read_points

    folder, cluster_id = _split_spec(spec)
    summary = _summary(folder)
    there = tuple(summary.get("shape_zyx") or ())
    other = False
    if volume is not None and summary.get("volume_stats"):
        st, (m0, s0) = volume_stats(volume), summary["volume_stats"]
        other = abs(st.mean1 - m0) > 1e-4 * s0 or abs(st.std1 / s0 - 1) > 1e-4
        seen = summary.get("fingerprint")
        if seen and not other and (there == tuple(np.shape(volume))):
            now = volume_fingerprint(volume)
            other = len(now) != len(seen) or not np.allclose(now, seen, rtol=0, atol=1e-4 * s0 + 1e-6)
    if other or (shape_zyx is not None and there and there != tuple(int(v) for v in shape_zyx)) or voxel_sizes_differ(
            summary.get("voxel_size_a"), voxel_size_a):
        raise CetpickError(
            f"{folder} explored {summary.get('tomogram') or 'another tomogram'} ({'×'.join(map(str, there))} voxels "
            f"at {summary.get('voxel_size_a', 0):g} Å), not {tomogram or 'this tomogram'} "
            f"({'×'.join(map(str, shape_zyx or ()))} voxels at {voxel_size_a or 0:g} Å): explore this tomogram "
            "first, with the same layout options.")
    path = folder / CANDIDATES_FILE
    if not path.is_file():
        raise CetpickError(f"{folder}: no {CANDIDATES_FILE} there (run cetpick explore --out-dir {folder} first).")
    pts = read_points(path, fmt="csv", layout=layout, shape_zyx=shape_zyx)
    if "cluster" not in pts.features:
        raise CetpickError(f"{path}: no 'cluster' column (not an exploration's candidates file).")
    mask = members_of(pts.features["cluster"].to_numpy(int), cluster_id)
    return np.asarray(pts.zyx)[mask]


def _split_spec(spec: str) -> tuple[Path, int]:
    folder, sep, cid = str(spec).rpartition(":")
    if not sep or not folder:
        raise CetpickError(f"--labels-from-cluster needs FOLDER:CLUSTER (an exploration folder and a cluster "
                           f"number), got {spec!r}.")
    try:
        return Path(folder), int(cid)
    except ValueError:
        raise CetpickError(f"The cluster in {spec!r} must be a whole number, got {cid!r}.") from None


def _summary(folder: Path) -> dict:
    path = folder / SUMMARY_FILE
    if not path.is_file():
        raise CetpickError(f"{folder}: no {SUMMARY_FILE} there (run cetpick explore --out-dir {folder} first).")
    try:
        summary = json.loads(path.read_text())
        if not isinstance(summary.get("clusters"), dict):
            raise KeyError("clusters")
    except (ValueError, KeyError, AttributeError):
        raise CetpickError(f"{path}: not an exploration summary.") from None
    return summary


def cluster_summary(spec: str) -> dict:
    """What ``explore.json`` says of the cluster in ``DIR:ID`` (members, median size in Å)."""
    folder, cluster_id = _split_spec(spec)
    clusters = _summary(folder)["clusters"]
    if str(cluster_id) not in clusters:
        there = ", ".join(sorted(clusters, key=int)) or "none"
        raise CetpickError(f"There is no cluster {cluster_id} in {folder}: the clusters are {there}.")
    return clusters[str(cluster_id)]
