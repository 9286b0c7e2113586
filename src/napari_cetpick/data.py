"""Preprocessing, targets, crop sampling and augmentation (numpy only).

Frames: the *tomogram* frame is the napari (z, y, x) voxel index of the input volume. The
*working* frame is after binning by ``bin_zyx`` (mean pooling), where working voxel ``w``
covers tomogram voxels ``b*w … b*w+b-1`` and so has its centre at ``b*w + (b-1)/2``. The
network's output *grid* has a stride ``s`` per axis in the working frame (1 in z and 2 in y
and x for the pseudo-3D networks); grid cell ``j`` covers working voxels ``s*j … s*j+s-1``
and so sits at their centre, ``s*j + (s-1)/2``. Defining the cell by the block it covers (not
by its first voxel) is what makes flips and rotations of a crop map grid cells onto grid
cells exactly: a flip maps the block ``{2j, 2j+1}`` of a 2n-voxel crop onto the block of
cell ``n-1-j``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from .errors import CetpickError

GRID_STRIDE_YX = 2  # the pseudo-3D stem's stride
PSEUDO3D_STRIDE = (1, GRID_STRIDE_YX, GRID_STRIDE_YX)


def work_to_grid(work_zyx: np.ndarray, stride=PSEUDO3D_STRIDE) -> np.ndarray:
    """Working-frame coordinates to grid coordinates (cell ``j`` at working ``s*j + (s-1)/2``)."""
    s = np.asarray(stride, float)
    return (np.asarray(work_zyx, float) - (s - 1) / 2) / s


def grid_to_work(grid_zyx: np.ndarray, stride=PSEUDO3D_STRIDE) -> np.ndarray:
    """Inverse of :func:`work_to_grid`."""
    s = np.asarray(stride, float)
    return np.asarray(grid_zyx, float) * s + (s - 1) / 2


@dataclass(frozen=True)
class Geometry:
    """How tomogram voxels map to working voxels and heatmap grid cells.

    Parameters
    ----------
    bin_zyx : tuple of int
        Binning of the tomogram per axis (z includes ``compress``).
    stride_zyx : tuple of int
        Output stride of the network in working voxels, per axis.
    """

    bin_zyx: tuple[int, int, int]
    stride_zyx: tuple[int, int, int] = PSEUDO3D_STRIDE

    @property
    def grid_scale(self) -> np.ndarray:
        """Tomogram voxels per heatmap grid cell, per axis (z, y, x)."""
        return np.asarray(self.bin_zyx, float) * np.asarray(self.stride_zyx, float)

    @property
    def grid_translate(self) -> np.ndarray:
        """Tomogram coordinate of grid cell (0, 0, 0): the centre of the block it covers."""
        b = np.asarray(self.bin_zyx, float)
        return b * (np.asarray(self.stride_zyx, float) - 1) / 2 + (b - 1.0) / 2.0

    def tomo_to_grid(self, zyx: np.ndarray) -> np.ndarray:
        return (np.asarray(zyx, float) - self.grid_translate) / self.grid_scale

    def grid_to_tomo(self, zyx: np.ndarray) -> np.ndarray:
        return np.asarray(zyx, float) * self.grid_scale + self.grid_translate

    def tomo_to_work(self, zyx: np.ndarray) -> np.ndarray:
        b = np.asarray(self.bin_zyx, float)
        return (np.asarray(zyx, float) - (b - 1) / 2) / b

    def work_shape(self, tomo_shape) -> tuple[int, int, int]:
        return tuple(int(s // b) for s, b in zip(tomo_shape, self.bin_zyx))


def auto_bin(diameter_vox: float, min_particle_vox: float = 12.0, max_bin: int = 8) -> int:
    """Largest isotropic binning that keeps the particle ``min_particle_vox`` voxels across."""
    b = int(np.floor(diameter_vox / min_particle_vox))
    return int(np.clip(b, 1, max_bin))


def make_geometry(bin_xy: int, compress: bool, stride_zyx=PSEUDO3D_STRIDE) -> Geometry:
    return Geometry((bin_xy * (2 if compress else 1), bin_xy, bin_xy), tuple(int(v) for v in stride_zyx))


def bin_block(block: np.ndarray, bin_zyx) -> np.ndarray:
    """Mean-pool a (Z, Y, X) block by integer factors (trailing remainders dropped)."""
    bz, by, bx = (int(b) for b in bin_zyx)
    block = np.asarray(block, dtype=np.float32)
    if (bz, by, bx) == (1, 1, 1):
        return block
    z, y, x = (s // b for s, b in zip(block.shape, (bz, by, bx)))
    v = block[: z * bz, : y * by, : x * bx]
    return v.reshape(z, bz, y, by, x, bx).mean(axis=(1, 3, 5), dtype=np.float32)


@dataclass(frozen=True)
class NormStats:
    """Per-tomogram normalisation: z-score, optional Gaussian, z-score, clip ±3, to [0, 1]."""

    mean1: float
    std1: float
    mean2: float
    std2: float
    gauss: float

    def apply(self, block_work: np.ndarray) -> np.ndarray:
        """Normalise a working-frame block (needs a halo of ``3*gauss`` for exact filtering)."""
        v = (np.asarray(block_work, np.float32) - self.mean1) / self.std1
        if self.gauss > 0:
            v = ndimage.gaussian_filter(v, self.gauss, mode="nearest")
            v = (v - self.mean2) / self.std2
        np.clip(v, -3.0, 3.0, out=v)
        v += 3.0
        v /= 6.0
        return v


def _sample_block(volume, geometry: Geometry, max_work_vox: int = 4_000_000) -> np.ndarray:
    """A central block of the volume in the working frame, read without loading the file."""
    shape = np.array(volume.shape)
    b = np.array(geometry.bin_zyx)
    work = shape // b
    side = np.minimum(work, int(round(max_work_vox ** (1 / 3))) * np.array([1, 2, 2]))
    # spread the budget: full z when possible, central y/x
    while np.prod(side) > max_work_vox:
        side = np.maximum(side * 0.8, 1).astype(int)
    start = (work - side) // 2
    sl = tuple(slice(int(s * bb), int((s + n) * bb)) for s, n, bb in zip(start, side, b))
    return bin_block(np.asarray(volume[sl]), b)


def compute_norm_stats(volume, geometry: Geometry, gauss: float = 0.0) -> NormStats:
    """Statistics from a central block (the whole file is never read)."""
    block = _sample_block(volume, geometry)
    if not np.all(np.isfinite(block)):
        raise CetpickError("The tomogram contains NaN or infinite values; fix or mask them first.")
    mean1, std1 = float(block.mean()), float(block.std())
    if std1 <= 0:
        raise CetpickError("The tomogram is constant (zero contrast); nothing can be detected.")
    mean2 = std2 = 0.0
    if gauss > 0:
        f = ndimage.gaussian_filter((block - mean1) / std1, gauss, mode="nearest")
        mean2, std2 = float(f.mean()), float(max(f.std(), 1e-6))
    return NormStats(mean1, std1, mean2, std2, float(gauss))


def preprocess(volume, geometry: Geometry, gauss: float = 0.0, stats: NormStats | None = None) -> np.ndarray:
    """Bin and normalise a whole volume to float32 in [0, 1] (used for training tomograms)."""
    stats = stats or compute_norm_stats(volume, geometry, gauss)
    out_shape = geometry.work_shape(volume.shape)
    out = np.empty(out_shape, np.float32)
    bz = geometry.bin_zyx[0]
    halo = int(np.ceil(3 * gauss)) + 1 if gauss > 0 else 0
    step = 32
    for z0 in range(0, out_shape[0], step):
        z1 = min(out_shape[0], z0 + step)
        a0, a1 = max(0, z0 - halo), min(out_shape[0], z1 + halo)
        blk = bin_block(np.asarray(volume[a0 * bz : a1 * bz]), geometry.bin_zyx)
        blk = blk[:, : out_shape[1], : out_shape[2]]
        out[z0:z1] = stats.apply(blk)[z0 - a0 : z0 - a0 + (z1 - z0)]
    return out


# ----------------------------------------------------------------------------- targets
# Codes of the target map on the output grid.
HARD = 1.0  # hard positive; soft positives lie strictly between 0 and 1
NEGATIVE = 0.0  # known non-particle (a negative click)
UNLABELLED = -1.0
IGNORED = -2.0  # masked out: neither positive nor unlabelled
OTHER_CLASS = -3.0  # where another class's labelled particle is: a known negative of this class's channel


@dataclass(frozen=True)
class BlobSpec:
    """Target regions around each click, in working voxels.

    ``sigma`` is the Gaussian width of a positive blob; cells with value > 0.9 are hard
    positives, cells with a value down to ``floor`` soft positives, the rest unlabelled
    (-1). A negative click marks the cells within ``neg_radius_work`` as known negatives.
    """

    sigma_work: float
    radius_work: float
    floor: float = 0.01
    neg_radius_work: float = 1.0
    hard_ball: bool = False  # every cell within radius_work is a hard positive (no soft ones)
    in_cells: bool = False  # sigma and radius are in grid cells on every axis (the original's blob)


def blob_spec(diameter_work: float, kind: str = "physical") -> BlobSpec:
    """Blob for a particle of ``diameter_work`` working voxels.

    ``physical``: sigma = diameter / 10, blob cut at half the particle radius, isotropic in
    physical units (the grid's anisotropy is handled when drawing).
    ``cetpick``: the original's CenterNet radius r = floor(0.273 * floor(bbox / 2)) in grid
    cells with sigma = (2r + 1) / 6, isotropic in grid cells (as the original draws it: in z
    a cell is half as wide as in y and x), kept for the reproduction preset.
    ``ball``: every cell within a sixth of the diameter is a hard positive, no soft ones:
    many positive cells per click instead of one.
    Negative clicks cover a third of the diameter around the click: where a detector's peak
    on that object lands.
    """
    neg = max(diameter_work / 3.0, 1.0)
    if kind == "cetpick":
        r_cells = max(1, int(np.floor(0.273 * np.floor(diameter_work / 2))))
        sigma_cells = (2 * r_cells + 1) / 6
        return BlobSpec(sigma_cells, r_cells, neg_radius_work=neg, in_cells=True)
    if kind == "ball":
        return BlobSpec(max(diameter_work / 10.0, 0.6), max(diameter_work / 6.0, 1.0), neg_radius_work=neg,
                        hard_ball=True)
    return BlobSpec(max(diameter_work / 10.0, 0.6), max(diameter_work / 4.0, 1.0), neg_radius_work=neg)


def _ball_window(c, r_work, cell, grid_shape):
    """Index window around grid point ``c`` and squared physical distances (working voxels²)."""
    r_cells = np.ceil(r_work / cell).astype(int)
    lo = np.maximum(np.floor(c - r_cells).astype(int), 0)
    hi = np.minimum(np.ceil(c + r_cells).astype(int) + 1, grid_shape)
    if np.any(hi <= lo):
        return None, None
    zz, yy, xx = np.ogrid[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]]
    d2 = ((zz - c[0]) * cell[0]) ** 2 + ((yy - c[1]) * cell[1]) ** 2 + ((xx - c[2]) * cell[2]) ** 2
    return (slice(lo[0], hi[0]), slice(lo[1], hi[1]), slice(lo[2], hi[2])), d2


def draw_targets(grid_shape, labels_grid: np.ndarray, spec: BlobSpec, stride=PSEUDO3D_STRIDE,
                 negatives_grid: np.ndarray | None = None, others_grid: np.ndarray | None = None) -> np.ndarray:
    """Target map on the grid: 1 hard positive, (0, 1) soft positive, 0 known negative, -1 unlabelled,
    -3 another class's particle.

    Parameters
    ----------
    grid_shape : tuple
        (D, h, w) of the output grid.
    labels_grid : (n, 3) float
        Positive clicks in grid coordinates (may lie outside the grid).
    spec : BlobSpec
    stride : (3,) int
        Working voxels per grid cell, per axis (distances are measured in working voxels).
    negatives_grid : (m, 3) float, optional
        Negative clicks in grid coordinates. Their cells become known negatives, except
        cells that are a hard positive of a positive click.
    others_grid : (k, 3) float, optional
        Labelled particles of other classes, in grid coordinates: their cells (the negative
        click's region) become :data:`OTHER_CLASS`, except hard positives and known negatives.
    """
    g = np.full(grid_shape, UNLABELLED, np.float32)
    # the original's blob is isotropic in grid cells; ours in working voxels
    cell = np.ones(3) if spec.in_cells else np.asarray(stride, float)
    labels_grid = np.asarray(labels_grid, float).reshape(-1, 3)
    for c in labels_grid:
        win, d2 = _ball_window(c, spec.radius_work, cell, grid_shape)
        if win is None:
            continue
        if spec.hard_ball:
            val = np.where(d2 <= spec.radius_work**2, HARD, UNLABELLED).astype(np.float32)
        else:
            val = np.exp(-d2 / (2 * spec.sigma_work**2)).astype(np.float32)
            val[(d2 > spec.radius_work**2) | (val < spec.floor)] = UNLABELLED
            val[val > 0.9] = HARD
        np.maximum(g[win], val, out=g[win])
    # the cell nearest each label is always a hard positive (as CenterNet's integer centre):
    # a narrow blob on a stride-2 grid may otherwise have no cell above 0.9, and soft
    # positives alone only push scores down
    near = np.floor(labels_grid + 0.5).astype(int)
    ok = np.all((near >= 0) & (near < np.asarray(grid_shape)), axis=1)
    g[tuple(near[ok].T)] = HARD
    # known negatives, then other classes' particles where no negative click is: neither
    # overrides a hard positive
    for points, code in ((negatives_grid, NEGATIVE), (others_grid, OTHER_CLASS)):
        if points is None:
            continue
        for c in np.asarray(points, float).reshape(-1, 3):
            win, d2 = _ball_window(c, spec.neg_radius_work, np.asarray(stride, float), grid_shape)
            if win is None:
                continue
            sub = g[win]
            sub[(d2 <= spec.neg_radius_work**2) & (sub < HARD) & (sub != NEGATIVE)] = code
    return g


def keep_on_grid(keep_work: np.ndarray, stride=PSEUDO3D_STRIDE) -> np.ndarray:
    """Which grid cells a working-frame keep-mask keeps: at least half of the cell's voxels."""
    s = tuple(int(v) for v in stride)
    k = np.asarray(keep_work, np.float32)
    shape = tuple(n // st for n, st in zip(k.shape, s))
    k = k[: shape[0] * s[0], : shape[1] * s[1], : shape[2] * s[2]]
    pooled = k.reshape(shape[0], s[0], shape[1], s[1], shape[2], s[2]).mean(axis=(1, 3, 5))
    return pooled >= 0.5


def positive_cells_per_particle(spec: BlobSpec, stride=PSEUDO3D_STRIDE) -> int:
    """Number of positive (hard or soft) grid cells of one blob (for the class prior)."""
    n = int(np.ceil(spec.radius_work)) + 2
    c = np.array([n, n, n], float)
    t = draw_targets((2 * n + 1, 2 * n + 1, 2 * n + 1), c[None], spec, stride)
    return max(1, int((t > 0).sum()))


# ----------------------------------------------------------------------------- crops
def pad_to(volume: np.ndarray, shape) -> tuple[np.ndarray, np.ndarray]:
    """Pad a working volume at the end of each axis to at least ``shape`` (mid-grey)."""
    pad = [(0, max(0, int(s) - v)) for s, v in zip(shape, volume.shape)]
    if any(p[1] for p in pad):
        volume = np.pad(volume, pad, mode="constant", constant_values=0.5)
    return volume, np.zeros(3)


def sample_crop_origins(rng: np.random.Generator, work_shape, crop, labels_work: np.ndarray, n: int,
                        label_prob: float, jitter_vox: float, stride=PSEUDO3D_STRIDE) -> np.ndarray:
    """Origins (z, y, x) of ``n`` crops: near a random label with ``label_prob``, else uniform.

    A crop near a label is centred on it up to a uniform shift of ``jitter_vox`` working
    voxels per axis (never so far that the label leaves the crop). Crop origins are
    multiples of the grid stride, so that the crop's grid cells are cells of the whole
    volume's grid (and flips and rotations map cells onto cells).
    """
    st = np.asarray(stride, int)
    crop = np.asarray(crop)
    hi = np.maximum(np.asarray(work_shape) - crop, 0)
    reach = np.minimum(float(jitter_vox), crop / 2 - 1)
    origins = np.empty((n, 3), int)
    for i in range(n):
        if len(labels_work) and rng.random() < label_prob:
            c = labels_work[rng.integers(len(labels_work))]
            off = rng.uniform(-reach, reach)
            o = np.round(c + off - crop / 2).astype(int)
        else:
            o = np.array([rng.integers(0, h + 1) for h in hi])
        o = np.clip(o, 0, hi)
        o -= o % st
        origins[i] = o
    return origins


# ----------------------------------------------------------------------------- augmentation
@dataclass(frozen=True)
class Transform:
    """A dihedral transform in y/x (k quarter turns, then optional x flip) and a z flip."""

    k: int = 0
    flip_x: bool = False
    flip_z: bool = False

    def apply(self, a: np.ndarray) -> np.ndarray:
        """Apply to the last three axes (z, y, x) of an array."""
        if self.flip_z:
            a = a[..., ::-1, :, :]
        a = np.rot90(a, self.k, axes=(-2, -1))
        if self.flip_x:
            a = a[..., ::-1]
        return a

    def invert_torch(self, t):
        """Undo the transform on a torch tensor (..., z, y, x)."""
        import torch

        if self.flip_x:
            t = torch.flip(t, dims=(-1,))
        t = torch.rot90(t, -self.k, dims=(-2, -1))
        if self.flip_z:
            t = torch.flip(t, dims=(-3,))
        return t


def random_transform(rng: np.random.Generator, mode: str = "full") -> Transform:
    """A random dihedral transform in y/x with a random z flip (our augmentation)."""
    return Transform(k=int(rng.integers(4)), flip_x=bool(rng.integers(2)), flip_z=bool(rng.integers(2)))


def view_transforms(rng: np.random.Generator, mode: str) -> tuple[Transform, Transform]:
    """The transforms of a crop's two views.

    ``full``: two independent random transforms. ``flip`` (the original): the first view as
    it is, the second flipped left-right or up-down.
    """
    if mode == "flip":
        # an up-down flip is a half turn followed by a left-right flip
        return Transform(), Transform(k=2 * int(rng.integers(2)), flip_x=True)
    return random_transform(rng), random_transform(rng)


def intensity_jitter(rng: np.random.Generator, crop: np.ndarray, strength: float = 0.1) -> np.ndarray:
    """Random contrast/brightness change and a little extra noise, in the [0, 1] scale."""
    gain = 1.0 + rng.uniform(-strength, strength)
    offset = rng.uniform(-strength, strength) * 0.5
    noise = rng.normal(0, strength * 0.3, crop.shape).astype(np.float32)
    return ((crop - 0.5) * gain + 0.5 + offset + noise).astype(np.float32)
