"""Training as a generator: yields :class:`TrainProgress`, returns a :class:`Checkpoint`.

Usage::

    trainer = Trainer([volume], [labels_zyx], TrainConfig(bbox=25), voxel_size_a=10.0)
    for progress in trainer.steps():
        print(progress.step, progress.loss)
    ckpt = trainer.checkpoint()      # also available after a cancel

``volume`` is any (Z, Y, X) array (a memory map is fine); labels are ``(n, 3)`` zyx voxel
coordinates of that array.
"""
from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, replace
from typing import Generator, Sequence

import numpy as np

from . import counts as C
from . import data as D
from . import device as _device  # first: sets OMP_WAIT_POLICY before torch loads
from . import memory as M
from .checkpoint import SHARE_ESTIMATE_KEYS, Checkpoint
from .config import ALL_CLASSES, TrainConfig, class_colour
from .errors import CetpickError, plain


@dataclass
class TrainProgress:
    """One optimiser step's record (plain data, safe to send across threads)."""

    step: int
    total: int
    epoch: int
    loss: float
    loss_hm: float
    loss_cr: float
    loss_cons: float
    lr: float
    elapsed_s: float
    eta_s: float
    device: str
    message: str = ""


def resolve_diameter_vox(config: TrainConfig, voxel_size_a: float | None) -> float:
    """Particle diameter in voxels from ``bbox`` or ``diameter_a`` and the voxel size."""
    if config.bbox is not None:
        if config.bbox <= 1:
            raise CetpickError(f"The particle diameter (bbox) must be more than 1 voxel, got {config.bbox}.")
        return float(config.bbox)
    if config.diameter_a is not None:
        if not voxel_size_a:
            raise CetpickError("The particle diameter was given in Å but the voxel size is unknown; "
                               "give the voxel size or the diameter in voxels (--bbox).")
        return float(config.diameter_a) / float(voxel_size_a)
    raise CetpickError("Give the particle diameter: bbox (voxels) or diameter in Å.")


def check_labels(labels: np.ndarray, shape, name: str = "labels") -> np.ndarray:
    """Labels as an (n, 3) float array inside the volume, else :class:`CetpickError`."""
    lab = np.asarray(labels, float).reshape(-1, 3) if np.size(labels) else np.zeros((0, 3))
    if not np.all(np.isfinite(lab)):
        raise CetpickError(f"{name}: some coordinates are not finite numbers.")
    outside = np.any((lab < -0.5) | (lab > np.asarray(shape) - 0.5), axis=1)
    if outside.any():
        i = int(np.flatnonzero(outside)[0])
        raise CetpickError(f"{name}: {outside.sum()} label(s) lie outside the tomogram of shape (z, y, x) "
                           f"{plain(tuple(shape))}, e.g. (z, y, x) = {plain(np.round(lab[i], 1))}; check the axis "
                           f"order (thickness axis) and binning.")
    return lab


#: Smallest class prior used when it is estimated (a guard against a nonsensical zero).
TAU_FLOOR = 1e-5


def estimate_tau(config: TrainConfig, density_per_vox2: float, shapes_tomo: list[tuple], spec: D.BlobSpec,
                 geometry: D.Geometry) -> float:
    """The class prior: positive (hard or soft) grid cells / all grid cells.

    The expected number of particles (``density_per_vox2`` × the tomograms' xy areas, see
    :mod:`napari_cetpick.counts`) times the positive cells of one target blob, over the
    grid cells of the training tomograms; clipped to [:data:`TAU_FLOOR`, 0.5]. A ``tau``
    given in the config wins.
    """
    if config.tau is not None:
        return float(config.tau)
    n = density_per_vox2 * sum(C.xy_area(s) for s in shapes_tomo)
    st = np.asarray(geometry.stride_zyx, float)
    cells = sum(float(np.prod(np.asarray(geometry.work_shape(s), float) / st)) for s in shapes_tomo)
    tau = n * D.positive_cells_per_particle(spec, geometry.stride_zyx) / max(cells, 1.0)
    return float(np.clip(tau, TAU_FLOOR, 0.5))


@dataclass
class ClassPlan:
    """One class's part of a :class:`TrainingPlan`."""

    name: str
    diameter_vox: float
    n_labels: int
    tau: float
    tau_source: str  # "set by hand", "from the expected particles", "from the label density"
    density_per_vox2: float
    expected_particles: float


@dataclass
class TrainingPlan:
    """What a training run will do, worked out from its inputs without reading any tomogram.

    The :class:`Trainer` follows it; the panel shows it before Train. ``tau``,
    ``density_per_vox2`` and ``expected_particles`` are the first class's; ``classes``
    holds every class's.
    """

    total_steps: int
    steps_per_epoch: int
    schedule: str  # how total_steps came about, in words
    n_labels: int
    bin_xy: int
    stride_zyx: tuple
    tau: float
    tau_source: str  # "set by hand", "from the expected particles", "from the label density"
    density_per_vox2: float
    expected_particles: float
    classes: list = None
    settle_steps: int = 0  # the last steps, at a tenth of the rate
    look_alike_steps: int = 0  # then at most this many against the look-alikes calibration finds
    self_training_steps: int = 0  # then at most this many with the picks it is sure of as labels

    def describe(self) -> str:
        settle = f", the last {self.settle_steps} at a tenth of the rate" if self.settle_steps else ""
        steps = f"{self.total_steps} steps ({self.schedule}{settle})"
        if self.look_alike_steps:
            steps += f", then {self.look_alike_steps} against the look-alikes it finds"
        if self.self_training_steps:
            steps += f", then {self.self_training_steps} with the picks it is sure of"
        if self.classes and len(self.classes) > 1:
            per = "; ".join(f"{c.name}: τ {c.tau:.3g}, about {c.expected_particles:.0f} expected"
                            for c in self.classes)
            return f"{steps} · {per} · bin {self.bin_xy}"
        return (f"{steps} · τ {self.tau:.3g} {self.tau_source} · "
                f"about {self.expected_particles:.0f} particles expected · bin {self.bin_xy}")


def schedule_steps(config: TrainConfig, n_labels: int) -> tuple[int, int, str]:
    """``(total steps, steps per epoch, description)`` of a run with ``n_labels`` labels.

    ``num_epochs`` given: that many epochs, capped only by an explicit ``max_steps``;
    ``max_steps`` alone: that many steps; neither: :data:`~napari_cetpick.config.DEFAULT_STEPS`,
    or :data:`~napari_cetpick.config.DEFAULT_MIN_EPOCHS` epochs where that is more, up to
    :data:`~napari_cetpick.config.DEFAULT_MAX_STEPS`.
    """
    from .config import DEFAULT_MAX_STEPS, DEFAULT_MIN_EPOCHS, DEFAULT_STEPS

    spe = max(1, math.ceil(max(n_labels, 1) / config.batch_size))
    if config.num_epochs is not None:
        total = config.num_epochs * spe
        what = f"{config.num_epochs} epochs of {spe} step{'s' if spe != 1 else ''}"
        if config.max_steps is not None and config.max_steps < total:
            return config.max_steps, spe, f"{what}, capped by max steps"
        return total, spe, what
    if config.max_steps is not None:
        return config.max_steps, spe, "max steps"
    steps = DEFAULT_MIN_EPOCHS * spe  # the default's epochs, in steps
    if steps <= DEFAULT_STEPS:
        return DEFAULT_STEPS, spe, "the default schedule"
    if steps > DEFAULT_MAX_STEPS:
        return DEFAULT_MAX_STEPS, spe, f"the default schedule for {n_labels} labels, at its most steps"
    return steps, spe, f"the default schedule for {n_labels} labels: {DEFAULT_MIN_EPOCHS} epochs of {spe} steps"


