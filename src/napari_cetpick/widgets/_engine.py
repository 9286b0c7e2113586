"""The one place where the panel calls the engine with the correction loop's inputs.

Training with negatives and ignore masks, the correction round ("Improve") and masked
detection go through these functions, so that a change of the engine's interface is a
change here only. No Qt; the functions run in worker threads (the plan, on the main thread,
reads no tomogram and loads no torch).
"""
from __future__ import annotations



def make_trainer(volumes, labels, config, voxel_size_a=None, device=None, init=None, negatives=None,
                 masks=None):
    """A :class:`~napari_cetpick.train.Trainer` with the labels, negatives and masks of each volume."""
    from napari_cetpick.train import Trainer

    return Trainer(volumes, labels, config, voxel_size_a=voxel_size_a, device=device, init=init,
                   negatives=negatives, masks=masks)


def correction_round(init, volumes, labels, negatives=None, masks=None, voxel_size_a=None, device=None,
                     detect_next=None):
    """The engine's correction round: a short fine-tune of ``init`` (generator → Checkpoint).

    ``detect_next``: the volume detected in right after; the new model keeps the
    calibration's network pass over it for that detection where the pass covered all of it.
    """
    from napari_cetpick.train import continue_training

    return continue_training(init, volumes, labels, negatives=negatives, masks=masks,
                             voxel_size_a=voxel_size_a, device=device, keep_pass_for=detect_next)


def detect(ckpt, volume, config=None, voxel_size_a=None, device=None, mask=None):
    """The engine's tiled detection, dropping picks where ``mask`` is 0: a generator returning a
    DetectResult (a model of one class) or the ClassDetections of every class (one pass)."""
    from napari_cetpick.detect import detect as engine_detect
    from napari_cetpick.detect import detect_classes

    if ckpt.n_classes > 1 and ckpt.channel is None:
        return detect_classes(ckpt, volume, config, voxel_size_a=voxel_size_a, device=device, mask=mask)
    return engine_detect(ckpt, volume, config, voxel_size_a=voxel_size_a, device=device, mask=mask)


# ------------------------------------------------------------------ the plan shown before Train
def check_memory(config, shapes, voxel_size_a=None, device=None):
    """The engine's memory check before training (reads no tomogram, loads no torch)."""
    from napari_cetpick.train import check_memory_before_training

    check_memory_before_training(config, shapes, voxel_size_a, device=device)


def plan_training(config, shapes, labels, voxel_size_a=None, init=None):
    """The engine's :func:`~napari_cetpick.train.plan_training`: what a Train press will do."""
    from napari_cetpick.train import plan_training as engine_plan

    return engine_plan(config, shapes, labels, voxel_size_a=voxel_size_a, init=init)
