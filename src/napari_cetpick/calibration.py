"""What a freshly trained model learns about itself on its own labelled region.

After training, detection runs on the xy box each training tomogram's labels span (over
its whole thickness, with a halo so that the network sees the box's surroundings), and
two figures are read off the result:

- the **default threshold**: the score at which the box yields as many picks as the labels
  imply (:func:`napari_cetpick.counts.threshold_for_count`), counted on the scores detection
  shows after its profile check, which moves look-alikes down past any threshold (counted
  before it, the box kept up to a quarter fewer picks than the labels imply, and so did
  every tomogram the model was applied to); each class on its own channel, the overlaps
  between classes that detection resolves left in; where the user told neither the
  labelled share nor the count, where the box's own scores split (below), when they do (a
  split that keeps a handful of top scores against the count's many does not count:
  :func:`napari_cetpick.counts.split_holds`);
- the **labelled share, estimated**: where the box's own pick scores split into background
  and particles (:func:`napari_cetpick.counts.split_scores`), the picks above count the
  particles there; the labels over that count is the share the user clicked — measured on
  the benchmark within 1.5× of the truth where the assumed 0.5 was 2.5× off (docs/method.md);
- the **centre offset**: the mean distance (working voxels, z, y, x) from each labelled
  particle to the pick on it. A trained network may answer slightly off-centre in a
  direction that depends on the run (and so on the CPU it trained on); one-view detection
  subtracts this offset (:func:`napari_cetpick.detect.centre_shift`). Each axis's mean is
  shrunk towards 0 by its standard error (positive-part James–Stein: ``m · max(0, 1 −
  se²/m²)``), so that an offset the labels cannot tell from click noise is left at 0;
- the **look-alikes it finds there**: the box's picks that score like the labelled
  particles (:func:`mining_pool`) and that its profile check still shows although their
  radial profile lies beyond what a new particle of the class looks like (excess > 0), best
  first, at least a diameter from every label, up to :data:`MINED_MAX`.
  They get a Gaussian of their own in the profile model (:class:`~napari_cetpick.descriptors.
  ProfileModel`, ``mined_mean``, ``n_mined``), beside the user's negatives, so that the check
  learns the confusions the network makes before any review; its margin, measured on the
  labels, keeps a true particle among them from costing new ones their score. The threshold
  is counted after the check with them. Measured in docs/benchmark.md ("Round 12"). A
  correction round keeps those of the model it continues instead (``kept_look_alikes``;
  "Round 16").

Training itself does not depend on detection: :meth:`napari_cetpick.train.Trainer.checkpoint`
imports this module on demand, once the weights are final.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from . import counts as C

#: Fewer matched labels than this: no centre offset (its standard error means nothing).
MIN_LABELS_FOR_OFFSET = 5
#: At most this many of the model's own look-alikes (per class, all training tomograms) go
#: into its profile model; 0 mines none.
MINED_MAX = 50
#: The look-alikes are sought among the box's picks that score at least as high as this share
#: of the labelled particles do (the lower tail of the labels' scores) ...
MINED_LABEL_QUANTILE = 0.1
#: ... and at least among the best this many times the particles the labels imply there.
MINED_POOL_FACTOR = 2.0


@dataclass
class Calibration:
    threshold: float
    centre_offset_work: tuple | None = None  # (z, y, x) working voxels, shrunk; None: not measured
    centre_offset_se_work: tuple | None = None
    n_matched: int = 0
    particles_in_boxes: int | None = None  # picks above where the boxes' own scores split
    estimated_label_fraction: float | None = None  # labels / those particles
    profile_model: object = None  # the ProfileModel refitted with the mined look-alikes (None: not refitted)
    mined: list | None = None  # per training tomogram, the look-alikes' places ((m, 3) zyx voxels)
    labelled_split: bool | None = None  # whether the boxes' own scores split (None: not measured)

    def info(self) -> dict:
        """The model-file metadata entries."""
        out = {"n_offset_labels": int(self.n_matched)}
        if self.labelled_split is not None:
            out["labelled_split"] = bool(self.labelled_split)
        if self.estimated_label_fraction is not None:
            out["particles_in_labelled_region"] = int(self.particles_in_boxes)
            out["estimated_label_fraction"] = round(float(self.estimated_label_fraction), 3)
        if self.centre_offset_work is not None:
            out["centre_offset_work"] = [round(float(v), 4) for v in self.centre_offset_work]
            out["centre_offset_se_work"] = [round(float(v), 4) for v in self.centre_offset_se_work]
        return out


def shrunk_mean(d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-axis mean of (n, 3) offsets shrunk towards 0 by its standard error, and that error."""
    d = np.asarray(d, float).reshape(-1, 3)
    m = d.mean(0)
    se = d.std(0, ddof=1) / np.sqrt(len(d))
    with np.errstate(divide="ignore", invalid="ignore"):
        factor = np.where(m != 0, np.clip(1.0 - (se / m) ** 2, 0.0, 1.0), 0.0)
    return m * factor, se


