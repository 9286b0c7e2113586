"""copick projects: tomograms read lazily from OME-Zarr, picks read and written in Å.

copick (the data layer of the CZ cryoET Data Portal) keeps, per *run*, tomograms as
OME-Zarr pyramids per voxel spacing and tomogram type, and picks as JSON per object name,
user id and session id. Its convention (copick docs, "Geometry Conventions" §1–3):

- a tomogram array is stored ``[z, y, x]``; the thickness is its ``z``, so the napari view is
  the array itself (``FileLayout.identity``);
- a pick's location is ``(x, y, z)`` in Å from the volume's corner, and the voxel with array
  index ``(iz, iy, ix)`` sits at ``(ix·s, iy·s, iz·s)`` (``s`` = voxel spacing), i.e. voxel
  centres at ``i·s``. copick's own RELION export agrees: it centres with ``shape / 2 · s``,
  which equals RELION 5's centre at index ``size / 2``;
- the particle centre is the location plus the translation of the pick's transform.

Only this module converts between that frame and the package's napari ``zyx`` voxels.
copick is an optional dependency (``pip install napari-cetpick[copick]``), imported only here
and only when a project is opened.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from napari_cetpick.errors import CetpickError
from napari_cetpick.io.tomogram import FileLayout, Tomogram, as_points

INSTALL_HINT = "pip install 'napari-cetpick[copick]'"


# --------------------------------------------------------------------------- conventions
def zyx_to_copick(zyx, voxel_spacing_a: float) -> np.ndarray:
    """``(n, 3)`` napari zyx voxels -> ``(n, 3)`` copick ``(x, y, z)`` in Å (voxel centre at ``i·s``)."""
    s = _spacing(voxel_spacing_a)
    return as_points(zyx)[:, ::-1] * s


def copick_to_zyx(xyz_a, voxel_spacing_a: float) -> np.ndarray:
    """``(n, 3)`` copick ``(x, y, z)`` in Å -> ``(n, 3)`` napari zyx voxels."""
    s = _spacing(voxel_spacing_a)
    return as_points(xyz_a)[:, ::-1] / s


def _spacing(voxel_spacing_a) -> float:
    try:
        s = float(voxel_spacing_a)
    except (TypeError, ValueError):
        s = float("nan")
    if not (math.isfinite(s) and s > 0):
        raise CetpickError(f"copick voxel spacing must be a positive number of Å, not {voxel_spacing_a!r}.")
    return s


# --------------------------------------------------------------------------- project access
def _import_copick():
    import logging

    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        import copick  # noqa: F401
    except ImportError:
        raise CetpickError(f"copick support needs the copick package: {INSTALL_HINT}.") from None
    finally:
        # importing copick installs a handler on the root logger that prints every library's
        # INFO records to stdout (it would mix Dask's chatter into `cetpick detect --json`)
        root.handlers[:] = handlers
        root.setLevel(level)
    return copick


def open_copick(config_path):
    """The copick root of a project configuration file (``CetpickError`` when it cannot be opened)."""
    copick = _import_copick()
    path = Path(config_path)
    if not path.is_file():
        raise CetpickError(f"{path}: copick configuration file not found.")
    try:
        return copick.from_file(str(path))
    except Exception as exc:  # copick raises pydantic/JSON/OS errors for a bad configuration
        raise CetpickError(f"{path.name}: not a readable copick configuration "
                           f"({type(exc).__name__}: {_first_line(exc)}).") from None


def _first_line(exc) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__


def _get_run(root, run_name: str):
    run = root.get_run(run_name)
    if run is None:
        raise CetpickError(f"copick project has no run {run_name!r}.")
    return run


def _check_object(root, object_name: str):
    obj = root.get_object(object_name)
    if obj is None:
        names = ", ".join(o.name for o in root.pickable_objects) or "none"
        raise CetpickError(f"copick project has no pickable object {object_name!r} (objects: {names}).")
    return obj


def check_copick_objects(root, object_names) -> None:
    """One :class:`CetpickError` naming every object of ``object_names`` the project lacks."""
    missing = [n for n in dict.fromkeys(object_names) if root.get_object(n) is None]
    if missing:
        names = ", ".join(o.name for o in root.pickable_objects) or "none"
        which = ", ".join(repr(n) for n in missing)
        raise CetpickError(f"copick project has no pickable object{'s' if len(missing) > 1 else ''} {which} "
                           f"(objects: {names}); add {'them' if len(missing) > 1 else 'it'} to the project "
                           "configuration.")


def copick_object_diameter_a(root, object_name: str) -> float | None:
    """Particle diameter in Å from the object's radius in the project configuration, or None."""
    r = _check_object(root, object_name).radius
    return None if r is None or not r > 0 else 2.0 * float(r)