def class_diameters(config: TrainConfig, voxel_size_a: float | None) -> list[float]:
    """Each class's particle diameter in voxels (:func:`resolve_diameter_vox` per class)."""
    specs = config.class_specs()
    out = []
    for spec in specs:
        try:
            out.append(resolve_diameter_vox(config.for_class(spec), voxel_size_a))
        except CetpickError as exc:
            if len(specs) == 1:
                raise
            raise CetpickError(f"Class {spec.name!r}: {exc}") from None
    return out


def labels_by_class(labels, names: Sequence[str], what: str = "labels", all_key: str | None = None) -> list[dict]:
    """Per tomogram, ``{class name: (n, 3) zyx}`` from arrays (one class) or dicts (several).

    An array stands for the one class (or, with ``all_key``, for every class: negative
    clicks "none of these"). Classes missing from a dict get no points; a name that is not
    a class is refused.
    """
    out = []
    known = list(names) + ([all_key] if all_key else [])
    for i, item in enumerate(labels):
        if item is None:
            item = {}
        if not isinstance(item, dict):
            if all_key is not None:
                item = {all_key: item}
            elif len(names) == 1:
                item = {names[0]: item}
            else:
                raise CetpickError(f"{what} of tomogram {i + 1}: say which class they belong to "
                                   f"(the model has {len(names)} classes: {', '.join(names)}).")
        unknown = [k for k in item if k not in known]
        if unknown:
            raise CetpickError(f"{what} of tomogram {i + 1} are given for class {unknown[0]!r}, which is not one of "
                               f"the classes ({', '.join(names)}).")
        out.append({k: (np.zeros((0, 3)) if item.get(k) is None else item[k]) for k in known})
    return out


def _within_a_voxel(points, others) -> np.ndarray:
    """Indices of ``points`` within one voxel of any of ``others`` (both (n, 3) zyx)."""
    from scipy.spatial import cKDTree

    points, others = np.reshape(points, (-1, 3)), np.reshape(others, (-1, 3))
    if len(points) == 0 or len(others) == 0:
        return np.zeros(0, int)
    d, _ = cKDTree(others).query(points, distance_upper_bound=1.0)
    return np.flatnonzero(np.isfinite(d))


def _check_no_shared_labels(labs: list[dict], names: Sequence[str]) -> None:
    """Refuse a particle labelled as two classes (two labels within a voxel of each other)."""
    for vi, per in enumerate(labs):
        for a in range(len(names)):
            for b in range(a + 1, len(names)):
                la, lb = per[names[a]], per[names[b]]
                hit = _within_a_voxel(la, lb)
                if len(hit):
                    raise CetpickError(
                        f"Tomogram {vi + 1}: the particle at (z, y, x) = {plain(np.round(la[hit[0]], 1))} is "
                        f"labelled both {names[a]!r} and {names[b]!r}; a particle belongs to one class.")


def _class_negatives(neg: dict, name: str) -> np.ndarray:
    """``(n, 3)``: one tomogram's negatives of class ``name``, those of every class included."""
    return np.concatenate([np.reshape(neg.get(name, ()), (-1, 3)), np.reshape(neg.get(ALL_CLASSES, ()), (-1, 3))])


def _check_negatives_apart(labs: list[dict], negs: list[dict], names: Sequence[str]) -> None:
    """Refuse a place that is both a label and a negative of the same class (within a voxel)."""
    for vi, (per, neg) in enumerate(zip(labs, negs)):
        for name in names:
            n = _class_negatives(neg, name)
            hit = _within_a_voxel(n, per[name])
            if len(hit):
                what = f" of class {name!r}" if len(names) > 1 else ""
                raise CetpickError(
                    f"Tomogram {vi + 1}: (z, y, x) = {plain(np.round(n[hit[0]], 1))} is both a label and a "
                    f"negative{what} ({len(hit)} such place{'s' if len(hit) > 1 else ''}); remove it from one "
                    "of them.")


def _whole_bin(config: TrainConfig, diameters: Sequence[float], init: Checkpoint | None) -> int:
    """One working resolution for every class: the smallest class decides the binning."""
    if init is not None:
        return int(init.bin_xy)
    if config.bin == "auto":
        return D.auto_bin(min(diameters), config.min_particle_vox)
    return int(config.bin)


def training_data_bytes(config: TrainConfig, shapes: Sequence, bin_xy: int) -> int:
    """Bytes the binned (padded to a crop) float32 training tomograms of ``shapes`` take."""
    crop_zyx = (config.crop_z, config.crop_xy, config.crop_xy)
    geom = D.make_geometry(bin_xy, config.compress)
    return int(sum(4 * int(np.prod(np.maximum(geom.work_shape(tuple(s)), crop_zyx))) for s in shapes))


def check_memory_before_training(config: TrainConfig, shapes: Sequence, voxel_size_a: float | None = None,
                                 device=None) -> None:
    """The Trainer's memory check, before any tomogram is read (:class:`CetpickError` if it
    would not fit); ``device`` None = the host's memory."""
    plan = plan_training(config, shapes, [{} for _ in shapes], voxel_size_a)  # sizes only: no labels needed
    M.check_train_memory(config, training_data_bytes(config, shapes, plan.bin_xy), device=device)


