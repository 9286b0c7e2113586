"""What a place in a tomogram looks like, independent of the particle's orientation.

A particle's *radial profile* is the mean density in thin spherical shells around its centre,
out to ``reach`` diameters. Averaging over each shell makes it the same for any in-plane or
out-of-plane rotation and averages the noise of hundreds of voxels per shell, so a hollow
12 nm shell, a 15 nm barrel, a 25 nm ribosome and a gold bead give different profiles even
where single voxels are mostly noise. Each shell is split into its polar caps (within 60° of
the z axis) and its equatorial belt: the missing wedge smears density along z, so the two
halves differ, and the difference is itself a trait of a class's size and shape.

Pure numpy (no torch, no Qt); positions are ``(n, 3)`` zyx voxels of one tomogram. Used by
the review's "like my rejections" order (:func:`~napari_cetpick.review.lookalike_order`) and
by detection's *profile check* (:class:`ProfileModel`): how far a candidate's profile lies
from the labelled particles' profiles, a second opinion next to the network's score.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from functools import lru_cache
from itertools import product

import numpy as np

#: Shells per profile, and how far they reach, in particle diameters from the centre.
N_SHELLS = 8
REACH_DIAMETERS = 0.6
#: Larger particles are sampled on a coarser grid so that a profile costs the same at any size.
_SAMPLES_PER_DIAMETER = 16
#: A profile is read against the tomogram's *local* background: its density smoothed by a
#: Gaussian of this many particle diameters (sigma), wider than a particle (its own share of
#: the background about 3 %) and narrow enough to follow the slow changes of real tomograms
#: (ice thickness, a lamella's slope, carbon, the slab's top and bottom). Against the
#: tomogram's one mean, a smooth change of half a standard deviation across the tomogram took
#: a ribosome model from 357 picks for 357 to 145, the profile check charging every particle on
#: the dark side; 2 diameters followed a change of one standard deviation less well (F1 0.58
#: against 0.91; docs/benchmark.md, "Round 22").
BACKGROUND_DIAMETERS = 1.0
#: The background's grid samples every ``diameter / BACKGROUND_SAMPLES`` voxels.
BACKGROUND_SAMPLES = 4


@dataclass(frozen=True)
class Background:
    """A tomogram's local background (:data:`BACKGROUND_DIAMETERS`) on a coarse grid, read at any
    place by :meth:`at` (trilinear; in the tomogram's own units). Built by :meth:`of` from a
    z slice in every ``step``, each averaged in ``step`` × ``step`` blocks (a memory-mapped file is
    read one slice at a time, a ``step``-th of it): the Gaussian-weighted mean of what lies
    inside, or with ``linear`` a Gaussian-weighted straight line fitted along each axis
    (:func:`_local_linear_1d`), which follows a slope to the tomogram's faces where the mean
    leans towards its middle — what detection takes off the tomogram (:class:`Flattened`,
    ``DetectConfig.flatten``; docs/benchmark.md, "Round 32")."""

    grid: np.ndarray
    step: int

    @classmethod
    def of(cls, volume, diameter_vox: float, linear: bool = False) -> "Background":
        from scipy import ndimage

        diameter_vox = max(float(diameter_vox), 2.0)
        step = max(1, min(int(round(diameter_vox / BACKGROUND_SAMPLES)), *volume.shape[1:]))
        ny, nx = volume.shape[1] // step, volume.shape[2] // step
        zs = range(0, volume.shape[0], step)
        coarse = np.empty((len(zs), ny, nx), np.float32)
        for k, z in enumerate(zs):
            sl = np.asarray(volume[z, : ny * step, : nx * step], np.float32)
            coarse[k] = sl.reshape(ny, step, nx, step).mean(axis=(1, 3))
        sigma = BACKGROUND_DIAMETERS * diameter_vox / step
        if linear:
            for axis in range(3):
                _local_linear_1d(coarse, sigma, axis)
            return cls(coarse, step)
        # the weighted mean of what lies inside (nothing beyond the faces is made up: repeating
        # the edge weighed a particle on a face several times in its own background); the
        # Gaussian is separable, so the weight of what lies inside is a product of one weight per
        # axis, and both the filter and the division run in place (one grid in memory, not four)
        ndimage.gaussian_filter(coarse, sigma, mode="constant", output=coarse)
        for axis, n in enumerate(coarse.shape):
            inside = ndimage.gaussian_filter1d(np.ones(n, np.float32), sigma, mode="constant")
            coarse /= inside.reshape([-1 if a == axis else 1 for a in range(3)])
        return cls(coarse, step)

    def _grid_coords(self, zyx) -> np.ndarray:
        """Grid coordinates of tomogram positions (``(..., 3)``, last axis z, y, x)."""
        # slice k is z = k·step; block j in y and x spans j·step … j·step + step − 1
        return (np.asarray(zyx, float) - [0.0, (self.step - 1) / 2, (self.step - 1) / 2]) / self.step

    def at(self, zyx) -> np.ndarray:
        """The background at each of ``zyx`` ((n, 3) voxels)."""
        from scipy import ndimage

        coords = self._grid_coords(np.asarray(zyx, float).reshape(-1, 3))
        return ndimage.map_coordinates(self.grid, coords.T, order=1, mode="nearest")

    def _weights(self, axis: int, index) -> np.ndarray:
        """Linear interpolation weights ``(len(index), grid size)`` along one axis (beyond the
        outermost samples: those samples, as :meth:`at`)."""
        n = self.grid.shape[axis]
        pos = np.zeros((len(index), 3))
        pos[:, axis] = index
        c = np.clip(self._grid_coords(pos)[:, axis], 0.0, n - 1.0)
        k0 = np.minimum(np.floor(c).astype(int), n - 1)
        k1 = np.minimum(k0 + 1, n - 1)
        w = np.zeros((len(index), n), np.float32)
        rows = np.arange(len(index))
        np.add.at(w, (rows, k0), 1.0 - (c - k0))
        np.add.at(w, (rows, k1), c - k0)
        return w

    def over(self, z, y, x) -> np.ndarray:
        """The background on the box ``z × y × x`` (1-D voxel indices), float32: the same
        trilinear reading as :meth:`at`, one axis at a time."""
        out = np.tensordot(self._weights(0, z), self.grid, axes=(1, 0))
        out = np.tensordot(self._weights(1, y), out, axes=(1, 1)).transpose(1, 0, 2)
        return np.ascontiguousarray(np.tensordot(out, self._weights(2, x), axes=(2, 1)), np.float32)

    def subtract_from(self, volume: np.ndarray) -> np.ndarray:
        """``volume`` (a float array of the tomogram this was built from) less its background at
        every voxel, in place, a slab of z slices at a time; returns it."""
        ys, xs = np.arange(volume.shape[1]), np.arange(volume.shape[2])
        slab = 16
        for z0 in range(0, volume.shape[0], slab):
            zs = np.arange(z0, min(z0 + slab, volume.shape[0]))
            volume[zs[0]: zs[-1] + 1] -= self.over(zs, ys, xs).astype(volume.dtype, copy=False)
        return volume


def _local_linear_1d(grid: np.ndarray, sigma: float, axis: int) -> None:
    """Smooth ``grid`` (float32) along ``axis`` in place by a Gaussian-weighted straight-line fit
    at every place, read at the place itself (a local-linear smoother).

    Only what lies inside counts (nothing beyond the faces is made up: repeating the edge
    weighed a particle on a face several times in its own background). Inside, more than the
    kernel's reach from a face, the fit's slope term vanishes and this is the Gaussian mean;
    near a face, where the mean of what lies inside leans towards the tomogram's middle, the
    fitted line follows a slope to the face (a lamella's or the ice's: the mean left the side
    of a tomogram that darkens towards a face about 0.3 of the change darker than its middle;
    docs/benchmark.md, "Round 32"). Along an axis of fewer than three samples, the mean.
    Beside the grid, one grid of working space (and a product of the two for a moment). Not for
    the radial profiles' background (one particle diameter): in a crowded thin volume the line's
    freedom near every face took the neighbours' density into the background
    (``test_look_alikes_are_read_where_they_fit_best``)."""
    from scipy import ndimage

    n = grid.shape[axis]
    shape = [-1 if a == axis else 1 for a in range(3)]
    g1 = lambda a: ndimage.gaussian_filter1d(a, sigma, mode="constant")  # noqa: E731
    t = np.arange(n, dtype=np.float64) - (n - 1) / 2.0  # centred: small numbers in float32
    s0, s1, s2 = g1(np.ones(n)), g1(t), g1(t * t)
    m1 = s1 - t * s0  # the weights' moments about each place: sum w, sum w u, sum w u^2
    m2 = s2 - 2.0 * t * s1 + t * t * s0
    det = s0 * m2 - m1 * m1
    if n < 3 or not np.all(det > 1e-9 * s0 * s0 * max(float(sigma), 1.0) ** 2):
        ndimage.gaussian_filter1d(grid, sigma, axis=axis, mode="constant", output=grid)
        grid /= s0.astype(np.float32).reshape(shape)
        return
    tt = t.astype(np.float32).reshape(shape)
    ty = grid * tt
    ndimage.gaussian_filter1d(ty, sigma, axis=axis, mode="constant", output=ty)
    ndimage.gaussian_filter1d(grid, sigma, axis=axis, mode="constant", output=grid)
    ty -= tt * grid  # sum w u y
    ty *= (m1 / det).astype(np.float32).reshape(shape)
    grid *= (m2 / det).astype(np.float32).reshape(shape)
    grid -= ty


class Flattened:
    """A tomogram less its local background (:class:`Background`), read lazily: indexing with
    integers and slices of step 1 (``view[z0:z1, y0:y1, x0:x1]``) reads that part of the
    tomogram (a memory map: only that part) and subtracts the background there (float32).
    What the network sees at detection (``DetectConfig.flatten``)."""

    def __init__(self, volume, background: Background):
        self.volume, self.background = volume, background
        self.base = volume  # for the page release of a memory-mapped file (detect._file_map)
        self.shape = tuple(int(n) for n in volume.shape)
        self.ndim, self.dtype = 3, np.dtype(np.float32)

    def __getitem__(self, key) -> np.ndarray:
        key = key if isinstance(key, tuple) else (key,)
        key = key + (slice(None),) * (3 - len(key))
        box, drop = [], []
        for ax, k in enumerate(key):
            if isinstance(k, slice):
                start, stop, step = k.indices(self.shape[ax])
                if step != 1:
                    raise IndexError("a flattened tomogram is read in slices of step 1")
                box.append(slice(start, stop))
            else:
                i = int(k) + (self.shape[ax] if int(k) < 0 else 0)
                box.append(slice(i, i + 1))
                drop.append(ax)
        raw = np.asarray(self.volume[tuple(box)], np.float32)
        out = raw - self.background.over(*(np.arange(b.start, b.stop) for b in box))
        return out.reshape([n for ax, n in enumerate(out.shape) if ax not in drop])

    def __array__(self, dtype=None, copy=None):
        out = self[:, :, :]
        return out if dtype is None else out.astype(dtype)


def _centres(volume, pts, diameter_vox: float, stats, background) -> np.ndarray:
    """Per position, the density its profile is read against (see :func:`radial_profiles`)."""
    if isinstance(background, Background):
        return background.at(pts)
    if background == "local":
        return Background.of(volume, diameter_vox).at(pts)
    if background == "global":
        return np.full(len(pts), stats.mean1)
    raise ValueError(f"background must be 'local', 'global' or a Background, got {background!r}")


def _shell_index(half: int, step: int, reach_vox: float, n_shells: int) -> tuple[np.ndarray, np.ndarray]:
    """Flat indices into a sampled cube and the feature each of them adds to (``-1``: none)."""
    ax = np.arange(-half, half + 1, step, dtype=float)
    z, y, x = np.meshgrid(ax, ax, ax, indexing="ij")
    r = np.sqrt(z * z + y * y + x * x)
    shell = np.floor(r / reach_vox * n_shells).astype(int)
    polar = np.abs(z) >= 0.5 * np.maximum(r, 1e-9)  # within 60° of the z axis
    feature = np.where(shell < n_shells, 2 * shell + polar, -1).ravel()
    return feature, np.bincount(feature[feature >= 0], minlength=2 * n_shells)


def radial_profiles(volume, zyx, diameter_vox: float, n_shells: int = N_SHELLS,
                    reach: float = REACH_DIAMETERS, stats=None, return_inside: bool = False,
                    background="local"):
    """Orientation-free descriptors of the places ``zyx`` in ``volume``.

    Parameters
    ----------
    volume : (Z, Y, X) array
        The tomogram (a numpy array or a memory map; only the cubes around ``zyx`` are read).
    zyx : (n, 3) float
        Positions in voxels.
    diameter_vox : float
        The particle diameter in voxels: sets the shells' size.
    n_shells, reach : int, float
        Shells per profile, and their reach in diameters.
    stats : NormStats, optional
        The volume's unbinned normalisation (:func:`~napari_cetpick.data.compute_norm_stats`),
        for a caller that reads it in parts; computed here when not given.
    return_inside : bool
        Also return, per position and feature, the share of its sampled voxels that lie
        inside the tomogram (1 away from the faces).
    background : "local", "global" or Background
        What each profile is read against: the tomogram's local background at the position
        (:class:`Background`, :data:`BACKGROUND_DIAMETERS`; one already built may be given),
        or its one mean (``stats``; how profile models saved before round 22 read them).

    Returns
    -------
    (n, 2 * n_shells) float
        Per position, the mean density (in the tomogram's standard deviations from the background)
        of each shell's equatorial belt and polar caps, the centre first. Shells that fall
        outside the tomogram average what lies inside; a shell with nothing inside is NaN.
        With ``return_inside``, ``(profiles, inside)``, both of that shape.
    """
    pts = np.asarray(zyx, float).reshape(-1, 3)
    out = np.full((len(pts), 2 * n_shells), np.nan)
    inside_share = np.zeros((len(pts), 2 * n_shells))
    if len(pts) == 0:
        return (out, inside_share) if return_inside else out
    diameter_vox = max(float(diameter_vox), 2.0)
    reach_vox, step, half = _sampling(diameter_vox, reach)
    feature, template = _shell_index(half, step, reach_vox, n_shells)
    # a half-shell no sampled voxel falls in (the centre is one voxel, on neither cap) reads
    # as its other half
    twin = np.arange(2 * n_shells) ^ 1
    empty = template == 0
    from .data import compute_norm_stats, make_geometry

    if stats is None:
        stats = compute_norm_stats(volume, make_geometry(1, False))  # the network's own z-score, unbinned
    centres, sd = _centres(volume, pts, diameter_vox, stats, background), stats.std1
    ax = np.arange(-half, half + 1, step)
    for i, c in enumerate(np.rint(pts).astype(int)):
        read = _read_cube(volume, c, ax)
        if read is None:
            continue
        cube, mask = read
        f = feature[mask.ravel()]
        keep = f >= 0
        sums = np.bincount(f[keep], weights=(cube.ravel()[keep] - centres[i]) / sd, minlength=2 * n_shells)
        counts = np.bincount(f[keep], minlength=2 * n_shells)
        with np.errstate(invalid="ignore", divide="ignore"):
            out[i] = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
        inside_share[i] = counts / np.maximum(template, 1)
    out[:, empty] = out[:, twin[empty]]
    inside_share[:, empty] = inside_share[:, twin[empty]]
    return (out, inside_share) if return_inside else out


def _read_cube(volume, centre, ax):
    """``(values, mask)``: the voxels of ``volume`` at ``centre + ax`` along each axis that lie
    inside it (float, in the order of the mask's True entries) and the cube's mask of them;
    None where none do."""
    coords = [centre[k] + ax for k in range(3)]
    inside = [(v >= 0) & (v < volume.shape[k]) for k, v in enumerate(coords)]
    if not all(m.any() for m in inside):
        return None
    values = np.asarray(volume[np.ix_(*(v[m] for v, m in zip(coords, inside)))], float)
    mask = np.zeros((len(ax),) * 3, bool)
    mask[np.ix_(*inside)] = True
    return values, mask


def _sampling(diameter_vox: float, reach: float = REACH_DIAMETERS) -> tuple[float, int, int]:
    """``(reach, step, half)``: how far (voxels) a radial profile reaches from its centre, the
    step between its sampled voxels, and the half-width of the cube they are sampled on."""
    diameter_vox = max(float(diameter_vox), 2.0)
    reach_vox = reach * diameter_vox
    step = max(1, int(diameter_vox // _SAMPLES_PER_DIAMETER))
    return reach_vox, step, int(np.ceil(reach_vox / step)) * step


#: The places where :meth:`ProfileModel.excess` reads the look-alike hypotheses: the pick and
#: its 26 neighbours one sampling step away (zyx, in steps), the pick itself at :data:`_PICK`.
#: A detector's peak on a look-alike sits where it looks most like the class, about half a
#: voxel per axis from the look-alike's own centre (docs/benchmark.md, "Round 15"); each
#: hypothesis is read where it fits best (docs/benchmark.md, "Round 16").
NEIGHBOURS = np.array(list(product((-1, 0, 1), repeat=3)), int)
_PICK = int(np.flatnonzero(~NEIGHBOURS.any(axis=1))[0])


@lru_cache(maxsize=8)
def _neighbour_weights(half: int, step: int, reach_vox: float, n_shells: int):
    """Sparse ``(features × neighbours, voxels of the enlarged cube)`` map that sums each
    neighbour's shells out of one cube a step wider on every side, and the template's counts."""
    from scipy import sparse

    feature, template = _shell_index(half, step, reach_vox, n_shells)
    n_ax = 2 * (half // step) + 1
    big = n_ax + 2
    idx = np.arange(n_ax)
    zz, yy, xx = np.meshgrid(idx, idx, idx, indexing="ij")
    keep = feature >= 0
    rows, cols = [], []
    for k, (dz, dy, dx) in enumerate(NEIGHBOURS):
        flat = ((zz + 1 + dz) * big + (yy + 1 + dy)) * big + (xx + 1 + dx)
        rows.append(k * 2 * n_shells + feature[keep])
        cols.append(flat.ravel()[keep])
    rows, cols = np.concatenate(rows), np.concatenate(cols)
    w = sparse.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(len(NEIGHBOURS) * 2 * n_shells, big ** 3))
    return w, template


def neighbour_profiles(volume, zyx, diameter_vox: float, stats=None, n_shells: int = N_SHELLS,
                       reach: float = REACH_DIAMETERS, batch: int = 64, background="local"):
    """:func:`model_profiles` with ``return_inside`` at each position and at its 26 neighbours
    (:data:`NEIGHBOURS`, one sampling step apart): ``(profiles, inside)``, each ``(n, 27, 2 *
    n_shells)``; ``[:, _PICK]`` (13) is the position itself. One cube per position, read once;
    ``background`` as :func:`radial_profiles`, each of the 27 read against its own."""
    pts = np.rint(np.asarray(zyx, float).reshape(-1, 3)).astype(int)
    n_feat = 2 * n_shells
    out = np.zeros((len(pts), len(NEIGHBOURS), n_feat))
    share = np.zeros_like(out)
    if len(pts) == 0:
        return out, share
    reach_vox, step, half = _sampling(diameter_vox, reach)
    w, template = _neighbour_weights(half, step, float(reach_vox), n_shells)
    if stats is None:
        from .data import compute_norm_stats, make_geometry

        stats = compute_norm_stats(volume, make_geometry(1, False))
    around = (pts[:, None, :] + NEIGHBOURS[None] * step).reshape(-1, 3)
    centres = _centres(volume, around, diameter_vox, stats, background).reshape(len(pts), len(NEIGHBOURS))
    ax = np.arange(-half - step, half + step + 1, step)
    size = len(ax) ** 3
    twin = np.arange(n_feat) ^ 1
    empty = template == 0
    for start in range(0, len(pts), batch):
        part = pts[start:start + batch]
        vals = np.zeros((len(part), size))
        masks = np.zeros((len(part), size))
        for i, c in enumerate(part):
            read = _read_cube(volume, c, ax)
            if read is None:
                continue
            inside = read[1].ravel()
            vals[i, inside] = (read[0].ravel() - centres[start + i, _PICK]) / stats.std1
            masks[i, inside] = 1.0
        sums = np.asarray(w @ vals.T).T.reshape(len(part), len(NEIGHBOURS), n_feat)
        counts = np.asarray(w @ masks.T).T.reshape(len(part), len(NEIGHBOURS), n_feat)
        # each neighbour against its own background (read above against the position's)
        shift = (centres[start:start + len(part)] - centres[start:start + len(part), _PICK:_PICK + 1]) / stats.std1
        with np.errstate(invalid="ignore", divide="ignore"):
            prof = np.where(counts > 0, sums / np.maximum(counts, 1) - shift[..., None], 0.0)  # nothing inside: 0
        inside_share = counts / np.maximum(template, 1)
        prof[..., empty] = prof[..., twin[empty]]
        inside_share[..., empty] = inside_share[..., twin[empty]]
        out[start:start + len(part)], share[start:start + len(part)] = prof, inside_share
    return out, share


def profile_whole_inside(shape_zyx, zyx, diameter_vox: float, reach: float = REACH_DIAMETERS) -> np.ndarray:
    """Per point, whether its radial profile (:func:`radial_profiles`) lies whole inside a volume
    of ``shape_zyx``: every sampled voxel of every shell inside (its ``inside`` share 1)."""
    reach_vox, step, _ = _sampling(diameter_vox, reach)
    m = (np.ceil(reach_vox / step) - 1) * step  # the furthest sampled shell voxel along an axis (r < reach)
    c = np.rint(np.asarray(zyx, float).reshape(-1, 3))
    return np.all((c - m >= 0.0) & (c + m <= np.asarray(shape_zyx, float) - 1.0), axis=1)


#: A feature of a particle cut by a face with less than this share of its voxels inside the
#: tomogram is left out of its distance (:meth:`ProfileModel.excess`).
MIN_INSIDE_SHARE = 0.1
#: Fewer labels than this: no profile model (its spread would mean nothing).
MIN_PROFILE_LABELS = 5
#: Shrinkage of the labels' covariance: half towards its diagonal, plus this share of its mean
#: variance on the diagonal, so that 5 to 50 labels give a stable, invertible model.
_RIDGE_SHARE = 0.3
#: A profile counts as typical of the class within ``TYPICAL_SLACK`` times the distance that
#: ``TYPICAL_QUANTILE`` of the labels stay within, each measured against the model of the
#: others. The slack covers what the labels cannot show: a new tomogram's particles lie
#: further out (other neighbours, other noise), real clicks are off-centre and real
#: particles vary (docs/benchmark.md, "The profile check").
TYPICAL_QUANTILE = 0.9
TYPICAL_SLACK = 1.5
#: The tomogram's own candidates as the other hypothesis (:meth:`ProfileModel.charge`): their
#: Gaussian is fitted on the whole profiles among the candidates checked, at least this many.
POOL_MIN_ROWS = 64
#: A whole profile the labels explain worse than their median label does (relative to the
#: candidates) pays this share of the difference; one they explain better gains all of it. Half:
#: a class's own profiles shift between tomograms (other neighbours, other density), and at
#: full weight that shift cost whole ribosomes their picks (docs/benchmark.md, "Round 17").
POOL_PENALTY_SHARE = 0.5
#: A tomogram's contrast for the class (:meth:`ProfileModel.gain`) is read on its best
#: ``GAIN_CANDIDATES`` candidates by the network's score, only where at least ``GAIN_AGREE``
#: of them have the labels' shape, and is kept within [1 / ``GAIN_BOUND``, ``GAIN_BOUND``] of
#: the labels'. Another noise level or another density changes it (0.56–1.87 on the benchmark:
#: docs/benchmark.md, "Round 21").
GAIN_CANDIDATES = 50
GAIN_AGREE = 0.5
GAIN_BOUND = 2.0
#: A gain within this many standard errors of 1 reads as 1: the tomogram is read at the
#: labels' contrast unless it measurably differs.
GAIN_SIGNIFICANCE = 2.0
#: A class whose labels' mean profile lies within this squared Mahalanobis distance of the
#: tomogram's mean (0) under their own covariance (4 of their standard deviations: a small
#: particle at low SNR) keeps the labels' contrast: its best candidates are too often
#: look-alikes of its shape that stand out more (the 15 nm barrel at SNR 0.03 read 1.3–1.6 and
#: lost half its F1; docs/benchmark.md, "Round 21").
GAIN_MIN_SEPARATION = 16.0


def gain_differs(gain: float | None) -> bool:
    """Whether a contrast read by :meth:`ProfileModel.gain` is worth saying (not 1 to two
    decimals; None: no check ran)."""
    return gain is not None and round(float(gain), 2) != 1.0


def _gaussian(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and inverse shrunk covariance of the rows of ``a``."""
    mean = a.mean(0)
    cov = np.cov(a.T) if len(a) > 1 else np.zeros((a.shape[1], a.shape[1]))
    ridge = max(_RIDGE_SHARE * float(np.mean(np.diag(cov))), 1e-6)
    cov = 0.5 * cov + 0.5 * np.diag(np.diag(cov)) + ridge * np.eye(len(mean))
    return mean, np.linalg.inv(cov)


def model_profiles(volume, zyx, diameter_vox: float, stats=None, return_inside: bool = False,
                   background="local"):
    """:func:`radial_profiles` as the profile model reads them: a shell with nothing inside the
    tomogram counts as the background (0). ``return_inside`` and ``background`` as there."""
    if return_inside:
        prof, inside = radial_profiles(volume, zyx, diameter_vox, stats=stats, return_inside=True,
                                       background=background)
        return np.nan_to_num(prof), inside
    return np.nan_to_num(radial_profiles(volume, zyx, diameter_vox, stats=stats, background=background))


@dataclass
class ProfileReads:
    """What :meth:`ProfileModel.read` measured at a set of places, for :meth:`ProfileModel.charge`:
    the profiles at the places (and their inside shares), the labels' distance and covariance
    log-determinant there, and the look-alike term (0 without look-alikes)."""

    profiles: np.ndarray
    inside: np.ndarray
    dist: np.ndarray
    logdet: np.ndarray
    looks: np.ndarray

    @classmethod
    def concat(cls, parts) -> "ProfileReads":
        parts = list(parts)
        return cls(*(np.concatenate([getattr(p, f) for p in parts]) for f in
                     ("profiles", "inside", "dist", "logdet", "looks")))

    def whole(self) -> np.ndarray:
        """Per place, whether its profile lies whole inside the tomogram (every feature's share 1)."""
        return np.all(np.asarray(self.inside) >= 1.0 - 1e-9, axis=1)

    def pool(self) -> tuple | None:
        """``(mean, inv_cov)`` of the whole profiles among these places (the tomogram's own
        candidates: what the network proposes here), None with fewer than :data:`POOL_MIN_ROWS`."""
        rows = np.asarray(self.profiles)[self.whole()]
        return _gaussian(rows) if len(rows) >= POOL_MIN_ROWS else None


@dataclass
class ProfileModel:
    """What the labelled particles' radial profiles look like (each tomogram's voxel units).

    ``distance`` is the squared Mahalanobis distance of a profile from the labels' mean under
    their (shrunk) covariance; ``typical`` :data:`TYPICAL_SLACK` times the distance that
    :data:`TYPICAL_QUANTILE` of the labels stay within when each is measured against the
    model of the others (what a new particle of the class looks like, not the labels
    themselves), so that particles keep their score and only profiles more unusual than
    that lose some. Fitted at the end of training on the labels (:meth:`fit`), stored in the
    model file (:meth:`to_info`), and used by detection
    (:func:`napari_cetpick.detect.profile_check`).

    With :data:`MIN_PROFILE_LABELS` negatives or more (the review's rejected picks, clicked
    negatives), the model also holds their profiles' Gaussian (``neg_mean``, ``neg_inv_cov``),
    and with as many look-alikes that calibration found in the labelled region
    (:mod:`napari_cetpick.calibration`) theirs (``mined_mean``, ``mined_inv_cov``): a profile
    either explains better than the labels do is a look-alike, however close to the labels
    it lies (:meth:`excess`).
    """

    mean: np.ndarray
    inv_cov: np.ndarray
    typical: float
    n_labels: int
    n_shells: int = N_SHELLS
    reach: float = REACH_DIAMETERS
    neg_mean: np.ndarray | None = None
    neg_inv_cov: np.ndarray | None = None
    n_negatives: int = 0
    neg_margin: float = 0.0
    mined_mean: np.ndarray | None = None  # the look-alikes calibration found (napari_cetpick.calibration)
    mined_inv_cov: np.ndarray | None = None
    n_mined: int = 0
    mined_margin: float = 0.0
    # the same margins with the look-alike hypotheses read at their best of NEIGHBOURS (None: a
    # model saved before, read at the pick alone)
    neg_margin_around: float | None = None
    mined_margin_around: float | None = None
    # the labels' own profiles and each one's distance + log-determinant against the model of the
    # others (None: a model saved before, checked without the tomogram's candidates)
    label_rows: np.ndarray | None = None
    label_loo: np.ndarray | None = None
    # what every profile of this model is read against (radial_profiles' ``background``): "local"
    # since round 22; "global" (the tomogram's one mean) for a model saved before
    background: str = "global"

    @staticmethod
    def _profile_rows(volumes, points, diameter_vox: float, backgrounds) -> np.ndarray | None:
        rows = [model_profiles(v, pts, diameter_vox, background=backgrounds(i)) for i, (v, pts) in
                enumerate(zip(volumes, points)) if pts is not None and len(np.asarray(pts).reshape(-1, 3))]
        return np.vstack(rows) if rows else None

    @classmethod
    def fit(cls, volumes, labels, diameter_vox: float, negatives=None, mined=None,
            mined_gaussian=None, found=None) -> "ProfileModel | None":
        """The model of the labels in each of ``volumes`` (None with fewer than
        :data:`MIN_PROFILE_LABELS` labels in all); ``negatives`` (per volume, optional) the
        places the user said are not the class, ``mined`` (per volume, optional) the
        look-alikes calibration found: each one's Gaussian too, given as many.
        ``mined_gaussian`` (:meth:`look_alikes` of an earlier model, instead of ``mined``):
        the look-alikes' Gaussian as found before, its margins measured on these labels.

        ``found`` (per volume, optional): places of the class the model found itself (the
        picks a self-training round was sure of, :func:`napari_cetpick.calibration.sure_picks`).
        They join the labels' Gaussian and rows, but ``typical`` and the look-alike margins are
        measured on the labels alone where there are :data:`MIN_PROFILE_LABELS` of them: a
        sure pick is one the check already charged nothing, so measured on them the margins
        shrank to what the check allowed, not what a new particle needs (a barrel model's
        margin on its rejections 12.6 on the labels, 7.1 with its sure picks, where a fifth of
        the next tomogram's barrels lay past it: docs/benchmark.md, "Round 35")."""
        if mined is not None and mined_gaussian is not None:
            raise ValueError("Give the look-alikes either as places (mined) or as a Gaussian (mined_gaussian).")
        built = {}

        def backgrounds(i):  # each volume's local background built once, for labels, negatives and look-alikes
            if i not in built:
                built[i] = Background.of(volumes[i], diameter_vox)
            return built[i]

        def read_rows(places) -> np.ndarray:  # every volume's neighbour profiles of ``places``, one row per place
            read = [neighbour_profiles(v, pts, diameter_vox, background=backgrounds(i))[0]
                    for i, (v, pts) in enumerate(zip(volumes, places))
                    if pts is not None and len(np.asarray(pts).reshape(-1, 3))]
            return np.concatenate(read) if read else np.zeros((0, len(NEIGHBOURS), 2 * N_SHELLS))

        own = read_rows(labels)
        around = np.concatenate([own, read_rows(found)]) if found is not None else own
        if len(around) < MIN_PROFILE_LABELS:
            return None
        a = around[:, _PICK]
        mean, inv_cov = _gaussian(a)
        # how far a *new* particle lies: each label against the model of the others; the
        # margins read on the user's labels where there are enough of them (``found``)
        loo_d = []
        for i in range(len(a)):
            m_i, inv_i = _gaussian(np.delete(a, i, axis=0))
            loo_d.append(_mahalanobis(a[i], m_i, inv_i))
        measured = range(len(own)) if len(own) >= MIN_PROFILE_LABELS else range(len(a))
        loo = [float(loo_d[i][0][0]) for i in measured]
        parts = {}
        for key, points in (("neg", negatives), ("mined", mined)):
            if key == "mined" and mined_gaussian is not None:
                m, inv, count = mined_gaussian
            else:
                rows = cls._profile_rows(volumes, points, diameter_vox, backgrounds) if points is not None else None
                if rows is None or len(rows) < MIN_PROFILE_LABELS:
                    continue
                (m, inv), count = _gaussian(rows), len(rows)
            # how far onto their side (the log-likelihood ratio's term) a new particle may fall,
            # their side read at the label itself and at its best of its neighbours
            ratio, ratio_around = [], []
            for i in measured:
                (d, ld), (dn, ldn) = loo_d[i], _mahalanobis(around[i], m, inv)
                ratio.append(float(d[0] - dn[_PICK] + ld[0] - ldn[_PICK]))
                ratio_around.append(float(d[0] + ld[0] - np.min(dn + ldn)))
            parts.update({f"{key}_mean": m, f"{key}_inv_cov": inv, f"{key}_margin": _margin(ratio),
                          f"{key}_margin_around": _margin(ratio_around),
                          "n_negatives" if key == "neg" else "n_mined": int(count)})
        return cls(mean, inv_cov, TYPICAL_SLACK * float(np.quantile(loo, TYPICAL_QUANTILE)), len(a), **parts,
                   label_rows=a, label_loo=np.array([float(d[0] + ld[0]) for d, ld in loo_d]), background="local")

    def distance(self, profiles: np.ndarray) -> np.ndarray:
        """Squared Mahalanobis distance of each row from the labels' profiles."""
        return _mahalanobis(profiles, self.mean, self.inv_cov)[0]

    def excess(self, profiles: np.ndarray, inside=None, neighbours=None) -> np.ndarray:
        """How much further than ``typical`` each row lies (0 within it), plus, with the
        negatives' Gaussian, how much better the negatives explain it than the labels do.

        The second term is −2 × the log-likelihood ratio of the labels' and the negatives'
        Gaussians (the squared distance from the labels minus that from the negatives, plus
        the difference of their covariances' log-determinants: the same units as the first
        term), beyond ``neg_margin``: 1.5 times the value that 90 % of the labels stay within,
        each measured against the model of the others, so that where the user rejected
        particles of the class itself (off-centre picks, a bad region) a new particle is not
        charged for it; 0 where the labels explain the row better. Measured in
        docs/benchmark.md ("Round 11": a barrel model's rejected shells). The look-alikes
        calibration mined have a Gaussian of their own, with its own margin, and a row pays the
        larger of the two terms: the user's rejections stay as sharp as they were given, not
        blurred by guesses of another kind (docs/benchmark.md, "Round 12").

        ``inside`` (:func:`radial_profiles`' ``return_inside``): where a particle reaches past
        a face of the tomogram, each of its features averages only a share ``f`` of its
        voxels, so it varies more than the labels' whole ones did: that row's distances are
        measured under each covariance with each variance divided by ``f`` (the whole
        variance taken as the noise of a mean, an upper bound), leaving out features with
        less than :data:`MIN_INSIDE_SHARE` inside and scaled back to every feature's count.
        Without it, a ribosome cut by a face lay 20 times further out than a whole one
        (docs/benchmark.md, "Round 10").

        ``neighbours`` (:func:`neighbour_profiles` of the same rows, ``(profiles, inside)``):
        each look-alike Gaussian is read where it fits the row best, at the pick or one of its
        26 neighbours, against the labels' at the pick (a generalised likelihood ratio, the
        position a nuisance), beyond its ``*_margin_around`` (measured on the labels the same
        way). A detector's peak on a look-alike lies where it looks most like the class, so
        read at the pick alone a 12 nm shell passed as a 15 nm barrel (docs/benchmark.md,
        "Round 16"). Without them, or for a model saved before, both at the pick.
        """
        dist, logdet = _mahalanobis(profiles, self.mean, self.inv_cov, inside)
        return np.maximum(dist - self.typical, 0.0) + self._looks(dist, logdet, profiles, inside, neighbours)

    def _looks(self, dist, logdet, profiles, inside=None, neighbours=None) -> np.ndarray:
        """The look-alike term of :meth:`excess` (0 without look-alikes)."""
        worst = np.zeros_like(dist)
        for m, inv, margin, margin_around in (
                (self.neg_mean, self.neg_inv_cov, self.neg_margin, self.neg_margin_around),
                (self.mined_mean, self.mined_inv_cov, self.mined_margin, self.mined_margin_around)):
            if m is None:
                continue
            if neighbours is not None and margin_around is not None:
                nprof, ninside = neighbours
                k = nprof.shape[1]
                dneg, logdet_neg = _mahalanobis(nprof.reshape(-1, len(m)), m, inv,
                                                np.asarray(ninside).reshape(-1, len(m)))
                best = np.min((dneg + logdet_neg).reshape(-1, k), axis=1)
                worst = np.maximum(worst, dist + logdet - best - margin_around)
            else:
                dneg, logdet_neg = _mahalanobis(profiles, m, inv, inside)
                worst = np.maximum(worst, dist - dneg + logdet - logdet_neg - margin)
        return worst

    def background_of(self, volume, diameter_vox: float):
        """What this model's profiles are read against in ``volume`` (``background`` of
        :func:`radial_profiles`), built once for a caller that reads in parts."""
        return Background.of(volume, diameter_vox) if self.background == "local" else "global"

    def read(self, volume, zyx, diameter_vox: float, stats=None, background=None) -> ProfileReads:
        """The profiles at ``zyx`` read as this model needs them (:meth:`charge`); ``background``:
        :meth:`background_of` the volume (built here when not given)."""
        bg = background if background is not None else self.background_of(volume, diameter_vox)
        if self.reads_around():
            prof, inside = neighbour_profiles(volume, zyx, diameter_vox, stats, background=bg)
            (p, i), around = (prof[:, _PICK], inside[:, _PICK]), (prof, inside)
        else:
            (p, i), around = model_profiles(volume, zyx, diameter_vox, stats, return_inside=True, background=bg), None
        dist, logdet = _mahalanobis(p, self.mean, self.inv_cov, i)
        return ProfileReads(p, i, dist, logdet, self._looks(dist, logdet, p, i, neighbours=around))

    def charge(self, reads: ProfileReads, pool: tuple | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``(charge, excess)`` per place of ``reads``: what the check takes from its logit (in
        :meth:`excess`' units, before the weight) and :meth:`excess` itself.

        With ``pool`` (:meth:`ProfileReads.pool`: the Gaussian of the tomogram's own candidates)
        and the labels' rows (``label_rows``, ``label_loo``: fitted by this version), a whole profile's labels term is
        two-sided: −2 × the log-likelihood ratio of the labels' Gaussian against the candidates'
        (``distance + log|Σ_labels| − distance_to_candidates − log|Σ_candidates|``) minus the
        same for the median label (each label against the model of the others): a place the
        labels explain better than the candidates do, more so than their median label, gains
        score; one they explain worse pays :data:`POOL_PENALTY_SHARE` of the difference. The
        candidates are what the network proposes in this tomogram — the class and its
        look-alikes — so the ratio asks which of them a place is, where the one-sided distance
        only asked whether it is far from the labels: a 12 nm shell lies within a 15 nm
        barrel's typical distance but nearer the candidates' bulk (docs/benchmark.md, "Round
        17"). Cut profiles and a model saved before: the one-sided term. The look-alike term
        is added either way."""
        beyond = np.maximum(reads.dist - self.typical, 0.0)
        excess = beyond + reads.looks
        if pool is None or self.label_rows is None or len(self.label_rows) == 0:
            return excess, excess
        pm, pinv = pool
        dp, ldp = _mahalanobis(reads.profiles, pm, pinv, reads.inside)
        lp, llp = _mahalanobis(self.label_rows, pm, pinv)
        centre = float(np.median(self.label_loo - lp - llp))
        rel = reads.dist + reads.logdet - dp - ldp - centre
        two_sided = np.where(rel > 0, POOL_PENALTY_SHARE * rel, rel)
        return reads.looks + np.where(reads.whole(), two_sided, beyond), excess

    def _ray(self, rows) -> tuple[np.ndarray, np.ndarray]:
        """Per row, the multiple of the labels' mean that fits it best under their metric, and the
        squared distance left from that multiple (the row's shape against the labels')."""
        rows = np.asarray(rows, float).reshape(-1, len(self.mean))
        w = self.inv_cov @ self.mean
        factor = rows @ w / float(self.mean @ w)
        rest = rows - np.outer(factor, self.mean)
        return factor, np.einsum("ij,jk,ik->i", rest, self.inv_cov, rest)

    def separation(self) -> float:
        """The labels' mean profile's squared Mahalanobis distance from the tomogram's mean (0)
        under their covariance: how clearly the class stands out, in its own spread."""
        return float(self.mean @ self.inv_cov @ self.mean)

    def gain(self, profiles, inside=None) -> tuple[float, int]:
        """``(gain, rows read)``: how strong the class stands out in this tomogram against the
        labels, read on ``profiles`` (a tomogram's best candidates, :data:`GAIN_CANDIDATES`).

        The same particle's profile is weaker in a noisier tomogram (each tomogram is scaled to
        unit spread: the noise takes a larger share of it) and stronger where it holds fewer
        particles; at SNR 0.03 against its labels' 0.1 a ribosome model kept 36 picks for 357, every
        ribosome charged by the check. Each whole row's best multiple of the labels' mean
        (:meth:`_ray`) is read where the row has the labels' shape (what is left lies within
        :data:`TYPICAL_SLACK` × what :data:`TYPICAL_QUANTILE` of the labels leave); where at
        least :data:`GAIN_AGREE` of the rows (and :data:`MIN_PROFILE_LABELS`) do, the gain is
        their median multiple over the labels' own median, bounded by :data:`GAIN_BOUND`, where
        it differs from 1 by more than :data:`GAIN_SIGNIFICANCE` standard errors. Else
        (a tomogram without the class, a class ranked among look-alikes, a model saved before)
        1: the labels' contrast; and 1 for a class that stands out from the tomogram's mean by
        less than :data:`GAIN_MIN_SEPARATION` (:meth:`separation`)."""
        if (self.label_rows is None or len(self.label_rows) < MIN_PROFILE_LABELS
                or self.separation() < GAIN_MIN_SEPARATION):
            return 1.0, 0
        rows = np.asarray(profiles, float).reshape(-1, len(self.mean))
        if inside is not None:
            rows = rows[np.all(np.asarray(inside).reshape(len(rows), -1) >= 1.0 - 1e-9, axis=1)]
        if len(rows) < MIN_PROFILE_LABELS:
            return 1.0, 0
        label_factor, label_rest = self._ray(self.label_rows)
        factor, rest = self._ray(rows)
        agree = rest <= TYPICAL_SLACK * float(np.quantile(label_rest, TYPICAL_QUANTILE))
        n = int(agree.sum())
        reference = float(np.median(label_factor))
        if n < MIN_PROFILE_LABELS or n < GAIN_AGREE * len(rows) or reference <= 0:
            return 1.0, n
        ratio = factor[agree] / reference
        gain = float(np.median(ratio))
        # the median's standard error, from the spread of the rows' multiples (normal: IQR / 1.349)
        q1, q3 = np.quantile(ratio, [0.25, 0.75])
        if abs(gain - 1.0) <= GAIN_SIGNIFICANCE * 1.2533 * (q3 - q1) / 1.349 / np.sqrt(n):
            return 1.0, n
        return float(np.clip(gain, 1.0 / GAIN_BOUND, GAIN_BOUND)), n

    def at_gain(self, gain: float) -> "ProfileModel":
        """This model where the class's contrast is ``gain`` times the labels' (:meth:`gain`): the
        labels', the negatives' and the look-alikes' means and the labels' rows scaled, their
        covariances kept (the noise does not follow the contrast)."""
        if gain == 1.0:
            return self
        scaled = {k: None if getattr(self, k) is None else np.asarray(getattr(self, k)) * gain
                  for k in ("mean", "neg_mean", "mined_mean", "label_rows")}
        return replace(self, **scaled)

    def look_alikes(self) -> tuple | None:
        """``(mean, inv_cov, n)`` of the look-alikes calibration found (None: none), for a
        correction round to keep (:meth:`fit`'s ``mined_gaussian``). None too for a model whose
        profiles were read against the tomogram's one mean: a new fit reads them against the
        local background, so its look-alikes are mined anew."""
        if self.mined_mean is None or self.background != "local":
            return None
        return self.mined_mean, self.mined_inv_cov, self.n_mined

    def reads_around(self) -> bool:
        """Whether :meth:`excess` reads look-alike hypotheses around the pick (:data:`NEIGHBOURS`)."""
        return any(m is not None and a is not None for m, a in ((self.neg_mean, self.neg_margin_around),
                                                                (self.mined_mean, self.mined_margin_around)))

    def excess_at(self, volume, zyx, diameter_vox: float, stats=None) -> np.ndarray:
        """:meth:`excess` of the places ``zyx`` in ``volume``: their profiles read as this model needs them."""
        return self.charge(self.read(volume, zyx, diameter_vox, stats))[1]

    def to_info(self) -> dict:
        info = {"mean": _rounded(self.mean), "inv_cov": _rounded(self.inv_cov),
                "typical": round(self.typical, 6), "n_labels": int(self.n_labels),
                "n_shells": int(self.n_shells), "reach": float(self.reach), "background": self.background}
        if self.neg_mean is not None:
            info.update(neg_mean=_rounded(self.neg_mean), neg_inv_cov=_rounded(self.neg_inv_cov),
                        n_negatives=int(self.n_negatives), neg_margin=round(float(self.neg_margin), 6))
            if self.neg_margin_around is not None:
                info["neg_margin_around"] = round(float(self.neg_margin_around), 6)
        if self.mined_mean is not None:
            info.update(mined_mean=_rounded(self.mined_mean), mined_inv_cov=_rounded(self.mined_inv_cov),
                        n_mined=int(self.n_mined), mined_margin=round(float(self.mined_margin), 6))
            if self.mined_margin_around is not None:
                info["mined_margin_around"] = round(float(self.mined_margin_around), 6)
        if self.label_rows is not None:
            info.update(label_profiles=_rounded(self.label_rows), label_loo=_rounded(self.label_loo))
        return info

    @classmethod
    def from_info(cls, info) -> "ProfileModel | None":
        """The model stored by :meth:`to_info` (None when ``info`` holds none, or one of other shells)."""
        if not info:
            return None
        if int(info.get("n_shells", -1)) != N_SHELLS or float(info.get("reach", -1)) != REACH_DIAMETERS:
            return None
        parts = {}
        for key, count in (("neg", "n_negatives"), ("mined", "n_mined")):
            if info.get(f"{key}_mean") is not None:
                parts.update({f"{key}_mean": np.asarray(info[f"{key}_mean"], float),
                              f"{key}_inv_cov": np.asarray(info[f"{key}_inv_cov"], float),
                              f"{key}_margin": float(info.get(f"{key}_margin", 0.0)), count: int(info[count])})
                if info.get(f"{key}_margin_around") is not None:
                    parts[f"{key}_margin_around"] = float(info[f"{key}_margin_around"])
        if info.get("label_profiles") is not None:
            parts.update(label_rows=np.asarray(info["label_profiles"], float).reshape(-1, 2 * N_SHELLS),
                         label_loo=np.asarray(info["label_loo"], float))
        return cls(np.asarray(info["mean"], float), np.asarray(info["inv_cov"], float), float(info["typical"]),
                   int(info["n_labels"]), **parts, background=str(info.get("background", "global")))


def _margin(ratio) -> float:
    """How far onto a look-alike Gaussian's side a new particle may fall: :data:`TYPICAL_SLACK`
    times the value :data:`TYPICAL_QUANTILE` of the labels stay within (0 at least)."""
    return TYPICAL_SLACK * max(0.0, float(np.quantile(ratio, TYPICAL_QUANTILE)))


def _rounded(a) -> list:
    """A (nested) list of ``a``'s values to 6 decimals, for the model file."""
    return np.round(np.asarray(a, float), 6).tolist()


def _mahalanobis(profiles, mean: np.ndarray, inv_cov: np.ndarray, inside=None) -> tuple[np.ndarray, np.ndarray]:
    """``(distance, logdet)`` per row of ``profiles``: the squared Mahalanobis distance from
    ``mean`` under the covariance ``inv(inv_cov)``, and the log-determinant of the covariance
    it was measured under; rows cut by a face (``inside`` below 1) under the cut covariance
    :meth:`ProfileModel.excess` describes, both scaled back to every feature's count."""
    p = np.asarray(profiles, float).reshape(-1, len(mean))
    d = p - mean
    dist = np.einsum("ij,jk,ik->i", d, inv_cov, d)
    logdet = np.full(len(dist), -np.linalg.slogdet(inv_cov)[1])
    if inside is None:
        return dist, logdet
    share = np.asarray(inside, float).reshape(len(dist), -1)
    rows = np.flatnonzero(share.min(1) < 1.0)
    if len(rows):
        cov = np.linalg.inv(inv_cov)
        var = np.diag(cov)
        for i in rows:
            f = share[i]
            ok = f >= MIN_INSIDE_SHARE
            if not ok.any():
                continue
            c = cov[np.ix_(ok, ok)] + np.diag(var[ok] * (1.0 / f[ok] - 1.0))
            scale = len(mean) / int(ok.sum())
            dist[i] = float(d[i, ok] @ np.linalg.solve(c, d[i, ok])) * scale
            logdet[i] = np.linalg.slogdet(c)[1] * scale
    return dist, logdet


__all__ = ["radial_profiles", "model_profiles", "neighbour_profiles", "profile_whole_inside", "ProfileModel", "ProfileReads",
           "Background", "BACKGROUND_DIAMETERS",
           "N_SHELLS", "REACH_DIAMETERS", "MIN_PROFILE_LABELS", "MIN_INSIDE_SHARE", "NEIGHBOURS", "GAIN_CANDIDATES",
           "gain_differs"]
