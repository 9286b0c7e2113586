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
from .utils import logit

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


def _between(a: float, b: float) -> float:
    """Halfway between scores a > b in logit space, kept strictly above b."""
    mid = 0.5 * (logit(a) + logit(b))
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
    z = logit(s)
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


__all__ = ["LabelBox", "label_box", "particle_density", "score_break", "threshold_for_count", "xy_area", "split_scores",
           "ScoreSplit", "score_density", "split_holds", "refine_on_shown", "in_background_body", "count_above",
           "DEFAULT_LABEL_FRACTION"]


# --------------------------------------------------------------------------- a tomogram's own scores

#: Kernel width (logits) of the density of a tomogram's pick scores.
DENSITY_BANDWIDTH_LOGIT = 0.25
#: The background's mode must stand this many times above the particles' density level,
#: else the two populations are not told apart and the model's threshold stays.
MIN_MODE_CONTRAST = 4.0
#: The background's flank ends where the density of scores stops falling faster than by a
#: factor e per logit (FLANK_SLOPE), over FLANK_RUN_LOGIT logits in a row.
FLANK_SLOPE = 1.0
FLANK_RUN_LOGIT = 0.25
#: The threshold lies where the density, below the particles' level L, reaches this many times
#: L: 1 would be the bottom of a valley between two modes, 2 the point where the background is
#: as dense as a plateau of particles; halfway measured best on both (docs/benchmark.md).
WALK_FACTOR = 1.5
#: Fewest picks above a threshold read off the score density.
MIN_PICKS_ABOVE = 3
#: Where no low edge of the particles is seen and the background's flank cannot be fitted,
#: the walk down starts at the median of the picks beyond the flank only if there are at
#: least this many: a flank that merely slows down for a handful of top scores is no second
#: population (a correction round's model: 7 picks there, the walk kept 10 of 262 particles;
#: where the network found the particles, the 24 detections of round 5 held 128–893 there).
MIN_UPPER_FOR_WALK = 20


#: Where the particles overlap the background (no low edge of theirs is seen), the
#: background's flank is fitted from its mode down to this fraction of the mode's density
#: and extrapolated (:func:`_tail_threshold`); measured in docs/benchmark.md ("Round 5").
TAIL_FIT_TO = 0.05
#: A fit whose log density misses the flank by more (root mean square) is not trusted (the
#: particles then reach into the fitted range itself) and the walk down decides: the fits
#: measured lay at 0.006–0.021 where the particles sat on the flank, 0.059–0.108 where they
#: overlapped the background's mode (docs/benchmark.md, "Round 5").
TAIL_FIT_RMS = 0.04
#: The fitted flank's curvature past the mode (per logit², :func:`_tail_threshold`) lies in
#: [0, this]: 0 is the Gumbel's exponential flank; the bound only keeps the fit finite.
TAIL_CURVATURE_MAX = 10.0
#: Scores below the candidate floor are not kept, so the kernel density within this many
#: kernel widths (:data:`DENSITY_BANDWIDTH_LOGIT`) of the lowest score is lowered by the
#: floor (by the kernel's share past it: 2.3 % at two widths, 0.13 % at three). Where the
#: background's scores pile up against the floor, its mode seen there is the floor's, and a
#: fit from it that misses the flank is tried again from past this reach (:func:`_tail_threshold`).
FLOOR_REACH_KERNELS = 3.0


@dataclass(frozen=True)
class ScoreSplit:
    """Where a tomogram's pick scores split into background and particles (logit units)."""

    threshold: float  # score
    background_mode: float  # logit
    particle_level: float  # density (picks per logit) of the particle population at its low edge
    n_above: int
    #: "edge": the particles' low edge (a valley or plateau) was seen; "tail": the particles
    #: overlap the background, whose flank was fitted and extrapolated
    kind: str = "edge"


