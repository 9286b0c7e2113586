"""Layer helpers for the panel: frames, layer roles, and the heatmap and picks layers.

No Qt here. Positions given to the engine are always in the data frame (array indices) of
the tomogram layer; points layers are converted through world coordinates, so a labels
layer drawn over a scaled or shifted tomogram still lands on the right voxels.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from napari_cetpick._napari.layers import META_KEY, layer_cetpick_meta

ROLE_KEY = "role"  # in metadata["cetpick"]: "heatmap", "picks", "labels"
PICKS_COLORMAP = "turbo"
HEATMAP_COLORMAP = "inferno"


def layer_role(layer) -> str | None:
    """The role the panel gave this layer (``heatmap``, ``picks``, ``labels``), if any."""
    return layer_cetpick_meta(layer).get(ROLE_KEY)


def is_tomogram_layer(layer) -> bool:
    """A 3D, single-channel Image layer that is not one of the panel's heatmaps."""
    return (layer.__class__.__name__ == "Image" and layer.ndim == 3 and not layer.rgb
            and not getattr(layer, "multiscale", False) and layer_role(layer) != "heatmap")


def is_points_layer(layer) -> bool:
    return layer.__class__.__name__ == "Points" and layer.ndim == 3


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


def tomogram_meta(image_layer) -> dict:
    """``metadata["cetpick"]`` of a tomogram layer, with the shape filled in when missing."""
    meta = layer_cetpick_meta(image_layer)
    meta.pop(ROLE_KEY, None)
    if not meta.get("file_shape"):
        meta["file_shape"] = [int(s) for s in image_layer.data.shape]
        meta.setdefault("thickness_axis", 0)
    meta.setdefault("tomogram_name", image_layer.name)
    return meta


def show_out_of_slice(viewer, layer, size: float) -> None:
    """Show a 3D Points layer's particles on the slices they cross, as sphere sections.

    napari 0.9 replaced ``out_of_slice_display`` by projection modes over a thick slice:
    the layer draws each point as the disc its sphere cuts in the slice, and the viewer's
    slice gets margins of a particle radius (see :func:`ensure_thick_slice`).
    """
    try:
        layer.projection_mode = "rescale_spherical"
    except (AttributeError, ValueError):  # napari without projection modes
        layer.out_of_slice_display = True
        return
    ensure_thick_slice(viewer, layer, size)


def ensure_thick_slice(viewer, layer, size: float | None = None) -> None:
    """Give the viewer's slice along the layer's z a margin of half a particle, if it has none.

    Only the viewer's dims change (images keep showing their single slice); layers whose
    projection mode rescales points then show particles a little above and below.
    """
    dims = viewer.dims
    axis = dims.ndim - layer.ndim  # world axis of the layer's z (thickness)
    if size is None:
        sizes = np.asarray(layer.size, float)
        size = float(sizes.max()) if sizes.size else float(layer.current_size)
    if axis < 0 or not size or not hasattr(dims, "margin_left"):
        return
    radius = 0.5 * float(size) * float(abs(layer.scale[0]))
    left, right = list(dims.margin_left), list(dims.margin_right)
    if left[axis] == 0 and right[axis] == 0:
        left[axis] = right[axis] = radius
        dims.margin_left, dims.margin_right = tuple(left), tuple(right)


def find_layer(viewer, name: str, role: str, source: str):
    """A layer of the panel with this name, role and source tomogram, or None."""
    if name not in viewer.layers:
        return None
    layer = viewer.layers[name]
    meta = layer_cetpick_meta(layer)
    if meta.get(ROLE_KEY) == role and meta.get("source") == source:
        return layer
    return None


def heatmap_contrast_limits(heatmap) -> tuple[float, float]:
    """From the background level (the median score) to certainty (1).

    A PU-trained heatmap rarely goes below the class prior's floor (about 0.1); starting
    the colormap there keeps the additive overlay from tinting the whole tomogram.
    """
    sample = np.asarray(heatmap[:: max(1, heatmap.shape[0] // 16)], float)
    lo = float(np.clip(np.median(sample), 0.0, 0.5)) if sample.size else 0.0
    return (lo, 1.0)


def show_heatmap(viewer, image_layer, result):
    """Add (or update) the heatmap Image layer of a detection, aligned over the tomogram.

    Heatmap index ``i`` is tomogram voxel ``i * result.scale + result.translate``; the
    layer's transform composes that with the tomogram layer's own scale and translate.
    """
    scale = np.asarray(result.scale, float) * np.asarray(image_layer.scale, float)
    translate = (np.asarray(image_layer.translate, float)
                 + np.asarray(result.translate, float) * np.asarray(image_layer.scale, float))
    name = f"{image_layer.name} heatmap"
    meta = {META_KEY: {ROLE_KEY: "heatmap", "source": image_layer.name}}
    layer = find_layer(viewer, name, "heatmap", image_layer.name)
    limits = heatmap_contrast_limits(result.heatmap)
    if layer is None:
        layer = viewer.add_image(result.heatmap, name=name, scale=scale, translate=translate,
                                 blending="additive", colormap=HEATMAP_COLORMAP, contrast_limits=limits,
                                 opacity=0.7, metadata=meta)
    else:
        layer.data = result.heatmap
        layer.scale = scale
        layer.translate = translate
        layer.contrast_limits = limits
    return layer


def show_picks(viewer, image_layer, zyx, scores, size: float):
    """Add (or update) the picks Points layer of a tomogram: circles coloured by ``score``.

    Hollow circles leave the particle visible under the pick (scores 0 → 1 run blue → red).

    The layer carries the tomogram's ``metadata["cetpick"]`` so that File > Save Layers
    exports it in the tomogram file's frame.
    """
    name = f"{image_layer.name} picks"
    layer = find_layer(viewer, name, "picks", image_layer.name)
    features = pd.DataFrame({"score": np.asarray(scores, float)})
    if layer is None:
        meta = dict(tomogram_meta(image_layer), **{ROLE_KEY: "picks", "source": image_layer.name})
        layer = viewer.add_points(
            np.asarray(zyx, float).reshape(-1, 3), ndim=3, name=name, features=features,
            size=size, face_color="transparent", border_color="score", border_colormap=PICKS_COLORMAP,
            border_contrast_limits=(0.0, 1.0), border_width=0.1, border_width_is_relative=True,
            scale=image_layer.scale,
            translate=image_layer.translate, metadata={META_KEY: meta},
        )
        layer.feature_defaults = pd.DataFrame({"score": [1.0]})
        show_out_of_slice(viewer, layer, size)
    else:
        set_picks(layer, zyx, scores)
    return layer


def set_picks(layer, zyx, scores) -> None:
    """Replace a picks layer's points and scores and recolour them."""
    zyx = np.asarray(zyx, float).reshape(-1, 3)
    layer.data = zyx
    layer.features = pd.DataFrame({"score": np.asarray(scores, float)})
    layer.refresh_colors(update_color_mapping=False)
