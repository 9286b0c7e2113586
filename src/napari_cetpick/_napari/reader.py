"""napari reader: tomograms (MRC) and particle coordinate files.

``get_reader`` answers quickly and returns None for files this plugin cannot read (wrong
extension, a text file that is not coordinates), so napari can try other readers. Errors in
a file it accepted are raised as :class:`~napari_cetpick.errors.CetpickError` with a plain
message, which napari shows as a notification.

Coordinates are read onto a tomogram. IMOD text and models, RELION STAR and CSV files
hold positions in the axes of the tomogram *file* (an unrotated IMOD volume keeps the
thickness in the middle axis), and RELION 5 files in Å from its centre, so the reader
first finds the tomogram the file belongs to — an open tomogram or a tomogram file
beside it whose name matches, else the only open tomogram — and reads the points in its
layout, voxel size and shape. When it cannot tell, it refuses with a message instead of
guessing an axis order. The original cet_pick's ``x z y`` files are in the thickness
frame by definition and need no tomogram.
"""
from __future__ import annotations

import re
from pathlib import Path

from napari_cetpick.errors import CetpickError
from napari_cetpick.io import (
    POINT_EXTENSIONS,
    POINT_FORMATS,
    TOMOGRAM_EXTENSIONS,
    guess_format,
    heatmap_frame,
    list_tomogram_names,
    open_tomogram,
    point_format,
    read_points,
)
from napari_cetpick.io.points import read_imod_text
from napari_cetpick._napari.layers import (
    heatmap_to_layer_data,
    image_layer_meta,
    is_tomogram_layer,
    layout_from_meta,
    pointset_to_layer_data,
    tomogram_meta,
    tomogram_to_layer_data,
)
from napari_cetpick._napari.styles import points_style

FRAME_FREE_FORMATS = tuple(f.name for f in POINT_FORMATS if f.frame_free)  # thickness frame by definition
# extensions any text file may have: a file is accepted only when it parses
_PLAIN_TEXT_EXTENSIONS = tuple({f.extension for f in POINT_FORMATS if f.plain_numbers})


def _accepts(path: str) -> bool:
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix in TOMOGRAM_EXTENSIONS:
        return True
    if suffix not in POINT_EXTENSIONS:
        return False
    if suffix in _PLAIN_TEXT_EXTENSIONS:
        # Plain text may be anything: accept only what parses as coordinates.
        try:
            if point_format(guess_format(p)).plain_numbers:
                read_imod_text(p)
        except (CetpickError, OSError):
            return False
    return True


def get_reader(path):
    """Return a reader for ``path`` (a file or a list of files), or None."""
    paths = [path] if isinstance(path, (str, Path)) else list(path)
    if not paths or not all(_accepts(str(p)) for p in paths):
        return None
    return read_files


# ------------------------------------------------------------------ which tomogram
def _key(name) -> str:
    return re.sub(r"[^a-z0-9]+", "_", str(name).lower()).strip("_")


def _names_match(coordinate_name: str, tomogram_name: str) -> bool:
    """``tomo_a_picks`` belongs to ``tomo_a`` (and ``TS_01`` to ``TS_01``), not to ``tomo``."""
    c, t = _key(coordinate_name), _key(tomogram_name)
    return bool(t) and (c == t or c.startswith(t + "_"))


def _open_tomogram_metas() -> list[tuple[list[str], dict]]:
    """(names, meta) of the tomograms open in the current viewer."""
    try:
        from napari import current_viewer

        viewer = current_viewer()
    except ImportError:  # pragma: no cover - napari is a dependency
        viewer = None
    if viewer is None:
        return []
    out = []
    for layer in viewer.layers:
        if is_tomogram_layer(layer):
            meta = image_layer_meta(layer)
            names = [layer.name, meta.get("tomogram_name") or ""]
            if meta.get("path"):
                names.append(Path(meta["path"]).stem)
            out.append(([n for n in names if n], meta))
    return out


def _sibling_tomogram_files(folder: Path, extra=()) -> list[tuple[list[str], Path]]:
    """(names, path) of the tomogram files beside the coordinates (and opened with them)."""
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in TOMOGRAM_EXTENSIONS and p.is_file()) \
        if folder.is_dir() else []
    files += [Path(p) for p in extra if Path(p) not in files]
    return [([p.stem], p) for p in files if heatmap_frame(p) is None]  # heatmaps are not tomograms


def _best(candidates, wanted: str):
    """The candidate whose name matches ``wanted`` best (the longest matching name), or None."""
    scored = [(max((len(_key(n)) for n in names if _names_match(wanted, n)), default=0), i)
              for i, (names, _) in enumerate(candidates)]
    scored = [s for s in scored if s[0] > 0]
    if not scored:
        return None
    best = max(s[0] for s in scored)
    winners = [i for s, i in scored if s == best]
    return candidates[winners[0]][1] if len(winners) == 1 else None


def _meta_of(found) -> dict:
    """A tomogram's ``metadata["cetpick"]`` from an open layer's meta or a file beside."""
    if isinstance(found, Path):
        meta = tomogram_meta(open_tomogram(found))
        meta["file_shape"] = list(meta["file_shape"])
        return meta
    return dict(found)