def copick_run_names(root) -> list[str]:
    """Names of every run of the project, in the project's order."""
    return [r.name for r in root.runs]


# --------------------------------------------------------------------------- tomograms
class LazyVolume:
    """A read-only ``(Z, Y, X)`` array-like over a Zarr array: slicing reads only those chunks.

    ``volume[z0:z1, y0:y1, x0:x1]`` returns a NumPy array; ``np.asarray(volume)`` reads the
    whole array (avoid it for large tomograms). The detection engine reads tile by tile.
    """

    def __init__(self, array, name: str = ""):
        self._array = array
        self.name = name

    @property
    def shape(self) -> tuple:
        return tuple(int(s) for s in self._array.shape)

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def dtype(self):
        return np.dtype(self._array.dtype)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key) -> np.ndarray:
        return np.asarray(self._array[key])

    def __array__(self, dtype=None, copy=None):
        out = np.asarray(self._array[...])
        return out if dtype is None else out.astype(dtype, copy=False)

    def __repr__(self) -> str:
        return f"LazyVolume({self.name!r}, shape={self.shape}, dtype={self.dtype})"


def _level0_path(group) -> str:
    """Path of the finest level of an OME-Zarr multiscale group (``"0"`` when undeclared)."""
    try:
        datasets = group.attrs["multiscales"][0]["datasets"]
    except (KeyError, IndexError, TypeError):
        return "0"

    def scale(d):
        for t in d.get("coordinateTransformations", []):
            if t.get("type") == "scale":
                return float(np.prod(t["scale"]))
        return math.inf

    return str(min(datasets, key=scale)["path"]) if datasets else "0"


def open_copick_tomogram(root, run_name: str, voxel_spacing_a: float, tomo_type: str) -> Tomogram:
    """A copick tomogram as a :class:`Tomogram` whose ``data`` is a :class:`LazyVolume`.

    Nothing but the Zarr metadata is read here; detection reads tile by tile and training
    reads the volume once while binning it.
    """
    import zarr

    s = _spacing(voxel_spacing_a)
    run = _get_run(root, run_name)
    vs = run.get_voxel_spacing(s)
    if vs is None:
        have = ", ".join(f"{v.voxel_size:g}" for v in run.voxel_spacings) or "none"
        raise CetpickError(f"copick run {run_name!r} has no voxel spacing {s:g} Å (has: {have}).")
    tomos = vs.get_tomograms(tomo_type)
    if not tomos:
        have = ", ".join(t.tomo_type for t in vs.tomograms) or "none"
        raise CetpickError(f"copick run {run_name!r} has no tomogram of type {tomo_type!r} at {s:g} Å "
                           f"(types: {have}).")
    try:
        group = zarr.open(tomos[0].zarr(), mode="r")
        array = group[_level0_path(group)]
    except Exception as exc:
        raise CetpickError(f"copick run {run_name!r}: the {tomo_type} tomogram at {s:g} Å is not a readable "
                           f"OME-Zarr ({type(exc).__name__}: {_first_line(exc)}).") from None
    if array.ndim != 3:
        raise CetpickError(f"copick run {run_name!r}: the {tomo_type} tomogram has shape {array.shape}, not 3D.")
    data = LazyVolume(array, f"{run_name}/{tomo_type}@{s:g}")
    return Tomogram(data=data, voxel_size_a=s, header_voxel_size_a=s, layout=FileLayout.identity(data.shape),
                    path=None, notes=[])


# --------------------------------------------------------------------------- picks
@dataclass
class CopickPickSet:
    """One set of picks read from a project, in napari zyx voxels of a voxel spacing."""

    run: str
    user_id: str
    session_id: str
    zyx: np.ndarray
    scores: np.ndarray


