"""How many particles the labels imply, and the score threshold that picks about that many.

A tomogram is a slab: particles fill its thickness in every part of its xy extent. A user
labels a share ``f`` of the particles in some region; the region's xy box and the share
give a density (particles per xy area), and the density gives the expected number of
particles anywhere: in the labelled box, in the whole training tomogram, in a new
tomogram. The default threshold is the score at which detection in the labelled box
yields the expected number of picks there (:func:`threshold_for_count`), so the number of
picks means something whatever the detector's score scale.

Everything here is numpy only; coordinates are ``(n, 3)`` zyx tomogram voxels.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import CetpickError

#: Share of the particles a user labelled in the region they worked in, when not told.
DEFAULT_LABEL_FRACTION = 0.5


@dataclass(frozen=True)
class LabelBox:
    """The xy region a user worked in, over the whole thickness: ``[y0, y1) × [x0, x1)`` voxels."""

    y0: float
    x0: float
    y1: float
    x1: float

    @property
    def area(self) -> float:
        return max(self.y1 - self.y0, 0.0) * max(self.x1 - self.x0, 0.0)

    def contains(self, zyx: np.ndarray) -> np.ndarray:
        zyx = np.asarray(zyx, float).reshape(-1, 3)
        return (zyx[:, 1] >= self.y0) & (zyx[:, 1] < self.y1) & (zyx[:, 2] >= self.x0) & (zyx[:, 2] < self.x1)

    def to_list(self) -> list[float]:
        return [float(self.y0), float(self.x0), float(self.y1), float(self.x1)]


def label_box(labels_zyx: np.ndarray, shape_zyx, diameter_vox: float) -> LabelBox:
    """The xy box the labels were drawn from, estimated from the labels alone.

    The range of ``n`` points drawn uniformly from an interval underestimates the interval
    by a factor ``(n - 1) / (n + 1)`` on average; the box is the labels' range widened by
    that factor (and by a particle radius, for a single label), clipped to the volume.
    """
    lab = np.asarray(labels_zyx, float).reshape(-1, 3)
    shape = np.asarray(shape_zyx, float)
    if len(lab) == 0:
        return LabelBox(0.0, 0.0, float(shape[1]), float(shape[2]))
    lo, hi = lab[:, 1:].min(0), lab[:, 1:].max(0)
    n = len(lab)
    extent = (hi - lo) * ((n + 1) / (n - 1) if n > 1 else 1.0)
    extent = np.maximum(extent, float(diameter_vox))  # at least one particle across
    centre = (lo + hi) / 2
    b_lo = np.maximum(centre - extent / 2, -0.5)
    b_hi = np.minimum(centre + extent / 2, shape[1:] - 0.5)
    return LabelBox(float(b_lo[0]), float(b_lo[1]), float(b_hi[0]), float(b_hi[1]))


def xy_area(shape_zyx) -> float:
    """The xy area (voxels²) of a tomogram."""
    return float(shape_zyx[1]) * float(shape_zyx[2])


def particle_density(labels: list[np.ndarray], shapes: list, diameter_vox: float,
                     label_fraction: float | None = None, expected_particles: int | None = None) -> float:
    """Expected particles per voxel² of xy area, from the labels or from a given count.

    Parameters
    ----------
    labels : list of (n, 3) arrays
        Positive labels of each training tomogram.
    shapes : list of (Z, Y, X)
        Shapes of those tomograms.
    diameter_vox : float
        Particle diameter (voxels).
    label_fraction : float, optional
        Share of the particles labelled in the region the labels span
        (:data:`DEFAULT_LABEL_FRACTION` when not given).
    expected_particles : int, optional
        Expected number of particles in all the training tomograms together; wins over the
        labels.
    """
    total_area = sum(xy_area(s) for s in shapes)
    if expected_particles:
        if expected_particles < 1:
            raise CetpickError(f"expected_particles must be at least 1, got {expected_particles}.")
        return float(expected_particles) / max(total_area, 1.0)
    f = DEFAULT_LABEL_FRACTION if not label_fraction else float(label_fraction)
    if not 0 < f <= 1:
        raise CetpickError(f"label_fraction must lie in (0, 1], got {f}.")
    n = sum(len(l) for l in labels)
    area = sum(label_box(l, s, diameter_vox).area for l, s in zip(labels, shapes) if len(l))
    if n == 0 or area <= 0:
        return 0.0
    return n / f / area


def threshold_for_count(scores: np.ndarray, n_expected: float, floor: float = 0.0) -> float:
    """The score threshold that keeps about ``n_expected`` of these (suppressed) pick scores.

    The threshold lies halfway between the score of the ``n``-th best pick and the next
    one (in logit space), so that ``scores >= threshold`` keeps exactly ``round(n)`` picks
    when the scores are distinct. With fewer picks than expected, the lowest score; never
    below ``floor``.
    """
    s = np.sort(np.asarray(scores, float).ravel())[::-1]
    n = int(round(float(n_expected)))
    if len(s) == 0:
        return float(max(floor, 0.5))
    if n <= 0:
        return float(max(floor, min(1.0, s[0] + 1e-6)))
    if n >= len(s):
        return float(max(floor, s[-1]))
    a, b = np.clip([s[n - 1], s[n]], 1e-7, 1 - 1e-7)
    mid = 0.5 * (np.log(a / (1 - a)) + np.log(b / (1 - b)))
    t = 1.0 / (1.0 + np.exp(-mid))
    # halfway must stay above the next score (equal scores cannot be split)
    t = min(max(t, b + 1e-9), a)
    return float(max(floor, t))


__all__ = ["LabelBox", "label_box", "particle_density", "threshold_for_count", "xy_area",
           "DEFAULT_LABEL_FRACTION"]