def find_tomogram(path: Path, name: str | None = None, extra_files=()) -> dict | None:
    """``metadata["cetpick"]`` of the tomogram a coordinate file (or one of its tomogram
    names) belongs to, or None when it cannot be told.

    In order: an open tomogram whose name matches, a tomogram file beside the coordinates
    whose name matches, and — only for files that name no tomogram — the only open
    tomogram or the only tomogram file beside it.
    """
    wanted = name or path.stem
    opened = _open_tomogram_metas()
    siblings = _sibling_tomogram_files(path.parent, extra_files)
    for candidates in (opened, siblings):
        found = _best(candidates, wanted)
        if found is not None:
            return _meta_of(found)
    if name is None:
        for candidates in (opened, siblings):
            if len(candidates) == 1:
                return _meta_of(candidates[0][1])
    return None


def _guess_kind(stem: str, features) -> str:
    """The look of a re-opened file: truth, negatives, picks (scored) or labels."""
    s = stem.lower()
    if "truth" in s or re.search(r"(^|_)gt($|_)", s):
        return "truth"
    if "neg" in s:
        return "negatives"
    if "pick" in s or (features is not None and "score" in getattr(features, "columns", ())):
        return "picks"
    return "labels"


def _refusal(path: Path, fmt: str, name: str | None) -> CetpickError:
    which = f"tomogram {name!r}" if name else "tomogram"
    what = ("RELION 5 STAR files hold Å from the tomogram centre and need its voxel size and shape"
            if fmt == "star5" else
            "its coordinates are in the axes of the tomogram file, which differ for an unrotated "
            "(thickness in the middle axis) volume")
    return CetpickError(
        f"{path.name}: cannot tell which {which} these coordinates belong to, and {what}. Open that "
        f"tomogram first (or keep the file beside it with a matching name), or use Import in the "
        f"Particle picker panel.")


def read_coordinates(path: Path, opened_with=()) -> list[tuple]:
    """LayerData for a coordinate file, one Points layer per tomogram it names.

    ``opened_with``: tomogram files opened in the same call, which count as beside it.
    """
    fmt = guess_format(path)
    names = list_tomogram_names(path, fmt)
    layers = []
    for name in names if names else [None]:
        meta = find_tomogram(path, name, opened_with)
        if meta is None and fmt not in FRAME_FREE_FORMATS:
            if names:
                continue  # another tomogram of this file may be open; refuse below if none is
            raise _refusal(path, fmt, None)
        if meta is None:
            meta = {}
        layout = layout_from_meta(meta) if fmt not in FRAME_FREE_FORMATS else None
        shape = layout_from_meta(meta).shape_zyx if meta else None
        ps = read_points(path, fmt=fmt, layout=layout, voxel_size_a=meta.get("voxel_size_a"),
                         shape_zyx=shape, tomogram_name=name if len(names) > 1 else None)
        kind = _guess_kind(path.stem, ps.features)
        layer_meta = dict(meta, points_path=str(path), format=fmt, kind=kind)
        layer_name = path.stem if len(names) <= 1 else f"{path.stem} {name}"
        data, kwargs, layer_type = pointset_to_layer_data(ps, name=layer_name, meta=layer_meta)
        style = points_style(kind, kwargs["size"], scored=kind == "picks" and "score" in ps.features.columns)
        kwargs.update(style)
        layers.append((data, kwargs, layer_type))
    if not layers:
        raise _refusal(path, fmt, ", ".join(names))
    return layers


def read_points_for_tomogram(path, tomogram_meta: dict):
    """A coordinate file's points in a given tomogram's frame (the panel's Import).

    A file naming several tomograms must name this one (by its name or its file's stem).
    """
    path = Path(path)
    fmt = guess_format(path)
    names = list_tomogram_names(path, fmt)
    name = None
    if len(names) > 1:
        own = [tomogram_meta.get("tomogram_name") or ""]
        if tomogram_meta.get("path"):
            own.append(Path(tomogram_meta["path"]).stem)
        hits = [n for n in names if any(_names_match(n, o) or _names_match(o, n) for o in own if o)]
        if len(hits) != 1:
            raise CetpickError(f"{path.name} holds the coordinates of {len(names)} tomograms "
                               f"({', '.join(names[:6])}{' …' if len(names) > 6 else ''}) and none "
                               f"{'or several ' if hits else ''}match '{own[0]}'; rename the tomogram layer "
                               f"to the one you mean.")
        name = hits[0]
    layout = None if fmt in FRAME_FREE_FORMATS else layout_from_meta(tomogram_meta)
    return read_points(path, fmt=fmt, layout=layout, voxel_size_a=tomogram_meta.get("voxel_size_a"),
                       shape_zyx=layout_from_meta(tomogram_meta).shape_zyx, tomogram_name=name)


def read_files(path) -> list:
    """Read tomograms and coordinate files into napari LayerData tuples.

    A heatmap written by ``cetpick detect`` (see :func:`~napari_cetpick.io.heatmap_frame`)
    gets the scale and translation, in tomogram voxels, that its header gives, so it
    overlays its tomogram (opened in voxel units) exactly.
    """
    paths = [path] if isinstance(path, (str, Path)) else list(path)
    # tomograms first, so that coordinate files opened together with them land on them
    paths = sorted((Path(p) for p in paths), key=lambda p: p.suffix.lower() not in TOMOGRAM_EXTENSIONS)
    layers = []
    opened = []
    for p in paths:
        if p.suffix.lower() in TOMOGRAM_EXTENSIONS:
            frame = heatmap_frame(p)
            if frame is None:
                layers.append(tomogram_to_layer_data(open_tomogram(p)))
                opened.append(p)
            else:
                layers.append(heatmap_to_layer_data(open_tomogram(p, thickness_axis=frame["thickness_axis"]), frame))
        else:
            layers.extend(read_coordinates(p, opened))
    return layers
