"""Particle coordinates: IMOD, RELION 4/5 STAR, CSV and the original cet_pick text files.

Inside the package points are ``(n, 3)`` napari ``zyx`` voxel indices of the tomogram as
napari shows it (thickness first, voxel centre at the integer index). This module is the
only place that converts them to a file's own axis frame, to x-y-z columns, half-pixel,
centred or Å conventions. ``docs/coordinates.md`` states each convention.
"""
from __future__ import annotations

import string
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from napari_cetpick.errors import CetpickError, plain
from napari_cetpick.io.formats import FORMAT_NAMES, POINT_EXTENSIONS, format_for_extension, point_format
from napari_cetpick.io.tomogram import FileLayout, as_points

FORMATS = FORMAT_NAMES  # the names of io/formats.py's table, in its order

# STAR labels read as the feature "score", first match wins; "score" is written back as
# the first one (RELION's autopicking figure of merit).
STAR_SCORE_LABELS = ("rlnAutopickFigureOfMerit", "rlnLCCmax", "rlnMaxValueProbDistribution")
# Per-pick confidence columns of the detector (napari feature name <-> STAR label). RELION
# reads past labels it does not know; ours carry their own prefix so they cannot clash.
STAR_EXTRA_LABELS = {"margin": "cetpickScoreMargin", "agreement": "cetpickViewAgreement",
                     "profile_excess": "cetpickProfileExcess"}
# The particle class of each point: the napari feature "class" (text). STAR files number the
# classes (RELION's rlnClassNumber, 1-based) and keep the name under our own label.
CLASS_FEATURE = "class"
STAR_CLASS_NUMBER = "rlnClassNumber"
STAR_CLASS_NAME = "cetpickClassName"
_MOD_NAME_BYTES = 63  # an IMOD object name is 64 bytes, NUL-terminated
_STAR_PIXEL = ("rlnCoordinateX", "rlnCoordinateY", "rlnCoordinateZ")
_STAR_CENTRED = (
    "rlnCenteredCoordinateXAngst",
    "rlnCenteredCoordinateYAngst",
    "rlnCenteredCoordinateZAngst",
)
_STAR_TOMO = "rlnTomoName"

_LIST_HEADER = ("image_name", "x_coord", "y_coord", "z_coord")
_IMAGE_LIST_HEADER = ("image_name", "rec_path")
_CSV_TOMO = "tomogram"


@dataclass
class PointSet:
    """Particle positions with per-point values.

    Attributes
    ----------
    zyx : np.ndarray
        ``(n, 3)`` float napari-frame voxel coordinates.
    features : pandas.DataFrame
        ``n`` rows (``score``, ...); may have no columns.
    voxel_size_a : float or None
        Voxel size (Å) of the tomogram the coordinates refer to, when known.
    tomogram_name : str or None
        From STAR ``rlnTomoName`` / cet_pick ``image_name``, when present.
    """

    zyx: np.ndarray
    features: pd.DataFrame = field(default=None)
    voxel_size_a: float | None = None
    tomogram_name: str | None = None

    def __post_init__(self):
        self.zyx = as_points(self.zyx)
        n = len(self.zyx)
        if self.features is None or len(self.features.columns) == 0:
            self.features = pd.DataFrame(index=pd.RangeIndex(n))
        else:
            self.features = pd.DataFrame(self.features).reset_index(drop=True)
        if len(self.features) != n:
            raise CetpickError(
                f"{len(self.features)} feature rows for {n} points; they must match."
            )

    def __len__(self) -> int:
        return len(self.zyx)


# --------------------------------------------------------------------------- helpers


def _fmt(value: float, decimals: int = 3) -> str:
    """Shortest fixed-point text with at most ``decimals`` decimals ("20.5", "3", "-0.25")."""
    text = f"{float(value):.{decimals}f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def guess_format(path) -> str:
    """Coordinate format from a file name (and, for an existing ``.txt``, its first line).

    The extension's format in :data:`~napari_cetpick.io.formats.POINT_FORMATS`, except that
    a ``.txt`` starting with the cet_pick header ``image_name x_coord ...`` is
    ``cetpick_list``.
    """
    path = Path(path)
    fmt = _format_from_extension(path)
    if fmt == "imod" and path.is_file():
        first = _first_line(path)
        if first is not None:
            words = tuple(first.split())
            if words[:4] == _LIST_HEADER:
                return "cetpick_list"
            if words[:2] == _IMAGE_LIST_HEADER:
                raise CetpickError(
                    f"{path.name}: this is a cet_pick image list (image_name, rec_path), "
                    "not coordinates."
                )
    return fmt


def _format_from_extension(path: Path) -> str:
    fmt = format_for_extension(path.suffix)
    if fmt is None:
        raise CetpickError(
            f"{path.name}: unknown coordinate extension {path.suffix!r} "
            f"(expected one of {', '.join(sorted(POINT_EXTENSIONS))})."
        )
    return fmt.name


def _first_line(path: Path) -> str | None:
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.strip():
                    return line.strip()
    except OSError as err:
        raise CetpickError(f"{path}: cannot read the file ({err}).") from None
    return None