def plan_training(config: TrainConfig, shapes: Sequence, labels: Sequence, voxel_size_a: float | None = None,
                  init: Checkpoint | None = None) -> TrainingPlan:
    """Binning, grid, class priors, expected counts and steps of a run on tomograms of ``shapes``.

    ``labels`` are the positive labels (zyx voxels) of each tomogram: an array (one class)
    or a dict per class name. Each class has its own diameter, density and τ; the smallest
    class decides the binning. A correction round (``init`` given) keeps the model's
    binning and, unless the share or count is set anew, each class's particle density
    (accepted picks are not a new labelled share).
    """
    from .config import network_stride

    specs = config.class_specs()
    names = [c.name for c in specs]
    diameters = class_diameters(config, voxel_size_a)
    bin_xy = _whole_bin(config, diameters, init)
    stride = network_stride(config.arch)
    geometry = D.make_geometry(bin_xy, config.compress, stride)
    shapes = [tuple(int(n) for n in sh) for sh in shapes]
    labs = labels_by_class(labels, names)
    area = sum(C.xy_area(sh) for sh in shapes)
    plans = []
    for spec, diameter_vox in zip(specs, diameters):
        one = config.for_class(spec)
        lab = [np.asarray(l[spec.name], float).reshape(-1, 3) for l in labs]
        old = None
        if init is not None and spec.name in init.class_names:
            old = init.for_class(spec.name)
        old_spec = None if old is None else next((c for c in init.config.class_specs() if c.name == spec.name), None)
        keep_density = (old is not None and "density_per_vox2" in old.info and spec.expected_particles is None
                        and old_spec is not None and spec.label_fraction == old_spec.label_fraction)
        if keep_density:
            density = float(old.info["density_per_vox2"])
        else:
            density = C.particle_density(lab, shapes, diameter_vox, spec.label_fraction, spec.expected_particles)
        blob = D.blob_spec(diameter_vox / bin_xy, config.blob)
        if len(specs) > 1 and old is not None and config.tau is not None:
            one = replace(one, tau=old.tau)  # a correction round keeps each class's own prior
        tau = estimate_tau(one, density, shapes, blob, geometry)
        source = ("set by hand" if one.tau is not None else
                  "from the expected particles" if spec.expected_particles else "from the label density")
        plans.append(ClassPlan(spec.name, float(diameter_vox), int(sum(len(l) for l in lab)), float(tau), source,
                               float(density), float(density * area)))
    n_labels = int(sum(c.n_labels for c in plans))
    total, spe, what = schedule_steps(config, n_labels)
    # a first round's last steps (at most a third of them) settle at a tenth of the rate; a
    # correction round runs at a tenth throughout
    settle = min(int(config.settle_steps), total // 3) if init is None else 0
    # then, as many again at most, a round against the look-alikes calibration finds (a
    # correction round has the user's own rejections instead)
    look = min(int(config.look_alike_steps), total // 3) if init is None else 0
    # and last, as many again at most, a round with the picks it is sure of as labels (a
    # correction round has the user's review instead)
    sure = min(int(config.self_training_steps), total // 3) if init is None else 0
    first = plans[0]
    return TrainingPlan(total, spe, what, n_labels, bin_xy, tuple(stride), first.tau, first.tau_source,
                        first.density_per_vox2, first.expected_particles, plans, settle, look, sure)


def _per_volume(items, n: int, name: str) -> list:
    """``items`` as a list of length ``n`` (None means none for every volume)."""
    if items is None:
        return [None] * n
    items = list(items)
    if len(items) != n:
        raise CetpickError(f"Give one {name} entry per training tomogram ({n} tomograms, {len(items)} {name}).")
    return items


def _keep_mask_work(mask, shape_tomo, geometry: D.Geometry, work_shape) -> np.ndarray | None:
    """A tomogram-frame keep-mask (nonzero = keep) as a boolean working-frame mask."""
    if mask is None:
        return None
    m = np.asarray(mask)
    if m.shape != tuple(shape_tomo):
        raise CetpickError(f"The mask has shape {tuple(int(s) for s in m.shape)} but the tomogram has "
                           f"{tuple(int(s) for s in shape_tomo)} (z, y, x); it must match voxel for voxel.")
    k = D.bin_block((m != 0).astype(np.float32), geometry.bin_zyx) >= 0.5
    out = np.ones(work_shape, bool)  # padding is kept (as unlabelled)
    sl = tuple(slice(0, min(a, b)) for a, b in zip(k.shape, work_shape))
    out[sl] = k[sl]
    return out


class Trainer:
    """Holds the prepared data, network and optimiser of one training run.

    Parameters
    ----------
    volumes : list of (Z, Y, X) arrays
        Training tomograms (memory maps are read once and binned).
    labels : list of (n, 3) arrays
        Labelled particle centres (positive clicks), zyx voxels of each volume.
    config : TrainConfig
    voxel_size_a : float, optional
        Voxel size of the tomograms (stored in the model).
    device : str or torch.device, optional
        ``auto`` (default), ``cpu``, ``cuda`` or ``mps``.
    init : Checkpoint, optional
        Continue from these weights (same architecture and binning).
    negatives : list of (m, 3) arrays or None, optional
        Known non-particles (negative clicks), zyx voxels of each volume. Each becomes a
        small region of hard negatives on the output grid and is never unlabelled.
    masks : list of arrays or None, optional
        Per volume, None or a (Z, Y, X) array of the volume's shape: nonzero = keep, zero =
        ignore (neither positive, negative nor unlabelled; crops avoid nothing, the loss
        simply leaves those cells out).
    check_memory : bool
        Refuse (:class:`CetpickError`) settings whose training would not fit in the memory
        available now (:func:`napari_cetpick.memory.check_train_memory`).
    keep_pass_for : array, optional
        One of ``volumes`` that will be detected in next: where the calibration's pass runs
        over the whole of it, the model keeps that pass for the detection
        (:class:`napari_cetpick.detect.NetworkPass`; the panel's Improve).
    """

    def __init__(self, volumes: Sequence, labels: Sequence, config: TrainConfig,
                 voxel_size_a: float | None = None, device=None, init: Checkpoint | None = None,
                 negatives: Sequence | None = None, masks: Sequence | None = None, check_memory: bool = True,
                 keep_pass_for=None):
        self.keep_pass_for = keep_pass_for
        import torch

        from .device import configure_threads, describe, resolve_device, training_dtype
        from .model import build_network, fast_layout

        config.validate()
        if len(volumes) == 0 or len(volumes) != len(labels):
            raise CetpickError("Give one label set per training tomogram.")
        negatives = _per_volume(negatives, len(volumes), "negatives")
        masks = _per_volume(masks, len(volumes), "masks")
        self.config = config
        self.voxel_size_a = voxel_size_a
        self.specs = config.class_specs()
        self.names = names = [c.name for c in self.specs]
        self.diameters_vox = class_diameters(config, voxel_size_a)
        self.diameter_vox = self.diameters_vox[0]
        several = len(names) > 1

        def where(i, name, what):
            return f"{what}{f' of class {name!r}' if several and name != ALL_CLASSES else ''} of tomogram {i + 1}"

        labs = [{n: check_labels(d[n], v.shape, where(i, n, "labels")) for n in names}
                for i, (v, d) in enumerate(zip(volumes, labels_by_class(labels, names)))]
        negs = [{n: check_labels(d[n], v.shape, where(i, n, "negatives")) for n in d}
                for i, (v, d) in enumerate(zip(volumes, labels_by_class(negatives, names, "negatives", ALL_CLASSES)))]
        if sum(len(l) for d in labs for l in d.values()) == 0:
            raise CetpickError("No labels: click at least one particle before training.")
        empty = [n for n in names if sum(len(d[n]) for d in labs) == 0]
        if several and empty:
            raise CetpickError(f"Class {empty[0]!r} has no labels: click at least one of its particles, or leave the "
                               "class out.")
        if several:
            _check_no_shared_labels(labs, names)
        _check_negatives_apart(labs, negs, names)
        if init is not None and init.config.arch != config.arch:
            raise CetpickError(f"Cannot continue a {init.config.arch} model as {config.arch}.")
        if init is not None and init.class_names != names:
            raise CetpickError(f"Cannot continue a model of classes {', '.join(init.class_names)} with classes "
                               f"{', '.join(names)}; a correction round keeps the model's classes.")
        # the pre-filter chosen from the labels where not given (TrainConfig.gauss); the labels'
        # profile models fitted for it are the ones profile_models() gives until the labels change
        self._profiles = None

        def first_profiles() -> dict:
            self._profiles = _fit_profiles(volumes, labs, negs, names, self.diameters_vox)
            return self._profiles

        config, self.smoothing = resolve_smoothing(config, first_profiles, init)
        self.config = config
        shapes = [tuple(int(n) for n in v.shape) for v in volumes]
        self.plan = plan = plan_training(config, shapes, labs, voxel_size_a, init)
        self.bin_xy = bin_xy = plan.bin_xy
        self.device = resolve_device(device)
        if check_memory:
            M.check_train_memory(config, training_data_bytes(config, [v.shape for v in volumes], bin_xy),
                                 device=self.device)
        if self.device.type == "cpu":
            configure_threads()
        self.dtype = training_dtype(self.device, config.precision)
        self.device_name = describe(self.device, self.dtype)  # says what the steps run in
        self.rng = np.random.default_rng(config.seed)
        torch.manual_seed(config.seed)
        self.torch_gen = torch.Generator().manual_seed(config.seed)
        self.net = build_network(config.arch, len(names)).to(self.device)
        if init is not None:
            self.net.load_state_dict(init.state_dict)
        self.layout = fast_layout(self.net, self.device)
        self.stride = np.asarray(self.net.out_stride, int)
        assert tuple(self.stride) == plan.stride_zyx, "config.network_stride disagrees with the network"
        self.geometry = D.make_geometry(bin_xy, config.compress, self.net.out_stride)

        crop = np.array([config.crop_z, config.crop_xy, config.crop_xy])
        mult = np.asarray(self.net.multiple_zyx)
        if np.any(crop % mult):
            raise CetpickError(f"The {config.arch} network needs crop sizes (z, y, x) that are multiples of "
                               f"{tuple(int(m) for m in mult)}; got {tuple(int(c) for c in crop)}.")
        self.crop = crop
        # a second augmented view of each crop only where a loss compares the two
        self.two_views = M.training_views(config) == 2
        self.volumes, self.labels_work, self.negatives_work, self.keep_work = [], [], [], []
        for v, lab, neg, mask in zip(volumes, labs, negs, masks):
            w = D.preprocess(v, self.geometry, config.gauss)
            w, _ = D.pad_to(w, crop)
            self.volumes.append(w)
            self.labels_work.append({n: self.geometry.tomo_to_work(lab[n]) for n in names})
            self.negatives_work.append({n: self.geometry.tomo_to_work(a) for n, a in neg.items()})
            self.keep_work.append(_keep_mask_work(mask, v.shape, self.geometry, w.shape))
        self.diameter_work = self.diameter_vox / bin_xy
        self.diameters_work = [d / bin_xy for d in self.diameters_vox]
        self.blobs = [D.blob_spec(d, config.blob) for d in self.diameters_work]
        self.blob = self.blobs[0]
        self.raw_volumes = list(volumes)  # (memory maps) for the calibration's detection pass
        self.labels_tomo = labs
        self.negatives_tomo = negs
        self.label_boxes = [{n: C.label_box(l[n], sh, d) if len(l[n]) else None
                             for n, d in zip(names, self.diameters_vox)} for l, sh in zip(labs, shapes)]
        self.taus = [c.tau for c in plan.classes]
        self.densities = [c.density_per_vox2 for c in plan.classes]
        self.density = plan.density_per_vox2
        self.expected_particles = plan.expected_particles
        self.tau = plan.tau
        self.n_labels_class = [c.n_labels for c in plan.classes]
        self.n_negatives_class = [sum(len(_class_negatives(d, n)) for d in negs) for n in names]

        self.opt = torch.optim.Adam(self.net.parameters(), lr=config.lr)
        n_labels = plan.n_labels
        self.steps_per_epoch = plan.steps_per_epoch
        self.total_steps = plan.total_steps
        self.step = 0
        self.history: list[dict] = []
        self.status = "not started"
        self._last_good = self._snapshot()
        self.elapsed_s = 0.0
        self.n_labels = n_labels
        self.n_negatives = sum(len(a) for d in negs for a in d.values())
        self._prev_steps = int(init.info.get("steps", 0)) if init is not None else 0
        self._prev_info = dict(init.info) if init is not None else {}
        # a correction round keeps the look-alikes the model it continues found in its labelled
        # box, rather than mining anew over the box of every label (calibration.calibrate_classes)
        self.kept_look_alikes = {}
        if init is not None:
            from .descriptors import ProfileModel

            for name in names:
                model = ProfileModel.from_info(init.for_class(name).info.get("profile_model"))
                if model is not None and model.look_alikes() is not None:
                    self.kept_look_alikes[name] = model.look_alikes()
        self.settle_at = self.total_steps - plan.settle_steps if plan.settle_steps else None
        # the look-alike round (TrainConfig.look_alike_steps) follows the schedule; it is in the
        # total until it turns out that calibration found no look-alikes
        self.look_alike_at = self.total_steps if plan.look_alike_steps else None
        self.total_steps += plan.look_alike_steps
        self.look_alikes: int | None = None  # how many the round trains against, once it began
        self.look_alike_points = [{} for _ in volumes]  # per volume, per class: where they are (zyx voxels)
        self.look_alikes_skipped = ""  # why it did not run, where it did not
        # the self-training round (TrainConfig.self_training_steps) comes last, likewise
        self.self_training_at = self.total_steps if plan.self_training_steps else None
        self.total_steps += plan.self_training_steps
        self.self_trained: int | None = None  # how many sure picks it trains with, once it began
        self.sure_points = [{} for _ in volumes]  # per volume, per class: where they are (zyx voxels)
        self.self_training_skipped = ""
        self.masks_tomo = masks
        self.first_estimates = {}  # per class: round 1's share estimate, kept after self-training
        # a correction round of a model that had a self-training round keeps training with the
        # picks that model is sure of (found before its first step, :meth:`_rehearse`)
        self._rehearse_from = init if init is not None and had_self_training(init) else None
        self.rehearsed: int | None = None  # how many sure picks it trains with, once found
        self.rehearsal_skipped = ""
        self._rehearsal_s = 0.0

    # ------------------------------------------------------------------ helpers
    def _snapshot(self) -> dict:
        return {k: v.detach().to("cpu", copy=True) for k, v in self.net.state_dict().items()}

    def _lr_at(self, epoch: int, step: int) -> float:
        if any(at is not None and step >= at for at in (self.look_alike_at, self.self_training_at)):
            return self.config.lr * CORRECTION_LR_FACTOR  # as a correction round's
        lr = self.config.lr * (0.1 ** sum(epoch >= e for e in self.config.lr_step))
        return lr * (SETTLE_LR_FACTOR if self.settle_at is not None and step >= self.settle_at else 1.0)

    def _jitter_vox(self) -> float:
        """How far (working voxels) a crop near a click may be shifted off it.

        ``translation_ratio`` of the particle diameter (the original's knob: a share of the
        box size). With the original's sampling (``augment="flip"``) that range applies to
        one crop in five, the others stay within 4 voxels.
        """
        reach = self.config.translation_ratio * self.diameter_work
        if self.config.augment == "flip" and self.rng.random() >= 0.2:
            return 4.0
        return reach

    def _crop_targets(self, vi: int, o: np.ndarray, grid_shape) -> np.ndarray:
        """Target maps ``(K, *grid_shape)`` of the crop of volume ``vi`` at working origin ``o``.

        Channel k: class k's labels are positives; its own negative clicks and the clicks
        that hold for every class are known negatives; the other classes' labels are
        :data:`~napari_cetpick.data.OTHER_CLASS` cells (weighed by ``cross_class_weight``).
        """
        def near(points_work, blob):
            margin = (blob.radius_work if blob.in_cells else blob.radius_work / self.stride) + 1
            g = D.work_to_grid(points_work - o, self.stride)
            inside = np.all((g > -margin) & (g < np.array(grid_shape) + margin), axis=1)
            return g[inside]

        labels, negs = self.labels_work[vi], self.negatives_work[vi]
        maps = []
        for k, (name, blob) in enumerate(zip(self.names, self.blobs)):
            neg = [negs.get(name, np.zeros((0, 3))), negs.get(ALL_CLASSES, np.zeros((0, 3)))]
            others = [labels[n] for n in self.names if n != name and self.config.cross_class_weight > 0]
            others = others or [np.zeros((0, 3))]
            maps.append(D.draw_targets(grid_shape, near(labels[name], blob), blob, self.stride,
                                       negatives_grid=near(np.concatenate(neg), blob),
                                       others_grid=near(np.concatenate(others), blob)))
        t = np.stack(maps)
        keep = self.keep_work[vi]
        if keep is not None:
            k = keep[o[0] : o[0] + self.crop[0], o[1] : o[1] + self.crop[1], o[2] : o[2] + self.crop[2]]
            t[:, ~D.keep_on_grid(k, self.stride)] = D.IGNORED
        return t

    def _batch(self):
        """Crops, targets and transforms for one step."""
        cfg, rng = self.config, self.rng
        clicks = [np.concatenate(list(l.values()) + list(n.values()))
                  for l, n in zip(self.labels_work, self.negatives_work)]
        weights = np.array([max(len(c), 0.25) for c in clicks], float)
        vol_idx = rng.choice(len(self.volumes), size=cfg.batch_size, p=weights / weights.sum())
        crops, targets, t1s, t2s = [], [], [], []
        grid_shape = tuple(int(c // s) for c, s in zip(self.crop, self.stride))
        for vi in vol_idx:
            vol = self.volumes[vi]
            # crops near a click: positives and negatives alike, so the network meets the
            # look-alikes the user rejected as often as the particles
            o = D.sample_crop_origins(rng, vol.shape, self.crop, clicks[vi], 1, cfg.label_crop_prob,
                                      self._jitter_vox(), self.stride)[0]
            crop = vol[o[0] : o[0] + self.crop[0], o[1] : o[1] + self.crop[1], o[2] : o[2] + self.crop[2]]
            targets.append(self._crop_targets(vi, o, grid_shape))
            t1, t2 = D.view_transforms(rng, cfg.augment)
            views = (t1, t2) if self.two_views else (t1,)
            cs = [t.apply(crop) for t in views]
            if cfg.augment == "full":
                cs = [D.intensity_jitter(rng, c) for c in cs]
            crops.append(tuple(np.ascontiguousarray(c) for c in cs))
            t1s.append(t1)
            t2s.append(t2)
        return crops, np.stack(targets), t1s, t2s if self.two_views else []

    def _loss(self, crops, targets, t1s, t2s):
        import torch

        from .losses import consistency_loss, contrastive_loss, pu_heatmap_loss, target_masks

        cfg = self.config
        x = np.stack([c[0] for c in crops] + [c[1] for c in crops if len(c) > 1])[:, None]
        x = torch.from_numpy(x).to(self.device).contiguous(memory_format=self.layout)
        with _device.autocast(self.device, self.dtype):  # the heads give float32 scores either way
            hm, proj = self.net(x, with_proj=cfg.contrastive)
        b = len(crops)
        # every output back to the un-augmented frame of its crop
        hm = torch.stack([t.invert_torch(hm[i]) for i, t in enumerate(t1s + t2s)])
        g = torch.from_numpy(targets).to(self.device)  # (B, K, ...)
        g2 = torch.cat([g, g]) if self.two_views else g
        # each class's own PU risk with its own prior, summed: one pass, one step for all
        mean_tau = float(np.mean(self.taus))
        l_hm = sum(pu_heatmap_loss(hm[:, k : k + 1], g2[:, k : k + 1], tau, neg_weight=cfg.neg_weight,
                                   other_weight=cfg.cross_class_weight * tau)["loss"]
                   * (mean_tau / tau if cfg.balance_classes else 1.0)
                   for k, tau in enumerate(self.taus))
        p = torch.sigmoid(hm)
        l_cons = consistency_loss(p[:b], p[b:], target_masks(g)["used"]) if self.two_views else hm.new_zeros(())
        l_cr = hm.new_zeros(())
        if len(self.taus) > 1:
            # the contrastive regulariser sees particles of any class as positives
            g, p = g.amax(dim=1, keepdim=True), p.amax(dim=1, keepdim=True)
        tau_any = float(min(0.5, sum(self.taus)))
        if cfg.contrastive and cfg.cr_weight > 0:
            proj = torch.stack([t.invert_torch(proj[i]) for i, t in enumerate(t1s + t2s)])
            e = proj.shape[1]
            for i in range(b):
                e1 = proj[i].reshape(e, -1).T
                e2 = proj[b + i].reshape(e, -1).T
                l_cr = l_cr + contrastive_loss(
                    e1, e2, g[i].flatten(), p[i].flatten().detach(), tau_any, cfg.temp, cfg.thresh,
                    cfg.n_anchors_unlabelled, cfg.n_negatives, generator=self.torch_gen) / b
        loss = l_hm + cfg.cr_weight * l_cr + cfg.consistency_weight * l_cons
        return loss, l_hm, l_cr, l_cons

    # ------------------------------------------------------------------ public
    def steps(self, calibrate: bool = True) -> Generator[TrainProgress, None, Checkpoint]:
        """Run the remaining optimiser steps, yielding progress after each.

        Returns :meth:`checkpoint` ``(calibrate=calibrate)``; the CLI passes False, saves the
        weights, and calibrates afterwards, so a failure there cannot lose the model.
        """
        import torch

        self.net.train()
        self.status = "running"
        t0 = time.perf_counter() - self.elapsed_s
        if self._rehearse_from is not None and self.step == 0 and self.rehearsed is None and not self.rehearsal_skipped:
            self._rehearse()
            self.elapsed_s = time.perf_counter() - t0
            self._rehearsal_s = self.elapsed_s  # not a step's time: the time left is read from the steps alone
        while self.step < self.total_steps:
            epoch = self.step // self.steps_per_epoch
            lr = self._lr_at(epoch, self.step)
            for group in self.opt.param_groups:
                group["lr"] = lr
            batch = self._batch()
            with _device.deterministic_kernels(self.device, self.dtype):
                loss, l_hm, l_cr, l_cons = self._loss(*batch)
            if not torch.isfinite(loss):
                # keep the last good weights and say why training stopped
                self.net.load_state_dict(self._last_good)
                self.status = "stopped: non-finite loss"
                msg = (f"Training stopped at step {self.step + 1}: the loss became {loss.item()}. "
                       f"The model from step {self.step} was kept; try a lower learning rate or gauss > 0.")
                yield TrainProgress(self.step, self.total_steps, epoch, float("nan"), float("nan"),
                                    float("nan"), float("nan"), lr, self.elapsed_s, 0.0, self.device_name, msg)
                return self.checkpoint(calibrate=calibrate)
            self.opt.zero_grad(set_to_none=True)
            with _device.deterministic_kernels(self.device, self.dtype):
                loss.backward()
            torch.nn.utils.clip_grad_norm_(self.net.parameters(), 10.0)
            self.opt.step()
            self._last_good = self._snapshot()
            self.step += 1
            self.elapsed_s = time.perf_counter() - t0
            rec = {"step": self.step, "loss": loss.item(), "hm": l_hm.item(), "cr": l_cr.item(), "cons": l_cons.item()}
            self.history.append(rec)
            if self.step == self.look_alike_at and self.look_alikes is None:
                self._begin_look_alikes()  # before this step's progress, which then has the true total
                self.elapsed_s = time.perf_counter() - t0
            if self.step == self.self_training_at and self.self_trained is None:
                self._begin_self_training()
                self.elapsed_s = time.perf_counter() - t0
            eta = (self.elapsed_s - self._rehearsal_s) / self.step * (self.total_steps - self.step)
            yield TrainProgress(self.step, self.total_steps, epoch, rec["loss"], rec["hm"], rec["cr"], rec["cons"],
                                lr, self.elapsed_s, eta, self.device_name)
        self.status = "finished"
        return self.checkpoint(calibrate=calibrate)

    def steps_text(self) -> str:
        """The steps planned, in words: "300 steps", and the look-alike and self-training rounds' where
        they may still be cut short."""
        rounds = []
        if self.look_alike_at is not None and self.look_alikes is None and self.step <= self.look_alike_at:
            rounds.append((self.look_alike_at, self.plan.look_alike_steps, "against the look-alikes calibration finds"))
        if self.self_training_at is not None and self.self_trained is None and self.step <= self.self_training_at:
            rounds.append((self.self_training_at, self.plan.self_training_steps, "with the picks it is sure of"))
        if not rounds:
            return f"{self.total_steps} steps"
        return f"{rounds[0][0]} steps" + "".join(f", then up to {n} {what}" for _, n, what in rounds)

    def _begin_look_alikes(self) -> None:
        """At the end of the schedule: calibrate, take the look-alikes calibration found in the
        labelled regions (:attr:`look_alike_points`) as negatives of their class in the training
        targets, as a correction round takes rejected picks, and restart Adam for the round at a
        tenth of the rate. They are not the user's negatives: the profile model keeps fitting
        those alone, and the final calibration mines the look-alikes the new weights still
        make. Where none were found, or calibration failed, the run ends here with its total
        shortened and the weights as they are (``look_alikes_skipped`` says why; a failure shows
        again in the final calibration)."""
        import torch

        try:
            cals = self.calibrate()
        except Exception as exc:  # noqa: BLE001  (a refinement: the trained weights are kept)
            self.look_alikes_skipped = f"{type(exc).__name__}: {exc}"
            cals = {}
        found = 0
        for name in self.names:
            mined = getattr(cals.get(name), "mined", None) or []
            for vi, zyx in enumerate(mined):
                zyx = np.asarray(zyx, float).reshape(-1, 3)
                if not len(zyx):
                    continue
                found += len(zyx)
                self.look_alike_points[vi][name] = zyx
                neg_work = self.negatives_work[vi]
                neg_work[name] = np.concatenate([neg_work.get(name, np.zeros((0, 3))), self.geometry.tomo_to_work(zyx)])
        if not found:
            self.total_steps -= self.plan.look_alike_steps
            if self.self_training_at is not None:
                self.self_training_at = self.step  # the self-training round begins now
            self.look_alikes_skipped = self.look_alikes_skipped or "no look-alikes found"
            return
        self.look_alikes = found
        self.opt = torch.optim.Adam(self.net.parameters(), lr=self.config.lr * CORRECTION_LR_FACTOR)

    def _begin_self_training(self) -> None:
        """After the schedule (and the look-alike round): calibrate, detect in each whole training
        tomogram, and take the picks the model is sure of
        (:func:`napari_cetpick.calibration.sure_picks`: the network and the profile check agree)
        as labels of their class in the training targets for the remaining steps, restarting
        Adam at a tenth of the rate, as a correction round takes accepted picks; as after a
        review, the profile model and the default are then fitted on the labels and them, and
        the look-alikes round 1 found are kept. They are not the user's labels: the model's
        counts, labelled boxes and estimate of the share the user labelled stay round 1's.
        Where none were found, or detection failed, the run ends here with its total shortened
        and the weights as they are (``self_training_skipped`` says why)."""
        import torch

        from .calibration import sure_picks
        from .descriptors import ProfileModel

        try:
            first = self.checkpoint(calibrate=True)
            found, why = sure_picks(first, self.raw_volumes, self.labels_tomo, self.negatives_tomo, self.masks_tomo,
                                    self.voxel_size_a, self.device)
        except Exception as exc:  # noqa: BLE001  (a refinement: the trained weights are kept)
            found, why = [{} for _ in self.raw_volumes], f"{type(exc).__name__}: {exc}"
        n = sum(len(zyx) for per in found for zyx in per.values())
        if not n:
            self.total_steps = self.step
            self.self_training_skipped = why or "no picks it is sure of"
            return
        self._add_sure_points(found)
        # as a correction round after a review: the profile model refitted and the default
        # calibrated on the labels and the sure picks (their box: all of them; the profile model's
        # margins on the user's labels alone: found_points), the look-alikes
        # round 1 found kept, and round 1's estimate of the share the user labelled kept (fitted
        # on the user's labels alone, the shell model kept 116 picks in a tomogram without shells
        # against 66, and its F1 fell: docs/benchmark.md, "Round 18"): fit_labels, fit_boxes
        for name in self.names:
            view = first.for_class(name)
            model = ProfileModel.from_info(view.info.get("profile_model"))
            if model is not None and model.look_alikes() is not None:
                self.kept_look_alikes[name] = model.look_alikes()
            self.first_estimates[name] = {k: view.info[k] for k in SHARE_ESTIMATE_KEYS if k in view.info}
        self.self_trained = n
        self.opt = torch.optim.Adam(self.net.parameters(), lr=self.config.lr * CORRECTION_LR_FACTOR)

    def _rehearse(self) -> None:
        """Before a correction round's first step: the picks the model it continues is sure of in
        the training tomograms (:func:`napari_cetpick.calibration.sure_picks`, which leaves out
        every label and negative — the review included) become labels of their class for the
        round, and the profile model and the default are fitted on the labels and them, as its
        self-training round did. Without them the round forgets that round: 100 more steps on
        the first labels alone took the barrel's best F1 0.850 -> 0.772 (docs/benchmark.md,
        "Round 24"). Where none are found, or detection fails, the round runs on the review alone
        (``rehearsal_skipped`` says why)."""
        from .calibration import sure_picks

        try:
            found, why = sure_picks(self._rehearse_from, self.raw_volumes, self.labels_tomo, self.negatives_tomo,
                                    self.masks_tomo, self.voxel_size_a, self.device)
        except Exception as exc:  # noqa: BLE001  (a refinement: the round runs on the review alone)
            found, why = [{} for _ in self.raw_volumes], f"{type(exc).__name__}: {exc}"
        n = sum(len(zyx) for per in found for zyx in per.values())
        if not n:
            self.rehearsal_skipped = why or "no picks it is sure of"
            return
        self._add_sure_points(found)
        self.rehearsed = n

    def _add_sure_points(self, found: list) -> None:
        """Per volume ``{class name: (n, 3) zyx}`` sure picks: labels of their class in the
        training targets from now on, and in :attr:`fit_labels`."""
        for vi, per in enumerate(found):
            for name, zyx in per.items():
                self.sure_points[vi][name] = zyx
                self.labels_work[vi][name] = np.concatenate([self.labels_work[vi][name],
                                                             self.geometry.tomo_to_work(zyx)])
        self._profiles = None

    @property
    def found_points(self) -> list | None:
        """Per volume, per class, the picks a self-training round (or the self-training round a
        correction round rehearses) was sure of, that the profile model and calibration fit on
        beside the user's labels (``labels_tomo``); None before any."""
        if self.self_trained is None and self.rehearsed is None:
            return None
        return self.sure_points

    @property
    def fit_labels(self) -> list:
        """Per volume, per class, the labels and :attr:`found_points` together: what the label
        boxes of calibration span (:attr:`fit_boxes`)."""
        found = self.found_points
        if found is None:
            return self.labels_tomo
        return [{n: np.concatenate([lab[n], sure[n]]) if n in sure else lab[n] for n in self.names}
                for lab, sure in zip(self.labels_tomo, found)]

    @property
    def fit_boxes(self) -> list:
        """The label boxes of :attr:`fit_labels` (the user's own stay in ``label_boxes``)."""
        if self.self_trained is None and self.rehearsed is None:
            return self.label_boxes
        return [{n: C.label_box(f[n], np.shape(v), d) if len(f[n]) else None
                 for n, d in zip(self.names, self.diameters_vox)} for f, v in zip(self.fit_labels, self.raw_volumes)]

    def calibrate(self, passes: list | None = None) -> dict:
        """Each class's default threshold and centre offset from detection in its labelled region.

        See :mod:`napari_cetpick.calibration` (imported here, on demand: training itself
        does not depend on detection). The labelled particles count among the expected
        ones, so they need not score like unseen ones. Where the user gave neither the
        labelled share nor the count, the threshold is where the labelled region's own
        scores split, when they do. Without a density (no labels) the threshold is 0.5. The
        look-alikes found there join each class's profile model (its ``profile_model``).
        Returns ``{class name: Calibration}``; the pass over ``keep_pass_for`` is appended to
        ``passes`` where it covered the whole volume.
        """
        from .calibration import calibrate_classes

        halo = int(np.ceil(max(self.net.context_zyx[1:]) * self.bin_xy))
        told = {c.name: bool(c.label_fraction or c.expected_particles) for c in self.specs}
        return calibrate_classes(self.checkpoint(calibrate=False), self.raw_volumes, self.labels_tomo,
                                 self.fit_boxes, dict(zip(self.names, self.densities)), found=self.found_points,
                                 voxel_size_a=self.voxel_size_a, device=self.device, halo_vox=halo, counts_told=told,
                                 keep_pass_for=self.keep_pass_for, passes=passes,
                                 negatives=[{n: _class_negatives(d, n) for n in self.names} for d in self.negatives_tomo],
                                 look_alikes=self.look_alike_points if self.look_alikes else None,
                                 kept_look_alikes=self.kept_look_alikes)

    def profile_models(self) -> dict:
        """Per class, the :class:`~napari_cetpick.descriptors.ProfileModel` of its labels (None
        with too few) and of its negatives (the class's own and those of every class, where
        there are enough), fitted once: detection's profile check compares candidates with it."""
        if getattr(self, "_profiles", None) is None:
            self._profiles = _fit_profiles(self.raw_volumes, self.labels_tomo, self.negatives_tomo, self.names,
                                           self.diameters_vox, found=self.found_points)
        return self._profiles

    def checkpoint(self, calibrate: bool = True) -> Checkpoint:
        """The current (last good) model with its metadata and calibrated thresholds.

        With ``calibrate=False`` nothing runs the network: the thresholds are left at 0.5 and
        ``info["threshold_calibrated"]`` is False (a model to save before anything can fail).
        """
        from .checkpoint import CLASS_INFO_KEYS, ModelClass

        profiles = self.profile_models()
        passes = []
        cals = self.calibrate(passes) if calibrate else {}
        last = self.history[-1] if self.history else {}
        rounds = list(self._prev_info.get("rounds", []))
        rounds.append({"steps": self.step, "n_positives": self.n_labels, "n_negatives": self.n_negatives,
                       "elapsed_s": round(self.elapsed_s, 2), "precision": _device.dtype_name(self.dtype)})
        if self.settle_at is not None and self.step > self.settle_at:  # a run cancelled before never settled
            rounds[-1]["settle_from"] = self.settle_at
        if self.look_alikes is not None:
            rounds[-1].update(look_alikes=self.look_alikes, look_alikes_from=self.look_alike_at)
        elif self.look_alikes_skipped:
            rounds[-1]["look_alikes_skipped"] = self.look_alikes_skipped
        if self.self_trained is not None:
            rounds[-1].update(self_training=self.self_trained, self_training_from=self.self_training_at)
        elif self.self_training_skipped:
            rounds[-1]["self_training_skipped"] = self.self_training_skipped
        if self.smoothing is not None:
            rounds[-1]["smoothing"] = self.smoothing
        if self.rehearsed is not None:
            rounds[-1]["rehearsed"] = self.rehearsed
        elif self.rehearsal_skipped:
            rounds[-1]["rehearsal_skipped"] = self.rehearsal_skipped
        classes = []
        for k, (name, plan) in enumerate(zip(self.names, self.plan.classes)):
            cal = cals.get(name)
            cinfo = {
                "n_labels": self.n_labels_class[k], "n_positives": self.n_labels_class[k],
                "n_negatives": self.n_negatives_class[k], "threshold_calibrated": bool(calibrate),
                "density_per_vox2": float(plan.density_per_vox2),
                "expected_particles": round(float(plan.expected_particles), 1),
                "label_boxes": [None if b[name] is None else b[name].to_list() for b in self.label_boxes],
                **(cal.info() if cal is not None else {}),
            }
            if self.self_trained is not None and cal is not None:
                # the share the user labelled, as round 1 read it (the sure picks are no labels of theirs)
                for key in SHARE_ESTIMATE_KEYS:
                    cinfo.pop(key, None)
                cinfo.update(self.first_estimates.get(name, {}))
            profile = cal.profile_model if cal is not None and cal.profile_model is not None else profiles.get(name)
            if profile is not None:  # refitted with the look-alikes calibration found, where it did
                cinfo["profile_model"] = profile.to_info()
            classes.append(ModelClass(name, float(self.diameters_vox[k]), float(self.taus[k]),
                                      float(cal.threshold) if cal is not None else 0.5,
                                      colour=self.specs[k].colour or class_colour(k), info=cinfo))
        info = {
            "steps": self._prev_steps + self.step, "total_steps": self.total_steps, "status": self.status,
            "elapsed_s": round(self.elapsed_s, 2), "device": self.device_name,
            "n_labels_all": self.n_labels, "n_negatives_all": self.n_negatives, "rounds": rounds,
            "final_loss": last.get("loss"), "loss_history": [round(h["loss"], 5) for h in self.history[-2000:]],
        }
        if len(classes) == 1:
            info.update(classes[0].info)  # a one-class model keeps its record at the top, as before
        else:
            info = {k: v for k, v in info.items() if k not in CLASS_INFO_KEYS}
        first = classes[0]
        return Checkpoint(state_dict=copy.deepcopy(self._last_good), config=replace(self.config),
                          diameter_vox=first.diameter_vox, voxel_size_a=self.voxel_size_a, bin_xy=self.bin_xy,
                          default_threshold=first.default_threshold, tau=first.tau, info=info,
                          classes=classes if len(classes) > 1 else [replace(first, info={})], passes=passes)


def _fit_profiles(volumes, labels, negatives, names, diameters_vox, found=None) -> dict:
    """Per class name, the :class:`~napari_cetpick.descriptors.ProfileModel` of its labels and
    negatives (``labels``, ``negatives``: per volume, per class name; None with too few labels);
    ``found`` (per volume, per class name, optional): the picks a self-training round was sure of
    (:meth:`ProfileModel.fit`'s ``found``)."""
    from .descriptors import ProfileModel

    return {name: ProfileModel.fit(volumes, [lab[name] for lab in labels], float(diameters_vox[k]),
                                   negatives=[_class_negatives(d, name) for d in negatives],
                                   found=None if found is None else [f.get(name) for f in found])
            for k, name in enumerate(names)}


def resolve_smoothing(config: TrainConfig, profiles, init: Checkpoint | None = None):
    """``(config, why)``: ``config`` with its pre-filter (``gauss``) chosen where it is None, and
    ``{"separation": s, "gauss": g}`` where it was chosen here (else None).

    A correction round keeps the model's (its weights learned that input). Else ``profiles()``
    gives each class's labels' radial profiles' model
    (:class:`~napari_cetpick.descriptors.ProfileModel`; None with too few), and where the lowest
    :meth:`~napari_cetpick.descriptors.ProfileModel.separation` (how far the class stands out of
    the tomogram's mean, in the labels' own spread) lies below
    :data:`~napari_cetpick.config.SMOOTHING_BELOW_SEPARATION`, the pre-filter is
    :data:`~napari_cetpick.config.AUTO_SMOOTHING`; else none, and none where too few labels
    give no profile model."""
    from .config import AUTO_SMOOTHING, SMOOTHING_BELOW_SEPARATION

    if config.gauss is not None:
        return config, None
    if init is not None:
        return replace(config, gauss=init.config.prefilter), None
    separations = [model.separation() for model in profiles().values() if model is not None]
    if not separations:
        return replace(config, gauss=0.0), None
    low = min(separations)
    gauss = AUTO_SMOOTHING if low < SMOOTHING_BELOW_SEPARATION else 0.0
    return replace(config, gauss=gauss), {"separation": round(float(low), 2), "gauss": gauss}


def had_self_training(model: Checkpoint) -> bool:
    """Whether any round of ``model`` trained with the picks it was sure of (a self-training
    round, or a correction round that rehearsed one)."""
    return any(r.get("self_training") or r.get("rehearsed") for r in model.info.get("rounds", []))


def train(volumes, labels, config: TrainConfig, voxel_size_a=None, device=None,
          init: Checkpoint | None = None, negatives=None, masks=None) -> Generator[TrainProgress, None, Checkpoint]:
    """Generator form of :class:`Trainer`: yields progress, returns the checkpoint."""
    trainer = Trainer(volumes, labels, config, voxel_size_a=voxel_size_a, device=device, init=init,
                      negatives=negatives, masks=masks)
    return (yield from trainer.steps())


#: The settling steps (``TrainConfig.settle_steps``) run at this share of the rate.
SETTLE_LR_FACTOR = 0.1
#: Optimiser steps of a correction round unless the user sets ``max_steps``/``num_epochs``.
CORRECTION_STEPS = 100
#: A correction round fine-tunes at this share of the first round's learning rate: a fresh
#: Adam takes steps of about the learning rate in every weight whatever the loss, and at
#: the full rate a round of 20 rejections wrecked the model instead of correcting it
#: (proteasome benchmark: best F1 0.45 -> 0.05; at a tenth: 0.45 -> 0.48, docs/benchmark.md).
CORRECTION_LR_FACTOR = 0.1


def correction_config(init: Checkpoint, **overrides) -> TrainConfig:
    """Settings of a correction round: the model's own, a short schedule, then the user's.

    The round keeps everything that defines the model (architecture, binning, particle
    size, normalisation, τ) and fine-tunes for :data:`CORRECTION_STEPS` steps at
    :data:`CORRECTION_LR_FACTOR` times the first round's learning rate, without decay (a
    model that is itself a correction keeps its rate). Any setting given in ``overrides``
    (not None) wins, including the schedule and the learning rate.
    """
    rounds = len(init.info.get("rounds", [])) or 1
    lr = float(init.config.lr) * (CORRECTION_LR_FACTOR if rounds <= 1 else 1.0)
    base = {"max_steps": CORRECTION_STEPS, "num_epochs": None, "lr_step": (), "settle_steps": 0,
            "look_alike_steps": 0, "self_training_steps": 0, "tau": init.tau,
            "seed": int(init.config.seed) + rounds, "lr": lr}
    given = {k: v for k, v in overrides.items() if v is not None}
    if "num_epochs" in given and "max_steps" not in given:
        base["max_steps"] = None  # the user set the schedule in epochs
    return replace(init.config, **{**base, **given})


def continue_training(init: Checkpoint, volumes, labels, negatives=None, masks=None, voxel_size_a=None,
                      device=None, keep_pass_for=None, **overrides) -> Generator[TrainProgress, None, Checkpoint]:
    """A correction round: fine-tune ``init`` with added positives and negatives.

    This is what "accept / reject → Improve" runs. The labels are all positives known now
    (the original ones plus accepted picks), ``negatives`` the rejected picks and other
    negative clicks, one array per volume. The model keeps its voxel size, binning and
    settings (:func:`correction_config`); the schedule is short by default
    (:data:`CORRECTION_STEPS` steps; the time per step is measured and reported as it runs),
    and ``overrides`` (TrainConfig fields) win over it. ``keep_pass_for``: the volume detected
    in next (:class:`Trainer`). The profile model is refitted on these labels and negatives
    and keeps the look-alikes ``init`` found (their Gaussian, its margins measured again;
    :func:`napari_cetpick.calibration.calibrate_classes`' ``kept_look_alikes``). Where
    ``init`` had a self-training round, the picks it is sure of in ``volumes`` (away from
    every label and negative) train as labels beside the review, and the profile model and
    threshold are fitted on them too (:meth:`Trainer._rehearse`).

    Yields :class:`TrainProgress`, returns the new :class:`Checkpoint`.
    """
    if init.voxel_size_differs(voxel_size_a):
        raise CetpickError(f"The model was trained at {init.voxel_size_a:g} Å/voxel but these tomograms have "
                           f"{voxel_size_a:g} Å/voxel; a correction round must use the model's voxel size.")
    vs = init.voxel_size_a if init.voxel_size_a else voxel_size_a
    cfg = correction_config(init, **overrides)
    if cfg.bbox is None and cfg.diameter_a is None:
        cfg = replace(cfg, bbox=init.diameter_vox)
    trainer = Trainer(volumes, labels, cfg, voxel_size_a=vs, device=device, init=init,
                      negatives=negatives, masks=masks, keep_pass_for=keep_pass_for)
    return (yield from trainer.steps())
