"""napari writers (npe2 single-layer style): Points -> coordinates, Image -> MRC.

Both use the layer's ``metadata["cetpick"]`` (thickness axis, file shape, voxel size) when
present, so coordinates and volumes land back in the original tomogram file's frame.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from napari_cetpick.errors import CetpickError
from napari_cetpick.io import write_points as _write_points_io
from napari_cetpick.io import write_heatmap, write_tomogram
from napari_cetpick._napari.layers import layer_cetpick_meta, layer_to_pointset, layout_from_meta


def write_points(path: str, data, attributes: dict) -> list[str]:
    """Write a Points layer; the format follows the extension
    (:func:`~napari_cetpick.io.format_for_extension`: the writable formats' extensions, as
    the manifest's ``filename_extensions`` list them).
    """
    data = np.asarray(data, float)
    if data.size and (data.ndim != 2 or data.shape[1] != 3):
        raise CetpickError(
            f"{Path(path).name}: only 3D points can be exported (layer has "
            f"{data.shape[-1] if data.ndim == 2 else data.ndim} dimensions)."
        )
    meta = layer_cetpick_meta(attributes)
    ps = layer_to_pointset(attributes, data=data.reshape(-1, 3))
    layout = layout_from_meta(meta)
    out = _write_points_io(
        path,
        ps.zyx,
        features=ps.features,
        layout=layout,
        voxel_size_a=meta.get("voxel_size_a"),
        tomogram_name=ps.tomogram_name or attributes.get("name"),
    )
    return [str(out)]


def write_image(path: str, data, attributes: dict) -> list[str]:
    """Write an Image layer (tomogram or heatmap) as MRC in its file layout."""
    if isinstance(data, (list, tuple)):
        raise CetpickError(f"{Path(path).name}: multiscale images cannot be saved as MRC.")
    meta = layer_cetpick_meta(attributes)
    source = meta.get("path")
    if source and Path(source).exists() and Path(source).resolve() == Path(path).resolve():
        # The layer is a memory map of that very file; overwriting it would corrupt both.
        raise CetpickError(f"{Path(path).name}: refusing to overwrite the open tomogram file.")
    layout = layout_from_meta(meta)
    heat = meta.get("heatmap")
    if heat:
        # a detection heatmap keeps its place on the tomogram (header voxel size and origin)
        out = write_heatmap(path, np.asarray(data), heat["scale"], heat["translate"],
                            voxel_size_a=meta.get("voxel_size_a"), layout=layout,
                            origin_a=heat.get("tomogram_origin_a", (0.0, 0.0, 0.0)))
        return [str(out)]
    if layout.shape_zyx is not None and tuple(np.shape(data)) != layout.shape_zyx:
        layout = layout.__class__(layout.thickness_axis)  # e.g. a cropped or binned result
    out = write_tomogram(
        path, np.asarray(data), voxel_size_a=meta.get("voxel_size_a"), layout=layout
    )
    return [str(out)]