def _resolve_layout(layout, shape_zyx, path: Path) -> FileLayout:
    """A layout whose ``file_shape`` is filled in when any shape is known."""
    layout = layout or FileLayout.identity()
    if shape_zyx is None:
        return layout
    shape_zyx = tuple(int(s) for s in shape_zyx)
    if len(shape_zyx) != 3:
        raise CetpickError(f"{path.name}: tomogram shape must have 3 axes, not {shape_zyx}.")
    if layout.file_shape is None:
        file_shape = [0, 0, 0]
        for k, axis in enumerate(layout.view_axes):
            file_shape[axis] = shape_zyx[k]
        return FileLayout(layout.thickness_axis, tuple(file_shape))
    if layout.shape_zyx != shape_zyx:
        raise CetpickError(
            f"{path.name}: tomogram shape {shape_zyx} does not match the file layout "
            f"{layout.file_shape} (thickness axis {layout.thickness_axis})."
        )
    return layout


def check_inside(zyx, shape_zyx, path=None) -> None:
    """Raise CetpickError when any point lies outside a volume of ``shape_zyx`` voxels.

    A voxel with index ``i`` spans ``[i - 0.5, i + 0.5]``, so the volume spans
    ``[-0.5, n - 0.5]`` along each axis.
    """
    zyx = as_points(zyx)
    if shape_zyx is None or len(zyx) == 0:
        return
    upper = np.asarray(shape_zyx, float) - 0.5
    bad = np.any((zyx < -0.5) | (zyx > upper), axis=1)
    if np.any(bad):
        first = zyx[np.argmax(bad)]
        where = f"{Path(path).name}: " if path is not None else ""
        raise CetpickError(
            f"{where}{int(bad.sum())} of {len(zyx)} points lie outside the volume of shape "
            f"(z, y, x) {tuple(int(s) for s in shape_zyx)}, e.g. (z, y, x) "
            f"({', '.join(_fmt(v) for v in first)}); check the axis order, binning and "
            "tomogram."
        )


def _file_xyz(zyx, layout: FileLayout) -> np.ndarray:
    """napari zyx -> file-frame (x, y, z) = file indices (a2, a1, a0), 0-based."""
    return layout.to_file(zyx)[:, ::-1]


def _zyx_from_file_xyz(xyz, layout: FileLayout) -> np.ndarray:
    return layout.to_napari(as_points(xyz)[:, ::-1])


def _file_size_xyz(layout: FileLayout, path: Path, what: str) -> np.ndarray:
    if layout.file_shape is None:
        raise CetpickError(
            f"{path.name}: {what} needs the tomogram shape; open the tomogram first."
        )
    return np.asarray(layout.file_shape[::-1], float)


def _need_voxel_size(voxel_size_a, path: Path, what: str) -> float:
    if voxel_size_a is None or not float(voxel_size_a) > 0:
        raise CetpickError(
            f"{path.name}: {what} needs the voxel size in Å; set it (the header gave none)."
        )
    return float(voxel_size_a)


def _check_binning(binning) -> float:
    binning = float(binning)
    if not binning > 0:
        raise CetpickError(f"Binning must be > 0, not {plain(binning)}.")
    return binning


def binned_to_unbinned(zyx, binning: float = 1.0) -> np.ndarray:
    """Voxel coordinates of a tomogram binned by ``binning`` -> the unbinned tomogram's.

    A binned voxel ``i`` is the mean of unbinned voxels ``b*i ... b*i + b - 1``, so its
    centre is at ``b*i + (b - 1)/2`` (0-based voxel centres; the same definition as
    :class:`napari_cetpick.data.Geometry` uses for working voxels).
    """
    b = _check_binning(binning)
    return as_points(zyx) * b + (b - 1.0) / 2.0


def unbinned_to_binned(zyx, binning: float = 1.0) -> np.ndarray:
    """Inverse of :func:`binned_to_unbinned`: ``(u - (b - 1)/2) / b``."""
    b = _check_binning(binning)
    return (as_points(zyx) - (b - 1.0) / 2.0) / b


# Format frames. Each pair converts napari zyx <-> the (n, 3) x, y, z numbers of the file.


def zyx_to_imod(zyx, layout: FileLayout | None = None, binning: float = 1.0) -> np.ndarray:
    """napari zyx -> IMOD model (x, y, z) over the same file (or its unbinned original).

    3dmod puts (0, 0, 0) at the corner of the first XY pixel and at the centre of the first
    Z slice, so file index (a0, a1, a2) = MRC (z, y, x) is IMOD (a2 + 0.5, a1 + 0.5, a0).
    With ``binning`` b the voxel centres move to :func:`binned_to_unbinned` first: in x and
    y that is IMOD's own scaling ``b * (i + 0.5)``, in z ``b * i + (b - 1)/2``.
    """
    xyz = _file_xyz(binned_to_unbinned(zyx, binning), layout or FileLayout.identity())
    xyz[:, :2] += 0.5
    return xyz


def imod_to_zyx(xyz, layout: FileLayout | None = None, binning: float = 1.0) -> np.ndarray:
    """IMOD model (x, y, z) -> napari zyx; inverse of :func:`zyx_to_imod`."""
    xyz = as_points(xyz).copy()
    xyz[:, :2] -= 0.5
    return unbinned_to_binned(_zyx_from_file_xyz(xyz, layout or FileLayout.identity()), binning)


