"""Settings of training and detection, as plain dataclasses.

The knobs of the published method keep their names and meaning (``bbox``, ``tau``,
``thresh``, ``cr_weight``, ``temp``, ``num_epochs``, ``lr``, ``arch``, ``gauss``,
``compress``, ``K``). Widgets and the CLI fill these and call the engine.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from .device import PRECISIONS
from .errors import CetpickError, plain

# Channels of the stem, of each 2D U-Net level, and of the feature map fed to the 3D head
# (see ``model/network.py``). Kept here, free of torch, so that settings can be checked and
# memory estimated without loading torch.
ARCH_SPECS: dict[str, dict] = {
    # fast CPU default: ~0.2 M parameters
    "unet_small": {"stem": 16, "levels": (16, 32, 64), "feat": 16, "embed": 16},
    # the published networks (~2.0 M and ~7.8 M parameters)
    "unet_4": {"stem": 16, "levels": (32, 64, 128, 256), "feat": 32, "embed": 32},
    "unet_5": {"stem": 16, "levels": (32, 64, 128, 256, 512), "feat": 32, "embed": 32},
    # true 3D U-Nets (stride-2 stem, output stride 2 on every axis)
    "unet3d_small": {"kind": "3d", "stem": 16, "levels": (16, 32, 64), "embed": 16},
    "unet3d": {"kind": "3d", "stem": 16, "levels": (24, 48, 96), "embed": 16},
    # the small one a level deeper (the default on every device): its fourth level, at a sixteenth of the
    # resolution, sees a particle of 15-25 nm and its surroundings whole, for about an eighth
    # more arithmetic per step (docs/benchmark.md, "Round 9")
    "unet3d_4": {"kind": "3d", "stem": 16, "levels": (16, 32, 64, 128), "embed": 16},
}
ARCHS = tuple(ARCH_SPECS)

#: The views detection can run, per ``DetectConfig.views``: (mirrored through the block's
#: centre, quarter turns in xy) of each view. Every view after the first pairs with a mirror
#: image, so the model's own shift cancels; a turned view sees the block's xy texture rotated
#: as training's augmentation (``augment="full"``) did.
VIEWS = {1: ((False, 0),), 2: ((False, 0), (True, 0)), 4: ((False, 0), (True, 0), (False, 1), (True, 1))}
#: Optimiser steps of a training run when neither ``num_epochs`` nor ``max_steps`` is given ...
DEFAULT_STEPS = 300
#: ... or this many epochs where that is more (over 40 labels at the default batch of 8), up to
#: :data:`DEFAULT_MAX_STEPS`: labels beyond 40 are each seen about as often as 40 are in 300 steps.
#: At a fixed 300 steps, 74 labels (the review's accepted picks and the labelled region's missed
#: particles) trained the shell at SNR 0.03 to best F1 0.720, 600 steps (60 epochs) to 0.777; the
#: barrel at that noise lost on a tomogram of half the density (docs/benchmark.md, "Round 29").
DEFAULT_MIN_EPOCHS = 60
#: The default schedule's most steps (2–3 min of training on 2 CPU cores at 512 × 512 × 160).
DEFAULT_MAX_STEPS = 600
#: ``TrainConfig.gauss`` None: this pre-filter (working voxels) where a class's labels stand out of
#: the tomogram's noise by less than ``SMOOTHING_BELOW_SEPARATION`` (their radial profiles'
#: separation from the tomogram's mean in their own spread), else none. A particle is at least
#: 12 working voxels across (``bin``), so one voxel keeps its shape while taking away the
#: voxel-to-voxel noise a network can learn a few labels by: the 15 nm barrel (separations
#: 3–9) no longer collapsed on one training seed of two at SNR 0.05 (best F1 0.18 → 0.50) and,
#: end to end at SNR 0.1, reached 0.823 → 0.869 in round 1 and 0.816 → 0.883 after a correction
#: round (three seeds); classes that stand out (shells at SNR 0.1, 24–30; ribosomes, 34–88)
#: lost up to 0.02 with it, and are left unfiltered (docs/benchmark.md, "Round 26").
AUTO_SMOOTHING = 1.0
SMOOTHING_BELOW_SEPARATION = 10.0
PRESETS = ("default", "cetpick")
BLOBS = ("physical", "ball", "cetpick")
#: The name of the one class of a model trained without class names.
DEFAULT_CLASS = "particle"
#: Key of negative clicks that hold for every class ("none of these").
ALL_CLASSES = "*"
#: Colours given to classes in their order when the user gives none (#rrggbb: IMOD objects take them).
CLASS_PALETTE = ("#ffa500", "#00e5ff", "#7cfc00", "#ff69b4", "#1e90ff", "#ffd700", "#ba55d3", "#ffffff")


def class_colour(index: int) -> str:
    """The palette's colour of the ``index``-th class."""
    return CLASS_PALETTE[index % len(CLASS_PALETTE)]


