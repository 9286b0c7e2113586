"""Layer helpers for the panel: frames, layer roles, and the layers the panel makes.

No Qt here. Positions given to the engine are always in the data frame (array indices) of
the tomogram layer; points layers are converted through world coordinates, so a labels
layer drawn over a scaled or shifted tomogram still lands on the right voxels. Layers
returned here are napari's own objects (unwrapped from plugin proxies).
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from napari_cetpick._napari.layers import (
    META_KEY,
    ROLE_KEY,
    image_layer_meta,
    is_tomogram_layer,
    image_to_points_frame,
    layer_cetpick_meta,
    points_in_image_frame,
    unwrap,
)
from napari_cetpick._napari.styles import points_style

HEATMAP_COLORMAP = "inferno"
CLASS_KEY = "class"  # in metadata["cetpick"]: the particle class a layer of the panel is of
tomogram_meta = image_layer_meta  # the name the panel has always used

__all__ = ["META_KEY", "ROLE_KEY", "is_tomogram_layer", "tomogram_layers", "tomogram_meta", "unwrap", "layer_role",
           "layer_cetpick_meta",
           "points_in_image_frame", "image_to_points_frame"]


def layer_role(layer) -> str | None:
    """The role the panel gave this layer (``heatmap``, ``picks``, ``labels``, ``negatives``,
    ``ignore``, ``box``, ``cursor``), if any."""
    return layer_cetpick_meta(layer).get(ROLE_KEY)


def is_points_layer(layer) -> bool:
    return layer.__class__.__name__ == "Points" and layer.ndim == 3


def ensure_thick_slice(viewer, layer, size: float | None = None) -> None:
    """Give the viewer's slice along the layer's z a margin of half a particle, if it has none.

    napari 0.9 replaced ``out_of_slice_display`` by projection modes over a thick slice:
    Points layers whose projection mode rescales show each particle as the disc its sphere
    cuts in the slice. Only the viewer's dims change (images keep showing one slice).
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
    layer = unwrap(viewer.layers[name])
    meta = layer_cetpick_meta(layer)
    if meta.get(ROLE_KEY) == role and meta.get("source") == source:
        return layer
    return None


def tomogram_layers(viewer) -> list:
    """The viewer's tomogram layers (unwrapped), in the layer list's order."""
    return [unwrap(lay) for lay in viewer.layers if is_tomogram_layer(lay)]


def reslice(layer) -> None:
    """Slice a layer at the viewer's current point now: napari leaves a hidden layer's slice as it
    was, whatever changed meanwhile (its data, the dims of another tomogram)."""
    (getattr(layer, "set_view_slice", None) or layer._set_view_slice)()


def rename(viewer, layer, name: str) -> None:
    """Give a layer of the panel this name, unless another layer has it."""
    if layer.name != name and name not in viewer.layers:
        layer.name = name


def tint_of(colour: str, alpha: float = 0.12) -> list[float]:
    """A faint fill of a colour (RGBA floats), e.g. a class's colour inside its picks."""
    from napari.utils.colormaps.standardize_color import transform_color

    rgba = [float(v) for v in transform_color(colour)[0]]
    return rgba[:3] + [alpha]


def add_points_layer(viewer, image_layer, role: str, size: float, name: str | None = None, zyx=None,
                     features=None, class_name: str | None = None, color: str | None = None,
                     tint: str | None = None):
    """A Points layer of the panel over a tomogram, styled for its role (``color`` overrides
    its colour) and carrying the tomogram's ``metadata["cetpick"]`` (so File › Save writes it
    in the file's frame) and its particle class (``class``, and ``label_class`` for labels);
    ``tint`` fills the marks faintly (a class's colour, so classes tell apart at a glance)."""
    meta = dict(image_layer_meta(image_layer), **{ROLE_KEY: role, "source": image_layer.name})
    if class_name is not None:
        meta[CLASS_KEY] = class_name
        if role == "labels":
            meta["label_class"] = class_name
    data = np.zeros((0, 3)) if zyx is None else np.asarray(zyx, float).reshape(-1, 3)
    scored = features is not None and "score" in features.columns
    style = points_style(role, size, color=color, scored=scored)
    if tint:
        meta["tint"] = style["face_color"] = tint
    layer = viewer.add_points(data, ndim=3, name=name or f"{image_layer.name} {role}", features=features,
                              scale=image_layer.scale, translate=image_layer.translate,
                              metadata={META_KEY: meta}, **style)
    layer = unwrap(layer)
    if scored:
        _hand_pick_defaults(layer)
    layer.current_size = size
    ensure_thick_slice(viewer, layer, size)
    return layer