def zyx_to_relion5(zyx, layout: FileLayout, voxel_size_a: float) -> np.ndarray:
    """napari zyx -> RELION 5 ``rlnCenteredCoordinateX/Y/ZAngst``.

    Å from the tomogram centre at ``size / 2`` (0-based voxel index), as RELION 5's
    ``TomogramSet::loadTomogram`` (``centre = w0 / 2.0 ...``) and
    ``ParticleSet::getParticleCoordDecenteredPixel`` use it.
    """
    size = np.asarray(layout.file_shape[::-1], float)
    return (_file_xyz(zyx, layout) - size / 2.0) * float(voxel_size_a)


def relion5_to_zyx(xyz_a, layout: FileLayout, voxel_size_a: float) -> np.ndarray:
    """RELION 5 centred Å -> napari zyx; inverse of :func:`zyx_to_relion5`."""
    size = np.asarray(layout.file_shape[::-1], float)
    return _zyx_from_file_xyz(as_points(xyz_a) / float(voxel_size_a) + size / 2.0, layout)


# --------------------------------------------------------------------------- text tables


def _parse_numeric_lines(path: Path, min_columns: int = 3) -> np.ndarray:
    """Whitespace-separated numbers, one point per line; blank and ``#`` lines skipped."""
    rows = []
    ncol = None
    try:
        fh = open(path, encoding="utf-8", errors="strict")
    except OSError as err:
        raise CetpickError(f"{path}: cannot read the file ({err}).") from None
    with fh:
        try:
            for lineno, line in enumerate(fh, start=1):
                text = line.strip()
                if not text or text.startswith("#"):
                    continue
                words = text.replace(",", " ").split()
                try:
                    values = [float(w) for w in words]
                except ValueError:
                    hint = ""
                    if not rows:
                        hint = (" A header line or a name column does not belong in this format; "
                                "remove it, or save a .csv with the header x,y,z.")
                    raise CetpickError(
                        f"{path.name}: line {lineno} is not a row of numbers: {text[:60]!r}.{hint}"
                    ) from None
                if len(values) < min_columns:
                    raise CetpickError(
                        f"{path.name}: line {lineno} has {len(values)} numbers; "
                        f"expected at least {min_columns}."
                    )
                if ncol is not None and len(values) != ncol:
                    raise CetpickError(
                        f"{path.name}: line {lineno} has {len(values)} numbers but earlier "
                        f"lines have {ncol}."
                    )
                ncol = len(values)
                rows.append(values)
        except UnicodeDecodeError:
            raise CetpickError(f"{path.name}: not a text file of coordinates.") from None
    if not rows:
        raise CetpickError(f"{path.name}: the file contains no coordinates.")
    table = np.asarray(rows, dtype=float)
    if not np.all(np.isfinite(table)):
        raise CetpickError(f"{path.name}: the file contains NaN or infinite numbers.")
    return table


def read_imod_text(path, skip_columns: int = 0) -> tuple[np.ndarray, pd.DataFrame]:
    """Read ``model2point`` text: ``x y z`` per line (floats or integers).

    Parameters
    ----------
    path : str or Path
    skip_columns : int
        Leading columns to drop: 1 for ``model2point -contour`` output, 2 for ``-object``.

    Returns
    -------
    xyz : np.ndarray
        ``(n, 3)`` IMOD model coordinates.
    extra : pandas.DataFrame
        Columns after ``z`` (named ``col4``, ``col5``, ... by their 1-based position).
    """
    path = Path(path)
    table = _parse_numeric_lines(path, min_columns=3 + skip_columns)
    table = table[:, skip_columns:]
    extra = pd.DataFrame(
        {f"col{j + 1 + skip_columns}": table[:, j] for j in range(3, table.shape[1])}
    )
    return table[:, :3].copy(), extra


def _write_text_rows(path: Path, columns, header=None, sep=" ") -> None:
    with open(path, "w", encoding="utf-8") as fh:
        if header:
            fh.write(sep.join(header) + "\n")
        for row in zip(*columns):
            fh.write(sep.join(v if isinstance(v, str) else _fmt(v) for v in row) + "\n")


# --------------------------------------------------------------------------- readers


def _select_tomogram(names: pd.Series, wanted, path: Path) -> tuple[np.ndarray, str | None]:
    """Row mask and the tomogram name, choosing among several tomograms in one file."""
    names = names.astype(str)
    unique = list(dict.fromkeys(names))
    if wanted is not None:
        mask = (names == str(wanted)).to_numpy()
        if not mask.any():
            raise CetpickError(
                f"{path.name}: no points for tomogram {wanted!r}; the file has "
                f"{', '.join(unique[:10]) or 'none'}."
            )
        return mask, str(wanted)
    if len(unique) > 1:
        shown = ", ".join(unique[:10]) + (", ..." if len(unique) > 10 else "")
        raise CetpickError(
            f"{path.name}: the file holds points of {len(unique)} tomograms ({shown}); "
            "choose one by name."
        )
    return np.ones(len(names), bool), (unique[0] if unique else None)


