"""One look per kind of point, used by the sample, the reader and the panel.

Every kind is drawn particle-sized (its diameter in voxels) and seen through, so the
particle stays visible under the mark; kinds differ by symbol and colour:

=========  ===================================  ==============================
kind       look                                 why
=========  ===================================  ==============================
labels     yellow circle, thick                 your clicks: the most visible
negatives  thin magenta cross (outline)          "not a particle"
picks      circle coloured by score,            the detector's answer
           dark blue → cyan → green (0 → 1)
truth      thin square in the class colour      a reference, not a decision
=========  ===================================  ==============================
"""
from __future__ import annotations

ROLES = ("labels", "negatives", "picks", "truth")
LABELS_COLOR = "yellow"
NEGATIVES_COLOR = "magenta"
PICKS_COLORMAP = "winter"  # blue → green: clear of yellow labels, magenta negatives, orange truth
TRUTH_COLOR = "orange"
CLASS_COLORS = {
    "ribosome": "orange",
    "proteasome": "cyan",
    "shell": "lime",
    "globular": "white",
}

_BASE = {"face_color": "transparent", "projection_mode": "rescale_spherical"}
_STYLES = {
    "labels": {"symbol": "disc", "border_color": LABELS_COLOR, "border_width": 0.12},
    "negatives": {"symbol": "x", "border_color": NEGATIVES_COLOR, "border_width": 0.05},
    "picks": {"symbol": "disc", "border_width": 0.1},
    "truth": {"symbol": "square", "border_color": TRUTH_COLOR, "border_width": 0.05},
}


def points_style(role: str, size: float, color: str | None = None, scored: bool = False) -> dict:
    """Keyword arguments of ``viewer.add_points`` (or LayerData) for a kind of point.

    Parameters
    ----------
    role : {"labels", "negatives", "picks", "truth"}
    size : float
        Particle diameter in voxels of the layer.
    color : str, optional
        Overrides the kind's colour (e.g. a truth class colour).
    scored : bool
        Picks only: colour by the ``score`` feature (the layer must have it).
    """
    if role not in _STYLES:
        raise ValueError(f"unknown point kind {role!r}; choose one of {ROLES}")
    style = dict(_BASE, **_STYLES[role], size=float(size), border_width_is_relative=True)
    if role == "picks":
        if scored:
            style.update(border_color="score", border_colormap=PICKS_COLORMAP, border_contrast_limits=(0.0, 1.0))
        else:
            style["border_color"] = "lime"
    if color is not None:
        style["border_color"] = color
    return style


def restyle(layer, role: str, size: float | None = None, color: str | None = None) -> None:
    """Give an existing Points layer the look of a kind (e.g. one opened from a file)."""
    size = float(size) if size else float(layer.current_size)
    scored = role == "picks" and "score" in layer.features.columns
    style = points_style(role, size, color=color, scored=scored)
    layer.current_size = size
    layer.current_symbol = style["symbol"]
    layer.current_face_color = style["face_color"]
    layer.current_border_width = style["border_width"]
    layer.border_width_is_relative = True
    if not scored:
        layer.current_border_color = style["border_color"]
    if len(layer.data):  # per-point properties; an empty layer takes the current ones
        layer.size = size
        layer.symbol = style["symbol"]
        layer.face_color = style["face_color"]
        layer.border_width = style["border_width"]
        if scored:
            layer.border_color = "score"
            layer.border_colormap = style["border_colormap"]
            layer.border_contrast_limits = style["border_contrast_limits"]
        else:
            layer.border_color = style["border_color"]
    try:
        layer.projection_mode = "rescale_spherical"
    except (AttributeError, ValueError):  # napari without projection modes
        layer.out_of_slice_display = True
