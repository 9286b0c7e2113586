"""The one place where the panel calls the engine with the correction loop's inputs.

Training with negatives and ignore masks, the correction round ("Improve") and masked
detection go through these functions, so that a change of the engine's interface is a
change here only. No Qt; the functions run in worker threads (the plan, on the main thread,
reads no tomogram and loads no torch).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


def make_trainer(volumes, labels, config, voxel_size_a=None, device=None, init=None, negatives=None,
                 masks=None):
    """A :class:`~napari_cetpick.train.Trainer` with the labels, negatives and masks of each volume."""
    from napari_cetpick.train import Trainer

    return Trainer(volumes, labels, config, voxel_size_a=voxel_size_a, device=device, init=init,
                   negatives=negatives, masks=masks)


def correction_round(init, volumes, labels, negatives=None, masks=None, voxel_size_a=None, device=None):
    """The engine's correction round: a short fine-tune of ``init`` (generator → Checkpoint)."""
    from napari_cetpick.train import continue_training

    return continue_training(init, volumes, labels, negatives=negatives, masks=masks,
                             voxel_size_a=voxel_size_a, device=device)


def detect(ckpt, volume, config=None, voxel_size_a=None, device=None, mask=None):
    """The engine's tiled detection (generator → DetectResult), dropping picks where ``mask`` is 0."""
    from napari_cetpick.detect import detect as engine_detect

    return engine_detect(ckpt, volume, config, voxel_size_a=voxel_size_a, device=device, mask=mask)


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
    # the network's output stride, without building it (that would load torch): 3D U-Nets
    # halve every axis, the pseudo-3D ones only y and x
    stride = (2, 2, 2) if str(config.arch).startswith("unet3d") else D.PSEUDO3D_STRIDE
    if init is not None:
        bin_xy = int(init.bin_xy)
    elif config.bin == "auto":
        bin_xy = D.auto_bin(diameter_vox, config.min_particle_vox)
    else:
        bin_xy = int(config.bin)
    geometry = D.make_geometry(bin_xy, config.compress, stride)
    crop = (config.crop_z, config.crop_xy, config.crop_xy)
    work_shapes = [tuple(max(int(w), int(c)) for w, c in zip(geometry.work_shape(s), crop)) for s in shapes]
    labels_work = [geometry.tomo_to_work(np.asarray(lab, float).reshape(-1, 3)) for lab in labels]
    diameter_work = diameter_vox / bin_xy
    tau = estimate_tau(config, labels_work, work_shapes, D.blob_spec(diameter_work, config.blob), diameter_work,
                       stride)
    source = ("set by hand" if config.tau is not None else
              "from the expected particles" if config.expected_particles else "from the label density")
    n_labels = int(sum(len(lab) for lab in labels))
    spe = max(1, math.ceil(n_labels / config.batch_size))
    epochs_limit = config.num_epochs * spe
    total = min(epochs_limit, config.max_steps) if config.max_steps else epochs_limit
    return TrainingPlan(total, spe, epochs_limit, n_labels, bin_xy, float(tau), source)