def _read_star(path: Path, fmt, layout, voxel_size_a, tomogram_name, binning):
    import starfile

    try:
        blocks = starfile.read(path, always_dict=True)
    except Exception as err:  # starfile raises a variety of parser errors
        raise CetpickError(f"{path.name}: not a readable STAR file ({err}).") from None
    tables = {k: v for k, v in blocks.items() if isinstance(v, pd.DataFrame)}

    def has(df, cols):
        return all(c in df.columns for c in cols)

    candidates = [
        (name, df) for name, df in tables.items() if has(df, _STAR_PIXEL) or has(df, _STAR_CENTRED)
    ]
    if not candidates:
        raise CetpickError(
            f"{path.name}: no coordinate columns (rlnCoordinateX/Y/Z or "
            "rlnCenteredCoordinateX/Y/ZAngst) in any data block."
        )
    # RELION keeps particles in "data_particles"; otherwise take the first block with points.
    df = dict(candidates).get("particles", candidates[0][1])

    centred = has(df, _STAR_CENTRED)
    pixel = has(df, _STAR_PIXEL)
    use_centred = fmt == "star5" or (
        centred and (not pixel or (voxel_size_a is not None and layout.file_shape is not None))
    )
    if fmt == "star5" and not centred:
        raise CetpickError(
            f"{path.name}: no RELION 5 columns rlnCenteredCoordinateX/Y/ZAngst."
        )

    name = None
    if _STAR_TOMO in df.columns:
        mask, name = _select_tomogram(df[_STAR_TOMO], tomogram_name, path)
        df = df.loc[mask]
    df = df.reset_index(drop=True)

    cols = _STAR_CENTRED if use_centred else _STAR_PIXEL
    try:
        xyz = df[list(cols)].to_numpy(dtype=float)
    except (TypeError, ValueError):
        raise CetpickError(f"{path.name}: coordinate columns hold non-numbers.") from None
    if not np.all(np.isfinite(xyz)):
        raise CetpickError(f"{path.name}: coordinate columns hold NaN or empty values.")
    if use_centred:
        vs = _need_voxel_size(voxel_size_a, path, "RELION 5 centred Å coordinates")
        _file_size_xyz(layout, path, "RELION 5 centred coordinates")
        zyx = relion5_to_zyx(xyz, layout, vs)
    else:
        zyx = unbinned_to_binned(_zyx_from_file_xyz(xyz, layout), binning)

    features = pd.DataFrame(index=df.index)
    score_label = next((c for c in STAR_SCORE_LABELS if c in df.columns), None)
    if score_label is not None:
        features["score"] = pd.to_numeric(df[score_label], errors="coerce")
    skip = set(_STAR_PIXEL) | set(_STAR_CENTRED) | {_STAR_TOMO, score_label}
    extra = {v: k for k, v in STAR_EXTRA_LABELS.items()}
    for col in df.columns:
        if col == STAR_CLASS_NAME:
            features[CLASS_FEATURE] = df[col].astype(str).to_numpy(dtype=object)
        elif col not in skip:
            features[extra.get(col, col)] = df[col].to_numpy()
    return zyx, features, name


def _read_csv(path: Path, layout, tomogram_name, binning):
    try:
        df = pd.read_csv(path, dtype={CLASS_FEATURE: str})
    except pd.errors.EmptyDataError:
        raise CetpickError(
            f"{path.name}: the CSV file is empty (it needs a header x,y,z)."
        ) from None
    except Exception as err:
        raise CetpickError(f"{path.name}: not a readable CSV file ({err}).") from None
    lower = {str(c).strip().lower(): c for c in df.columns}
    if not all(k in lower for k in ("x", "y", "z")):
        raise CetpickError(
            f"{path.name}: the CSV header needs columns x, y and z; found "
            f"{', '.join(map(str, df.columns))}."
        )
    name = None
    if _CSV_TOMO in lower:
        mask, name = _select_tomogram(df[lower[_CSV_TOMO]], tomogram_name, path)
        df = df.loc[mask].reset_index(drop=True)
    try:
        xyz = df[[lower["x"], lower["y"], lower["z"]]].to_numpy(dtype=float)
    except (TypeError, ValueError):
        raise CetpickError(f"{path.name}: x, y, z columns hold non-numbers.") from None
    if not np.all(np.isfinite(xyz)):
        raise CetpickError(f"{path.name}: x, y, z columns hold empty or NaN values.")
    zyx = unbinned_to_binned(_zyx_from_file_xyz(xyz, layout), binning)
    skip = {lower["x"], lower["y"], lower["z"], lower.get(_CSV_TOMO)}
    features = df[[c for c in df.columns if c not in skip]].reset_index(drop=True)
    return zyx, features, name


def _read_mod(path: Path, layout, binning):
    """Points of every contour of every object; ``object_id`` (0-based) when there are
    several objects with points, ``class`` (the object's name) when any of them is named."""
    import imodmodel

    try:
        model = imodmodel.ImodModel.from_file(path)
        points, object_ids = [], []
        for k, obj in enumerate(model.objects):
            for contour in obj.contours:
                xyz = np.asarray(contour.points, float).reshape(-1, 3)
                points.append(xyz)
                object_ids.append(np.full(len(xyz), k))
    except Exception as err:
        raise CetpickError(f"{path.name}: not a readable IMOD model ({err}).") from None
    n = sum(len(p) for p in points)
    if n == 0:
        raise CetpickError(f"{path.name}: the IMOD model contains no points.")
    object_ids = np.concatenate(object_ids)
    zyx = imod_to_zyx(np.concatenate(points), layout, binning)
    features = pd.DataFrame(index=pd.RangeIndex(n))
    used = list(dict.fromkeys(object_ids.tolist()))
    if len(used) > 1:
        features["object_id"] = object_ids
    names = {k: _object_name(model.objects[k]) for k in used}
    if any(names.values()):
        # 3dmod numbers objects from 1; an unnamed one among named ones is called by its number
        label = {k: names[k] or f"object{k + 1}" for k in used}
        features[CLASS_FEATURE] = np.array([label[k] for k in object_ids.tolist()], dtype=object)
    return zyx, features


