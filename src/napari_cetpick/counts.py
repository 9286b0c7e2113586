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


#: A count from labels is uncertain by about this factor either way (the share clicked is a guess).
COUNT_TOLERANCE = 2.0
#: A break in the ranked scores (logit units) at least this wide, and this many times the
#: band's median step, separates two populations: particles above, the rest below.
BREAK_MIN_LOGIT = 2.0
BREAK_MIN_RATIO = 8.0


def _logit(p) -> np.ndarray:
    p = np.clip(np.asarray(p, float), 1e-7, 1 - 1e-7)
    return np.log(p / (1 - p))


def _between(a: float, b: float) -> float:
    """Halfway between scores a > b in logit space, kept strictly above b."""
    mid = 0.5 * (_logit(a) + _logit(b))
    t = float(1.0 / (1.0 + np.exp(-mid)))
    return min(max(t, b + 1e-9), a)


def score_break(scores_desc: np.ndarray, n_expected: float, tolerance: float = COUNT_TOLERANCE) -> int | None:
    """Rank k (keep the k best) of a clear break in descending scores near the expected count.

    Looks at ranks ``n/tolerance … n·tolerance``; returns the rank below which the scores
    drop by at least :data:`BREAK_MIN_LOGIT` logits and :data:`BREAK_MIN_RATIO` times the
    median drop between neighbours there, the widest such drop; None without one (or with
    fewer than 8 ranks to compare).
    """
    s = np.asarray(scores_desc, float)
    lo = max(1, int(np.ceil(n_expected / tolerance)))
    hi = min(len(s) - 1, int(np.floor(n_expected * tolerance)))
    if hi - lo + 1 < 8:
        return None
    z = _logit(s)
    gaps = z[lo - 1 : hi] - z[lo : hi + 1]  # gaps[i]: between rank lo+i and the next
    i = int(np.argmax(gaps))
    if gaps[i] >= BREAK_MIN_LOGIT and gaps[i] >= BREAK_MIN_RATIO * max(float(np.median(gaps)), 1e-3):
        return lo + i
    return None


def threshold_for_count(scores: np.ndarray, n_expected: float, floor: float = 0.0) -> float:
    """The score threshold that keeps about ``n_expected`` of these (suppressed) pick scores.

    The threshold lies halfway between the score of the ``n``-th best pick and the next
    one (in logit space), so that ``scores >= threshold`` keeps exactly ``round(n)`` picks
    when the scores are distinct. Where the ranked scores break clearly within a factor
    :data:`COUNT_TOLERANCE` of the count (:func:`score_break`: the particles score far above
    everything else), the threshold goes into that break instead: the count is an estimate,
    the break is what the model says. With fewer picks than expected, the lowest score;
    never below ``floor``.
    """
    s = np.sort(np.asarray(scores, float).ravel())[::-1]
    n = int(round(float(n_expected)))
    if len(s) == 0:
        return float(max(floor, 0.5))
    if n <= 0:
        return float(max(floor, min(1.0, s[0] + 1e-6)))
    k = score_break(s, float(n_expected))
    if k is not None:
        return float(max(floor, _between(s[k - 1], s[k])))
    if n >= len(s):
        return float(max(floor, s[-1]))
    # equal scores cannot be split: halfway stays above the next score
    return float(max(floor, _between(s[n - 1], s[n])))


__all__ = ["LabelBox", "label_box", "particle_density", "score_break", "threshold_for_count", "xy_area",
           "DEFAULT_LABEL_FRACTION"]