def _union_box(boxes, vol_shape, halo_vox: int):
    """``(y0, y1, x0, x1)``: the xy region spanning every box given (None: no box), plus the halo."""
    boxes = [b for b in boxes if b is not None]
    if not boxes:
        return None
    y0 = max(0, int(np.floor(min(b.y0 for b in boxes))) - halo_vox)
    x0 = max(0, int(np.floor(min(b.x0 for b in boxes))) - halo_vox)
    y1 = min(vol_shape[1], int(np.ceil(max(b.y1 for b in boxes))) + halo_vox)
    x1 = min(vol_shape[2], int(np.ceil(max(b.x1 for b in boxes))) + halo_vox)
    return y0, y1, x0, x1


def _calibrate_one(found: Sequence, density_per_vox2: float, diameter_vox: float, bin_zyx,
                   count_told: bool = True) -> Calibration:
    """One class's :class:`Calibration` from its detections in each labelled box.

    ``found``: per training tomogram with labels of this class, ``(result, (y0, x0), labels,
    box, shown)``: the class's :class:`~napari_cetpick.detect.DetectResult` at threshold 0 on the
    region whose corner is ``(y0, x0)`` (the network's own scores), its labels, their box, and
    the pick scores detection shows there (after the profile check), ``(zyx, scores)``. The count
    reads the shown scores; the split, as detection's, the network's own. ``count_told``: the
    user gave the labelled share or the particle count; when not, and the boxes' scores
    split, the default threshold is that split (the assumed share only where they do not).
    """
    from .config import DetectConfig
    from .evaluate import match_points
    from .peaks import select

    scores, box_scores, offsets, n_expected, n_labels = [], [], [], 0.0, 0
    for res, (y0, x0), lab, box, (shown_zyx, shown) in found:
        zyx = res.zyx + np.array([0.0, y0, x0])
        box_scores.append(res.scores[box.contains(zyx)])
        if density_per_vox2 > 0:
            n_expected += density_per_vox2 * box.area
            scores.append(shown[box.contains(shown_zyx + np.array([0.0, y0, x0]))])
        fz, fs = res.first_view
        keep = select(fz, fs, 0.0, res.min_distance_vox)
        fz = fz[keep] + np.array([0.0, y0, x0])
        lab = np.asarray(lab, float).reshape(-1, 3)
        n_labels += len(lab)
        if len(lab) and len(fz):
            # the CZII rule: a pick within half the particle's radius is on the particle
            pi, li = match_points(fz, lab, diameter_vox / 4)
            offsets.append((fz[pi] - lab[li]) / bin_zyx)
    floor = DetectConfig().candidate_floor
    # the profile check may move a candidate below the floor every threshold stays above
    threshold = C.threshold_for_count(np.concatenate(scores), n_expected, floor=floor) if scores else 0.5
    share = {}
    if box_scores:
        s = np.concatenate(box_scores)
        split = C.split_scores(s, floor=floor)
        if split is not None and scores and not C.split_holds(s, split, threshold, floor=floor):
            split = None  # a handful of top scores against the labels' count: not the particles
        share["labelled_split"] = split is not None
        if split is not None and n_labels:
            n = int((s >= split.threshold).sum())
            share.update(particles_in_boxes=n, estimated_label_fraction=float(min(1.0, n_labels / max(n, 1))))
            if not count_told:
                threshold = split.threshold
    d = np.concatenate(offsets) if offsets else np.zeros((0, 3))
    if len(d) < MIN_LABELS_FOR_OFFSET:
        return Calibration(float(threshold), n_matched=len(d), **share)
    m, se = shrunk_mean(d)
    return Calibration(float(threshold), tuple(m.tolist()), tuple(se.tolist()), len(d), **share)


