"""The per-tomogram session file: what a user clicked and decided, so that nothing is lost.

One JSON file per tomogram, ``{stem}.cetpick-session.json``, written atomically (a temporary
file in the same folder, then an atomic rename), so a crash mid-write leaves the previous
file whole. Per particle class it holds the class's size and colour, labels and negatives,
review decisions and the threshold and minimum distance the user chose; for the tomogram,
the ignore regions drawn as shapes and the model file.

Positions are ``(n, 3)`` zyx voxel indices of the tomogram array as napari shows it
(thickness first); the file records the shape, and reading it for a tomogram of another
shape is refused. It is the panel's own file: for other programs, export the labels.
No Qt, no napari: plain data in, plain data out.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from napari_cetpick.errors import CetpickError

FORMAT = "cetpick-session"
VERSION = 1
SUFFIX = ".cetpick-session.json"
PREVIOUS_SUFFIX = ".cetpick-session.previous.json"


def _points(value) -> np.ndarray:
    return np.asarray(value if value is not None else [], float).reshape(-1, 3)


def _rounded(a, digits: int = 4) -> list:
    return np.round(np.asarray(a, float), digits).tolist()


def _array_field():
    return field(default_factory=lambda: np.zeros((0, 3)))


@dataclass
class ClassSession:
    """What a tomogram's session holds for one particle class.

    Attributes
    ----------
    name : str
    diameter : float or None
        In ``unit`` (``"Å"`` or ``"voxels"``).
    colour : str or None
        ``#rrggbb``.
    labels, negatives : (n, 3) float arrays
        zyx voxel indices.
    kept, removed : (n, 3) float arrays
        Picks the user accepted or added, and rejected or deleted.
    kept_scores : (n,) float array (NaN: added by hand)
    threshold, min_distance_vox : float or None
        Set by the user (None = the model's defaults).
    """

    name: str
    diameter: float | None = None
    unit: str = "Å"
    colour: str | None = None
    labels: np.ndarray = _array_field()
    negatives: np.ndarray = _array_field()
    kept: np.ndarray = _array_field()
    kept_scores: np.ndarray = field(default_factory=lambda: np.zeros(0))
    removed: np.ndarray = _array_field()
    threshold: float | None = None
    min_distance_vox: float | None = None

    def to_dict(self) -> dict:
        return {"name": self.name, "diameter": self.diameter, "unit": self.unit, "colour": self.colour,
                "labels": _rounded(self.labels), "negatives": _rounded(self.negatives),
                "kept": _rounded(self.kept),
                "kept_scores": [None if not np.isfinite(v) else round(float(v), 6) for v in self.kept_scores],
                "removed": _rounded(self.removed), "threshold": self.threshold,
                "min_distance_vox": self.min_distance_vox}

    @classmethod
    def from_dict(cls, d: dict) -> ClassSession:
        kept = _points(d.get("kept"))
        raw = d.get("kept_scores")
        scores = np.array([np.nan if v is None else float(v) for v in (raw if raw is not None else [None] * len(kept))],
                          float).reshape(-1)
        if len(scores) != len(kept):
            raise CetpickError("the accepted picks and their scores differ in number")
        return cls(name=str(d["name"]), diameter=_float_or_none(d.get("diameter")), unit=str(d.get("unit") or "Å"),
                   colour=d.get("colour"), labels=_points(d.get("labels")), negatives=_points(d.get("negatives")),
                   kept=kept, kept_scores=scores, removed=_points(d.get("removed")),
                   threshold=_float_or_none(d.get("threshold")),
                   min_distance_vox=_float_or_none(d.get("min_distance_vox")))


@dataclass
class SessionData:
    """One tomogram's session.

    Attributes
    ----------
    tomogram : dict
        ``name``, ``path`` (or None) and ``shape`` (z, y, x) of the tomogram it belongs to.
    classes : list of ClassSession
        Per particle class: its size and colour, labels, negatives, decisions, threshold.
    ignore : list of dict
        Ignore regions drawn as shapes: ``{"type": "rectangle", "vertices": [[z, y, x], …]}``
        (or ``[y, x]`` pairs for 2D shapes).
    ignore_z_range : (int, int)
        The slices the shapes apply to (0, 0 = all).
    model_path : str or None
        The model file the picks came from.
    saved_at : str
        ISO time of the write.
    """

    tomogram: dict
    classes: list = field(default_factory=list)
    ignore: list = field(default_factory=list)
    ignore_z_range: tuple = (0, 0)
    model_path: str | None = None
    saved_at: str = ""

    def _all(self, what: str) -> np.ndarray:
        parts = [getattr(c, what) for c in self.classes]
        return np.vstack(parts) if parts else np.zeros((0, 3))

    @property
    def labels(self) -> np.ndarray:
        """Every class's labels together."""
        return self._all("labels")

    @property
    def negatives(self) -> np.ndarray:
        return self._all("negatives")

    def of(self, name: str) -> ClassSession | None:
        return next((c for c in self.classes if c.name == name), None)

    def counts(self) -> dict[str, int]:
        return {"label": len(self.labels), "negative": len(self.negatives), "ignore region": len(self.ignore),
                "decision": sum(len(c.kept) + len(c.removed) for c in self.classes)}

    def is_empty(self) -> bool:
        return not any(self.counts().values()) and all(
            c.threshold is None and c.min_distance_vox is None for c in self.classes)

    def adds_to(self, now: SessionData) -> bool:
        """True when restoring this session would give the user something ``now`` lacks."""
        from napari_cetpick.review import nearest_distance

        def new(a, b) -> int:
            return int(np.sum(nearest_distance(a, b) > 1e-3))

        for c in self.classes:
            mine = now.of(c.name) or ClassSession(c.name)
            if (new(c.labels, mine.labels) or new(c.negatives, mine.negatives) or len(c.kept) or len(c.removed)
                    or c.threshold is not None):
                return True
        return bool(self.ignore)

    def describe(self) -> str:
        """``"5 labels, 2 negatives and 3 decisions"`` (what a restore gives back)."""
        parts = [f"{n} {what}{'' if n == 1 else 's'}" for what, n in self.counts().items() if n]
        named = [c.name for c in self.classes if len(c.labels)]
        if len(named) > 1:
            parts[0] += f" ({', '.join(named)})"
        thresholds = [c.threshold for c in self.classes if c.threshold is not None]
        if len(thresholds) == 1:
            parts.append(f"threshold {thresholds[0]:.3f}")
        elif thresholds:
            parts.append(f"{len(thresholds)} thresholds")
        if not parts:
            return "nothing"
        return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]

    def to_dict(self) -> dict:
        return {"format": FORMAT, "version": VERSION, "saved_at": self.saved_at, "tomogram": self.tomogram,
                "classes": [c.to_dict() for c in self.classes], "ignore": self.ignore,
                "ignore_z_range": [int(v) for v in self.ignore_z_range], "model_path": self.model_path}

    @classmethod
    def from_dict(cls, d: dict) -> SessionData:
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            raise CetpickError("not a napari-cetpick session file")
        if int(d.get("version", 0)) > VERSION:
            raise CetpickError(f"session file version {d.get('version')} is newer than this napari-cetpick "
                               f"reads ({VERSION}); update napari-cetpick")
        z_range = d.get("ignore_z_range") or (0, 0)
        return cls(tomogram=dict(d.get("tomogram") or {}),
                   classes=[ClassSession.from_dict(c) for c in d.get("classes") or []],
                   ignore=list(d.get("ignore") or []), ignore_z_range=(int(z_range[0]), int(z_range[1])),
                   model_path=d.get("model_path"), saved_at=str(d.get("saved_at") or ""))