def score_density(z: np.ndarray, bandwidth: float = DENSITY_BANDWIDTH_LOGIT, step: float = 0.05):
    """``(grid, density)``: a Gaussian kernel density of the values ``z`` (picks per unit of z)."""
    z = np.asarray(z, float)
    grid = np.arange(z.min() - 3 * bandwidth, z.max() + 3 * bandwidth + step, step)
    counts, _ = np.histogram(z, bins=np.append(grid - step / 2, grid[-1] + step / 2))
    k = np.exp(-0.5 * (np.arange(-int(4 * bandwidth / step), int(4 * bandwidth / step) + 1) * step / bandwidth) ** 2)
    k /= k.sum() * step
    return grid, np.convolve(counts, k, mode="same")


def _usable(scores, floor: float) -> np.ndarray:
    """The finite pick scores at or above ``floor`` (what every rule here reads), as floats."""
    s = np.asarray(scores, float).ravel()
    return s[np.isfinite(s) & (s >= floor)]


#: A score lies in the background's body where the density of pick scores there is at least
#: this share of the background's mode (:func:`in_background_body`).
BACKGROUND_BODY = 0.25


def in_background_body(scores, threshold: float, floor: float = 0.0) -> bool:
    """Whether ``threshold`` does not lie past the body of this tomogram's background: it is
    below the background's mode, or the density of the pick scores there (logit units,
    :func:`score_density`) is at least :data:`BACKGROUND_BODY` of the density at the mode.
    Picks above such a threshold are mostly background; a threshold on the background's upper
    flank or beyond keeps mostly particles."""
    s = _usable(scores, floor)
    if len(s) == 0:
        return False
    grid, dens = score_density(logit(s))
    i_mode = int(np.argmax(dens))
    z = float(logit(np.array([threshold]))[0])
    if z <= grid[i_mode]:
        return True
    return bool(np.interp(z, grid, dens, right=0.0) >= BACKGROUND_BODY * dens[i_mode])


#: A split is not trusted where it keeps fewer than this share of the picks a reference
#: threshold (the model's default, or the labelled count's) keeps, that reference lying past
#: the background's body (:func:`split_holds`). The reference is a score level, so it follows
#: a tomogram's density by itself; the splits measured kept 0.76–10× the model default's
#: picks where they were right, and 1/100–1/6 where a handful of top scores looked like a
#: second population (4 picks for 564 particles; docs/benchmark.md, "Round 6").
MIN_SPLIT_SHARE_OF_REFERENCE = 0.25

#: The split of the scores a user sees (after the profile check) places the threshold where it
#: keeps between 1 / this and this many times the picks the network's own split leaves shown
#: (:func:`refine_on_shown`). The check moves look-alikes down and particles like the labels up,
#: so the shown scores' split counts the class better (a shell model: 224 picks for 261 →
#: 271; a barrel model that kept shells: 368 for 262 → 329), but it stretches the background's
#: flank, and an unbounded split of the shown scores failed there (958 picks for 136 shells;
#: 86 for 120 barrels, a dip among the particles read as their edge). 1.25–1.5 decided the same
#: on the 50 detections measured, 2 let the 86 through (docs/benchmark.md, "Round 25").
SHOWN_SPLIT_WITHIN = 1.5


def count_above(scores, threshold: float, floor: float = 0.0) -> int:
    """The finite pick scores at or above both ``threshold`` and ``floor``."""
    return int((_usable(scores, floor) >= threshold).sum())


def split_holds(scores, split: "ScoreSplit", reference: float, floor: float = 0.0, reference_scores=None,
                split_count: int | None = None) -> bool:
    """Whether ``split`` of these pick ``scores`` stands against a ``reference`` threshold:
    not where it keeps fewer than :data:`MIN_SPLIT_SHARE_OF_REFERENCE` of the picks the
    reference keeps while the reference lies past the background's body
    (:func:`in_background_body`: its picks are then mostly particles, not noise).
    ``reference_scores``: the picks the reference's count is taken on, where not ``scores``
    (detection's after the profile check: picks it finds unlike the labels are not counted
    as particles); ``split_count``: the split's picks counted on the same picks (where not
    ``split.n_above``): both counts are then of what detection shows."""
    counted = scores if reference_scores is None else reference_scores
    n_split = split.n_above if split_count is None else int(split_count)
    if n_split >= MIN_SPLIT_SHARE_OF_REFERENCE * count_above(counted, reference, floor):
        return True
    return in_background_body(scores, reference, floor)