def mine_look_alikes(zyx, scores, excess, labels, negatives, box, n_pool: int, diameter_vox: float
                     ) -> tuple[np.ndarray, np.ndarray]:
    """``(zyx, scores)``: one labelled box's look-alikes, best first (tomogram voxels).

    Among the box's best ``n_pool`` picks (``zyx``, ``scores``: best first, after the profile
    check, ``excess`` its excess per pick, NaN unchecked), those whose profile lies beyond
    typical (excess > 0) at least a diameter from every label, and further than a radius from
    every negative already given. :func:`calibrate_classes` then keeps those whose profile
    lies whole inside the tomogram (:func:`~napari_cetpick.descriptors.profile_whole_inside`):
    a look-alike cut by a face would teach their Gaussian what a cut particle looks like.
    """
    from scipy.spatial import cKDTree

    zyx = np.asarray(zyx, float).reshape(-1, 3)
    inside = np.flatnonzero(box.contains(zyx))[: max(0, int(n_pool))]
    keep = inside[np.nan_to_num(np.asarray(excess, float)[inside]) > 0]
    for points, reach in ((labels, diameter_vox), (negatives, diameter_vox / 2)):
        points = np.asarray(points if points is not None else np.zeros((0, 3)), float).reshape(-1, 3)
        if len(points) and len(keep):
            d, _ = cKDTree(points).query(zyx[keep])
            keep = keep[d >= reach]
    return zyx[keep], np.asarray(scores)[keep]


def mining_pool(zyx, scores, labels, box, expected: float, diameter_vox: float) -> int:
    """How many of the box's best picks (``zyx``, ``scores``: best first) :func:`mine_look_alikes`
    looks at: those scoring at least as high as :data:`MINED_LABEL_QUANTILE` of the labelled
    particles' picks do (a look-alike the model ranks among its labels; the labels' count need
    not be known), and at least :data:`MINED_POOL_FACTOR` times the ``expected`` particles there."""
    from .descriptors import MIN_PROFILE_LABELS
    from .evaluate import match_points

    zyx = np.asarray(zyx, float).reshape(-1, 3)
    inside = box.contains(zyx)
    n = int(round(MINED_POOL_FACTOR * expected))
    lab = np.asarray(labels if labels is not None else np.zeros((0, 3)), float).reshape(-1, 3)
    if len(lab) and inside.any():
        pi, _ = match_points(zyx[inside], lab, diameter_vox / 4)
        if len(pi) >= MIN_PROFILE_LABELS:
            floor = np.quantile(np.asarray(scores)[inside][pi], MINED_LABEL_QUANTILE)
            n = max(n, int(np.sum(np.asarray(scores)[inside] >= floor)))
    return n


def _mine_class(picks, passed, volumes, given, density_per_vox2: float, diameter_vox: float, mine: int):
    """One class's look-alikes per training tomogram (a list of (m, 3) arrays, one per volume),
    the best ``mine`` over all of them; None with fewer than
    :data:`~napari_cetpick.descriptors.MIN_PROFILE_LABELS`. ``picks``: per labelled region, its
    picks after the check ``(zyx in the region, scores, excess)``; ``passed``: per region,
    ``(volume index, result, corner, region, labels, box)``; ``given``: per volume, the
    negatives the user gave."""
    from .descriptors import MIN_PROFILE_LABELS, profile_whole_inside

    found, vol_of = [np.zeros((0, 3))], [np.zeros(0, int)]
    scores = [np.zeros(0)]
    for (z, s, ex), (i, _, corner, _, lab, box) in zip(picks, passed):
        if not len(z):
            continue
        z = z + np.array([0.0, *corner])
        pool = mining_pool(z, s, lab, box, density_per_vox2 * box.area, diameter_vox)
        mz, ms = mine_look_alikes(z, s, ex, lab, given[i], box, pool, diameter_vox)
        whole = profile_whole_inside(volumes[i].shape, mz, diameter_vox)
        found.append(mz[whole])
        scores.append(ms[whole])
        vol_of.append(np.full(int(whole.sum()), i))
    best = np.argsort(-np.concatenate(scores), kind="stable")[:mine]
    if len(best) < MIN_PROFILE_LABELS:
        return None
    where, zyx = np.concatenate(vol_of)[best], np.concatenate(found)[best]
    return [zyx[where == i] for i in range(len(volumes))]