def _float_or_none(value) -> float | None:
    return None if value is None else float(value)


def safe_stem(name: str) -> str:
    """A file-name stem from a tomogram's name or path stem."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", str(name)) or "tomogram"


def session_file_name(stem: str) -> str:
    return safe_stem(stem) + SUFFIX


def write_session(path, data: SessionData) -> Path:
    """Write atomically: a temporary file beside ``path``, then rename over it."""
    path = Path(path)
    data.saved_at = dt.datetime.now().isoformat(timespec="seconds")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data.to_dict(), fh, indent=1)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return path


def read_session(path, shape_zyx=None) -> SessionData:
    """Read a session file; with ``shape_zyx``, refuse one saved for a tomogram of another shape."""
    path = Path(path)
    try:
        with open(path, encoding="utf-8") as fh:
            d = json.load(fh)
    except FileNotFoundError:
        raise CetpickError(f"{path}: no such session file") from None
    except (OSError, ValueError) as err:
        raise CetpickError(f"{path.name}: not a readable session file ({err})") from None
    try:
        data = SessionData.from_dict(d)
    except (TypeError, ValueError, KeyError, IndexError) as err:
        raise CetpickError(f"{path.name}: damaged session file ({err!s})") from None
    except CetpickError as err:
        raise CetpickError(f"{path.name}: {err}") from None
    saved = data.tomogram.get("shape")
    if shape_zyx is not None and saved is not None and tuple(int(s) for s in saved) != tuple(shape_zyx):
        raise CetpickError(f"{path.name} belongs to a tomogram of shape {' × '.join(map(str, saved))}, not "
                           f"{' × '.join(map(str, shape_zyx))}")
    return data


def keep_previous(path) -> Path | None:
    """Move a session file aside (``….previous.json``) before it is replaced by a new session."""
    path = Path(path)
    if not path.is_file():
        return None
    target = path.with_name(path.name[: -len(SUFFIX)] + PREVIOUS_SUFFIX) if path.name.endswith(SUFFIX) \
        else path.with_suffix(".previous.json")
    os.replace(path, target)
    return target


def read_legacy_autosave(folders, stem: str, tomogram_meta: dict, shape_zyx, class_name: str) -> SessionData | None:
    """The ``{stem}_cetpick_labels.csv`` / ``_negatives.csv`` that versions before the session
    file autosaved (the first folder holding them), as a session of one class; None when
    there are none."""
    from napari_cetpick._napari.reader import read_points_for_tomogram

    found = {}
    for folder in folders:
        for kind in ("labels", "negatives"):
            f = Path(folder) / f"{stem}_cetpick_{kind}.csv"
            if kind not in found and f.is_file():
                found[kind] = read_points_for_tomogram(f, tomogram_meta).zyx
    if not found:
        return None
    one = ClassSession(name=class_name, labels=found.get("labels", np.zeros((0, 3))),
                       negatives=found.get("negatives", np.zeros((0, 3))))
    return SessionData(tomogram={"name": stem, "shape": list(shape_zyx)}, classes=[one])
