"""Synthetic cryo-electron tomograms with known particle positions.

The simulator is the project's own. It builds a 3D Coulomb-potential-like density of
crowded macromolecules (pseudo-atom models in uniform random orientations), vesicle
membranes and gold beads inside a slightly tilted ice slab, images it the way a real tilt
series is recorded (single-axis tilt about y, CTF, additive noise) and reconstructs it by
weighted back-projection, so the missing wedge, CTF fringes and back-projection streaks are
real. Proteins are dark in the result, as in real reconstructions.

Physical model and simplifications
----------------------------------
- The sample is periodic along x (the axis perpendicular to the tilt axis), so the slab
  has no lateral edge at high tilt; the detector is wide enough that every voxel is seen
  at every tilt. Along y (the tilt axis) the particles are clipped and nothing wraps: the
  images are padded along y (with their edge values) before the CTF, the alignment shifts
  and the filtering, so a particle at a y face is cut by empty space. (Until round 19 of the
  accuracy issue they were not, and the two y faces were coupled; docs/benchmark.md,
  "Round 18".)
- Each class is a fixed pseudo-atom model; its atoms (5 Å Gaussians) make a fine template
  density that is resampled, rotated, at every particle of the class.
- Projections use linear interpolation along x for each z slice (a Joseph-type projector),
  weighted by the ray length 1/cos(tilt); back-projection is voxel-driven with linear
  interpolation on the detector.
- One defocus per tilt series (drawn between 2 and 4 um underfocus unless given) with a
  small per-tilt jitter; the defocus gradient across tilted images is ignored. The CTF is
  2D over the detector (u, y). Phase flipping is off by default (raw weighted
  back-projection); ``phase_flip=True`` flips phases of each noisy projection.
- Inelastic scattering in thicker ice at high tilt lowers the signal as
  exp(-path / 2 mfp), with path = ice thickness / cos(tilt) and a 350 nm mean free path.
- ``snr`` is signal variance / noise variance on the projections (CTF-modulated signal,
  over the whole tilt series); the noise is white Gaussian.
- The ice slab has no density of its own: a slab infinite in x and y lies entirely in
  the missing wedge, so it would not show in a reconstruction anyway.

Coordinates follow the package convention: ``(n, 3)`` float arrays in z, y, x voxel order
of the output volume, the centre of voxel ``i`` at ``i``.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import fft as sfft
from scipy import ndimage, sparse

from .errors import CetpickError, plain

__all__ = [
    "CLASS_DIAMETERS_A",
    "DEFAULT_CONCENTRATION",
    "SyntheticTomogram",
    "particle_atoms",
    "simulate_tomogram",
    "save_synthetic",
    "write_large_noise_tomogram",
]

#: Raised whenever the same arguments give a different volume, so that tomograms kept from an
#: earlier simulator are not read as this one's (2: nothing wraps along y).
SIMULATOR_VERSION = 2

#: Nominal particle diameter (Å) of each class.
CLASS_DIAMETERS_A: dict[str, float] = {
    "ribosome": 250.0,
    "proteasome": 150.0,
    "shell": 120.0,
    "globular": 70.0,
}

#: Default particle concentration, particles per (100 nm)^3 of ice (crowded cytosol-like).
DEFAULT_CONCENTRATION: dict[str, float] = {
    "ribosome": 12.0,
    "proteasome": 10.0,
    "shell": 10.0,
    "globular": 30.0,
}

# Each class is the same molecule in every tomogram, whatever the tomogram seed, so that a
# detector trained on one tomogram meets the same structures in another.
_TEMPLATE_SEEDS = {"ribosome": 1101, "proteasome": 2202, "shell": 3303, "globular": 4404}

# Mean excess potential over ice inside each class (arbitrary units); ribosomes are denser
# because half their mass is RNA.
_CLASS_CONTRAST = {"ribosome": 1.4, "proteasome": 1.0, "shell": 1.0, "globular": 1.0}
_GOLD_CONTRAST = 8.0  # gold scatters roughly an order of magnitude more than protein
_MEMBRANE_CONTRAST = 1.0  # peak of each lipid head-group layer
_GOLD_DIAMETER_A = 100.0
_INELASTIC_MFP_A = 3500.0  # inelastic mean free path in ice at 300 kV
_MIN_GAP_A = 10.0  # smallest surface-to-surface gap between placed objects


@dataclass
class SyntheticTomogram:
    """A simulated tomogram with its ground truth.

    Attributes
    ----------
    volume : np.ndarray
        (Z, Y, X) float32 reconstruction, zero mean and unit variance, proteins dark.
    voxel_size_a : float
        Voxel size (Å).
    particles : dict[str, np.ndarray]
        Class name -> (n, 3) zyx true centres (voxels, centre of mass of each particle).
    diameters_a : dict[str, float]
        Class name -> nominal particle diameter (Å).
    labels : np.ndarray
        (m, 3) zyx sparse labels: a subset of ``particles[label_class]`` inside
        ``label_region``, with optional click noise.
    label_class : str
        Class the labels were drawn from.
    label_region : tuple
        (z0, y0, x0, z1, y1, x1) voxel box (half-open) the labels were drawn in.
    seed : int
        Seed of the simulation.
    snr : float
        Signal-to-noise ratio (variance ratio) on the projections.
    distractors : dict[str, np.ndarray]
        "gold": (g, 3) zyx bead centres; "vesicle": (v, 4) zyx centre and radius (voxels).
    info : dict
        Imaging and sample parameters (defocus, tilt angles, ice thickness and tilt, ...).
    density : np.ndarray or None
        (Z, Y, X) float32 noise-free potential (proteins positive), when requested.
    """

    volume: np.ndarray
    voxel_size_a: float
    particles: dict[str, np.ndarray]
    diameters_a: dict[str, float]
    labels: np.ndarray
    label_class: str
    label_region: tuple
    seed: int
    snr: float
    distractors: dict[str, np.ndarray] = field(default_factory=dict)
    info: dict = field(default_factory=dict)
    density: np.ndarray | None = None

    @property
    def shape(self) -> tuple[int, int, int]:
        """Volume shape (Z, Y, X)."""
        return tuple(self.volume.shape)

    @property
    def diameters_px(self) -> dict[str, float]:
        """Class name -> nominal particle diameter in voxels."""
        return {k: v / self.voxel_size_a for k, v in self.diameters_a.items()}


# --------------------------------------------------------------------------- templates
def _inside_ellipsoid(p, centre, semi_axes):
    q = (p - np.asarray(centre, float)) / np.asarray(semi_axes, float)
    return np.einsum("ij,ij->i", q, q) <= 1.0


def _inside_sphere(p, centre, radius):
    return _inside_ellipsoid(p, centre, (radius, radius, radius))


def _ribosome_shape(p):
    # Large subunit, small subunit with head, two stalks, and the inter-subunit cleft.
    inside = _inside_ellipsoid(p, (-30, 0, 0), (85, 105, 100))
    inside |= _inside_ellipsoid(p, (68, 10, -10), (42, 95, 60))
    inside |= _inside_sphere(p, (92, 62, -12), 32)
    inside |= _inside_sphere(p, (-5, 98, 60), 24)
    inside |= _inside_ellipsoid(p, (-15, -100, 45), (18, 28, 18))
    # Inter-subunit cleft: a groove open to the outside, not a buried cavity.
    inside &= ~_inside_ellipsoid(p, (22, 0, 95), (22, 70, 45))
    return inside


def _proteasome_shape(p):
    # Four stacked heptameric rings (alpha7 beta7 beta7 alpha7) around a central channel.
    inside = np.zeros(len(p), bool)
    for i, zc in enumerate((-55.5, -18.5, 18.5, 55.5)):
        for k in range(7):
            phi = 2 * np.pi * k / 7 + (np.pi / 7) * (i % 2)
            c = np.array([zc, 38 * np.sin(phi), 38 * np.cos(phi)])
            # Subunit blob: radial 21 Å, tangential 18 Å, axial 19 Å semi-axes.
            d = p - c
            radial = d[:, 1] * np.sin(phi) + d[:, 2] * np.cos(phi)
            tangential = -d[:, 1] * np.cos(phi) + d[:, 2] * np.sin(phi)
            inside |= (radial / 21) ** 2 + (tangential / 18) ** 2 + (d[:, 0] / 19) ** 2 <= 1
    return inside


def _shell_shape(p):
    # Ferritin-like cage: 40-60 Å radius shell with pores on the 6 four-fold axes.
    r = np.linalg.norm(p, axis=1)
    inside = (r >= 40) & (r <= 60)
    for axis in np.vstack([np.eye(3), -np.eye(3)]):
        inside &= ~_inside_sphere(p, 50 * axis, 9)
    return inside


def _globular_shape(p):
    # Small two-domain protein.
    inside = _inside_ellipsoid(p, (0, -6, -4), (24, 28, 22))
    inside |= _inside_ellipsoid(p, (4, 18, 16), (16, 15, 17))
    return inside


_SHAPES = {
    "ribosome": _ribosome_shape,
    "proteasome": _proteasome_shape,
    "shell": _shell_shape,
    "globular": _globular_shape,
}


def particle_atoms(name: str, voxel_size_a: float = 10.0, max_atoms: int = 20000):
    """Pseudo-atom model of one particle class.

    Atoms fill the class's solid shape on a jittered grid, about four per voxel; their
    weights carry a smooth density variation (dense RNA or domain cores) so that the
    particle has inner structure. The model is fixed per class (own seed).

    Parameters
    ----------
    name : str
        Class name, one of ``CLASS_DIAMETERS_A``.
    voxel_size_a : float
        Voxel size (Å) the model will be splatted at; sets the atom spacing.
    max_atoms : int
        Upper bound on the number of atoms (coarser spacing for small voxels).

    Returns
    -------
    zyx_a : np.ndarray
        (n, 3) atom positions (Å) about the particle's centre of mass.
    weights : np.ndarray
        (n,) atom weights: the volume (Å^3) each atom stands for, so that splatting
        ``weights / voxel_size_a**3`` gives unit density inside the particle.
    """
    if name not in _SHAPES:
        raise CetpickError(f"Unknown particle class {name!r}; known: {', '.join(sorted(_SHAPES))}.")
    rng = np.random.default_rng(_TEMPLATE_SEEDS[name])
    half = CLASS_DIAMETERS_A[name] / 2 + 20.0  # box half-width enclosing the shape
    spacing_a = voxel_size_a / 1.6
    # Jittered grid rather than uniform draws: no Poisson clumping of atoms, so the density
    # is smooth at the voxel scale, yet no lattice shows through.
    g = np.arange(-half, half, spacing_a) + spacing_a / 2
    pts = np.stack(np.meshgrid(g, g, g, indexing="ij"), -1).reshape(-1, 3)
    pts = pts + rng.uniform(-0.5, 0.5, pts.shape) * spacing_a
    pts = pts[_SHAPES[name](pts)]
    solid_volume_a3 = len(pts) * spacing_a**3
    if len(pts) > max_atoms:
        keep = rng.choice(len(pts), max_atoms, replace=False)
        pts = pts[np.sort(keep)]
    # Each atom stands for an equal share of the solid volume, whatever the atom count.
    w = np.full(len(pts), solid_volume_a3 / len(pts))
    # Smooth +-30 % density variation: a few Gaussian "domains" of 25 Å.
    centres = pts[rng.choice(len(pts), 8, replace=False)]
    amps = rng.uniform(-0.3, 0.3, size=8)
    d2 = ((pts[:, None, :] - centres[None]) ** 2).sum(-1)
    w *= 1.0 + (amps * np.exp(-d2 / (2 * 25.0**2))).sum(1)
    com = (pts * w[:, None]).sum(0) / w.sum()
    return pts - com, w


# --------------------------------------------------------------------------- sampling
def _random_rotations(rng, n):
    """(n, 3, 3) rotation matrices, uniform on SO(3) (normalised Gaussian quaternions)."""
    q = rng.standard_normal((n, 4))
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    w, a, b, c = q.T
    return np.stack(
        [
            np.stack([1 - 2 * (b * b + c * c), 2 * (a * b - c * w), 2 * (a * c + b * w)], -1),
            np.stack([2 * (a * b + c * w), 1 - 2 * (a * a + c * c), 2 * (b * c - a * w)], -1),
            np.stack([2 * (a * c - b * w), 2 * (b * c + a * w), 1 - 2 * (a * a + b * b)], -1),
        ],
        axis=1,
    )


class _Placer:
    """Rejection sampler of non-overlapping spheres, periodic along x."""

    def __init__(self, shape):
        self.period_x = float(shape[2])
        self.centres = np.zeros((0, 3))
        self.radii = np.zeros(0)
        self.shells = np.zeros((0, 5))  # zyx, radius, half-thickness of vesicle membranes

    def _delta(self, c, others):
        d = others - c
        d[:, 2] -= self.period_x * np.round(d[:, 2] / self.period_x)
        return d

    def fits(self, c, r, gap):
        if len(self.radii):
            dist = np.linalg.norm(self._delta(c, self.centres), axis=1)
            if np.any(dist < self.radii + r + gap):
                return False
        if len(self.shells):
            dist = np.linalg.norm(self._delta(c, self.shells[:, :3]), axis=1)
            if np.any(np.abs(dist - self.shells[:, 3]) < self.shells[:, 4] + r + gap):
                return False
        return True

    def add(self, c, r):
        self.centres = np.vstack([self.centres, c])
        self.radii = np.append(self.radii, r)

    def add_shell(self, c, r, half_thickness):
        self.shells = np.vstack([self.shells, [*c, r, half_thickness]])


# --------------------------------------------------------------------------- painting
# The density is built in a work layout (Z, X, Y) so that it reshapes to (Z*X, Y) rows,
# one row per (z, x), as the projector needs; coordinates stay zyx. Particles are drawn by
# resampling a fine template density of their atom model, rotated, at each voxel.
def _template_density(atoms_a, weights, voxel_size_a, oversample=2):
    """Blurred density of an atom model on a grid ``oversample`` times finer than the voxels.

    Atoms are splatted trilinearly and blurred by a Gaussian of 5 Å (the pseudo-atom
    width) combined with half a voxel (anti-aliasing before resampling at voxel size).

    Returns
    -------
    grid : np.ndarray
        (n, n, n) float32 density, unit inside the particle; index ``centre`` is the origin.
    spacing_a : float
        Grid spacing (Å).
    centre : float
        Grid index of the particle's centre of mass, along each axis.
    radius_a : float
        Radius (Å) beyond which the density is zero.
    """
    spacing_a = voxel_size_a / oversample
    sigma_a = np.hypot(5.0, 0.5 * voxel_size_a)
    radius_a = np.linalg.norm(atoms_a, axis=1).max() + 3 * sigma_a + spacing_a
    n = 2 * int(np.ceil(radius_a / spacing_a)) + 3
    centre = (n - 1) / 2
    pos = atoms_a / spacing_a + centre
    base = np.floor(pos).astype(np.int64)
    frac = pos - base
    flat_all, w_all = [], []
    for corner in np.ndindex(2, 2, 2):
        w = weights.copy()
        for axis, d in enumerate(corner):
            w *= frac[:, axis] if d else 1 - frac[:, axis]
        idx = base + np.array(corner)
        flat_all.append(np.ravel_multi_index(idx.T, (n, n, n)))
        w_all.append(w)
    grid = np.bincount(
        np.concatenate(flat_all), np.concatenate(w_all), minlength=n**3
    ).reshape(n, n, n) / spacing_a**3
    grid = ndimage.gaussian_filter(grid, sigma_a / spacing_a, mode="constant")
    return grid.astype(np.float32), spacing_a, centre, radius_a


def _paint_template(work, template, centre_zyx, rotation, voxel_size_a, scale):
    """Add a rotated copy of a template density centred at ``centre_zyx`` (voxels).

    Each voxel of the particle's box pulls its value from the template by trilinear
    interpolation at ``rotation.T @ (voxel - centre)``; x wraps, z and y clip.
    """
    grid, spacing_a, gc, radius_a = template
    nz, nx, ny = work.shape
    c = np.asarray(centre_zyx, float)
    reach = radius_a / voxel_size_a
    z = np.arange(max(int(np.floor(c[0] - reach)), 0), min(int(np.ceil(c[0] + reach)), nz - 1) + 1)
    y = np.arange(max(int(np.floor(c[1] - reach)), 0), min(int(np.ceil(c[1] + reach)), ny - 1) + 1)
    x = np.arange(int(np.floor(c[2] - reach)), int(np.ceil(c[2] + reach)) + 1)[:nx]
    if z.size == 0 or y.size == 0:
        return
    f = voxel_size_a / spacing_a
    dz = ((z - c[0]) * f)[:, None, None]
    dx = ((x - c[2]) * f)[None, :, None]
    dy = ((y - c[1]) * f)[None, None, :]
    coords = np.empty((3, z.size, x.size, y.size))
    for k in range(3):
        coords[k] = rotation[0, k] * dz + rotation[2, k] * dx + rotation[1, k] * dy + gc
    values = ndimage.map_coordinates(grid, coords, order=1, mode="constant", cval=0.0)
    work[np.ix_(z, x % nx, y)] += values * np.float32(scale)


def _paint_radial(work, centre_zyx, reach, profile):
    """Add ``profile(r)`` (r: distance in voxels) around a centre, within ``reach`` voxels."""
    nz, nx, ny = work.shape
    c = np.asarray(centre_zyx, float)
    z = np.arange(max(int(c[0] - reach), 0), min(int(c[0] + reach) + 2, nz))
    y = np.arange(max(int(c[1] - reach), 0), min(int(c[1] + reach) + 2, ny))
    x = np.arange(int(np.floor(c[2] - reach)), int(np.ceil(c[2] + reach)) + 1)
    if z.size == 0 or y.size == 0:
        return
    x = x[: nx]  # a reach wider than the volume must not paint a voxel twice
    r = np.sqrt(
        (z[:, None, None] - c[0]) ** 2
        + (x[None, :, None] - c[2]) ** 2
        + (y[None, None, :] - c[1]) ** 2
    )
    xs = x % nx
    work[np.ix_(z, xs, y)] += profile(r).astype(np.float32)


# --------------------------------------------------------------------------- imaging
def _projector(nz, nx, nu, angles_rad):
    """Sparse forward projector (T*U, Z*X): linear interpolation along x, x periodic."""
    nt = len(angles_rad)
    zc = np.arange(nz) - (nz - 1) / 2
    uc = np.arange(nu) - (nu - 1) / 2
    cos, sin = np.cos(angles_rad), np.sin(angles_rad)
    # x position where the ray of detector bin u at tilt t crosses slice z.
    xf = (uc[None, :, None] / cos[:, None, None] - zc[None, None, :] * (sin / cos)[:, None, None])
    xf = xf + (nx - 1) / 2
    x0 = np.floor(xf)
    w1 = (xf - x0).astype(np.float32)
    x0 = x0.astype(np.int64) % nx
    ray = (1.0 / cos).astype(np.float32)[:, None, None]  # path length per z step
    zoff = (np.arange(nz) * nx)[None, None, :]
    cols = np.stack([zoff + x0, zoff + (x0 + 1) % nx], axis=-1).astype(np.int32)
    vals = np.stack([(1 - w1) * ray, w1 * ray], axis=-1)
    per_row = 2 * nz
    indptr = np.arange(0, nt * nu * per_row + 1, per_row, dtype=np.int64)
    return sparse.csr_matrix(
        (vals.reshape(-1), cols.reshape(-1), indptr), shape=(nt * nu, nz * nx)
    )


def _backprojector(nz, nx, nu, angles_rad):
    """Sparse voxel-driven back-projector (Z*X, T*U): linear interpolation on the detector."""
    nt = len(angles_rad)
    zc = (np.arange(nz) - (nz - 1) / 2)[:, None, None]
    xc = (np.arange(nx) - (nx - 1) / 2)[None, :, None]
    uf = xc * np.cos(angles_rad) + zc * np.sin(angles_rad) + (nu - 1) / 2  # (Z, X, T)
    u0 = np.floor(uf)
    w1 = (uf - u0).astype(np.float32)
    u0 = u0.astype(np.int64)
    if u0.min() < 0 or u0.max() + 1 >= nu:
        raise AssertionError("detector too narrow for the volume")
    toff = (np.arange(nt) * nu)[None, None, :]
    cols = np.stack([toff + u0, toff + u0 + 1], axis=-1).astype(np.int32)
    vals = np.stack([1 - w1, w1], axis=-1)
    per_row = 2 * nt
    indptr = np.arange(0, nz * nx * per_row + 1, per_row, dtype=np.int64)
    return sparse.csr_matrix(
        (vals.reshape(-1), cols.reshape(-1), indptr), shape=(nz * nx, nt * nu)
    )


def _matmul_chunked(mat, dense, out_rows, chunk=32):
    """``mat @ dense`` in column chunks, which keeps the gathered rows in cache."""
    out = np.empty((out_rows, dense.shape[1]), np.float32)
    for c0 in range(0, dense.shape[1], chunk):
        block = np.ascontiguousarray(dense[:, c0 : c0 + chunk])
        out[:, c0 : c0 + chunk] = mat @ block
    return out


def _edge_padded(a, axis, n):
    """``a`` padded to length ``n`` along ``axis`` for a periodic FFT: the first half of the
    padding repeats the last slice, the second half the first, so that neither end of the
    data meets a step or the other end."""
    m = a.shape[axis]
    shape = list(a.shape)
    shape[axis] = n
    out = np.empty(shape, np.float32)
    index = [slice(None)] * a.ndim

    def put(sl, value):
        index[axis] = sl
        out[tuple(index)] = value

    def take(sl):
        index[axis] = sl
        return a[tuple(index)]

    put(slice(0, m), a)
    put(slice(m, m + (n - m) // 2), take(slice(m - 1, m)))
    put(slice(m + (n - m) // 2, n), take(slice(0, 1)))
    return out


def _electron_wavelength_a(voltage_kv):
    v = voltage_kv * 1e3
    return 12.2643 / np.sqrt(v * (1 + 0.97845e-6 * v))


def _ctf(k2, wavelength_a, defocus_a, cs_a, amplitude_contrast, bfactor_a2):
    """CTF for underfocus ``defocus_a`` > 0; positive at low frequency (dark particles)."""
    chi = np.pi * wavelength_a * defocus_a * k2 - 0.5 * np.pi * cs_a * wavelength_a**3 * k2**2
    a = amplitude_contrast
    return (np.sqrt(1 - a * a) * np.sin(chi) + a * np.cos(chi)) * np.exp(-bfactor_a2 * k2 / 4)


# --------------------------------------------------------------------------- public
def check_simulation_args(shape, voxel_size_a: float, snr: float, label_fraction: float = 0.3) -> None:
    """Raise :class:`CetpickError` (plain numbers, one line in the CLI) for settings that cannot work."""
    if len(tuple(shape)) != 3:
        raise CetpickError(f"The shape must be three sizes (z, y, x), not {plain(tuple(shape))}.")
    if min(int(s) for s in shape) < 8:
        raise CetpickError(f"The shape must be at least 8 voxels a side, not {plain(tuple(shape))}.")
    if not (float(voxel_size_a) > 0 and np.isfinite(voxel_size_a)):
        raise CetpickError(f"The voxel size must be a positive number of Å, not {plain(voxel_size_a)}.")
    if not snr > 0:
        raise CetpickError(f"snr must be > 0, not {plain(snr)}.")
    if not 0 <= label_fraction <= 1:
        raise CetpickError(f"label_fraction must lie in [0, 1], not {plain(label_fraction)}.")


def simulate_tomogram(
    shape=(64, 256, 256),
    voxel_size_a: float = 10.0,
    snr: float = 0.3,
    seed: int = 0,
    label_class: str = "ribosome",
    label_fraction: float = 0.3,
    label_region: tuple | None = None,
    label_noise_px: float = 0.0,
    classes=None,
    concentration: dict | None = None,
    n_particles: dict | None = None,
    ice_thickness_a: float | None = None,
    ice_tilt_deg: float | None = None,
    vesicles_per_um2: float = 12.0,
    gold_per_um2: float = 30.0,
    tilt_max_deg: float = 60.0,
    tilt_step_deg: float = 3.0,
    defocus_um: float | None = None,
    voltage_kv: float = 300.0,
    cs_mm: float = 2.7,
    amplitude_contrast: float = 0.07,
    bfactor_a2: float = 200.0,
    phase_flip: bool = False,
    alignment_error_px: float = 0.25,
    return_density: bool = False,
) -> SyntheticTomogram:
    """Simulate a cryo-electron tomogram with crowded particles and sparse labels.

    Parameters
    ----------
    shape : tuple of int
        Output (Z, Y, X) in voxels; Z is the thickness axis.
    voxel_size_a : float
        Voxel size (Å).
    snr : float
        Signal variance / noise variance on the projections: about 1 is easy (particles
        plain to see), 0.3 typical of a cellular tomogram, 0.1 hard, 0.05 very hard.
    seed : int
        Seed; the same seed and parameters give an identical volume.
    label_class : str
        Class the sparse labels are drawn from.
    label_fraction : float
        Share of ``label_class`` particles inside ``label_region`` that are labelled.
    label_region : tuple, optional
        (z0, y0, x0, z1, y1, x1) half-open voxel box; default the xy quarter
        ``y < Y/2, x < X/2`` over all z.
    label_noise_px : float
        Standard deviation (voxels, per axis) of click noise added to labels.
    classes : sequence of str, optional
        Classes to place; default all of ``CLASS_DIAMETERS_A``.
    concentration : dict, optional
        Class -> particles per (100 nm)^3 of ice; defaults from ``DEFAULT_CONCENTRATION``.
    n_particles : dict, optional
        Class -> exact number of particles to try to place (overrides ``concentration``).
    ice_thickness_a : float, optional
        Ice slab thickness (Å); default 65 % of the volume thickness.
    ice_tilt_deg : float, optional
        Tilt (degrees) of the slab about the x axis, its mid-plane rising along y;
        default uniform in ±2°, reduced where the slab would leave the volume.
    vesicles_per_um2, gold_per_um2 : float
        Areal densities of vesicles and 10 nm gold beads (beads sit on the ice surfaces).
    tilt_max_deg, tilt_step_deg : float
        Tilt series from -tilt_max to +tilt_max about the y axis.
    defocus_um : float, optional
        Underfocus (µm, positive); default uniform in [2, 4].
    voltage_kv, cs_mm, amplitude_contrast, bfactor_a2 : float
        Microscope: 300 kV, Cs 2.7 mm, 7 % amplitude contrast, envelope B-factor (Å^2).
    phase_flip : bool
        Phase-flip each projection before back-projection (CTF correction).
    alignment_error_px : float
        Standard deviation (pixels) of residual tilt-series misalignment per image.
    return_density : bool
        Also return the noise-free potential in ``density``.

    Returns
    -------
    SyntheticTomogram
        Volume (Z, Y, X) float32, proteins dark, with ground truth and sparse labels.

    Notes
    -----
    Particles are placed largest first by rejection sampling (no two exclusion spheres
    closer than 1 nm); a class that no longer fits ends with fewer particles than asked.
    """
    check_simulation_args(shape, voxel_size_a, snr, label_fraction)
    nz, ny, nx = (int(s) for s in shape)
    rng = np.random.default_rng(seed)
    classes = list(CLASS_DIAMETERS_A) if classes is None else list(classes)
    for c in classes:
        if c not in CLASS_DIAMETERS_A:
            raise CetpickError(f"Unknown particle class {c!r}; known: {', '.join(sorted(CLASS_DIAMETERS_A))}.")
    if label_class not in classes:
        raise CetpickError(f"label_class {label_class!r} is not among the simulated classes "
                           f"({', '.join(classes)}).")
    conc = dict(DEFAULT_CONCENTRATION, **(concentration or {}))
    vox = float(voxel_size_a)

    # ---- ice slab: mid-plane z_mid(y), tilted about x only (x is periodic)
    thick = (0.65 * nz * vox if ice_thickness_a is None else float(ice_thickness_a)) / vox
    thick = min(thick, nz - 2.0)
    tilt = rng.uniform(-2.0, 2.0) if ice_tilt_deg is None else float(ice_tilt_deg)
    slope = np.tan(np.radians(tilt))
    max_slope = max((nz - 2 - thick) / 2, 0.0) / max((ny - 1) / 2, 1.0)
    slope = float(np.clip(slope, -max_slope, max_slope))

    def z_mid(y):
        return (nz - 1) / 2 + slope * (y - (ny - 1) / 2)

    area_um2 = nx * ny * vox**2 * 1e-8
    ice_volume_100nm3 = nx * ny * thick * vox**3 * 1e-9
    placer = _Placer((nz, ny, nx))
    gap = _MIN_GAP_A / vox

    # ---- gold beads on both ice surfaces
    r_gold = _GOLD_DIAMETER_A / 2 / vox
    gold = []
    for _ in range(int(rng.poisson(gold_per_um2 * area_um2))):
        for _try in range(50):
            y, x = rng.uniform(0, ny - 1), rng.uniform(0, nx - 1)
            side = rng.choice([-1.0, 1.0])
            z = z_mid(y) + side * (thick / 2 - r_gold)
            c = np.array([z, y, x])
            if thick > 2 * r_gold and placer.fits(c, r_gold, gap):
                placer.add(c, r_gold)
                gold.append(c)
                break

    # ---- vesicles: lipid bilayers (two head-group layers 4 nm apart) inside the ice
    vesicles = []
    half_membrane = 30.0 / vox  # exclusion half-thickness of the membrane
    r_max = min(500.0 / vox, thick / 2 - half_membrane - gap)
    r_min = 150.0 / vox
    if r_max > r_min:
        for _ in range(int(rng.poisson(vesicles_per_um2 * area_um2))):
            for _try in range(50):
                r = rng.uniform(r_min, r_max)
                y, x = rng.uniform(0, ny - 1), rng.uniform(0, nx - 1)
                room = thick / 2 - r - half_membrane
                z = z_mid(y) + rng.uniform(-room, room)
                c = np.array([z, y, x])
                # No gold inside or on the vesicle; vesicles neither touch nor nest.
                clear = r + 2 * half_membrane + gap
                ok = placer.fits(c, r + half_membrane, gap) and all(
                    np.linalg.norm(placer._delta(c, v[None, :3])[0]) > v[3] + clear
                    for v in vesicles
                )
                if ok:
                    placer.add_shell(c, r, half_membrane)
                    vesicles.append(np.array([*c, r]))
                    break

    # ---- particles, largest first
    particles: dict[str, np.ndarray] = {}
    rotations: dict[str, np.ndarray] = {}
    templates = {}
    for name in sorted(classes, key=lambda c: -CLASS_DIAMETERS_A[c]):
        atoms_a, weights = particle_atoms(name, vox)
        templates[name] = (atoms_a, weights)
        r_excl = (np.linalg.norm(atoms_a, axis=1).max() + 0.5 * vox) / vox
        if n_particles is not None and name in n_particles:
            count = int(n_particles[name])
        else:
            count = int(rng.poisson(conc.get(name, 0.0) * ice_volume_100nm3))
        room = thick / 2 - r_excl
        placed = []
        if room >= 0:
            misses = 0
            while len(placed) < count and misses < 300:
                y, x = rng.uniform(0, ny - 1), rng.uniform(0, nx - 1)
                c = np.array([z_mid(y) + rng.uniform(-room, room), y, x])
                if placer.fits(c, r_excl, gap):
                    placer.add(c, r_excl)
                    placed.append(c)
                    misses = 0
                else:
                    misses += 1
        particles[name] = np.array(placed, float).reshape(-1, 3)
        rotations[name] = _random_rotations(rng, len(placed))

    # ---- density in the (Z, X, Y) work layout
    work = np.zeros((nz, nx, ny), np.float32)
    for name, centres in particles.items():
        template = _template_density(*templates[name], vox)
        for c, rot in zip(centres, rotations[name]):
            _paint_template(work, template, c, rot, vox, _CLASS_CONTRAST[name])

    edge = 0.5  # voxel-scale soft edge keeps analytic objects band-limited
    for c in gold:
        _paint_radial(
            work, c, r_gold + 3,
            lambda r: _GOLD_CONTRAST * 0.5 * (1 - np.tanh((r - r_gold) / edge)),
        )
    sigma_head = max(5.0 / vox, 0.5)
    for v in vesicles:
        rv = v[3]
        _paint_radial(
            work, v[:3], rv + 4,
            lambda r, rv=rv: _MEMBRANE_CONTRAST * (
                np.exp(-((r - rv - 20 / vox) ** 2) / (2 * sigma_head**2))
                + np.exp(-((r - rv + 20 / vox) ** 2) / (2 * sigma_head**2))
                + 0.3 * np.exp(-((r - rv) ** 2) / (2 * (2 * sigma_head) ** 2))
            ),
        )

    # ---- tilt series: project, CTF, attenuate, noise
    angles_deg = np.arange(-tilt_max_deg, tilt_max_deg + 1e-6, tilt_step_deg)
    angles = np.radians(angles_deg)
    nt = len(angles)
    # Detector wide enough that every voxel projects inside it at every tilt.
    reach = np.max(np.abs((nx - 1) / 2 * np.cos(angles)) + (nz - 1) / 2 * np.abs(np.sin(angles)))
    nu = int(2 * np.ceil(reach) + 4)
    proj = _matmul_chunked(_projector(nz, nx, nu, angles), work.reshape(nz * nx, ny), nt * nu)
    density = work if return_density else None
    del work
    proj = proj.reshape(nt, nu, ny)

    wavelength = _electron_wavelength_a(voltage_kv)
    defocus = rng.uniform(2.0, 4.0) if defocus_um is None else float(defocus_um)
    defoci_a = (defocus + rng.normal(0.0, 0.05, nt)) * 1e4
    shifts = rng.normal(0.0, alignment_error_px, size=(nt, 2))
    # Along u the images are left as they are (the sample is periodic along x by design);
    # along y they are padded, so that the CTF and the shifts do not couple the two y faces.
    nyp = sfft.next_fast_len(2 * ny, real=True)
    ku = sfft.fftfreq(nu)[:, None] / vox
    ky = sfft.rfftfreq(nyp)[None, :] / vox
    k2 = (ku**2 + ky**2).astype(np.float32)
    attenuation = np.exp(-thick * vox / np.cos(angles) / (2 * _INELASTIC_MFP_A))
    spec = sfft.rfft2(_edge_padded(proj, 2, nyp), axes=(1, 2), workers=-1)
    for t in range(nt):
        h = _ctf(k2, wavelength, defoci_a[t], cs_mm * 1e7, amplitude_contrast, bfactor_a2)
        phase = np.exp(-2j * np.pi * (ku * vox * shifts[t, 0] + ky * vox * shifts[t, 1]))
        # Minus sign: underfocus images show protein darker than ice.
        spec[t] *= (-attenuation[t] * h * phase).astype(np.complex64)
    proj = np.ascontiguousarray(sfft.irfft2(spec, s=(nu, nyp), axes=(1, 2), workers=-1)[:, :, :ny], dtype=np.float32)
    del spec
    signal_var = float(proj.var())
    noise_sd = np.sqrt(signal_var / snr) if signal_var > 0 else 1.0
    proj += rng.standard_normal(proj.shape, dtype=np.float32) * np.float32(noise_sd)

    # ---- weighted back-projection: ramp filter along u (IMOD-like Gaussian roll-off)
    npad = sfft.next_fast_len(2 * nu, real=True)
    kup = sfft.fftfreq(npad)[:, None]
    ramp = np.abs(kup) * np.where(
        np.abs(kup) > 0.35, np.exp(-((np.abs(kup) - 0.35) ** 2) / (2 * 0.035**2)), 1.0
    )
    # Padded along u so that the ramp sees no step at the detector ends; along y as above
    # where phase flipping filters along y (the ramp alone is constant along y).
    nyf = nyp if phase_flip else ny
    padded = _edge_padded(_edge_padded(proj, 1, npad), 2, nyf)
    del proj
    spec = sfft.rfft2(padded, axes=(1, 2), workers=-1)
    del padded
    kyp = sfft.rfftfreq(nyf)[None, :]
    filt = np.broadcast_to(ramp, (npad, nyf // 2 + 1)).astype(np.float32)
    for t in range(nt):
        f = filt
        if phase_flip:
            k2p = ((kup / vox) ** 2 + (kyp / vox) ** 2).astype(np.float32)
            f = filt * np.sign(
                _ctf(k2p, wavelength, defoci_a[t], cs_mm * 1e7, amplitude_contrast, 0.0)
            ).astype(np.float32)
        spec[t] *= f
    filtered = sfft.irfft2(spec, s=(npad, nyf), axes=(1, 2), workers=-1)[:, :nu, :ny]
    del spec
    filtered = np.ascontiguousarray(filtered, dtype=np.float32).reshape(nt * nu, ny)
    rec = _matmul_chunked(_backprojector(nz, nx, nu, angles), filtered, nz * nx)
    del filtered
    volume = np.ascontiguousarray(rec.reshape(nz, nx, ny).transpose(0, 2, 1))
    del rec
    volume -= volume.mean(dtype=np.float64)
    volume /= max(float(volume.std(dtype=np.float64)), 1e-12)
    if density is not None:
        density = np.ascontiguousarray(density.transpose(0, 2, 1))

    # ---- sparse labels
    if label_region is None:
        label_region = (0, 0, 0, nz, ny // 2, nx // 2)
    label_region = tuple(int(v) for v in label_region)
    lo, hi = np.array(label_region[:3]), np.array(label_region[3:])
    pool = particles[label_class]
    inside = np.all((pool >= lo) & (pool < hi), axis=1) if len(pool) else np.zeros(0, bool)
    idx = np.flatnonzero(inside)
    n_lab = int(round(label_fraction * len(idx)))
    if label_fraction > 0 and len(idx) and n_lab == 0:
        n_lab = 1
    chosen = np.sort(rng.choice(idx, n_lab, replace=False)) if n_lab else np.zeros(0, int)
    labels = pool[chosen].copy()
    if label_noise_px > 0 and len(labels):
        labels += rng.normal(0.0, label_noise_px, labels.shape)
        labels = np.clip(labels, 0.0, np.array([nz, ny, nx], float) - 1.0)

    info = {
        "defocus_um": float(defocus),
        "tilt_angles_deg": angles_deg.tolist(),
        "voltage_kv": float(voltage_kv),
        "cs_mm": float(cs_mm),
        "amplitude_contrast": float(amplitude_contrast),
        "bfactor_a2": float(bfactor_a2),
        "phase_flip": bool(phase_flip),
        "ice_thickness_a": float(thick * vox),
        "ice_tilt_deg": float(np.degrees(np.arctan(slope))),
        "noise_sd": float(noise_sd),
        "label_indices": chosen.tolist(),
        "counts": {k: int(len(v)) for k, v in particles.items()},
    }
    return SyntheticTomogram(
        volume=volume,
        voxel_size_a=vox,
        particles=particles,
        diameters_a={c: CLASS_DIAMETERS_A[c] for c in classes},
        labels=labels,
        label_class=label_class,
        label_region=label_region,
        seed=int(seed),
        snr=float(snr),
        distractors={
            "gold": np.array(gold, float).reshape(-1, 3),
            "vesicle": np.array(vesicles, float).reshape(-1, 4),
        },
        info=info,
        density=density,
    )


def save_synthetic(sim: SyntheticTomogram, out_dir, stem: str = "tomo") -> dict[str, Path]:
    """Write a simulated tomogram, its truth and its labels.

    Files: ``<stem>.mrc`` (voxel size in the header), ``<stem>_truth_<class>.txt`` per
    class and ``<stem>_labels.txt`` (IMOD point text, via ``napari_cetpick.io``), and
    ``<stem>_info.json`` (diameters, label class and region, seed, SNR, imaging).

    Returns
    -------
    dict[str, Path]
        Keys "tomogram", "labels", "info" and "truth:<class>".
    """
    from napari_cetpick.io import write_points, write_tomogram

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    paths["tomogram"] = Path(
        write_tomogram(out_dir / f"{stem}.mrc", sim.volume, voxel_size_a=sim.voxel_size_a)
    )
    for name, zyx in sim.particles.items():
        paths[f"truth:{name}"] = Path(
            write_points(
                out_dir / f"{stem}_truth_{name}.txt", zyx, fmt="imod",
                voxel_size_a=sim.voxel_size_a, shape_zyx=sim.shape,
            )
        )
    paths["labels"] = Path(
        write_points(
            out_dir / f"{stem}_labels.txt", sim.labels, fmt="imod",
            voxel_size_a=sim.voxel_size_a, shape_zyx=sim.shape,
        )
    )
    meta = {
        "shape_zyx": list(sim.shape),
        "voxel_size_a": sim.voxel_size_a,
        "diameters_a": sim.diameters_a,
        "label_class": sim.label_class,
        "label_region": list(sim.label_region),
        "seed": sim.seed,
        "snr": sim.snr,
        "gold_zyx": sim.distractors.get("gold", np.zeros((0, 3))).tolist(),
        "vesicles_zyx_radius": sim.distractors.get("vesicle", np.zeros((0, 4))).tolist(),
        **{k: v for k, v in sim.info.items() if k != "label_indices"},
    }
    paths["info"] = out_dir / f"{stem}_info.json"
    paths["info"].write_text(json.dumps(meta, indent=1))
    return paths


def write_large_noise_tomogram(
    path, shape, voxel_size_a: float = 10.0, seed: int = 0, slab: int = 16
) -> Path:
    """Write a large float32 MRC of Gaussian noise with bounded memory.

    Not a realistic simulation: it exists to test memory use and tiling on big files. The
    file is written slab by slab through a memory map, so memory stays at a few slabs.

    Parameters
    ----------
    path : str or Path
        Output MRC file (overwritten).
    shape : tuple of int
        (Z, Y, X) voxels; Z is the thickness (file sections).
    voxel_size_a : float
        Voxel size (Å) stored in the header.
    seed : int
        Seed of the noise.
    slab : int
        Sections written per step.

    Returns
    -------
    Path
        The written file.
    """
    import mrcfile

    path = Path(path)
    rng = np.random.default_rng(seed)
    nz = int(shape[0])
    total = total_sq = 0.0
    lo, hi = np.inf, -np.inf
    with mrcfile.new_mmap(
        path, shape=tuple(int(s) for s in shape), mrc_mode=2, overwrite=True
    ) as mrc:
        for z0 in range(0, nz, slab):
            z1 = min(z0 + slab, nz)
            block = rng.standard_normal((z1 - z0, *shape[1:]), dtype=np.float32)
            mrc.data[z0:z1] = block
            total += float(block.sum(dtype=np.float64))
            total_sq += float(np.square(block, dtype=np.float64).sum())
            lo, hi = min(lo, float(block.min())), max(hi, float(block.max()))
        mrc.voxel_size = float(voxel_size_a)
        # Header statistics from the running sums: update_header_stats() would need the
        # whole volume in memory at once.
        n = float(np.prod(shape))
        mean = total / n
        mrc.header.dmin, mrc.header.dmax, mrc.header.dmean = lo, hi, mean
        mrc.header.rms = np.sqrt(max(total_sq / n - mean * mean, 0.0))
    return path
