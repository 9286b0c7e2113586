"""napari sample data: a small simulated tomogram with ground truth and sparse labels."""
from __future__ import annotations

import numpy as np

from napari_cetpick._napari.layers import META_KEY, contrast_limits
from napari_cetpick._napari.styles import CLASS_COLORS, LABELS_COLOR, points_style
from napari_cetpick.synthetic import simulate_tomogram

SAMPLE_SHAPE = (64, 256, 256)
SAMPLE_VOXEL_SIZE_A = 10.0
SAMPLE_SEED = 2024
SAMPLE_SNR = 0.3
SAMPLE_LABEL_FRACTION = 0.5  # a few more clicks than the default, so a demo can train

LABEL_COLOR = LABELS_COLOR  # kept for scripts that import it
__all__ = ["sample_tomogram", "CLASS_COLORS", "LABEL_COLOR"]


def sample_tomogram() -> list[tuple]:
    """Simulate the sample tomogram (fixed seed, about a second) as napari LayerData.

    Returns
    -------
    list of tuple
        ``(data, kwargs, layer_type)``: the tomogram image, one hidden ground-truth Points
        layer per class ("truth: <class>") and the visible sparse labels ("labels").
    """
    sim = simulate_tomogram(
        SAMPLE_SHAPE,
        voxel_size_a=SAMPLE_VOXEL_SIZE_A,
        snr=SAMPLE_SNR,
        seed=SAMPLE_SEED,
        label_fraction=SAMPLE_LABEL_FRACTION,
    )
    meta = {
        "voxel_size_a": sim.voxel_size_a,
        "header_voxel_size_a": sim.voxel_size_a,
        "thickness_axis": 0,
        "file_shape": list(sim.shape),
        "path": None,
        "tomogram_name": "synthetic",
    }
    layers: list[tuple] = [
        (
            sim.volume,
            {
                "name": "synthetic tomogram",
                "colormap": "gray",
                "contrast_limits": contrast_limits(sim.volume),
                "metadata": {META_KEY: dict(meta)},
            },
            "image",
        )
    ]
    diameters_px = sim.diameters_px
    for name, zyx in sim.particles.items():
        layers.append(
            (
                zyx,
                {
                    "name": f"truth: {name}",
                    "visible": False,
                    "ndim": 3,
                    **points_style("truth", diameters_px[name], color=CLASS_COLORS.get(name)),
                    "metadata": {META_KEY: dict(meta, truth_class=name)},
                },
                "points",
            )
        )
    layers.append(
        (
            np.asarray(sim.labels, float).reshape(-1, 3),
            {
                "name": "labels",
                "ndim": 3,
                **points_style("labels", diameters_px[sim.label_class]),
                "metadata": {META_KEY: dict(meta, label_class=sim.label_class)},
            },
            "points",
        )
    )
    return layers
