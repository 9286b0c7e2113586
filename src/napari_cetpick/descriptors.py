"""What a place in a tomogram looks like, independent of the particle's orientation.

A particle's *radial profile* is the mean density in thin spherical shells around its centre,
out to ``reach`` diameters. Averaging over each shell makes it the same for any in-plane or
out-of-plane rotation and averages the noise of hundreds of voxels per shell, so a hollow
12 nm shell, a 15 nm barrel, a 25 nm ribosome and a gold bead give different profiles even
where single voxels are mostly noise. Each shell is split into its polar caps (within 60° of
the z axis) and its equatorial belt: the missing wedge smears density along z, so the two
halves differ, and the difference is itself a trait of a class's size and shape.

Pure numpy (no torch, no Qt); positions are ``(n, 3)`` zyx voxels of one tomogram. Used by
the review's "like my rejections" order (:func:`~napari_cetpick.review.lookalike_order`).
"""
from __future__ import annotations

import numpy as np

#: Shells per profile, and how far they reach, in particle diameters from the centre.
N_SHELLS = 8
REACH_DIAMETERS = 0.75
#: Larger particles are sampled on a coarser grid so that a profile costs the same at any size.
_SAMPLES_PER_DIAMETER = 16


def _shell_index(half: int, step: int, reach_vox: float, n_shells: int) -> tuple[np.ndarray, np.ndarray]:
    """Flat indices into a sampled cube and the feature each of them adds to (``-1``: none)."""
    ax = np.arange(-half, half + 1, step, dtype=float)
    z, y, x = np.meshgrid(ax, ax, ax, indexing="ij")
    r = np.sqrt(z * z + y * y + x * x)
    shell = np.floor(r / reach_vox * n_shells).astype(int)
    polar = np.abs(z) >= 0.5 * np.maximum(r, 1e-9)  # within 60° of the z axis
    feature = np.where(shell < n_shells, 2 * shell + polar, -1).ravel()
    return feature, np.bincount(feature[feature >= 0], minlength=2 * n_shells)


def _background(volume, rng_seed: int = 0, n: int = 200_000) -> tuple[float, float]:
    """The tomogram's mean and standard deviation, from a fixed random sample of voxels."""
    rng = np.random.default_rng(rng_seed)
    shape = np.asarray(volume.shape)
    idx = tuple(rng.integers(0, s, n) for s in shape)
    sample = np.asarray(volume[idx] if isinstance(volume, np.ndarray) else np.asarray(volume)[idx], float)
    sd = float(sample.std())
    return float(sample.mean()), sd if sd > 0 else 1.0


def radial_profiles(volume, zyx, diameter_vox: float, n_shells: int = N_SHELLS,
                    reach: float = REACH_DIAMETERS) -> np.ndarray:
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

    Returns
    -------
    (n, 2 * n_shells) float
        Per position, the mean density (in the tomogram's standard deviations from its mean)
        of each shell's equatorial belt and polar caps, the centre first. Shells that fall
        outside the tomogram average what lies inside; a shell with nothing inside is NaN.
    """
    pts = np.asarray(zyx, float).reshape(-1, 3)
    out = np.full((len(pts), 2 * n_shells), np.nan)
    if len(pts) == 0:
        return out
    diameter_vox = max(float(diameter_vox), 2.0)
    reach_vox = reach * diameter_vox
    step = max(1, int(diameter_vox // _SAMPLES_PER_DIAMETER))
    half = int(np.ceil(reach_vox / step)) * step
    feature, _ = _shell_index(half, step, reach_vox, n_shells)
    mean, sd = _background(volume)
    shape = np.asarray(volume.shape)
    ax = np.arange(-half, half + 1, step)
    for i, c in enumerate(np.rint(pts).astype(int)):
        coords = [c[k] + ax for k in range(3)]
        inside = [(v >= 0) & (v < shape[k]) for k, v in enumerate(coords)]
        if not all(m.any() for m in inside):
            continue
        cube = np.asarray(volume[np.ix_(coords[0][inside[0]], coords[1][inside[1]], coords[2][inside[2]])], float)
        mask = np.zeros((len(ax),) * 3, bool)
        mask[np.ix_(inside[0], inside[1], inside[2])] = True
        f = feature[mask.ravel()]
        keep = f >= 0
        sums = np.bincount(f[keep], weights=(cube.ravel()[keep] - mean) / sd, minlength=2 * n_shells)
        counts = np.bincount(f[keep], minlength=2 * n_shells)
        with np.errstate(invalid="ignore", divide="ignore"):
            out[i] = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
    return out


__all__ = ["radial_profiles", "N_SHELLS", "REACH_DIAMETERS"]
