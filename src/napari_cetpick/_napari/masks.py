"""Ignore regions and boxes drawn in napari, as arrays in a tomogram's voxel frame (no Qt).

The package's mask convention (training, detection, ``cetpick --mask``): a ``(Z, Y, X)``
array in the tomogram's napari frame, nonzero = keep, zero = ignore.

- A **Shapes** layer of rectangles, polygons or ellipses marks regions to ignore in y and x;
  they apply over a z range (slices ``z0`` … ``z1 - 1``), the whole thickness by default.
- A painted **Labels** layer marks ignored voxels directly (any nonzero label).
"""
from __future__ import annotations

import numpy as np

from napari_cetpick.errors import CetpickError

AREA_TYPES = ("rectangle", "polygon", "ellipse")


def polygon_mask(vertices_yx, shape_yx) -> np.ndarray:
    """Pixels of a ``(Y, X)`` grid whose centres lie inside a polygon (even-odd rule).

    Parameters
    ----------
    vertices_yx : (n, 2) float
        Polygon corners in pixel coordinates (pixel ``i`` has its centre at ``i``).
    shape_yx : tuple of int
    """
    v = np.asarray(vertices_yx, float).reshape(-1, 2)
    ny, nx = (int(s) for s in shape_yx)
    out = np.zeros((ny, nx), bool)
    if len(v) < 3:
        return out
    y0 = max(int(np.floor(v[:, 0].min())), 0)
    y1 = min(int(np.ceil(v[:, 0].max())) + 1, ny)
    if y1 <= y0:
        return out
    xs = np.arange(nx, dtype=float)
    a, b = v, np.roll(v, -1, axis=0)
    for y in range(y0, y1):
        # x where each edge crosses this row (half-open in y so vertices count once)
        crosses = (a[:, 0] <= y) != (b[:, 0] <= y)
        if not crosses.any():
            continue
        ya, xa, yb, xb = a[crosses, 0], a[crosses, 1], b[crosses, 0], b[crosses, 1]
        xc = xa + (y - ya) * (xb - xa) / (yb - ya)
        inside = (xs[:, None] < xc[None, :]).sum(axis=1) % 2 == 1
        out[y] = inside
    return out


def ellipse_mask(corners_yx, shape_yx) -> np.ndarray:
    """Pixels inside the axis-aligned ellipse inscribed in a box given by its corners."""
    c = np.asarray(corners_yx, float).reshape(-1, 2)
    lo, hi = c.min(0), c.max(0)
    centre, semi = (lo + hi) / 2, np.maximum((hi - lo) / 2, 1e-6)
    yy, xx = np.mgrid[0 : int(shape_yx[0]), 0 : int(shape_yx[1])]
    return ((yy - centre[0]) / semi[0]) ** 2 + ((xx - centre[1]) / semi[1]) ** 2 <= 1.0


def _to_tomogram_yx(shapes_layer, image_layer, vertices) -> np.ndarray:
    """Vertices of one shape in the tomogram's (y, x) voxel indices."""
    v = np.asarray(vertices, float)
    pts = []
    for row in v:
        world = np.asarray(shapes_layer.data_to_world(row), float)
        if world.size < 3:  # a 2D shapes layer: its axes are the tomogram's y and x
            world = np.r_[np.zeros(3 - world.size), world]
        pts.append(np.asarray(image_layer.world_to_data(world), float)[-2:])
    return np.asarray(pts, float).reshape(-1, 2)


def shapes_area_yx(shapes_layer, image_layer) -> np.ndarray:
    """Union of a Shapes layer's areas (rectangles, polygons, ellipses) on the tomogram's y-x grid."""
    shape_yx = tuple(int(s) for s in image_layer.data.shape[-2:])
    area = np.zeros(shape_yx, bool)
    for kind, vertices in zip(shapes_layer.shape_type, shapes_layer.data):
        if kind not in AREA_TYPES:
            continue  # lines and paths enclose nothing
        yx = _to_tomogram_yx(shapes_layer, image_layer, vertices)
        area |= ellipse_mask(yx, shape_yx) if kind == "ellipse" else polygon_mask(yx, shape_yx)
    return area


