"""Tomograms: memory-mapped MRC reading, axis layouts and MRC writing.

mrcfile exposes a volume as ``(sections, rows, columns)`` = file axes ``(a0, a1, a2)``
= MRC ``(Z, Y, X)``. Inside the package a tomogram is shown thickness first, ``(z, y, x)``;
:class:`FileLayout` holds the pure transpose between the two (see ``docs/architecture.md``
and ``docs/coordinates.md``).
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from napari_cetpick.errors import CetpickError, plain

TOMOGRAM_EXTENSIONS = (".mrc", ".rec", ".map", ".st")

# Headers often carry 0 Å (never set) or 1 Å (software default) instead of a real size.
_PLACEHOLDER_VOXEL_SIZES_A = (0.0, 1.0)

# Voxels read to check for NaN/Inf and to estimate contrast: enough for stable
# percentiles, few enough to stay fast on a memory map of any size.
DEFAULT_SAMPLE_VOXELS = 1 << 18


@dataclass(frozen=True)
class FileLayout:
    """How a file's axes map to the thickness-first napari view.

    Parameters
    ----------
    thickness_axis : int
        File axis (0, 1 or 2 of the mrcfile array ``(a0, a1, a2)``) that holds the thickness.
        It becomes napari axis 0; the other two keep their file order.
    file_shape : tuple of int or None
        Shape of the file array ``(a0, a1, a2)``; None when unknown (coordinates read
        without a tomogram).
    """

    thickness_axis: int = 0
    file_shape: tuple | None = None

    def __post_init__(self):
        if self.thickness_axis not in (0, 1, 2):
            raise CetpickError(
                f"Thickness axis must be 0, 1 or 2, not {self.thickness_axis!r}."
            )
        if self.file_shape is not None:
            shape = tuple(int(s) for s in self.file_shape)
            if len(shape) != 3:
                raise CetpickError(f"A tomogram needs 3 axes, not shape {shape}.")
            object.__setattr__(self, "file_shape", shape)

    @classmethod
    def identity(cls, shape_zyx=None) -> "FileLayout":
        """Layout of a file already stored thickness first (``thickness_axis=0``)."""
        return cls(0, None if shape_zyx is None else tuple(int(s) for s in shape_zyx))

    @property
    def view_axes(self) -> tuple:
        """File axes in napari order: napari axis ``k`` is file axis ``view_axes[k]``."""
        t = self.thickness_axis
        return (t,) + tuple(a for a in range(3) if a != t)

    @property
    def shape_zyx(self) -> tuple | None:
        """Napari-view shape ``(Z, Y, X)``, or None when the file shape is unknown."""
        if self.file_shape is None:
            return None
        return tuple(self.file_shape[a] for a in self.view_axes)

    def view(self, file_array: np.ndarray) -> np.ndarray:
        """Napari view of a file-ordered array (a transpose: no copy, no flip)."""
        return np.transpose(file_array, self.view_axes)

    def to_file_array(self, data_zyx: np.ndarray) -> np.ndarray:
        """File-ordered array from a napari-view array (inverse transpose, no copy)."""
        return np.transpose(data_zyx, np.argsort(self.view_axes))

    def to_file(self, zyx) -> np.ndarray:
        """``(n, 3)`` napari zyx -> ``(n, 3)`` file indices ``(a0, a1, a2)``."""
        zyx = as_points(zyx)
        out = np.empty_like(zyx)
        out[:, list(self.view_axes)] = zyx
        return out

    def to_napari(self, file_idx) -> np.ndarray:
        """``(n, 3)`` file indices ``(a0, a1, a2)`` -> ``(n, 3)`` napari zyx."""
        return as_points(file_idx)[:, list(self.view_axes)].copy()


@dataclass
class Tomogram:
    """A tomogram as napari shows it, with where it came from.

    Attributes
    ----------
    data : np.ndarray
        ``(Z, Y, X)`` view, usually a read-only transpose of a memory map.
    voxel_size_a : float or None
        Effective voxel size in Å (override, else a plausible header value, else None).
    header_voxel_size_a : float or None
        Voxel size written in the header (may be 0 or 1, which mean "unknown").
    layout : FileLayout
        Axis layout of the file, so exports land back in the file's frame.
    path : Path or None
    origin_a : tuple
        Header origin ``(x, y, z)`` in Å; informational only.
    notes : list of str
        Things worth reporting to the user (e.g. a placeholder voxel size).
    """

    data: np.ndarray
    voxel_size_a: float | None = None
    header_voxel_size_a: float | None = None
    layout: FileLayout = field(default_factory=FileLayout)
    path: Path | None = None
    origin_a: tuple = (0.0, 0.0, 0.0)
    notes: list = field(default_factory=list)

    @property
    def shape_zyx(self) -> tuple:
        return tuple(int(s) for s in self.data.shape)

    @property
    def name(self) -> str | None:
        return None if self.path is None else self.path.stem


def as_points(zyx) -> np.ndarray:
    """``(n, 3)`` float64 array from anything array-like (an empty input gives ``(0, 3)``)."""
    arr = np.asarray(zyx, dtype=float)
    if arr.size == 0:
        return np.zeros((0, 3))
    if arr.ndim != 2 or arr.shape[1] != 3:
        raise CetpickError(f"Expected (n, 3) coordinates, got an array of shape {arr.shape}.")
    return arr


def guess_thickness_axis(file_shape) -> int:
    """The thinnest file axis; ties go to axis 0 (the common rotated layout)."""
    return int(np.argmin(np.asarray(file_shape)))  # argmin returns the first minimum


def plausible_voxel_size(value) -> float | None:
    """A header voxel size in Å, or None when it is a placeholder (0, 1) or nonsense."""
    if value is None:
        return None
    value = float(value)
    if not math.isfinite(value) or value <= 0:
        return None
    if any(math.isclose(value, p, abs_tol=1e-4) for p in _PLACEHOLDER_VOXEL_SIZES_A):
        return None
    return value


def sample_voxels(
    data: np.ndarray, max_voxels: int = DEFAULT_SAMPLE_VOXELS, max_rows: int = 1024
) -> np.ndarray:
    """A strided sample of a (memory-mapped) volume, flattened to float32.

    Reads at most ``max_rows`` rows of the slowest two axes (in memory order) and about
    ``max_voxels`` voxels in all, evenly spread over the volume, so the cost does not grow
    with the file size (each row touched is a few pages of a memory map).
    """
    if data.size == 0:
        return np.zeros(0, np.float32)
    if data.ndim != 3:
        step = max(1, data.size // max_voxels)
        return np.asarray(data.reshape(-1)[::step], np.float32)
    # Sample in memory order so that strides skip whole pages of the file.
    order = np.argsort([-abs(s) for s in data.strides], kind="stable")
    view = np.transpose(data, order)
    n0, n1, n2 = view.shape
    per_slow_axis = max(1, int(math.sqrt(max_rows)))
    s0 = max(1, math.ceil(n0 / per_slow_axis))
    s1 = max(1, math.ceil(n1 / per_slow_axis))
    rows = math.ceil(n0 / s0) * math.ceil(n1 / s1)
    s2 = max(1, math.ceil(n2 * rows / max_voxels))
    return np.asarray(view[::s0, ::s1, ::s2], np.float32).ravel()


def _header_voxel_size(mrc) -> float:
    vs = mrc.voxel_size
    return float(vs.x)


def _is_image_stack(mrc, path: Path) -> bool:
    header = mrc.header
    ispg = int(header.ispg)
    nz, mz = int(header.nz), int(header.mz)
    if ispg != 0:
        return False
    # MRC2014 marks a stack by space group 0 and one section per image (mz == 1); IMOD
    # writes space group 0 for reconstructions too (with mz == nz), so only trust the
    # space group together with a stack-like extension.
    return (mz == 1 and nz > 1) or path.suffix.lower() in (".st", ".mrcs")


def open_tomogram(
    path,
    thickness_axis: int | None = None,
    voxel_size_a: float | None = None,
    mmap: bool = True,
) -> Tomogram:
    """Open an MRC tomogram, memory-mapped, shown thickness first.

    Parameters
    ----------
    path : str or Path
        ``.mrc``, ``.rec``, ``.map`` or ``.st`` file.
    thickness_axis : int, optional
        File axis holding the thickness; default: the thinnest axis (ties -> axis 0).
    voxel_size_a : float, optional
        Override for the header voxel size (Å).
    mmap : bool
        Memory-map the data (default). With False the whole volume is read into RAM.

    Returns
    -------
    Tomogram

    Raises
    ------
    CetpickError
        Unknown extension, not an MRC file, truncated file, 2D image or image stack,
        unsupported data mode, or NaN/Inf voxels (found on a strided sample).
    """
    import mrcfile

    path = Path(path)
    if path.suffix.lower() not in TOMOGRAM_EXTENSIONS:
        raise CetpickError(
            f"{path.name}: unknown tomogram extension {path.suffix!r} "
            f"(expected one of {', '.join(TOMOGRAM_EXTENSIONS)})."
        )
    if not path.is_file():
        raise CetpickError(f"{path}: file not found.")

    opener = mrcfile.mmap if mmap else mrcfile.open
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            with opener(path, mode="r", permissive=False) as mrc:
                data = mrc.data
                header_vs = _header_voxel_size(mrc)
                origin = mrc.header.origin
                origin_a = (float(origin.x), float(origin.y), float(origin.z))
                stack = _is_image_stack(mrc, path)
    except CetpickError:
        raise
    except Exception as err:  # mrcfile raises ValueError/OSError for bad files
        text = str(err)
        if "file size" in text or "smaller than" in text or "too small" in text:
            raise CetpickError(
                f"{path.name}: the MRC file is truncated (shorter than its header says)."
            ) from None
        raise CetpickError(f"{path.name}: not a readable MRC file ({text}).") from None
    if data is None:
        raise CetpickError(f"{path.name}: the MRC file has no readable data block.")
    if data.size <= 1:
        raise CetpickError(f"{path.name}: the file holds a single voxel, not a tomogram.")
    if data.ndim < 3 or (data.ndim == 3 and min(data.shape) == 1):
        flat = tuple(int(n) for n in data.shape if n != 1) if data.ndim == 3 else tuple(data.shape[-2:])
        raise CetpickError(
            f"{path.name}: this is a 2D image of shape {flat}, not a tomogram."
        )
    if data.ndim > 3:
        raise CetpickError(f"{path.name}: a volume stack of shape {data.shape} is not supported.")
    if stack:
        raise CetpickError(
            f"{path.name}: the header marks a stack of 2D images (e.g. a tilt series), "
            "not a tomogram; open the reconstructed volume."
        )
    if np.iscomplexobj(data):
        raise CetpickError(f"{path.name}: complex (Fourier) data is not a tomogram.")

    # Cheap check on a strided sample: reading the whole file would defeat the memory map.
    sample = sample_voxels(data)
    if not np.all(np.isfinite(sample)):
        raise CetpickError(
            f"{path.name}: the volume contains NaN or Inf voxels "
            "(found on a strided sample of the file)."
        )

    file_shape = tuple(int(s) for s in data.shape)
    if thickness_axis is None:
        thickness_axis = guess_thickness_axis(file_shape)
    layout = FileLayout(int(thickness_axis), file_shape)

    notes = []
    header_plausible = plausible_voxel_size(header_vs)
    if voxel_size_a is not None:
        effective = float(voxel_size_a)
        if not (math.isfinite(effective) and effective > 0):
            raise CetpickError(f"{path.name}: voxel size override {plain(voxel_size_a)} must be > 0 Å.")
    else:
        effective = header_plausible
        if header_plausible is None:
            notes.append(
                f"{path.name}: header voxel size {header_vs:g} Å is a placeholder; "
                "voxel size unknown (set it by hand)."
            )
    return Tomogram(
        data=layout.view(data),
        voxel_size_a=effective,
        header_voxel_size_a=header_vs,
        layout=layout,
        path=path,
        origin_a=origin_a,
        notes=notes,
    )


def open_mask(path, tomogram: Tomogram) -> np.ndarray:
    """An ignore mask for an opened tomogram, as ``(Z, Y, X)`` uint8 in its napari frame.

    The mask file must have the tomogram's shape in the same file layout (it is read with
    the tomogram's thickness axis); nonzero = keep, zero = ignore.

    Raises
    ------
    CetpickError
        Not a readable MRC, or a shape other than the tomogram's.
    """
    mask = open_tomogram(path, thickness_axis=tomogram.layout.thickness_axis)
    if tuple(mask.layout.file_shape) != tuple(tomogram.layout.file_shape):
        raise CetpickError(f"{path}: mask shape {tuple(mask.layout.file_shape)} differs from the tomogram's "
                           f"{tuple(tomogram.layout.file_shape)}; the mask must have the tomogram's shape, in the "
                           f"same file layout (nonzero = keep).")
    return (np.asarray(mask.data) != 0).astype(np.uint8)


def write_tomogram(
    path,
    data_zyx,
    voxel_size_a: float | None = None,
    layout: FileLayout | None = None,
    overwrite: bool = True,
) -> Path:
    """Write a napari-view volume as MRC, in the file layout given.

    Parameters
    ----------
    path : str or Path
    data_zyx : array-like
        ``(Z, Y, X)`` volume as napari shows it.
    voxel_size_a : float, optional
        Written into the header (0 when None, which readers treat as unknown).
    layout : FileLayout, optional
        File layout to write (default: thickness first). Its ``file_shape``, when set,
        must match the data.
    overwrite : bool

    Returns
    -------
    Path
        The written file. Data is float32, or int8/int16 kept as they are; uint8 is
        widened to uint16 by mrcfile (MRC has no unsigned 8-bit mode).
    """
    import mrcfile

    path = Path(path)
    if path.suffix.lower() not in TOMOGRAM_EXTENSIONS:
        raise CetpickError(
            f"{path.name}: cannot write a tomogram with extension {path.suffix!r} "
            f"(use one of {', '.join(TOMOGRAM_EXTENSIONS)})."
        )
    if path.exists() and not overwrite:
        raise CetpickError(f"{path}: file exists and overwrite is off.")
    data_zyx = np.asarray(data_zyx)
    if data_zyx.ndim != 3:
        raise CetpickError(f"{path.name}: a tomogram needs 3 axes, got shape {data_zyx.shape}.")
    layout = layout or FileLayout.identity()
    file_array = layout.to_file_array(data_zyx)
    if layout.file_shape is not None and tuple(file_array.shape) != layout.file_shape:
        raise CetpickError(
            f"{path.name}: data of shape {data_zyx.shape} does not fit file layout "
            f"{layout.file_shape} (thickness axis {layout.thickness_axis})."
        )
    if file_array.dtype not in (np.int8, np.int16, np.uint8):
        file_array = file_array.astype(np.float32, copy=False)
    try:
        with mrcfile.new(path, overwrite=True) as mrc:
            mrc.set_data(np.ascontiguousarray(file_array))
            mrc.set_volume()
            mrc.voxel_size = float(voxel_size_a) if voxel_size_a else 0.0
    except OSError as err:
        raise CetpickError(f"{path}: cannot write the file ({err.strerror or err}).") from None
    return path


HEATMAP_LABEL = "cetpick heatmap"


def heatmap_origin_a(scale_zyx, translate_zyx, voxel_size_a: float, layout: FileLayout,
                     tomogram_origin_a=(0.0, 0.0, 0.0)) -> tuple:
    """IMOD header origin ``(x, y, z)`` in Å of a heatmap that overlays its tomogram.

    IMOD defines the origin as the position of the coordinate origin measured from the
    corner of the file's first voxel, so that corner lies at ``-origin`` (UCSF Chimera uses
    the opposite sign). Heatmap voxel ``i`` has its centre at tomogram voxel
    ``i * scale + translate`` and spans ``scale`` tomogram voxels, so its first corner lies
    ``translate + 0.5 - scale / 2`` tomogram voxels from the tomogram's first corner:

        origin_heatmap = origin_tomogram + (scale / 2 - translate - 0.5) * voxel_size_a

    per axis, in the file's (x, y, z) order. Example: bin 1 gives scale (1, 2, 2) and
    translate 0, so y and x shift by +0.5 voxel (the first heatmap cell starts half a
    voxel before the tomogram) and z not at all.
    """
    s = np.asarray(scale_zyx, float)
    t = np.asarray(translate_zyx, float)
    shift_zyx = (s / 2.0 - t - 0.5) * float(voxel_size_a)
    shift_file = np.empty(3)
    for k, a in enumerate(layout.view_axes):
        shift_file[a] = shift_zyx[k]
    return tuple(float(o) + float(d) for o, d in zip(tomogram_origin_a, shift_file[::-1]))


def write_heatmap(
    path,
    heatmap_zyx,
    scale_zyx,
    translate_zyx,
    voxel_size_a: float | None = None,
    layout: FileLayout | None = None,
    origin_a=(0.0, 0.0, 0.0),
) -> Path:
    """Write a detection heatmap as MRC that overlays its tomogram in 3dmod and napari.

    The heatmap lives on a coarser grid: its index ``i`` sits at tomogram voxel
    ``i * scale + translate`` (napari zyx). The file is written in the tomogram's own
    layout, with the per-axis voxel size ``voxel_size_a * scale`` and the IMOD header
    origin of :func:`heatmap_origin_a`, which keeps the tomogram's own header origin
    ``origin_a`` (Å, file x, y, z). A label records the tomogram's voxel size, origin and
    thickness axis, so that :func:`heatmap_frame` (the napari reader) places a re-opened
    heatmap on its tomogram. With an unknown voxel size, 1 Å is assumed and recorded.
    """
    import mrcfile

    path = Path(path)
    layout = FileLayout(layout.thickness_axis) if layout is not None else FileLayout.identity()
    heat = np.asarray(heatmap_zyx, dtype=np.float32)
    file_array = np.ascontiguousarray(layout.to_file_array(heat))
    vs = float(voxel_size_a) if voxel_size_a else 1.0
    # napari axis k is file axis view_axes[k]; MRC header fields run x, y, z = a2, a1, a0
    per_file_axis = np.empty(3)
    for k, a in enumerate(layout.view_axes):
        per_file_axis[a] = vs * float(np.asarray(scale_zyx)[k])
    origin = tuple(float(o) for o in origin_a)
    label = (f"{HEATMAP_LABEL} ta={layout.thickness_axis} vs={vs:.6g} "
             f"org={','.join(f'{o:.6g}' for o in origin)}")
    try:
        with mrcfile.new(path, overwrite=True) as mrc:
            mrc.set_data(file_array)
            mrc.set_volume()
            mrc.voxel_size = tuple(per_file_axis[::-1])
            mrc.header.origin = heatmap_origin_a(scale_zyx, translate_zyx, vs, layout, origin)
            mrc.header.label[0] = label[:80].encode("ascii")
            mrc.header.nlabl = 1
    except OSError as err:
        raise CetpickError(f"{path}: cannot write the file ({err.strerror or err}).") from None
    return path


def heatmap_frame(path) -> dict | None:
    """Where a heatmap written by :func:`write_heatmap` lies on its tomogram, or None.

    Read from the header alone (voxel sizes and origin, per axis) and the label that
    records the tomogram's voxel size, origin and thickness axis, so an origin changed by
    IMOD (e.g. ``trimvol``) is honoured. Returns ``thickness_axis`` and ``scale`` /
    ``translate`` (napari zyx, tomogram voxels: heatmap index ``i`` lies at tomogram voxel
    ``i * scale + translate``), ``tomogram_voxel_size_a`` and ``tomogram_origin_a``.
    """
    import mrcfile

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            with mrcfile.open(path, header_only=True, permissive=True) as mrc:
                h = mrc.header
                labels = [bytes(l).decode("ascii", "replace").strip() for l in h.label[: max(int(h.nlabl), 0)]]
                vs_file = np.array([float(mrc.voxel_size.x), float(mrc.voxel_size.y), float(mrc.voxel_size.z)])
                org_file = np.array([float(h.origin.x), float(h.origin.y), float(h.origin.z)])
    except Exception:  # not an MRC file: open_tomogram explains that
        return None
    for label in labels:
        if not label.startswith(HEATMAP_LABEL):
            continue
        try:
            fields = dict(item.split("=", 1) for item in label[len(HEATMAP_LABEL):].split())
            layout = FileLayout(int(fields["ta"]))
            vs_t = float(fields["vs"])
            org_t = np.array([float(v) for v in fields["org"].split(",")])
        except (KeyError, ValueError, CetpickError):
            return None
        if not (vs_t > 0 and len(org_t) == 3 and np.all(vs_file > 0)):
            return None
        # file (x, y, z) -> napari (z, y, x) through the layout
        vs_a, org_a, org_ta = vs_file[::-1], org_file[::-1], org_t[::-1]   # file axes a0, a1, a2
        axes = list(layout.view_axes)
        scale = vs_a[axes] / vs_t
        # invert heatmap_origin_a: origin_h - origin_t = (scale / 2 - translate - 0.5) * vs_t
        translate = scale / 2.0 - 0.5 - (org_a[axes] - org_ta[axes]) / vs_t
        return {"thickness_axis": layout.thickness_axis, "scale": tuple(float(v) for v in scale),
                "translate": tuple(float(v) for v in translate), "tomogram_voxel_size_a": vs_t,
                "tomogram_origin_a": tuple(float(v) for v in org_t)}
    return None
