"""Layer <-> domain conversion helpers (napari-side, no Qt).

Image and Points layers made here carry ``metadata["cetpick"]``: the file path, voxel size,
thickness axis and file shape, so that exports land back in the tomogram file's frame.
Layers stay in voxel units (scale 1), so Points and Image coordinates are the same numbers.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from napari_cetpick.io import FileLayout, PointSet, Tomogram, sample_voxels

META_KEY = "cetpick"
DEFAULT_POINT_SIZE = 10

# Percentiles of a strided sample: robust to hot pixels and gold beads, and cheap.
CONTRAST_PERCENTILES = (0.5, 99.5)


def tomogram_meta(tomo: Tomogram) -> dict:
    """The ``metadata["cetpick"]`` dict describing an opened tomogram."""
    return {
        "path": None if tomo.path is None else str(tomo.path),
        "voxel_size_a": tomo.voxel_size_a,
        "header_voxel_size_a": tomo.header_voxel_size_a,
        "thickness_axis": tomo.layout.thickness_axis,
        "file_shape": None if tomo.layout.file_shape is None else list(tomo.layout.file_shape),
        "tomogram_name": tomo.name,
    }


def contrast_limits(data, percentiles=CONTRAST_PERCENTILES) -> tuple[float, float]:
    """Robust contrast limits from a strided sample (never reads the whole volume)."""
    sample = sample_voxels(data)
    sample = sample[np.isfinite(sample)]
    if sample.size == 0:
        return (0.0, 1.0)
    lo, hi = (float(v) for v in np.percentile(sample, percentiles))
    if not hi > lo:
        lo, hi = float(sample.min()), float(sample.max())
        if not hi > lo:
            hi = lo + 1.0
    return (lo, hi)


def tomogram_to_layer_data(tomo: Tomogram, name: str | None = None) -> tuple:
    """``(data, kwargs, "image")`` LayerData for a tomogram, in voxel units."""
    kwargs = {
        "name": name or tomo.name or "tomogram",
        "scale": (1.0, 1.0, 1.0),
        "contrast_limits": contrast_limits(tomo.data),
        "colormap": "gray",
        "metadata": {META_KEY: tomogram_meta(tomo)},
    }
    return (tomo.data, kwargs, "image")


def heatmap_to_layer_data(tomo: Tomogram, frame: dict, name: str | None = None) -> tuple:
    """``(data, kwargs, "image")`` for a detection heatmap placed on its tomogram.

    ``frame`` is :func:`napari_cetpick.io.heatmap_frame`'s answer: scale and translate in
    tomogram voxels, so the heatmap overlays the tomogram layer (scale 1).
    """
    meta = tomogram_meta(tomo)
    meta["voxel_size_a"] = frame["tomogram_voxel_size_a"]
    meta["heatmap"] = {"scale": list(frame["scale"]), "translate": list(frame["translate"]),
                       "tomogram_origin_a": list(frame["tomogram_origin_a"])}
    kwargs = {
        "name": name or tomo.name or "heatmap",
        "scale": tuple(frame["scale"]),
        "translate": tuple(frame["translate"]),
        "contrast_limits": (0.0, 1.0),
        "colormap": "inferno",
        "blending": "additive",
        "opacity": 0.5,
        "metadata": {META_KEY: meta},
    }
    return (tomo.data, kwargs, "image")


def pointset_to_layer_data(
    ps: PointSet,
    name: str | None = None,
    meta: dict | None = None,
    size: float = DEFAULT_POINT_SIZE,
) -> tuple:
    """``(zyx, kwargs, "points")`` LayerData for a point set.

    Parameters
    ----------
    ps : PointSet
    name : str, optional
    meta : dict, optional
        ``metadata["cetpick"]`` of the tomogram the points belong to; by default a
        thickness-first layout of unknown shape (coordinate files do not say).
    size : float
        Point diameter in voxels.
    """
    meta = dict(meta or {})
    meta.setdefault("thickness_axis", 0)
    meta.setdefault("file_shape", None)
    if meta.get("voxel_size_a") is None:
        meta["voxel_size_a"] = ps.voxel_size_a
    if ps.tomogram_name is not None:
        meta["tomogram_name"] = ps.tomogram_name
    kwargs = {
        "name": name or ps.tomogram_name or "points",
        "features": ps.features,
        "size": size,
        "ndim": 3,
        # Picks are 3D blobs: with thick slicing (dims margins ~ particle radius) they show
        # as the disc the sphere cuts on each slice, not only on their centre slice.
        "projection_mode": "rescale_spherical",
        "metadata": {META_KEY: meta},
    }
    return (np.asarray(ps.zyx, float), kwargs, "points")


def layer_cetpick_meta(layer_or_attributes) -> dict:
    """Copy of ``metadata["cetpick"]`` of a layer or a writer's attributes dict ({} if none)."""
    if isinstance(layer_or_attributes, dict):
        metadata = layer_or_attributes.get("metadata") or {}
    else:
        metadata = getattr(layer_or_attributes, "metadata", None) or {}
    meta = metadata.get(META_KEY) or {}
    return dict(meta)