def _with_earlier(mined, earlier, reach: float):
    """Per volume, the look-alikes ``mined`` now (None: none) and those found ``earlier``
    further than ``reach`` from each of them; None with fewer than
    :data:`~napari_cetpick.descriptors.MIN_PROFILE_LABELS` in all."""
    from scipy.spatial import cKDTree

    from .descriptors import MIN_PROFILE_LABELS

    out = []
    for i, old in enumerate(earlier):
        now = mined[i] if mined is not None else np.zeros((0, 3))
        if len(now) and len(old):
            old = old[cKDTree(now).query(old)[0] > reach]
        out.append(np.concatenate([now, old]))
    return out if sum(len(m) for m in out) >= MIN_PROFILE_LABELS else None


def _places(zyx) -> np.ndarray:
    """``zyx`` as an (n, 3) float array (None: none)."""
    return np.zeros((0, 3)) if zyx is None else np.asarray(zyx, float).reshape(-1, 3)


def calibrate_classes(ckpt, volumes: Sequence, labels: Sequence, boxes: Sequence, densities: dict,
                      voxel_size_a: float | None = None, device=None, halo_vox: int = 0,
                      counts_told: dict | None = None, keep_pass_for=None, passes: list | None = None,
                      negatives: Sequence | None = None, mine: int = MINED_MAX,
                      look_alikes: Sequence | None = None, kept_look_alikes: dict | None = None,
                      found: Sequence | None = None) -> dict:
    """Each class's :class:`Calibration` from one detection pass over each labelled region.

    Parameters
    ----------
    ckpt : Checkpoint
        The trained model (not yet calibrated), of one class or several.
    volumes : sequence
        The training tomograms (napari zyx arrays).
    labels, boxes : sequences of dicts, one per training tomogram
        Per class name: its positive labels ((n, 3) zyx voxels) and the
        :class:`~napari_cetpick.counts.LabelBox` of those labels (None: none there).
    densities : dict
        Per class name, expected particles per voxel² of xy area (:mod:`napari_cetpick.counts`).
    halo_vox : int
        Tomogram voxels around each box that the network also sees.
    counts_told : dict, optional
        Per class name, whether the user gave its labelled share or particle count (default:
        yes). Where not, the default threshold is where the labelled boxes' own scores split,
        when they do: the assumed share (0.5) was measured up to 2.5× off, the split's
        estimate 1.0–1.7× (docs/benchmark.md).
    keep_pass_for, passes : array, list, optional
        Where the region is the whole of this very volume (one of ``volumes``), the network
        pass over it is appended to ``passes`` (:class:`~napari_cetpick.detect.NetworkPass`):
        the detection that follows there need not run the network again.
    negatives : sequence of dicts, optional
        Per training tomogram, per class name, the negatives the user gave ((n, 3) zyx voxels;
        those given for every class included): no look-alike is mined near them, and the
        refitted profile model keeps their Gaussian.
    mine : int
        At most this many look-alikes per class go into the profile model
        (:func:`mine_look_alikes`; fewer than
        :data:`~napari_cetpick.descriptors.MIN_PROFILE_LABELS` found: none); 0 mines none.
    look_alikes : sequence of dicts, optional
        Per training tomogram, per class name, look-alikes found before ((n, 3) zyx voxels:
        those the first round trained against, :attr:`napari_cetpick.train.Trainer.look_alike_points`):
        they join the ones mined now (those further than a radius from every one of them),
        though the new weights may no longer rank them among the labels.
    kept_look_alikes : dict, optional
        Per class name, the look-alikes' Gaussian of the model a correction round continues
        (:meth:`~napari_cetpick.descriptors.ProfileModel.look_alikes`): kept, its margins
        measured again on the labels, instead of mining anew. After a review the labels spread
        over the tomogram, and mining over the box of all of them took the best-scoring, most
        class-like look-alikes of the whole tomogram: a Gaussian nearer the labels, a larger
        margin, and after the correction round a lower F1 than the round-1 model's look-alikes
        gave the same weights (docs/benchmark.md, "Round 16").
    found : sequence of dicts, optional
        Per training tomogram, per class name, the picks a self-training round was sure of
        (:func:`sure_picks`): labels of their class here, beside ``labels`` (their boxes are in
        ``boxes``), but the refitted profile model measures its margins on ``labels`` alone where
        there are enough of them (:meth:`~napari_cetpick.descriptors.ProfileModel.fit`'s ``found``).

    The network runs once per tomogram on the region spanning every class's box (default
    views, threshold 0, overlaps between classes left in: each class is measured on its own
    channel) and each class is measured inside its own box.
    """
    from dataclasses import replace

    from .config import DetectConfig
    from .data import make_geometry
    from .descriptors import ProfileModel
    from .detect import detect_classes, profile_check
    from .peaks import select
    from .utils import run_generator

    names = ckpt.class_names
    own = labels
    if found is not None:  # the labels and the sure picks count alike, but for the profile model's margins
        labels = [{n: lab.get(n) if f.get(n) is None else np.concatenate([_places(lab.get(n)), _places(f[n])])
                   for n in names} for lab, f in zip(labels, found)]
    passed = {n: [] for n in names}  # per class: (volume index, result, corner, region, labels, box)
    weight = DetectConfig().profile_weight  # the check as detection applies it by default
    negatives = list(negatives) if negatives is not None else [{} for _ in volumes]
    for i, (vol, lab, box) in enumerate(zip(volumes, labels, boxes)):
        region = _union_box([box.get(n) for n in names], vol.shape, halo_vox)
        if region is None:
            continue
        y0, y1, x0, x1 = region
        # the default views for the threshold, the first view alone for the offset that
        # one-view detection subtracts (mirror pairs of views need none); the network's own
        # scores, as detection reads the split, and the scores it shows after the profile
        # check, as a count of picks means them
        whole = (y0, x0, y1, x1) == (0, 0, vol.shape[1], vol.shape[2])
        keep_pass = whole and passes is not None and keep_pass_for is not None and vol is keep_pass_for
        region = vol if whole else vol[:, y0:y1, x0:x1]
        res = run_generator(detect_classes(ckpt, region, DetectConfig(threshold=0.0, profile_weight=0.0),
                                           voxel_size_a=voxel_size_a, device=device, first_view=True, resolve=False,
                                           keep_pass=keep_pass))
        if keep_pass:
            passes.append(res.network_pass)
        for n in names:
            if box.get(n) is not None:
                passed[n].append((i, res[n], (y0, x0), region, lab[n], box[n]))

    def check_region(view, r, region):
        # the labels' own tomogram: their contrast, by definition
        return profile_check(view, region, r.cand_zyx, r.cand_scores, None, weight, voxel_size_a, r.expected_particles,
                             contrast=False)

    def shown(c, r):
        """The region's picks after the profile check ``c`` (best first) and their excess (None: no
        check): how far beyond typical and towards a look-alike, what look-alikes are mined by."""
        keep = select(c.zyx, c.scores, 0.0, r.min_distance_vox)
        return c.zyx[keep], c.scores[keep], None if c.beyond is None else c.beyond[keep]

    def sure(n):
        return None if found is None else [f.get(n) for f in found]

    bin_zyx = np.asarray(make_geometry(ckpt.bin_xy, ckpt.config.compress).bin_zyx, float)
    told = counts_told or {}
    out = {}
    for n in names:
        view = ckpt.for_class(n)
        checks = [check_region(view, r, region) for _, r, _, region, _, _ in passed[n]]
        picks = [shown(c, p[1]) for c, p in zip(checks, passed[n])]
        refit, mined = None, None
        # a region without candidates has no excess either; a class without a profile model none anywhere
        checked = [ex is not None for z, _, ex in picks if len(z)]
        given = [np.asarray(d.get(n, np.zeros((0, 3))), float).reshape(-1, 3) for d in negatives]
        kept = (kept_look_alikes or {}).get(n)
        if kept is not None and checked and all(checked):
            refit = ProfileModel.fit(volumes, [lab.get(n) for lab in own], view.diameter_vox, negatives=given,
                                     mined_gaussian=kept, found=sure(n))
        elif mine > 0 and checked and all(checked):
            # among the picks the labels' Gaussian alone lets through: the check against the
            # tomogram's candidates already lowers many look-alikes, and mined from its order
            # the look-alikes' Gaussian came out worse (docs/benchmark.md, "Round 17")
            one_sided = [shown(c.one_sided(weight), p[1]) for c, p in zip(checks, passed[n])]
            mined = _mine_class(one_sided, passed[n], volumes, given, densities[n], view.diameter_vox, mine)
            if look_alikes is not None:
                before = [np.asarray(d.get(n, np.zeros((0, 3))), float).reshape(-1, 3) for d in look_alikes]
                mined = _with_earlier(mined, before, view.diameter_vox / 2)
            if mined is not None:
                # the profile model as training fitted it (every training tomogram), with them
                refit = ProfileModel.fit(volumes, [lab.get(n) for lab in own], view.diameter_vox,
                                         negatives=given, mined=mined, found=sure(n))
        if refit is not None:
            view = replace(view, info={**view.info, "profile_model": refit.to_info()})
            picks = [shown(check_region(view, r, region), r) for _, r, _, region, _, _ in passed[n]]
        cal = _calibrate_one([(r, corner, lab, box, (z, s)) for (_, r, corner, _, lab, box), (z, s, _)
                              in zip(passed[n], picks)], float(densities[n]), view.diameter_vox, bin_zyx,
                             told.get(n, True))
        if refit is not None:
            cal.profile_model, cal.mined = refit, mined
        out[n] = cal
    return out