def z_slices(z_range, nz: int) -> slice:
    """The slices of a z range ``(z0, z1)``; ``None`` or ``(0, 0)`` means all of them."""
    if z_range is None:
        return slice(0, nz)
    z0, z1 = (int(round(float(v))) for v in z_range)
    if z1 <= z0:
        return slice(0, nz)
    return slice(max(z0, 0), min(z1, nz))


def ignore_from_shapes(shapes_layer, image_layer, z_range=None) -> np.ndarray:
    """``(Z, Y, X)`` bool: True where the shapes, applied over ``z_range``, mark the tomogram."""
    area = shapes_area_yx(shapes_layer, image_layer)
    nz = int(image_layer.data.shape[0])
    out = np.zeros((nz, *area.shape), bool)
    out[z_slices(z_range, nz)] = area
    return out


def ignore_from_labels(labels_layer, image_layer) -> np.ndarray:
    """``(Z, Y, X)`` bool: True where a painted Labels layer is nonzero."""
    data = np.asarray(labels_layer.data)
    shape = tuple(int(s) for s in image_layer.data.shape)
    if data.shape != shape:
        raise CetpickError(f"The painted layer '{labels_layer.name}' has shape {data.shape}, the tomogram "
                           f"{shape}; paint on a layer made by 'Paint regions'.")
    return data != 0


def ignore_mask(layer, image_layer, z_range=None) -> np.ndarray:
    """Ignored voxels of a Shapes or Labels layer over a tomogram, ``(Z, Y, X)`` bool."""
    kind = layer.__class__.__name__
    if kind == "Shapes":
        return ignore_from_shapes(layer, image_layer, z_range)
    if kind == "Labels":
        return ignore_from_labels(layer, image_layer)
    raise CetpickError(f"'{layer.name}' is a {kind} layer; ignore regions come from Shapes or Labels layers.")


def keep_mask(ignore: np.ndarray) -> np.ndarray:
    """The package's mask convention from ignored voxels: uint8, 1 = keep, 0 = ignore."""
    return (~np.asarray(ignore, bool)).astype(np.uint8)


def box_from_shapes(shapes_layer, image_layer, z_range=None) -> tuple[float, ...] | None:
    """``(z0, y0, x0, z1, y1, x1)`` voxel box around a Shapes layer's areas, over a z range.

    The box spans whole voxels: a rectangle drawn from voxel edge to voxel edge keeps the
    voxels whose centres it covers. None when the layer holds no area.
    """
    area = shapes_area_yx(shapes_layer, image_layer)
    if not area.any():
        return None
    ys, xs = np.nonzero(area)
    nz = int(image_layer.data.shape[0])
    zs = z_slices(z_range, nz)
    return (float(zs.start) - 0.5, float(ys.min()) - 0.5, float(xs.min()) - 0.5,
            float(zs.stop) - 0.5, float(ys.max()) + 0.5, float(xs.max()) + 0.5)


def box_around_points(zyx, shape_zyx) -> tuple[float, ...] | None:
    """The smallest voxel box holding all points (the truth's extent), clipped to the volume."""
    p = np.asarray(zyx, float).reshape(-1, 3)
    if len(p) == 0:
        return None
    lo = np.maximum(np.floor(p.min(0) + 0.5) - 0.5, -0.5)
    hi = np.minimum(np.floor(p.max(0) + 0.5) + 0.5, np.asarray(shape_zyx, float) - 0.5)
    return tuple(float(v) for v in np.r_[lo, hi])


def describe_box(box) -> str:
    """``(z0, y0, x0, z1, y1, x1)`` → ``"z 0–32 · y 10–100 · x 5–60"`` (whole voxels)."""
    if box is None:
        return "the whole tomogram"
    b = [int(round(v + 0.5)) for v in box]
    return f"z {b[0]}–{b[3]} · y {b[1]}–{b[4]} · x {b[2]}–{b[5]}"