def refine_on_shown(shown, network: "ScoreSplit", floor: float = 0.0) -> "ScoreSplit | None":
    """The split of the pick scores detection shows (``shown``: after the profile check,
    suppressed), where it keeps within :data:`SHOWN_SPLIT_WITHIN` times the picks the
    ``network``'s own split keeps of them, and other picks than it does; None where it does
    not, or where they show no split.

    Where the network's split is a fitted flank (``kind="tail"``: the particles overlap the
    background, and its threshold is the one of best expected F1 against the flank), the shown
    scores may only lower the threshold: their split is an edge read among the particles the
    check raised out of the overlap, above the rest of them (hollow shells at SNR 0.03: the
    flank kept 202 picks for 261 shells, the shown scores' edge 167, F1 0.678 → 0.649; each of
    the four such placements measured took particles away, each of the two that lowered the
    threshold added them; docs/benchmark.md, "Round 26")."""
    split = split_scores(shown, floor=floor)
    if split is None or (network.kind == "tail" and split.threshold >= network.threshold):
        return None
    n_network = count_above(shown, network.threshold, floor)
    n_shown = count_above(shown, split.threshold, floor)
    if n_shown != n_network and n_network / SHOWN_SPLIT_WITHIN <= n_shown <= SHOWN_SPLIT_WITHIN * n_network:
        return split
    return None


def _tail_threshold(grid: np.ndarray, dens: np.ndarray, i_bg: int, z_low: float | None = None) -> float | None:
    """The threshold (logit) of best expected F1 where particles overlap the background's flank.

    The background's log density, from its mode down to :data:`TAIL_FIT_TO` of the mode's
    density, is fitted as a Gumbel's (the law of maxima of noise: an exponential flank,
    rounded at the top) less a quadratic term past the mode, ``c (v - mode)²`` with ``c >= 0``
    (:data:`TAIL_CURVATURE_MAX`), and extrapolated: the maximum of finitely many noise values
    falls faster than exponentially far out (a Gaussian's tail), and where the fitted range
    bends so, an exponential flank extrapolated two to three times the background there
    (docs/benchmark.md, "Round 30"). Where that fit misses the flank and the mode lies within
    :data:`FLOOR_REACH_KERNELS` kernel widths of the lowest score ``z_low`` (the floor's
    artefact: the scores pile up against the floor, the background's own mode is below it),
    the flank is fitted again from past that reach (docs/benchmark.md, "Round 31"). Above the
    fit, the picks beyond the extrapolated background are the particles, ``P(t)`` of them
    above a threshold ``t`` out of ``N`` in all, with ``D(t)`` picks above ``t`` (all read off
    the same smoothed density). The threshold maximises the F1 this implies, ``2 P / (N + D)``.
    None where the flank is too short to fit, the fit misses it (:data:`TAIL_FIT_RMS`) or no
    excess is left.
    """
    peak = dens[i_bg]
    after = np.arange(i_bg, len(grid))
    stop = after[dens[after] < TAIL_FIT_TO * peak]
    if len(stop) == 0:
        return None
    i1 = int(stop[0])
    mode = float(grid[i_bg])
    fit = _fit_flank(grid, dens, i_bg, i1, mode)
    if fit is None and z_low is not None:
        i0 = int(np.searchsorted(grid, z_low + FLOOR_REACH_KERNELS * DENSITY_BANDWIDTH_LOGIT - 1e-9))
        if i0 > i_bg:
            fit = _fit_flank(grid, dens, i0, i1, mode)
    if fit is None:
        return None
    beta = fit[2]
    ts = grid[i1:]
    step = grid[1] - grid[0]
    fine = np.arange(ts[0], ts[-1] + 10.0 * beta, step)
    # the picks above each t and the background's share of them, both from the smoothed
    # density the fit saw (the kernel widens a steep flank: raw counts against the smoothed
    # fit took particles for background)
    background = (np.cumsum(np.exp(_log_flank(fine, *fit, mode))[::-1])[::-1] * step)[: len(ts)]
    above = np.cumsum(dens[i1:][::-1])[::-1] * step
    particles = np.maximum.accumulate(np.maximum(above - background, 0.0)[::-1])[::-1]
    if particles[0] < MIN_PICKS_ABOVE:
        return None
    f1 = 2 * particles / (particles[0] + above)
    return float(ts[int(np.argmax(f1))])