@dataclass
class ClassSpec:
    """One particle class of a training run: its name, size and what the user knows of its count.

    ``None`` fields fall back to the :class:`TrainConfig`'s own (``label_fraction``,
    ``expected_particles``) or must be given (``bbox`` or ``diameter_a``).
    """

    name: str = DEFAULT_CLASS
    bbox: float | None = None
    diameter_a: float | None = None
    label_fraction: float | None = None
    expected_particles: int | None = None
    colour: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_class_name(name) -> str:
    """``name`` if it can name a class (in files, on the command line), else :class:`CetpickError`."""
    if not isinstance(name, str) or not name.strip():
        raise CetpickError("A class needs a name (letters, digits, '-', '_' or '.').")
    bad = [c for c in name if c.isspace() or c in "=,:/\\*"]
    if bad:
        raise CetpickError(f"Class name {name!r}: {bad[0]!r} is not allowed in a class name (it must not hold "
                           "spaces or any of = , : / \\ *).")
    return name


def network_stride(arch: str) -> tuple[int, int, int]:
    """The network's output stride (z, y, x) in working voxels, without building it.

    The pseudo-3D networks halve y and x (a 2D stem at stride 2); the 3D U-Nets every axis.
    """
    if arch not in ARCH_SPECS:
        raise CetpickError(f"Unknown architecture {arch!r}; choose one of {', '.join(ARCHS)}.")
    return (2, 2, 2) if ARCH_SPECS[arch].get("kind") == "3d" else (1, 2, 2)


def network_multiple(arch: str) -> int:
    """The network's input y/x sizes must be multiples of this (8, 16 or 32).

    The stem halves y and x, then the U-Net max-pools ``len(levels) - 1`` times, so the
    input must divide by ``2 * 2 ** (len(levels) - 1) = 2 ** len(levels)``.
    """
    if arch not in ARCH_SPECS:
        raise CetpickError(f"Unknown architecture {arch!r}; choose one of {', '.join(ARCHS)}.")
    return 2 ** len(ARCH_SPECS[arch]["levels"])