def heatmap_contrast_limits(heatmap) -> tuple[float, float]:
    """From the background level (the median score) to certainty (1).

    A PU-trained heatmap rarely goes below the class prior's floor (about 0.1); starting
    the colormap there keeps the additive overlay from tinting the whole tomogram.
    """
    sample = np.asarray(heatmap[:: max(1, heatmap.shape[0] // 16)], float)
    lo = float(np.clip(np.median(sample), 0.0, 0.5)) if sample.size else 0.0
    return (lo, 1.0)


def show_heatmap(viewer, image_layer, result, class_name: str | None = None, layer=None):
    """Add (or update) the heatmap Image layer of a detection, aligned over the tomogram.

    Heatmap index ``i`` is tomogram voxel ``i * result.scale + result.translate``; the
    layer's transform composes that with the tomogram layer's own scale and translate.
    ``layer``: the class's heatmap so far, updated and named as now (a class gets its name in
    its layers' once the panel has several), rather than left beside a new one.
    """
    scale = np.asarray(result.scale, float) * np.asarray(image_layer.scale, float)
    translate = (np.asarray(image_layer.translate, float)
                 + np.asarray(result.translate, float) * np.asarray(image_layer.scale, float))
    suffix = f" {class_name}" if class_name else ""
    name = f"{image_layer.name} heatmap{suffix}"
    meta = {META_KEY: {ROLE_KEY: "heatmap", "source": image_layer.name, CLASS_KEY: class_name}}
    layer = find_layer(viewer, name, "heatmap", image_layer.name) if layer is None else unwrap(layer)
    limits = heatmap_contrast_limits(result.heatmap)
    if layer is None:
        layer = unwrap(viewer.add_image(result.heatmap, name=name, scale=scale, translate=translate,
                                        blending="additive", colormap=HEATMAP_COLORMAP, contrast_limits=limits,
                                        opacity=0.7, metadata=meta))
    else:
        rename(viewer, layer, name)
        layer.metadata[META_KEY] = {**layer.metadata.get(META_KEY, {}), CLASS_KEY: class_name}
        layer.data = result.heatmap
        layer.scale = scale
        layer.translate = translate
        layer.contrast_limits = limits
    return layer


def _hand_pick_defaults(layer) -> None:
    """Features of a pick the user adds by hand: certain (score 1), the other columns unknown."""
    layer.feature_defaults = pd.DataFrame({c: [1.0 if c == "score" else np.nan] for c in layer.features.columns})


def pick_features(scores, threshold: float | None = None, extra: pd.DataFrame | None = None) -> pd.DataFrame:
    """The picks layer's features: ``score``, with a threshold ``margin``, and the detection's
    other columns (``agreement``, ``runner_up`` …) in ``extra`` — what the command line writes."""
    scores = np.asarray(scores, float).reshape(-1)
    cols = {"score": scores}
    if threshold is not None:
        from napari_cetpick.utils import logit

        cols["margin"] = np.round(logit(scores) - logit(threshold), 4)
    out = pd.DataFrame(cols)
    if extra is not None:
        for c in extra.columns:
            if c not in out.columns:
                out[c] = extra[c].to_numpy()
    return out


def picks_name(image_layer, class_name: str | None = None) -> str:
    """The name of a tomogram's picks layer (of a class, once the panel has several)."""
    return f"{image_layer.name} picks" + (f" {class_name}" if class_name else "")


def show_picks(viewer, image_layer, zyx, scores, size: float, threshold: float | None = None,
               class_name: str | None = None, extra: pd.DataFrame | None = None, tint: str | None = None):
    """Add (or update) the picks Points layer of a tomogram (of a class, named after it when
    given): circles coloured by ``score``."""
    name = picks_name(image_layer, class_name)
    layer = find_layer(viewer, name, "picks", image_layer.name)
    if layer is None:
        layer = add_points_layer(viewer, image_layer, "picks", size, name=name, zyx=zyx,
                                 features=pick_features(scores, threshold, extra), class_name=class_name,
                                 tint=tint)
    else:
        set_picks(layer, zyx, scores, threshold, extra)
    return layer


def set_picks(layer, zyx, scores, threshold: float | None = None, extra: pd.DataFrame | None = None) -> None:
    """Replace a picks layer's points and features (:func:`pick_features`) and recolour them."""
    zyx = np.asarray(zyx, float).reshape(-1, 3)
    features = pick_features(scores, threshold, extra)
    # the new columns first (their rows follow the old points), then points and values together
    layer.features = features.iloc[:0].reindex(range(len(layer.data)))
    _hand_pick_defaults(layer)
    layer.data = zyx
    if not layer.visible:
        # with fewer points now, the recolouring below would index past a hidden layer's old
        # slice (another tomogram's picks, detected again)
        reslice(layer)
    layer.features = features
    _hand_pick_defaults(layer)
    tint = layer_cetpick_meta(layer).get("tint")
    if tint and len(zyx):
        layer.face_color = tint
    layer.refresh_colors(update_color_mapping=False)


def show_cursor(viewer, image_layer, zyx, size: float, cursor=None):
    """The review ring: a white circle around ``zyx`` of a tomogram, in ``cursor`` (made, or made
    again for another tomogram, when needed; the active layer stays). Returns the layer."""
    if cursor is not None and layer_cetpick_meta(cursor).get("source") != image_layer.name:
        viewer.layers.remove(cursor)
        cursor = None
    if cursor is None:
        active = viewer.layers.selection.active
        cursor = unwrap(viewer.add_points(
            np.asarray(zyx, float)[None], ndim=3, name=f"{image_layer.name} review", size=size, symbol="disc",
            face_color="transparent", border_color="white", border_width=0.025, border_width_is_relative=True,
            scale=image_layer.scale, translate=image_layer.translate,
            metadata={META_KEY: {ROLE_KEY: "cursor", "source": image_layer.name}}))
        if active is not None:
            viewer.layers.selection.active = active
    else:
        cursor.data = np.asarray(zyx, float)[None]
        cursor.size = size
    return cursor
