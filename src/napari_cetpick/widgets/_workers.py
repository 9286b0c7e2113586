"""The generators the panel runs in background threads.

They touch no viewer and no Qt: they read arrays, call the engine and yield or return
plain records. The panel wraps them with ``napari.qt.threading.create_worker`` and adds
layers from the main thread when the records arrive.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Generator, Sequence

import numpy as np

from napari_cetpick import device as _device  # noqa: F401  (sets OMP_WAIT_POLICY before torch loads)
from napari_cetpick.checkpoint import Checkpoint
from napari_cetpick.config import DetectConfig, TrainConfig
from napari_cetpick.errors import CetpickError
from napari_cetpick.utils import relay


class JobError(Exception):
    """An unexpected failure inside a background job.

    superqt's generator worker treats a ``RuntimeError`` escaping the generator as "the
    worker was deleted" and then emits neither ``errored`` nor ``finished``, which would
    leave the panel waiting forever; torch reports most failures (out of memory, shape
    errors) as ``RuntimeError``, so the jobs re-raise those as this type.
    """


def _copy_points(points):
    """A copy the worker owns of one tomogram's points: an (n, 3) array, or a dict per class."""
    if isinstance(points, dict):
        return {k: np.array(v, float, copy=True) for k, v in points.items()}
    return np.array(points, float, copy=True)


@dataclass
class TrainStarted:
    """Sent once preprocessing is done, before the first step."""

    device: str
    total_steps: int
    n_labels: int
    bin_xy: int
    tau: float


class TrainJob:
    """One training run: builds the :class:`~napari_cetpick.train.Trainer` and steps it.

    The Trainer is built inside :meth:`run` (so in the worker thread: building it reads
    and bins the tomograms) and kept in :attr:`trainer`, so that after a cancel the panel
    can still ask it for the last good model.

    Parameters
    ----------
    volumes : list of (Z, Y, X) arrays
    labels : list of (n, 3) float arrays
        zyx voxel coordinates, one array per volume.
    config : TrainConfig
    voxel_size_a : float or None
    device : str
    init : Checkpoint, optional
        Continue from these weights.
    negatives : list of (n, 3) arrays or None, optional
        Known non-particles of each volume.
    masks : list of (Z, Y, X) arrays or None, optional
        Ignore regions of each volume (0 = ignore).
    """

    def __init__(self, volumes: Sequence, labels: Sequence, config: TrainConfig,
                 voxel_size_a: float | None, device: str = "auto", init: Checkpoint | None = None,
                 negatives: Sequence | None = None, masks: Sequence | None = None):
        self.volumes = list(volumes)
        self.labels = [_copy_points(lab) for lab in labels]
        self.config = config
        self.voxel_size_a = voxel_size_a
        self.device = device
        self.init = init
        self.negatives = None if negatives is None else [_copy_points(n) for n in negatives]
        self.masks = None if masks is None else list(masks)
        self.trainer = None

    def run(self) -> Generator[object, None, Checkpoint]:
        """Yield :class:`TrainStarted`, then one ``TrainProgress`` per step; return the model."""
        from napari_cetpick.widgets._engine import make_trainer

        try:
            self.trainer = make_trainer(self.volumes, self.labels, self.config, voxel_size_a=self.voxel_size_a,
                                        device=self.device, init=self.init, negatives=self.negatives,
                                        masks=self.masks)
            t = self.trainer
            yield TrainStarted(t.device_name, t.total_steps, t.n_labels, t.bin_xy, t.tau)
            return (yield from t.steps())
        except RuntimeError as err:
            raise JobError(f"{type(err).__name__}: {err}") from err

    def last_good_checkpoint(self) -> Checkpoint | None:
        """The model as it was after the last finished step (None before the first one)."""
        if self.trainer is None or self.trainer.step == 0:
            return None
        try:
            return self.trainer.checkpoint()
        except RuntimeError as err:
            raise JobError(f"{type(err).__name__}: {err}") from err


@dataclass
class DetectItem:
    """One tomogram to detect in: a key the panel knows it by, the array, its voxel size
    and its ignore mask (0 = drop picks there), if any."""

    key: object
    name: str
    volume: object
    voxel_size_a: float | None
    mask: object = None


@dataclass
class DetectStep:
    """Progress within tomogram ``index`` (0-based) of ``count``."""

    index: int
    count: int
    name: str
    progress: object  # DetectProgress


@dataclass
class DetectDone:
    """The result of one tomogram (a DetectResult, or the ClassDetections of a model of several classes)."""

    key: object
    name: str
    result: object


@dataclass
class DetectFailed:
    """A tomogram the model could not run on; the others go on."""

    key: object
    name: str
    message: str


def detect_job(ckpt: Checkpoint, items: Sequence[DetectItem], config: DetectConfig,
               device: str = "auto") -> Generator[object, None, int]:
    """Detect in each tomogram in turn; return how many succeeded.

    A :class:`CetpickError` for one tomogram (e.g. a voxel size the model cannot be
    rescaled to) becomes a :class:`DetectFailed` record so that the others still run;
    anything else propagates and ends the job. Warnings (e.g. a model rescaled to another
    voxel size) reach napari through the worker's ``warned`` signal.
    """
    from napari_cetpick.widgets._engine import detect

    n_ok = 0
    for i, item in enumerate(items):
        try:
            gen = detect(ckpt, item.volume, config, voxel_size_a=item.voxel_size_a, device=device, mask=item.mask)
            result = yield from relay(gen, lambda p, i=i, item=item: DetectStep(i, len(items), item.name, p))
        except CetpickError as err:
            yield DetectFailed(item.key, item.name, str(err))
            continue
        except RuntimeError as err:
            raise JobError(f"{item.name}: {type(err).__name__}: {err}") from err
        n_ok += 1
        yield DetectDone(item.key, item.name, result)
    return n_ok


@dataclass
class ImproveStep:
    """Progress of the correction round (``progress`` is a TrainProgress)."""

    progress: object


def improve_job(init: Checkpoint, volumes: Sequence, labels: Sequence, negatives: Sequence | None,
                masks: Sequence | None, voxel_size_a: float | None,
                device: str = "auto", detect_next=None) -> Generator[object, None, Checkpoint]:
    """The correction round on the labels and negatives; returns the improved model.

    A cancel ends it at the next step; the panel then keeps the model it had.
    ``detect_next``: the volume the panel detects in right after (its network pass is kept).
    """
    from napari_cetpick.widgets._engine import correction_round

    try:
        gen = correction_round(init, list(volumes), [_copy_points(v) for v in labels],
                               negatives=None if negatives is None else [_copy_points(n) for n in negatives],
                               masks=None if masks is None else list(masks), voxel_size_a=voxel_size_a,
                               device=device, detect_next=detect_next)
        return (yield from relay(gen, ImproveStep))
    except RuntimeError as err:
        raise JobError(f"{type(err).__name__}: {err}") from err