def _log_flank(v, a, mu, beta, c, mode):
    """A Gumbel's log density (location ``mu``, scale ``beta``, offset ``a``) less ``c (v - mode)²`` past ``mode``."""
    u = (v - mu) / beta
    return a - u - np.exp(-u) - c * np.maximum(v - mode, 0.0) ** 2


def _fit_flank(grid, dens, i0: int, i1: int, mode: float):
    """``(a, mu, beta, c)`` of :func:`_log_flank` fitted to the log density on ``grid[i0 : i1 + 1]``;
    None where that range is too short (under 5 points), the fit fails or misses it by more
    than :data:`TAIL_FIT_RMS` (root mean square)."""
    import warnings

    from scipy.optimize import OptimizeWarning, curve_fit

    if i1 - i0 < 4:
        return None
    x, y = grid[i0 : i1 + 1], np.log(dens[i0 : i1 + 1])

    def model(v, a, mu, beta, c):
        return _log_flank(v, a, mu, beta, c, mode)

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", OptimizeWarning)  # its covariance is not used
            params, _ = curve_fit(model, x, y, p0=(y[0] + 1.0, mode, 0.4, 0.0),
                                  bounds=([-np.inf, mode - 5.0, 0.05, 0.0], [np.inf, x[-1], 5.0, TAIL_CURVATURE_MAX]))
    except (RuntimeError, ValueError):
        return None
    if np.sqrt(np.mean((y - model(x, *params)) ** 2)) > TAIL_FIT_RMS:
        return None
    return tuple(float(v) for v in params)


#: The particles' low edge: the first point, between the background's mode and the upper picks'
#: median, where the density of scores comes within PLATEAU_RATIO of its lowest value there, at
#: least PLATEAU_LOGIT logits below that median (where the density has stopped falling, whichever
#: of its wiggles or bumps above it happens to be lowest; measured in docs/benchmark.md,
#: "Round 7" for a flat plateau and "Round 10" for a bump above the edge).
PLATEAU_RATIO = 1.1
PLATEAU_LOGIT = 0.5


def _low_edge(dens: np.ndarray, i_bg: int, i_med: int, step: float) -> int:
    """Index of the particles' low edge in the score density, between the background's mode
    (``i_bg``) and the upper picks' median (``i_med``).

    The first index there whose density lies within :data:`PLATEAU_RATIO` of the lowest
    density there, when it lies at least :data:`PLATEAU_LOGIT` logits (rounded to grid
    steps) below the median (the density stopped falling there: a valley, a plateau, or a
    low point followed by a bump of particles); else the lowest point itself (which
    :func:`split_scores` reads as no low edge where it lies within a grid step of the
    median, else as the edge).
    """
    part = dens[i_bg : i_med + 1]
    i_min = i_bg + int(np.argmin(part))
    first = i_bg + int(np.flatnonzero(part <= PLATEAU_RATIO * part.min())[0])
    return first if i_med - first >= int(round(PLATEAU_LOGIT / step)) else i_min