def calibrate(ckpt, volumes: Sequence, labels: Sequence, boxes: Sequence, density_per_vox2: float,
              voxel_size_a: float | None = None, device=None, halo_vox: int = 0,
              count_told: bool = True, mine: int = MINED_MAX) -> Calibration:
    """:func:`calibrate_classes` of a one-class model: labels and boxes are per tomogram, not per class."""
    name = ckpt.class_names[0]
    return calibrate_classes(ckpt, volumes, [{name: l} for l in labels], [{name: b} for b in boxes],
                             {name: density_per_vox2}, voxel_size_a, device, halo_vox, {name: count_told},
                             mine=mine)[name]


#: A pick the model is sure of scores at least this far above its tomogram's threshold (logit)
#: ... (:func:`sure_picks`)
SURE_MARGIN = 1.0

#: The sure picks are found with two views, a mirror pair (centred as four are): on the benchmark
#: as good a self-training round as four views, for half the detection (docs/benchmark.md, "Round 20")
SURE_VIEWS = 2


def sure_picks(ckpt, volumes: Sequence, labels: Sequence, negatives: Sequence, masks: Sequence | None = None,
               voxel_size_a: float | None = None, device=None) -> tuple[list, str]:
    """``(per training tomogram {class name: (n, 3) zyx}, why none)``: the picks a freshly
    trained model is sure of in its own training tomograms, for a self-training round
    (:class:`napari_cetpick.train.Trainer`, ``TrainConfig.self_training_steps``).

    Detection runs on each whole tomogram as a user would run it (each tomogram's own
    threshold, the profile check), in :data:`SURE_VIEWS` views; a pick counts when both judges
    agree: the network scores it at least :data:`SURE_MARGIN` above the threshold and its
    radial profile is at least as like the labels as their median label is (the check charges
    it nothing: ``profile_excess`` ≤ 0). Picks within a radius of a label or a negative of any
    class are left out (the user already said). A class without a profile model (fewer than 5 labels) gets none: the
    network alone is not a second opinion. On the benchmark 99–100 % of them were particles
    of the class (docs/benchmark.md, "Round 18").
    """
    from scipy.spatial import cKDTree

    from .config import DetectConfig
    from .detect import PROFILE_SKIPPED, detect_classes
    from .utils import run_generator

    masks = list(masks) if masks is not None else [None] * len(volumes)
    found, why = [], set()
    for vol, lab, neg, mask in zip(volumes, labels, negatives, masks):
        res = run_generator(detect_classes(ckpt, vol, DetectConfig(views=SURE_VIEWS, profile_contrast=False),
                                           voxel_size_a, device=device, mask=mask))
        known = [np.asarray(a, float).reshape(-1, 3) for d in (lab, neg) for a in d.values()]
        known = np.concatenate(known) if known else np.zeros((0, 3))
        per = {}
        for name in res.names:
            r = res[name]
            if r.cand_profile_excess is None:
                why.add(PROFILE_SKIPPED.format(name=name))
                continue
            charge = np.nan_to_num(r.cand_profile_excess[r.keep_idx], nan=np.inf)
            sure = (r.margins >= SURE_MARGIN) & (charge <= 0)
            if len(known) and sure.any():
                sure &= cKDTree(known).query(r.zyx)[0] > r.diameter_vox / 2
            if sure.any():
                per[name] = r.zyx[sure].astype(float)
        found.append(per)
    n = sum(len(a) for per in found for a in per.values())
    return found, "" if n else ("; ".join(sorted(why)) or "no picks it is sure of")


__all__ = ["Calibration", "calibrate", "calibrate_classes", "mine_look_alikes", "mining_pool", "shrunk_mean",
           "sure_picks", "MIN_LABELS_FOR_OFFSET", "MINED_MAX", "SURE_MARGIN", "SURE_VIEWS"]
