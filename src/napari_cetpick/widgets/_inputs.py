"""What Train and Improve hand the engine: volumes, labels, negatives and ignore masks."""
from __future__ import annotations

import numpy as np

from napari_cetpick.errors import CetpickError
from napari_cetpick.widgets import _layers as L
from napari_cetpick._napari.session import PanelState


def gather_training_inputs(state: PanelState, every: bool):
    """Volumes, labels, negatives and ignore masks of the current tomogram (or of every
    tomogram with labels), as the engine takes them. Raises CetpickError when unusable."""
    from napari_cetpick.train import check_labels

    rec = state.current
    if rec is None:
        raise CetpickError("No tomogram: open one (File › Open) or the sample (File › Open Sample).")
    recs = [r for r in state.records.values() if r.count("labels") and state.live(r.layer)] if every else [rec]
    if not recs or not recs[0].count("labels"):
        raise CetpickError("No labels: add a labels layer ('New labels') and click at least one particle "
                           "before training.")
    sizes = {r.voxel_size_a for r in recs}
    if len(sizes) > 1:
        raise CetpickError(f"The tomograms with labels have different voxel sizes "
                           f"({', '.join(f'{v or 0:g}' for v in sizes)} Å); train on one voxel size.")
    volumes, labels, negatives, masks = [], [], [], []
    for r in recs:
        volumes.append(r.layer.data)
        labels.append(check_labels(L.points_in_image_frame(r.labels, r.layer), r.shape,
                                   f"Labels layer '{r.labels.name}'"))
        neg = np.zeros((0, 3)) if not r.count("negatives") else check_labels(
            L.points_in_image_frame(r.negatives, r.layer), r.shape, f"Negatives layer '{r.negatives.name}'")
        negatives.append(neg)
        masks.append(state.keep_mask(r))
    return (recs, volumes, labels, negatives if any(len(n) for n in negatives) else None,
            masks if any(m is not None for m in masks) else None, sizes.pop())