@dataclass
class TrainConfig:
    """Everything that defines a training run.

    Parameters
    ----------
    bbox : float, optional
        Particle diameter (box size) in voxels of the input tomogram.
    diameter_a : float, optional
        Particle diameter in Å; used when ``bbox`` is not given (needs the voxel size).
    tau : float, optional
        Class prior of the PU loss: the fraction of heatmap voxels that are positive.
        ``None`` estimates it from ``expected_particles`` or from the label density.
    expected_particles : int, optional
        Expected number of particles in all training tomograms, a friendlier way to give tau.
    label_fraction : float, optional
        Share of the particles that were labelled in the region the user worked in (0.5 when
        not given); used to estimate tau.
    thresh : float
        Target value above which a voxel counts as a positive for the contrastive loss.
    contrastive : bool
        Use the debiased contrastive regulariser.
    cr_weight, temp : float
        Weight and temperature of the contrastive regulariser.
    consistency_weight : float
        Weight of the two-view consistency loss.
    num_epochs : int, optional
        One epoch is one optimiser step per ``batch_size`` labels. When given, training runs
        this many epochs (capped only by an explicit ``max_steps``).
    max_steps : int, optional
        Optimiser steps: the whole schedule when ``num_epochs`` is not given, else a cap on it.
        With neither, training runs :data:`DEFAULT_STEPS` steps, or :data:`DEFAULT_MIN_EPOCHS`
        epochs where that is more, up to :data:`DEFAULT_MAX_STEPS`.
    lr : float
        Adam learning rate; multiplied by 0.1 at each epoch in ``lr_step``.
    settle_steps : int
        The last this many steps of a first round (at most a third of its schedule) run at a tenth
        of the rate, so that the weights settle instead of ending on one noisy step (the barrel
        and ribosome up, the shell slightly down: docs/benchmark.md, "Round 13"). 0: none; a
        correction round, which runs at a tenth of the rate throughout, has none.
    look_alike_steps : int
        After a first round, calibration looks in the labelled region for the model's own
        look-alikes (:func:`napari_cetpick.calibration.mine_look_alikes`: picks that score like
        the labels while their radial profile does not); where it finds some, training goes on
        for this many steps (at most a third of the schedule) at a tenth of the rate with them
        as negatives of their class, as a correction round takes rejected picks, and calibrates
        again. 0 (the default): none. Measured in docs/benchmark.md ("Round 14"): the barrel up
        after the correction round and on crowded tomograms with many labels, down on a sparse
        tomogram and with few labels — not on by default. A correction round has none.
    self_training_steps : int
        After a first round (and its look-alike round), detection runs on each whole training
        tomogram, and the picks the model is sure of — at least a logit above the tomogram's
        threshold, with a radial profile at least as like the labels as their median label's
        (:func:`napari_cetpick.calibration.sure_picks`) — become labels of their class for this
        many more steps (at most a third of the schedule) at a tenth of the rate, and the
        profile model and the default threshold are fitted on the labels and them, as after a
        review (the model's counts and labelled share stay the user's labels'). 50 by default
        (docs/benchmark.md, "Round 20": the barrel and the shell up, fewer picks in tomograms
        without the class, for about 40 s on 2 CPU cores); 0: none. A class without a profile
        model (fewer than 5 labels) gets none: its last steps are the schedule's. A correction
        round has no such round after its steps; a correction round of a model that had one
        trains with the picks that model is sure of from its first step, beside the review
        (:meth:`napari_cetpick.train.Trainer._rehearse`: without them it forgets the round).
    arch : str
        ``unet3d_4`` (the default: a 3D U-Net of four levels), ``unet3d_small`` or ``unet3d``
        (three levels), ``unet_small`` (pseudo-3D, fast), ``unet_4`` or ``unet_5`` (the
        published networks); :data:`ARCH_SPECS`.
    batch_size : int
        Crops per optimiser step (each with a second augmented view when the consistency or
        contrastive loss is on).
    precision : {"auto", "float32", "bfloat16"}
        Arithmetic of the network's pass in a training step (the loss, the optimiser and the
        weights stay float32). ``auto``: bfloat16 on a CPU with AMX for it, where the network's part
        of a step ran about 1.8× faster and stayed deterministic (:func:`napari_cetpick.device.training_dtype`),
        float32 elsewhere (on a CPU with AVX512-BF16 but no AMX bfloat16 training was not
        deterministic; docs/benchmark.md, "Round 33").
    crop_xy, crop_z : int
        Crop size in working voxels; xy must be a multiple of the network's
        :func:`network_multiple` (8 for ``unet_small``, ``unet3d_small`` and ``unet3d``, 16 for
        ``unet_4`` and ``unet3d_4``, 32 for ``unet_5``) and at least 32; z too for the 3D
        networks, which pool it.
    gauss : float or None
        Sigma of a 3D Gaussian pre-filter in working voxels (0 = none). None (the default)
        chooses it from the labels when training starts: :data:`AUTO_SMOOTHING` where a class's
        labels stand out of the tomogram's noise by less than :data:`SMOOTHING_BELOW_SEPARATION`
        (their radial profiles' separation, :meth:`~napari_cetpick.descriptors.ProfileModel.
        separation`), else 0; a correction round keeps its model's. The model file holds the
        value used.
    compress : bool
        Average consecutive slice pairs (z binning by 2), as the original's ``--compress``.
    bin : int or "auto"
        Isotropic binning applied before the network; ``auto`` picks the largest factor that
        keeps the particle at least ``min_particle_vox`` working voxels across.
    label_crop_prob : float
        Probability that a crop is centred near a label rather than anywhere.
    translation_ratio : float
        How far a crop near a label may be shifted off it, as a share of the particle
        diameter (the original's meaning: a share of the box size).
    augment : str
        ``full`` (flips and 90° rotations in xy, z flip, intensity jitter) or ``flip``
        (one left-right or up-down flip, as the original).
    blob : str
        ``physical`` (target blob sized from the particle diameter) or ``cetpick`` (the
        original's CenterNet radius formula).
    seed : int
        Seed of every random draw; training on CPU is deterministic for a given seed.
    neg_weight : float, optional
        Weight of the negative clicks' term in the loss; default
        :func:`napari_cetpick.losses.negative_click_weight` of τ.
    classes : list of ClassSpec, optional
        Several particle classes in one model (one output channel each, over a shared
        network). ``None``: one class, sized by ``bbox``/``diameter_a``. A class's
        ``label_fraction``/``expected_particles`` left ``None`` take this config's.
    cross_class_weight : float
        With several classes, each class's labelled particles are known negatives of the
        other classes' channels, with this weight times that channel's τ (1: as much as one of
        its own labels; 0: left unlabelled).
    balance_classes : bool
        With several classes, weigh each class's loss by the mean τ over its own τ, so that a
        rare class shapes the shared network as much as a common one (a class's PU risk
        scales with its τ). One class: no change.
    """

    bbox: float | None = None
    diameter_a: float | None = None
    tau: float | None = None
    expected_particles: int | None = None
    label_fraction: float | None = None
    thresh: float = 0.5
    contrastive: bool = False
    cr_weight: float = 0.1
    temp: float = 0.07
    consistency_weight: float = 0.0
    num_epochs: int | None = None
    max_steps: int | None = None
    lr: float = 1e-3
    lr_step: tuple[int, ...] = ()
    settle_steps: int = 100
    look_alike_steps: int = 0
    self_training_steps: int = 50
    arch: str = "unet3d_4"
    batch_size: int = 8
    precision: str = "auto"
    crop_xy: int = 64
    crop_z: int = 32
    gauss: float | None = None
    compress: bool = False
    bin: int | str = "auto"
    min_particle_vox: float = 12.0
    label_crop_prob: float = 0.75
    translation_ratio: float = 1.0
    augment: str = "full"
    blob: str = "ball"
    n_anchors_unlabelled: int = 128
    n_negatives: int = 512
    seed: int = 0
    preset: str = "default"
    neg_weight: float | None = None
    classes: list | None = None
    cross_class_weight: float = 1.0
    balance_classes: bool = True

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["lr_step"] = list(self.lr_step)
        return d

    def class_specs(self) -> list[ClassSpec]:
        """The classes of this run, each with its own settings resolved against the config's."""
        if not self.classes:
            return [ClassSpec(DEFAULT_CLASS, self.bbox, self.diameter_a, self.label_fraction, self.expected_particles)]
        out = []
        for c in self.classes:
            c = c if isinstance(c, ClassSpec) else ClassSpec(**c)
            out.append(replace(
                c, bbox=c.bbox if c.bbox is not None or c.diameter_a is not None else self.bbox,
                diameter_a=c.diameter_a if c.bbox is not None or c.diameter_a is not None else self.diameter_a,
                label_fraction=c.label_fraction if c.label_fraction is not None else self.label_fraction,
                expected_particles=c.expected_particles if c.expected_particles is not None else self.expected_particles))
        return out

    def for_class(self, spec: ClassSpec) -> "TrainConfig":
        """This config as a one-class run of ``spec`` (its size, share and count)."""
        return replace(self, classes=None, bbox=spec.bbox, diameter_a=spec.diameter_a,
                       label_fraction=spec.label_fraction, expected_particles=spec.expected_particles)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        names = {f.name for f in fields(cls)}
        kw = {k: v for k, v in d.items() if k in names}
        if "lr_step" in kw:
            kw["lr_step"] = tuple(kw["lr_step"])
        kw.setdefault("settle_steps", 0)  # a model saved before settling existed had none
        kw.setdefault("look_alike_steps", 0)  # nor one saved before the look-alike round
        kw.setdefault("self_training_steps", 0)  # nor one saved before the self-training round
        if kw.get("classes"):
            keys = {f.name for f in fields(ClassSpec)}
            kw["classes"] = [ClassSpec(**{k: v for k, v in c.items() if k in keys}) for c in kw["classes"]]
        return cls(**kw)

    @property
    def prefilter(self) -> float:
        """The pre-filter's sigma in working voxels (``gauss``; 0 for a config no training resolved)."""
        return float(self.gauss or 0.0)

    def validate(self) -> None:
        """Raise :class:`CetpickError` for settings that cannot work."""
        if self.arch not in ARCHS:
            raise CetpickError(f"Unknown architecture {self.arch!r}; choose one of {', '.join(ARCHS)}.")
        mult = network_multiple(self.arch)
        if self.crop_xy % mult or self.crop_xy < max(32, mult):
            raise CetpickError(f"crop_xy must be a multiple of {mult} (the {self.arch} network's) and at least "
                               f"{max(32, mult)}, got {self.crop_xy}.")
        if self.crop_z < 3:
            raise CetpickError(f"crop_z must be at least 3 slices, got {self.crop_z}.")
        if network_stride(self.arch)[0] > 1 and self.crop_z % mult:  # the 3D networks pool z too
            raise CetpickError(f"crop_z must be a multiple of {mult} (the {self.arch} network's), got {self.crop_z}.")
        if self.label_fraction is not None and not (0 < self.label_fraction <= 1):
            raise CetpickError(f"label_fraction must lie in (0, 1], got {self.label_fraction}.")
        if self.tau is not None and not (0 < self.tau < 1):
            raise CetpickError(f"tau (the class prior) must lie between 0 and 1, got {self.tau}.")
        if self.lr <= 0 or (self.num_epochs is not None and self.num_epochs < 1) or self.batch_size < 1:
            raise CetpickError("lr must be positive; num_epochs and batch_size at least 1.")
        if self.precision not in PRECISIONS:
            raise CetpickError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}.")
        if self.max_steps is not None and self.max_steps < 1:
            raise CetpickError(f"max_steps must be at least 1, got {self.max_steps}.")
        if self.gauss is not None and not (math.isfinite(self.gauss) and self.gauss >= 0):
            raise CetpickError(f"gauss (the pre-filter's sigma) must be 0 or more, got {self.gauss}.")
        if not isinstance(self.settle_steps, int) or self.settle_steps < 0:
            raise CetpickError(f"settle_steps must be 0 or a positive integer, got {plain(self.settle_steps)}.")
        if not isinstance(self.look_alike_steps, int) or self.look_alike_steps < 0:
            raise CetpickError(f"look_alike_steps must be 0 or a positive integer, got {plain(self.look_alike_steps)}.")
        if not isinstance(self.self_training_steps, int) or self.self_training_steps < 0:
            raise CetpickError("self_training_steps must be 0 or a positive integer, got "
                               f"{plain(self.self_training_steps)}.")
        if self.augment not in ("full", "flip") or self.blob not in BLOBS:
            raise CetpickError(f"augment must be 'full' or 'flip'; blob one of {', '.join(BLOBS)}.")
        if not self.cross_class_weight >= 0:
            raise CetpickError(f"cross_class_weight must be 0 or more, got {self.cross_class_weight}.")
        if self.bin != "auto" and (not isinstance(self.bin, int) or self.bin < 1):
            raise CetpickError(f"bin must be 'auto' or a positive integer, got {plain(self.bin)}.")
        specs = self.class_specs()
        names = [check_class_name(c.name) for c in specs]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise CetpickError(f"Class {dup[0]!r} is given twice; each class needs its own name.")
        for c in specs:
            if c.label_fraction is not None and not (0 < c.label_fraction <= 1):
                raise CetpickError(f"label_fraction of class {c.name!r} must lie in (0, 1], got {c.label_fraction}.")