def _positions_a(picks) -> np.ndarray:
    """Particle centres in Å: location plus the transform's translation."""
    if hasattr(picks, "full_positions"):
        pos = picks.full_positions()
    else:  # older copick: add the translation ourselves
        pos, transforms = picks.numpy()
        if len(pos):
            pos = pos + transforms[:, :3, 3]
    return np.asarray(pos, float).reshape(-1, 3)


def read_copick_picks(root, run_name: str, object_name: str, voxel_spacing_a: float, user_id: str | None = None,
                      session_id: str | None = None, users_only: bool = True) -> list[CopickPickSet]:
    """Every pick set of an object in a run, as napari zyx voxels at ``voxel_spacing_a``.

    ``user_id``/``session_id`` filter the sets; without them and with ``users_only``, sets
    written by tools (session id ``"0"``, e.g. an earlier detection) are left out, so that a
    model is never trained on its own picks.
    """
    s = _spacing(voxel_spacing_a)
    _check_object(root, object_name)
    run = _get_run(root, run_name)
    sets = run.get_picks(object_name=object_name, user_id=user_id, session_id=session_id)
    out = []
    for p in sets:
        if users_only and user_id is None and session_id is None and str(p.session_id) == "0":
            continue
        try:
            pos = _positions_a(p)
            sc = np.asarray(p.scores(), float) if hasattr(p, "scores") else np.ones(len(pos))
        except Exception as exc:
            raise CetpickError(f"copick run {run_name!r}: picks of {object_name!r} by {p.user_id}/{p.session_id} "
                               f"are not readable ({type(exc).__name__}: {_first_line(exc)}).") from None
        out.append(CopickPickSet(run_name, str(p.user_id), str(p.session_id), copick_to_zyx(pos, s), sc))
    return out


def copick_runs_with_picks(root, object_name: str, user_id: str | None = None, session_id: str | None = None,
                           users_only: bool = True) -> list[str]:
    """Runs that hold at least one (non-empty) pick set of the object under those filters."""
    _check_object(root, object_name)
    names = []
    for run in root.runs:
        for p in run.get_picks(object_name=object_name, user_id=user_id, session_id=session_id):
            if users_only and user_id is None and session_id is None and str(p.session_id) == "0":
                continue
            try:
                n = len(p.points or [])
            except Exception:  # unreadable sets are reported when they are read
                n = 1
            if n:
                names.append(run.name)
                break
    return names


def write_copick_picks(root, run_name: str, object_name: str, zyx, scores, voxel_spacing_a: float,
                       user_id: str = "cetpick", session_id: str = "0") -> str:
    """Write picks (with scores) into the project, replacing that user/session's set; returns its label.

    The set records its voxel spacing; :func:`copick_picks_complete` uses that to tell a
    finished set from one a killed run left empty or truncated.
    """
    s = _spacing(voxel_spacing_a)
    _check_object(root, object_name)
    run = _get_run(root, run_name)
    zyx = as_points(zyx)
    scores = np.asarray(scores, float).reshape(-1)
    if len(scores) != len(zyx):
        raise CetpickError(f"copick run {run_name!r}: {len(scores)} scores for {len(zyx)} picks.")
    try:
        picks = run.new_picks(object_name, str(session_id), user_id=str(user_id), exist_ok=True)
        picks.meta.voxel_spacing = s
        picks.meta.run_name = run_name
        picks.from_numpy(zyx_to_copick(zyx, s), scores=scores)
    except CetpickError:
        raise
    except Exception as exc:
        raise CetpickError(f"copick run {run_name!r}: could not write picks of {object_name!r} "
                           f"({type(exc).__name__}: {_first_line(exc)}).") from None
    return f"copick:{run_name}/{user_id}_{session_id}_{object_name}"


def copick_picks_complete(root, run_name: str, object_name: str, user_id: str, session_id: str) -> bool:
    """True when the run has a fully written set from :func:`write_copick_picks`.

    copick creates an empty set before it writes the points, and its file storage is not
    atomic; a set counts as finished only if it parses and records its voxel spacing.
    """
    run = root.get_run(run_name)
    if run is None:
        return False
    if hasattr(run, "refresh_picks"):
        run.refresh_picks()
    for p in run.get_picks(object_name=object_name, user_id=str(user_id), session_id=str(session_id)):
        try:
            meta = p.load()
        except Exception:
            return False
        return meta.voxel_spacing is not None
    return False
