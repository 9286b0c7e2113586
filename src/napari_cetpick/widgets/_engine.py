"""The one place where the panel calls the engine with the correction loop's inputs.

Training with negatives and ignore masks, the correction round ("Improve") and masked
detection go through these functions, so that a change of the engine's interface is a
change here only. No Qt; the functions run in worker threads.
"""
from __future__ import annotations

import inspect
import math
from dataclasses import dataclass

import numpy as np

from napari_cetpick.errors import CetpickError


def _accepts(func, name: str) -> bool:
    try:
        return name in inspect.signature(func).parameters
    except (TypeError, ValueError):
        return False


def _loop_kwargs(func, negatives, masks, mask_name: str = "masks") -> dict:
    """The keyword arguments for negatives and masks, when there are any to pass."""
    kwargs = {}
    has_neg = negatives is not None and any(n is not None and len(n) for n in negatives)
    has_mask = masks is not None and any(m is not None for m in (masks if isinstance(masks, list) else [masks]))
    for wanted, key, what in ((has_neg, "negatives", "negatives"), (has_mask, mask_name, "ignore regions")):
        if not wanted:
            continue
        if not _accepts(func, key):
            raise CetpickError(f"This version of the napari-cetpick engine cannot use {what} yet; "
                               f"clear them to run without.")
        kwargs[key] = negatives if key == "negatives" else masks
    return kwargs


def make_trainer(volumes, labels, config, voxel_size_a=None, device=None, init=None, negatives=None,
                 masks=None):
    """A :class:`~napari_cetpick.train.Trainer` with the labels, negatives and masks of each volume."""
    from napari_cetpick.train import Trainer

    kwargs = _loop_kwargs(Trainer.__init__, negatives, masks)
    return Trainer(volumes, labels, config, voxel_size_a=voxel_size_a, device=device, init=init, **kwargs)


def correction_round(init, volumes, labels, negatives=None, masks=None, voxel_size_a=None, device=None):
    """The engine's correction round: a short fine-tune of ``init`` (generator → Checkpoint)."""
    from napari_cetpick import train

    func = getattr(train, "continue_training", None)
    if func is None:
        raise CetpickError("This version of the napari-cetpick engine has no correction round yet "
                           "(train.continue_training); use Train with 'Continue from the current model'.")
    kwargs = _loop_kwargs(func, negatives, masks)
    return func(init, volumes, labels, voxel_size_a=voxel_size_a, device=device, **kwargs)


def detect(ckpt, volume, config=None, voxel_size_a=None, device=None, mask=None):
    """The engine's tiled detection (generator → DetectResult), dropping picks where ``mask`` is 0."""
    from napari_cetpick import detect as detect_mod

    kwargs = _loop_kwargs(detect_mod.detect, None, None if mask is None else [mask], mask_name="mask")
    if "mask" in kwargs:
        kwargs["mask"] = mask
    return detect_mod.detect(ckpt, volume, config, voxel_size_a=voxel_size_a, device=device, **kwargs)


# ------------------------------------------------------------------ the plan shown before Train
@dataclass
class TrainingPlan:
    """What a Train press will do, computed without reading the tomogram."""

    total_steps: int
    steps_per_epoch: int
    epochs_limit: int
    n_labels: int
    bin_xy: int
    tau: float
    tau_source: str  # "set by hand", "from the expected particles", "from the label density"

    def describe(self) -> str:
        limit = "max steps" if self.total_steps < self.epochs_limit else "epochs × labels"
        return (f"{self.total_steps} steps ({limit}; one epoch = {self.steps_per_epoch} "
                f"step{'s' if self.steps_per_epoch != 1 else ''}) · τ {self.tau:.3g} {self.tau_source} · "
                f"bin {self.bin_xy}")


def plan_training(config, shapes, labels, voxel_size_a=None, init=None) -> TrainingPlan:
    """The number of steps and the class prior τ a training run with these inputs will use.

    Mirrors :class:`~napari_cetpick.train.Trainer`'s choices (binning, steps, τ) from the
    shapes and labels alone.
    """
    from napari_cetpick import data as D
    from napari_cetpick.train import estimate_tau, resolve_diameter_vox

    diameter_vox = resolve_diameter_vox(config, voxel_size_a)
    if init is not None:
        bin_xy = int(init.bin_xy)
    elif config.bin == "auto":
        bin_xy = D.auto_bin(diameter_vox, config.min_particle_vox)
    else:
        bin_xy = int(config.bin)
    geometry = D.make_geometry(bin_xy, config.compress)
    crop = (config.crop_z, config.crop_xy, config.crop_xy)
    work_shapes = [tuple(max(int(w), int(c)) for w, c in zip(geometry.work_shape(s), crop)) for s in shapes]
    labels_work = [geometry.tomo_to_work(np.asarray(lab, float).reshape(-1, 3)) for lab in labels]
    diameter_work = diameter_vox / bin_xy
    tau = estimate_tau(config, labels_work, work_shapes, D.blob_spec(diameter_work, config.blob), diameter_work)
    source = ("set by hand" if config.tau is not None else
              "from the expected particles" if config.expected_particles else "from the label density")
    n_labels = int(sum(len(lab) for lab in labels))
    spe = max(1, math.ceil(n_labels / config.batch_size))
    epochs_limit = config.num_epochs * spe
    total = min(epochs_limit, config.max_steps) if config.max_steps else epochs_limit
    return TrainingPlan(total, spe, epochs_limit, n_labels, bin_xy, float(tau), source)