def split_scores(scores, floor: float = 0.0) -> ScoreSplit | None:
    """The threshold at which a tomogram's own pick scores turn from background to particles.

    The picks (local maxima after distance suppression) of any tomogram are two populations:
    many background maxima, piled up at low scores, and the particles, spread over the high
    scores. In logit units, the density of scores falls steeply from the background's mode
    until the particles take over: there it stops falling (the bottom of a valley between
    two modes, or the low edge of a plateau). The particles' level ``L`` is the lowest
    density between the background's mode and the median score of the picks beyond the
    background's flank (where the density stops falling by more than a factor e per logit,
    :data:`FLANK_SLOPE`); the particles' low edge is where the density first comes near
    ``L`` (:func:`_low_edge`). Going down from there, the background rises; the threshold is
    where the density reaches :data:`WALK_FACTOR` × ``L``. It needs no count and no labelled
    share: it holds at any particle density.

    Where the density still falls at that median (the lowest density is there: no low edge
    of the particles is seen, they overlap the background), the threshold is the one of best
    expected F1 against the background's extrapolated flank (:func:`_tail_threshold`,
    ``kind="tail"``); where that flank cannot be fitted either, the walk decides if at least
    :data:`MIN_UPPER_FOR_WALK` picks lie beyond the background's flank, else there is no split.

    Returns None when the scores do not show two populations (the background's mode is not
    :data:`MIN_MODE_CONTRAST` times above ``L``, no low edge of the particles is seen, the
    flank cannot be fitted and too few picks lie beyond it, or fewer than
    :data:`MIN_PICKS_ABOVE` picks lie above the threshold, or fewer than 20 picks in all).
    """
    s = _usable(scores, floor)
    if len(s) < 20:
        return None
    z = logit(s)
    grid, dens = score_density(z)
    i_bg = int(np.argmax(dens))
    # the background's flank: from its mode, the density falls steeply (by more than a factor
    # e per logit); where the fall slows down for good, the particles take over
    step = grid[1] - grid[0]
    slope = np.gradient(np.log(dens + 1e-9 * dens[i_bg])) / step
    run = max(1, int(round(FLANK_RUN_LOGIT / step)))
    flat = slope > -FLANK_SLOPE
    i_flank = len(grid) - 1
    below_half = np.flatnonzero(dens[i_bg:] < 0.5 * dens[i_bg])  # past the mode's rounded top
    for i in range(i_bg + (int(below_half[0]) if len(below_half) else 1), len(grid) - run):
        if flat[i : i + run].all():
            i_flank = i
            break
    upper = z[z >= grid[i_flank]]
    if len(upper) < MIN_PICKS_ABOVE:
        return None
    i_med = min(int(np.searchsorted(grid, np.median(upper))), len(grid) - 1)
    level = float(dens[i_bg : i_med + 1].min())
    i_low = _low_edge(dens, i_bg, i_med, step)
    if dens[i_bg] < MIN_MODE_CONTRAST * max(level, 1e-12):
        return None
    kind, z_t = "edge", None
    if i_med - i_low <= 1:
        # no low edge of the particles: the background's fitted flank places the threshold;
        # where it cannot be trusted, the walk down from the upper picks' median only where
        # those are enough to have a median (on a flank that merely slows down, a handful
        # at the top: the walk kept 10 picks for 262 particles)
        z_t = _tail_threshold(grid, dens, i_bg, float(z.min()))
        if z_t is not None:
            kind = "tail"
        elif len(upper) < MIN_UPPER_FOR_WALK:
            return None
    if z_t is None:
        i = i_low
        while i > i_bg and dens[i] < WALK_FACTOR * level:
            i -= 1
        z_t = float(grid[i])
    n_above = int((z >= z_t).sum())
    if n_above < MIN_PICKS_ABOVE:
        return None
    return ScoreSplit(float(1.0 / (1.0 + np.exp(-z_t))), float(grid[i_bg]), level, n_above, kind)