def preset(name: str, **overrides: Any) -> TrainConfig:
    """A :class:`TrainConfig` for a named preset, with overrides applied.

    ``cetpick`` reproduces the published settings (docs/method.md lists what we cannot
    match exactly): the ``unet_4`` network, 6-slice 64×64 crops, two crops per step near
    labels (within 4 px, or within ``translation_ratio`` × box size for one crop in five),
    each with a second view flipped left-right or up-down and nothing else, the CenterNet
    blob isotropic in grid cells, no binning, tau 0.4 and 600 epochs (the ECCV recipe) and
    the contrastive settings, in float32 (bfloat16 training was measured on the default only).
    """
    if name == "default":
        cfg = TrainConfig()
    elif name == "cetpick":
        cfg = TrainConfig(
            arch="unet_4", crop_xy=64, crop_z=6, batch_size=2, augment="flip", blob="cetpick",
            bin=1, tau=0.4, lr=1e-3, label_crop_prob=1.0, translation_ratio=0.25, num_epochs=600,
            contrastive=True, consistency_weight=1.0, preset="cetpick", settle_steps=0, look_alike_steps=0,
            self_training_steps=0, gauss=0.0, precision="float32",
        )
    else:
        raise CetpickError(f"Unknown preset {name!r}; choose one of {', '.join(PRESETS)}.")
    overrides = {k: v for k, v in overrides.items() if v is not None}
    return replace(cfg, **overrides)