def _object_name(obj) -> str:
    name = obj.header.name
    if isinstance(name, bytes):
        name = name.decode("utf-8", errors="replace")
    return str(name).strip()


def read_image_list(path) -> dict:
    """Read an original cet_pick image list (``image_name<TAB>rec_path``, with header).

    Relative ``rec_path`` entries are resolved against the list's folder.
    """
    path = Path(path)
    df = _read_tsv(path, _IMAGE_LIST_HEADER)
    out = {}
    for name, rec in zip(df["image_name"].astype(str), df["rec_path"].astype(str)):
        rec_path = Path(rec)
        out[name] = rec_path if rec_path.is_absolute() else path.parent / rec_path
    return out


def write_image_list(path, mapping) -> Path:
    """Write an original cet_pick image list: ``image_name<TAB>rec_path`` with header."""
    path = Path(path)
    names = [str(k) for k in mapping]
    recs = [str(v) for v in mapping.values()]
    _write_text_rows(path, [names, recs], header=_IMAGE_LIST_HEADER, sep="\t")
    return path


def _read_tsv(path: Path, header) -> pd.DataFrame:
    # The original tools write tabs; hand-made files often use spaces.
    first = _first_line(path) or ""
    sep = "\t" if "\t" in first else r"\s+"
    try:
        df = pd.read_csv(path, sep=sep, dtype={"image_name": str})
    except pd.errors.EmptyDataError:
        raise CetpickError(f"{path.name}: the file is empty.") from None
    except Exception as err:
        raise CetpickError(f"{path.name}: not a readable table ({err}).") from None
    if tuple(df.columns[: len(header)]) != tuple(header):
        raise CetpickError(
            f"{path.name}: expected the header {' '.join(header)}, found "
            f"{' '.join(map(str, df.columns))}."
        )
    return df


def read_coordinate_list(path) -> dict:
    """Read an original cet_pick coordinate list.

    Returns
    -------
    dict
        ``image_name -> (n, 3)`` napari zyx (``z_coord`` is the thickness).
    """
    path = Path(path)
    df = _read_tsv(path, _LIST_HEADER)
    try:
        xyz = df[list(_LIST_HEADER[1:])].to_numpy(dtype=float)
    except (TypeError, ValueError):
        raise CetpickError(f"{path.name}: coordinate columns hold non-numbers.") from None
    if not np.all(np.isfinite(xyz)):
        raise CetpickError(f"{path.name}: coordinate columns hold empty or NaN values.")
    out = {}
    names = df["image_name"].astype(str).to_numpy()
    for name in dict.fromkeys(names):
        sel = xyz[names == name]
        out[name] = sel[:, ::-1].copy()  # (x, y, z) -> (z, y, x)
    return out


def write_coordinate_list(path, mapping, decimals: int = 0) -> Path:
    """Write an original cet_pick coordinate list (tab-separated, with header).

    Parameters
    ----------
    path : str or Path
    mapping : dict
        ``image_name -> (n, 3)`` napari zyx.
    decimals : int
        0 (default) rounds to whole voxels as the original tools write them.
    """
    path = Path(path)
    names, cols = [], [[], [], []]
    for name, zyx in mapping.items():
        zyx = np.round(as_points(zyx), decimals)
        names += [str(name)] * len(zyx)
        for k, axis in enumerate((2, 1, 0)):  # x, y, z columns
            cols[k] += list(zyx[:, axis])
    _write_text_rows(path, [names] + cols, header=_LIST_HEADER, sep="\t")
    return path


def list_tomogram_names(path, fmt: str | None = None) -> list:
    """Tomogram names in a STAR (``rlnTomoName``), CSV (``tomogram``) or cet_pick list.

    Returns an empty list for formats without names or files without that column.
    """
    path = Path(path)
    fmt = fmt or guess_format(path)
    if fmt in ("star", "star5"):
        import starfile

        try:
            blocks = starfile.read(path, always_dict=True)
        except Exception as err:
            raise CetpickError(f"{path.name}: not a readable STAR file ({err}).") from None
        tables = [v for v in blocks.values() if isinstance(v, pd.DataFrame)]
        with_coords = [
            df for df in tables
            if set(_STAR_PIXEL) <= set(df.columns) or set(_STAR_CENTRED) <= set(df.columns)
        ]
        names = [df[_STAR_TOMO] for df in with_coords if _STAR_TOMO in df.columns]
        return list(dict.fromkeys(names[0].astype(str))) if names else []
    if fmt == "csv":
        try:
            df = pd.read_csv(path)
        except Exception:
            return []
        col = {str(c).strip().lower(): c for c in df.columns}.get(_CSV_TOMO)
        return [] if col is None else list(dict.fromkeys(df[col].astype(str)))
    if fmt == "cetpick_list":
        return list(dict.fromkeys(_read_tsv(path, _LIST_HEADER)["image_name"].astype(str)))
    return []