def layout_from_meta(meta: dict | None) -> FileLayout:
    """FileLayout from a ``metadata["cetpick"]`` dict; thickness first when unknown."""
    meta = meta or {}
    shape = meta.get("file_shape")
    return FileLayout(int(meta.get("thickness_axis") or 0), None if shape is None else tuple(shape))


ROLE_KEY = "role"  # in metadata["cetpick"]: the panel's layer roles ("heatmap", "picks", "labels", …)


def unwrap(obj):
    """The napari object behind a plugin proxy (napari hands plugins ``PublicOnlyProxy`` objects,
    a new one at each access, so ``is`` never holds between two of them)."""
    return getattr(obj, "__wrapped__", obj)


def is_tomogram_layer(layer) -> bool:
    """A 3D, single-channel Image layer that is not a heatmap (the panel's or one read from a file)."""
    meta = layer_cetpick_meta(layer)
    return (layer.__class__.__name__ == "Image" and layer.ndim == 3 and not layer.rgb
            and not getattr(layer, "multiscale", False)
            and meta.get(ROLE_KEY) != "heatmap" and "heatmap" not in meta)


def image_layer_meta(image_layer) -> dict:
    """``metadata["cetpick"]`` of a tomogram layer, with its shape filled in when missing."""
    meta = layer_cetpick_meta(image_layer)
    meta.pop(ROLE_KEY, None)
    meta.pop("source", None)
    if not meta.get("file_shape"):
        meta["file_shape"] = [int(s) for s in image_layer.data.shape]
        meta.setdefault("thickness_axis", 0)
    meta.setdefault("tomogram_name", image_layer.name)
    return meta


def layer_to_pointset(layer_or_attributes, data=None) -> PointSet:
    """PointSet from a Points layer (or a writer's ``data`` and ``attributes``)."""
    if isinstance(layer_or_attributes, dict):
        attrs = layer_or_attributes
        zyx = attrs.get("data") if data is None else data
        features = attrs.get("features")
    else:
        zyx = layer_or_attributes.data if data is None else data
        features = layer_or_attributes.features
    meta = layer_cetpick_meta(layer_or_attributes)
    zyx = np.asarray(zyx, float)
    if zyx.ndim == 2 and zyx.shape[0] == 0:
        zyx = np.zeros((0, 3))
    return PointSet(
        zyx=zyx,
        features=features,
        voxel_size_a=meta.get("voxel_size_a"),
        tomogram_name=meta.get("tomogram_name")
        or (Path(meta["path"]).stem if meta.get("path") else None),
    )


def _same_transform(a, b) -> bool:
    return (np.allclose(a.scale, b.scale) and np.allclose(a.translate, b.translate)
            and np.allclose(a.rotate, b.rotate) and np.allclose(a.shear, b.shear)
            and np.allclose(a.affine.affine_matrix, b.affine.affine_matrix))


def points_in_image_frame(points_layer, image_layer) -> np.ndarray:
    """``(n, 3)`` zyx positions of a Points layer in the image layer's voxel indices."""
    pts = np.asarray(points_layer.data, float).reshape(-1, 3)
    if len(pts) == 0 or _same_transform(points_layer, image_layer):
        return pts.copy()
    return np.array([image_layer.world_to_data(points_layer.data_to_world(p)) for p in pts], float)


def image_to_points_frame(zyx, image_layer, points_layer) -> np.ndarray:
    """Tomogram voxel positions in a Points layer's data frame (inverse of the above)."""
    pts = np.asarray(zyx, float).reshape(-1, 3)
    if len(pts) == 0 or _same_transform(points_layer, image_layer):
        return pts.copy()
    return np.array([points_layer.world_to_data(image_layer.data_to_world(p)) for p in pts], float)