@dataclass
class DetectConfig:
    """Settings of detection.

    Parameters
    ----------
    threshold : float or dict, optional
        Score above which a peak is kept; ``None``: chosen as ``threshold_from`` says. A
        dict gives one per class name (classes not in it: chosen as ``threshold_from`` says).
    threshold_from : {"tomogram", "model"}
        Without a ``threshold``: ``tomogram`` reads it off this tomogram's own scores, where
        they split into background and particles
        (:func:`napari_cetpick.counts.split_scores`), and falls back to the model's default
        where they show no clear split, one inside the background's body or one that keeps a
        handful against the default's many (:func:`napari_cetpick.detect.choose_threshold`);
        ``model`` always takes the model's default (calibrated on its labelled region when
        training).
    min_distance_vox : float, optional
        Minimum distance between picks in tomogram voxels; ``None`` = half the particle
        diameter.
    K : int, optional
        Keep at most the K best picks.
    margin_z, margin_xy : int
        Drop picks within this many tomogram voxels of the borders.
    tile_xy, tile_z : int
        Tile size in working voxels (memory is bounded by the tile, not the tomogram);
        ``tile_xy`` is rounded down to a multiple of the network's :func:`network_multiple`.
        Each tile is read with the network's context around it (24 or 32 voxels a side for the
        3D networks), so thin tiles spend much of the pass on that halo: tiles of up to 160
        slices (a 160-slice tomogram in one, 500 slices in four of 128) ran a four-view
        detection of 512 × 512 × 160 by the default network in 13–15 s where 64 slices took
        22–24 s, with the same picks (docs/benchmark.md, "Round 9").
    candidate_floor : float
        All local maxima above this score are cached for live threshold changes.
    refine : bool
        Sub-voxel refinement of peaks.
    views : int
        Views of each tile the network scores, averaged (:data:`VIEWS`).
        4 (default): the tile, the tile mirrored through its centre (flipped in z, y and x),
        and both turned a quarter in xy: higher AP on every class measured and best F1 on most
        (docs/benchmark.md, round 7); models trained without quarter turns (``augment="flip"``)
        get 2. 2: the tile and its mirror image, about half the time at bin 1. Each
        pick gets an ``agreement`` between the mirror halves. 1: one pass, a quarter of the
        time; the model's calibrated centre offset is subtracted instead.
    profile_weight : float
        The profile check (:func:`napari_cetpick.detect.profile_check`): each of the best
        candidates loses ``profile_weight`` logits per unit of its charge
        (:meth:`napari_cetpick.descriptors.ProfileModel.charge`: squared Mahalanobis units by
        which its radial profile is less like the labels' than like the tomogram's
        candidates, beyond what the median label shows — a negative charge raises it — plus
        the look-alike terms). 0 turns it off; models without a profile model (fewer than 5
        labels, older files) skip it.
    profile_contrast : bool
        The check first reads how strongly the class stands out in this tomogram against the
        labels (:meth:`napari_cetpick.descriptors.ProfileModel.gain`, on the best candidates:
        another noise level or density changes it) and compares at that contrast. False: at
        the labels' own (calibration and the self-training round, on the labels' tomograms).
    precision : {"auto", "float32", "bfloat16"}
        Arithmetic of the network's pass. ``auto``: bfloat16 on a CPU that computes it
        natively (AVX512-BF16 or AMX: :func:`napari_cetpick.device.inference_dtype`), float32
        elsewhere; the heads that give the scores always run in float32. Measured in
        docs/benchmark.md (2.8× faster blocks, F1 within 0.011 of float32 on 24 detections).
    flatten : float
        The network sees the tomogram less its local background over this many particle
        diameters (the largest class's; :class:`napari_cetpick.descriptors.Flattened`): a slow
        change of density across the tomogram (ice thickness, a lamella's slope) no longer
        dims the particles on its dark side (docs/benchmark.md, "Round 23"). The background is
        a Gaussian-weighted straight line fitted along each axis, so that a slope runs on to
        the tomogram's faces (the mean of what lies inside left them dimmed; "Round 32"). 0
        turns it off.
    """

    threshold: float | None = None
    threshold_from: str = "tomogram"
    min_distance_vox: float | None = None
    K: int | None = None
    margin_z: int = 0
    margin_xy: int = 0
    tile_xy: int = 256
    tile_z: int = 160
    candidate_floor: float = 0.05
    refine: bool = True
    batch_slices: int = 16
    views: int = 4
    profile_weight: float = 0.1
    profile_contrast: bool = True
    precision: str = "auto"
    flatten: float = 4.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def for_class(self, name: str) -> "DetectConfig":
        """These settings for class ``name``: its own threshold when ``threshold`` is a dict."""
        if isinstance(self.threshold, dict):
            return replace(self, threshold=self.threshold.get(name))
        return self


__all__ = ["TrainConfig", "ClassSpec", "class_colour", "CLASS_PALETTE", "DEFAULT_CLASS", "ALL_CLASSES", "check_class_name", "DetectConfig", "preset", "network_multiple", "ARCH_SPECS", "ARCHS", "PRESETS", "field"]

