"""napari reader: tomograms (MRC) and particle coordinate files.

``get_reader`` answers quickly and returns None for files this plugin cannot read (wrong
extension, a text file that is not coordinates), so napari can try other readers. Errors in
a file it accepted are raised as :class:`~napari_cetpick.errors.CetpickError` with a plain
message, which napari shows as a notification.
"""
from __future__ import annotations

from pathlib import Path

from napari_cetpick.errors import CetpickError
from napari_cetpick.io import (
    TOMOGRAM_EXTENSIONS,
    guess_format,
    heatmap_frame,
    list_tomogram_names,
    open_tomogram,
    read_points,
)
from napari_cetpick.io.points import read_imod_text
from napari_cetpick._napari.layers import (
    heatmap_to_layer_data,
    pointset_to_layer_data,
    tomogram_to_layer_data,
)

COORDINATE_EXTENSIONS = (".mod", ".star", ".csv", ".txt", ".coords")


def _accepts(path: str) -> bool:
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix in TOMOGRAM_EXTENSIONS:
        return True
    if suffix not in COORDINATE_EXTENSIONS:
        return False
    if suffix in (".txt", ".coords"):
        # Plain text may be anything: accept only what parses as coordinates.
        try:
            fmt = guess_format(p)
            if fmt in ("imod", "cetpick"):
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


def read_files(path) -> list:
    """Read tomograms and coordinate files into napari LayerData tuples.

    A heatmap written by ``cetpick detect`` (see :func:`~napari_cetpick.io.heatmap_frame`)
    gets the scale and translation, in tomogram voxels, that its header gives, so it
    overlays its tomogram (opened in voxel units) exactly.
    """
    paths = [path] if isinstance(path, (str, Path)) else list(path)
    layers = []
    for p in paths:
        p = Path(p)
        if p.suffix.lower() in TOMOGRAM_EXTENSIONS:
            frame = heatmap_frame(p)
            if frame is None:
                layers.append(tomogram_to_layer_data(open_tomogram(p)))
            else:
                layers.append(heatmap_to_layer_data(open_tomogram(p, thickness_axis=frame["thickness_axis"]), frame))
        else:
            fmt = guess_format(p)
            names = list_tomogram_names(p, fmt)
            # One layer per tomogram: a file may hold the picks of many.
            for name in names if len(names) > 1 else [None]:
                ps = read_points(p, fmt=fmt, tomogram_name=name)
                meta = {"points_path": str(p), "format": fmt}
                layer_name = p.stem if name is None else f"{p.stem} {name}"
                layers.append(pointset_to_layer_data(ps, name=layer_name, meta=meta))
    return layers