def read_points(
    path,
    fmt: str | None = None,
    layout: FileLayout | None = None,
    voxel_size_a: float | None = None,
    shape_zyx=None,
    tomogram_name: str | None = None,
    binning: float = 1.0,
) -> PointSet:
    """Read particle coordinates into napari zyx.

    Parameters
    ----------
    path : str or Path
    fmt : str, optional
        One of :data:`FORMATS`; default from :func:`guess_format`. ``star`` reads RELION 4
        pixels, or RELION 5 centred Å when only those are present (or when the voxel size
        and shape are known).
    layout : FileLayout, optional
        Axis layout of the tomogram the file refers to; default thickness first.
    voxel_size_a : float, optional
        Voxel size (Å) of that tomogram; needed for RELION 5 centred Å.
    shape_zyx : tuple, optional
        Napari shape of the tomogram; needed for RELION 5, and used to reject points outside
        the volume.
    tomogram_name : str, optional
        Which tomogram to take from a STAR/CSV/cet_pick list holding several.
    binning : float
        Coordinates in the file are in pixels ``binning`` times smaller than this
        tomogram's voxels (IMOD, ``.mod``, RELION 4, CSV); they are mapped back with
        :func:`unbinned_to_binned` (``(u - (b - 1)/2) / b`` for voxel centres).

    Returns
    -------
    PointSet

    Raises
    ------
    CetpickError
        Unknown extension or format, malformed or empty file, missing coordinate columns,
        ambiguous tomogram, or points outside the volume.
    """
    path = Path(path)
    if not path.is_file():
        raise CetpickError(f"{path}: file not found.")
    fmt = fmt or guess_format(path)
    if fmt not in FORMATS:
        raise CetpickError(
            f"{path.name}: unknown coordinate format {fmt!r} (use one of {FORMATS})."
        )
    layout = _resolve_layout(layout, shape_zyx, path)
    shape_zyx = layout.shape_zyx
    features = None
    name = tomogram_name

    if fmt == "imod":
        xyz, features = read_imod_text(path)
        zyx = imod_to_zyx(xyz, layout, binning)
    elif fmt == "mod":
        zyx, features = _read_mod(path, layout, binning)
    elif fmt in ("star", "star5"):
        zyx, features, name = _read_star(path, fmt, layout, voxel_size_a, tomogram_name, binning)
    elif fmt == "csv":
        zyx, features, name = _read_csv(path, layout, tomogram_name, binning)
    elif fmt == "cetpick":
        table = _parse_numeric_lines(path, min_columns=3)
        zyx = table[:, [1, 2, 0]]  # x z y -> z y x
        features = pd.DataFrame(
            {("score" if j == 3 else f"col{j + 1}"): table[:, j] for j in range(3, table.shape[1])}
        )
    else:  # cetpick_list
        df = _read_tsv(path, _LIST_HEADER)
        mask, name = _select_tomogram(df["image_name"], tomogram_name, path)
        df = df.loc[mask].reset_index(drop=True)
        try:
            zyx = df[["z_coord", "y_coord", "x_coord"]].to_numpy(dtype=float)
        except (TypeError, ValueError):
            raise CetpickError(f"{path.name}: coordinate columns hold non-numbers.") from None
        if not np.all(np.isfinite(zyx)):
            raise CetpickError(f"{path.name}: coordinate columns hold empty or NaN values.")
        features = df.drop(columns=list(_LIST_HEADER)).reset_index(drop=True)

    check_inside(zyx, shape_zyx, path)
    return PointSet(zyx=zyx, features=features, voxel_size_a=voxel_size_a, tomogram_name=name)


# --------------------------------------------------------------------------- writers


def write_points(
    path,
    zyx,
    features=None,
    fmt: str | None = None,
    layout: FileLayout | None = None,
    voxel_size_a: float | None = None,
    tomogram_name: str | None = None,
    shape_zyx=None,
    binning: float = 1.0,
    class_names=None,
    class_colours: dict | None = None,
) -> Path:
    """Write napari zyx coordinates in a file format, in the tomogram file's own frame.

    Parameters
    ----------
    path : str or Path
    zyx : array-like
        ``(n, 3)`` napari-frame voxel coordinates.
    features : pandas.DataFrame, optional
        Per-point values; ``score`` is written where the format has a place for it
        (:attr:`~napari_cetpick.io.formats.PointFormat.carries_scores`). A ``class`` column
        (text) names each point's particle class: CSV keeps it as a column, STAR writes
        ``rlnClassNumber`` (1-based) and ``cetpickClassName``, ``.mod`` one named object per
        class (:attr:`~napari_cetpick.io.formats.PointFormat.carries_classes`). The other
        formats hold one class: several raise :class:`CetpickError` (write one file per class).
    fmt : str, optional
        One of :data:`FORMATS`; default from the extension
        (:func:`~napari_cetpick.io.formats.format_for_extension`).
    layout : FileLayout, optional
        Axis layout of the tomogram file; None means thickness first (identity).
    voxel_size_a : float, optional
        Needed for ``star5``; stored in ``.mod`` headers.
    tomogram_name : str, optional
        Written as ``rlnTomoName`` (STAR), ``tomogram`` (CSV), ``image_name`` (cet_pick list,
        default: the file stem).
    shape_zyx : tuple, optional
        Napari shape of the tomogram: needed for ``star5``, and points outside it are refused.
    binning : float
        Export picks made on a tomogram binned by this factor to the unbinned frame
        (IMOD, ``.mod``, RELION 4, CSV): voxel centres go to :func:`binned_to_unbinned`,
        ``b * i + (b - 1)/2``.
    class_names : sequence of str, optional
        Every class, in order: STAR class numbers follow it and ``.mod`` gets an object for
        each (even without points). Default: the classes of the ``class`` column in order of
        first appearance. Ignored without a ``class`` column.
    class_colours : dict, optional
        ``{class name: "#rrggbb"}``: the colours of the ``.mod`` objects.

    Returns
    -------
    Path
    """
    path = Path(path)
    fmt = fmt or _format_from_extension(path)
    if fmt not in FORMATS:
        raise CetpickError(
            f"{path.name}: unknown coordinate format {fmt!r} (use one of {FORMATS})."
        )
    zyx = as_points(zyx)
    if not np.all(np.isfinite(zyx)):
        raise CetpickError(f"{path.name}: coordinates contain NaN or infinite values.")
    n = len(zyx)
    if features is None or len(pd.DataFrame(features).columns) == 0:
        features = pd.DataFrame(index=pd.RangeIndex(n))
    else:
        features = pd.DataFrame(features).reset_index(drop=True)
    if len(features) != n:
        raise CetpickError(f"{path.name}: {len(features)} feature rows for {n} points.")
    layout = _resolve_layout(layout, shape_zyx, path)
    check_inside(zyx, layout.shape_zyx, path)
    binning = _check_binning(binning)
    classes = _point_classes(features, class_names, fmt, path)

    try:
        if fmt == "imod":
            xyz = zyx_to_imod(zyx, layout, binning)
            _write_text_rows(path, [xyz[:, 0], xyz[:, 1], xyz[:, 2]])
        elif fmt == "mod":
            _write_mod(path, zyx_to_imod(zyx, layout, binning), layout, voxel_size_a, binning, classes,
                       class_colours)
        elif fmt in ("star", "star5"):
            _write_star(path, zyx, features, fmt, layout, voxel_size_a, tomogram_name, binning, classes)
        elif fmt == "csv":
            xyz = _file_xyz(binned_to_unbinned(zyx, binning), layout)
            df = pd.DataFrame({"x": xyz[:, 0], "y": xyz[:, 1], "z": xyz[:, 2]})
            if tomogram_name is not None:
                df.insert(0, _CSV_TOMO, tomogram_name)
            for col in features.columns:
                if str(col).lower() not in ("x", "y", "z", _CSV_TOMO):
                    df[col] = features[col].to_numpy()
            df.to_csv(path, index=False, float_format="%.6g")
        elif fmt == "cetpick":
            cols = [zyx[:, 2], zyx[:, 0], zyx[:, 1]]  # x z y
            if "score" in features.columns:
                cols.append([_fmt(v, 6) for v in features["score"].to_numpy(float)])
            _write_text_rows(path, cols)
        else:  # cetpick_list
            write_coordinate_list(path, {tomogram_name or path.stem: zyx})
    except OSError as err:
        raise CetpickError(f"{path}: cannot write the file ({err.strerror or err}).") from None
    return path


def _point_classes(features: pd.DataFrame, class_names, fmt: str, path: Path):
    """``(per point class name, every class in order)`` from the ``class`` feature, or None.

    Refuses classes not in ``class_names`` and several classes in a format that holds one.
    """
    if CLASS_FEATURE not in features.columns:
        return None
    labels = np.array([str(c) for c in features[CLASS_FEATURE].tolist()], dtype=object)
    order = list(dict.fromkeys(str(c) for c in (class_names or [])))
    present = list(dict.fromkeys(labels.tolist()))
    stray = [c for c in present if c not in order]
    if class_names is not None and stray:
        raise CetpickError(f"{path.name}: a point has the class {stray[0]!r}, which is not one of the classes "
                           f"given ({', '.join(order) or 'none'}).")
    order += stray
    if len(present) > 1 and not point_format(fmt).carries_classes:
        raise CetpickError(f"{path.name}: the {fmt} format holds one particle class, and these picks have "
                           f"{len(present)} ({', '.join(present)}); write one file per class.")
    return labels, order


def hex_to_rgb(colour) -> tuple[float, float, float]:
    """``"#rrggbb"`` -> red, green, blue in 0..1 (as IMOD object colours are stored)."""
    text = str(colour).strip()
    digits = text[1:] if text.startswith("#") else ""
    if len(digits) != 6 or any(c not in string.hexdigits for c in digits):
        raise CetpickError(f"Colour {colour!r} is not of the form '#rrggbb'.")
    return tuple(int(digits[i:i + 2], 16) / 255.0 for i in (0, 2, 4))


def _write_star(path, zyx, features, fmt, layout, voxel_size_a, tomogram_name, binning, classes=None):
    import starfile

    if fmt == "star5":
        vs = _need_voxel_size(voxel_size_a, path, "RELION 5 export")
        _file_size_xyz(layout, path, "RELION 5 export")
        xyz, cols = zyx_to_relion5(zyx, layout, vs), _STAR_CENTRED
    else:
        xyz, cols = _file_xyz(binned_to_unbinned(zyx, binning), layout), _STAR_PIXEL
    df = pd.DataFrame({c: xyz[:, k] for k, c in enumerate(cols)})
    if tomogram_name is not None:
        df.insert(0, _STAR_TOMO, str(tomogram_name))
    if "score" in features.columns:
        df[STAR_SCORE_LABELS[0]] = features["score"].to_numpy(float)
    if classes is not None:
        labels, order = classes
        number = {name: k + 1 for k, name in enumerate(order)}
        df[STAR_CLASS_NUMBER] = np.array([number[c] for c in labels], dtype=int)
        df[STAR_CLASS_NAME] = labels
    for col in features.columns:
        if col in STAR_EXTRA_LABELS:
            df[STAR_EXTRA_LABELS[col]] = features[col].to_numpy(float)
        # other napari features: RELION's own labels only
        elif str(col).startswith("rln") and col not in df.columns:
            df[col] = features[col].to_numpy()
    starfile.write({"particles": df}, path, overwrite=True)


def _write_mod(path, xyz, layout, voxel_size_a, binning, classes=None, class_colours=None):
    import imodmodel

    if classes is None:
        df = pd.DataFrame({"x": xyz[:, 0], "y": xyz[:, 1], "z": xyz[:, 2]}).astype(np.float32)
        df["object_id"] = 0
        df["contour_id"] = 0
        model = imodmodel.ImodModel.from_dataframe(df)
    else:
        model = _mod_of_classes(imodmodel, xyz, classes, class_colours or {}, path)
    if layout.file_shape is not None:
        nx, ny, nz = (int(round(s * binning)) for s in layout.file_shape[::-1])
        model.header.xmax, model.header.ymax, model.header.zmax = nx, ny, nz
    if voxel_size_a:
        model.header.pixelsize = float(voxel_size_a) / binning
        model.header.units = -10  # IMOD unit code for Ångström
    for obj in model.objects:
        obj.header.pdrawsize = 5  # sphere radius (pixels) so scattered points show in 3dmod
    with warnings.catch_warnings():
        # imodmodel still calls pydantic's deprecated .dict(); nothing for users to act on.
        warnings.simplefilter("ignore", DeprecationWarning)
        model.to_file(path)


def _mod_of_classes(imodmodel, xyz, classes, class_colours: dict, path: Path):
    """One scattered-point object per class, named after it (and coloured when asked), in class order."""
    from imodmodel.models import Contour, Object

    labels, order = classes
    unknown = [c for c in class_colours if c not in order]
    if unknown:
        raise CetpickError(f"{path.name}: a colour is given for {unknown[0]!r}, which is not one of the classes "
                           f"({', '.join(order)}).")
    model = imodmodel.ImodModel()
    for name in order:
        if len(name.encode("utf-8")) > _MOD_NAME_BYTES:
            raise CetpickError(f"{path.name}: class name {name!r} is longer than the {_MOD_NAME_BYTES} bytes an "
                               "IMOD object name holds.")
        obj = Object()
        obj.header.name = name
        obj.header.flags.scattered = True
        obj.header.flags.open = False
        if class_colours.get(name):
            try:
                obj.color = hex_to_rgb(class_colours[name])
            except CetpickError as err:
                raise CetpickError(f"{path.name}: class {name!r}: {err}") from None
        points = xyz[labels == name].astype(np.float32)
        if len(points):
            obj.contours.append(Contour(points=points))
        obj.update_sizes()
        model.objects.append(obj)
    model.update_sizes()
    return model


def imod_text_to_coordinate_list(
    folder_or_files, out_path, order: str = "xzy", ext: str = ".txt"
) -> Path:
    """Build an original cet_pick coordinate list from IMOD text files (``cetpick convert``).

    One ``model2point`` text file per tomogram; ``image_name`` is the file stem. As in the
    original ``generate_train_file.py``, the three columns of the IMOD text are the
    thickness-frame x, y, z in the order ``order`` (``xzy``: x, thickness, y; the usual
    unrotated IMOD reconstruction). Unlike the original, IMOD's half-pixel origin on its x
    and y columns is removed before rounding to whole voxels.

    Parameters
    ----------
    folder_or_files : str, Path or list of them
        A folder (every ``*ext`` file in it) or explicit files.
    out_path : str or Path
    order : {"xzy", "xyz", "zxy"}
    ext : str
        Extension of the IMOD text files when a folder is given.

    Returns
    -------
    Path
    """
    # Each column order is the IMOD text of a file with the thickness on one axis.
    thickness_axis = {"xyz": 0, "xzy": 1, "zxy": 2}.get(order)
    if thickness_axis is None:
        raise CetpickError(f"Column order must be one of xyz, xzy, zxy, not {order!r}.")
    out_path = Path(out_path)
    if isinstance(folder_or_files, (str, Path)) and Path(folder_or_files).is_dir():
        files = sorted(Path(folder_or_files).glob(f"*{ext}"))
    elif isinstance(folder_or_files, (str, Path)):
        files = [Path(folder_or_files)]
    else:
        files = [Path(f) for f in folder_or_files]
    skip_suffixes = ("_train_imgs", "_test_imgs", "_train_coords", "_imgs", "_coords")
    files = [
        f for f in files
        if f.resolve() != out_path.resolve() and not f.stem.endswith(skip_suffixes)
    ]
    if not files:
        raise CetpickError(f"{folder_or_files}: no IMOD text files ({ext}) found.")
    layout = FileLayout(thickness_axis)
    mapping = {}
    for f in files:
        xyz, _ = read_imod_text(f)
        mapping[f.stem] = imod_to_zyx(xyz, layout)
    return write_coordinate_list(out_path, mapping)
