"""What Train, its plan and Improve hand the engine: volumes, labels and negatives per class,
ignore masks, the classes' sizes — gathered in one place so the three agree."""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from napari_cetpick._napari.session import PanelState, few_labels_problem
from napari_cetpick.config import ClassSpec, TrainConfig
from napari_cetpick.errors import CetpickError
from napari_cetpick.widgets import _layers as L


@dataclass
class TrainingInputs:
    """The tomograms and clicks of a training run.

    ``labels`` and ``negatives`` hold one entry per tomogram: an ``(n, 3)`` array when one
    class has labels, else a dict per class name (what the engine takes).
    """

    records: list
    names: list
    volumes: list
    labels: list
    negatives: list | None
    masks: list | None
    voxel_size_a: float | None

    def count(self, name: str) -> int:
        return int(sum(len(lab[name] if isinstance(lab, dict) else lab) for lab in self.labels))


def gather_training_inputs(state: PanelState, every: bool, masks: bool = True, model=None) -> TrainingInputs:
    """Volumes, per-class labels and negatives and ignore masks of the current tomogram (or of
    every tomogram with labels or negatives). Raises CetpickError when unusable.

    ``model``: the model a round continues (Improve, or Train from the current model). A model
    of several classes takes its own classes, in its order, each with labels somewhere; a
    tomogram whose voxel size the model was not trained at is left out of ``every``.
    """
    from napari_cetpick.train import check_labels

    rec = state.current
    if rec is None:
        raise CetpickError("No tomogram: open one (File › Open) or the sample (File › Open Sample).")
    live = [r for r in state.records.values() if state.live(r.layer)]
    if every:
        fits = [r for r in live if model is None or r is rec or not model.voxel_size_differs(r.voxel_size_a)]
        recs = [r for r in fits if state.classes_with_labels([r]) or state.classes_with_labels([r], "negatives")]
    else:
        recs = [rec]
    names = state.classes_with_labels(recs)
    if not names:
        raise CetpickError(_no_labels_message(state, rec, every))
    several = model is not None and model.n_classes > 1
    if several:
        names = _model_classes(state, model, names, recs, every)
    sizes = {r.voxel_size_a for r in recs}
    if len(sizes) > 1:
        raise CetpickError(f"The tomograms with labels have different voxel sizes "
                           f"({', '.join(f'{v or 0:g}' for v in sizes)} Å); train on one voxel size.")
    labels, negatives = [], []
    for r in recs:
        lab, neg = {}, {}
        for n in names:
            t = r.track(n)
            for what, out in (("labels", lab), ("negatives", neg)):
                layer = getattr(t, what)
                pts = L.points_in_image_frame(layer, r.layer) if layer is not None and state.live(layer) \
                    else np.zeros((0, 3))
                out[n] = check_labels(pts, r.shape, f"{what.capitalize()} layer '{layer.name}'") if len(pts) else pts
        labels.append(lab if len(names) > 1 or several else lab[names[0]])
        negatives.append(neg if len(names) > 1 or several else neg[names[0]])
    any_neg = any(len(v) for n in negatives for v in (n.values() if isinstance(n, dict) else [n]))
    keep = [state.keep_mask(r) for r in recs] if masks else []
    return TrainingInputs(recs, names, [r.layer.data for r in recs], labels, negatives if any_neg else None,
                          keep if any(m is not None for m in keep) else None, sizes.pop())


def _no_labels_message(state: PanelState, rec, every: bool) -> str:
    """Why there is nothing to train on, naming the tomogram, and where labels are when elsewhere."""
    if every:
        return "No labels in any open tomogram: click at least one particle on a labels layer ('New labels')."
    others = [r.name for r in state.records.values()
              if r is not rec and state.live(r.layer) and state.classes_with_labels([r])]
    where = (f" {', '.join(others)} {'has' if len(others) == 1 else 'have'} labels: select "
             f"{'it' if len(others) == 1 else 'one'}, or tick 'All tomograms with labels' (Train)."
             if others else "")
    return (f"No labels in {rec.name}, the selected tomogram: add a labels layer ('New labels') and click at "
            f"least one particle.{where}")


def _model_classes(state: PanelState, model, names: list, recs: list, every: bool) -> list:
    """The classes of a model of several classes, in its order; CetpickError where the labels do not fit it."""
    classes = list(model.class_names)
    extra = [n for n in names if n not in classes]
    if extra:
        raise CetpickError(f"The model has no class {extra[0]!r} (its classes: {', '.join(classes)}): a round that "
                           f"continues it keeps its classes. Train a new model (untick 'Continue from the current "
                           f"model') to add {extra[0]!r}.")
    missing = [n for n in classes if n not in names]
    if missing:
        where = "any open tomogram" if every else f"{recs[0].name}, the selected tomogram"
        raise CetpickError(f"The model finds {', '.join(classes)}; continuing it needs labels of each, and "
                           f"{missing[0]!r} has none in {where}. Click a few {missing[0]} particles (or accept "
                           f"picks of it), or Train a new model of the classes you labelled.")
    return classes


def class_config(state: PanelState, config: TrainConfig, names) -> TrainConfig:
    """``config`` with one ClassSpec per class (its own diameter and colour; the expected count
    given in the panel goes to the selected class when several train together)."""
    specs = []
    for n in names:
        c = state.particle_class(n)
        size = {"bbox": c.diameter} if c.unit == "voxels" else {"diameter_a": c.diameter}
        count = config.expected_particles if (len(names) == 1 or n == state.active_class) else None
        specs.append(ClassSpec(n, colour=c.colour, expected_particles=count, **size))
    return replace(config, classes=specs, expected_particles=None if len(names) > 1 else config.expected_particles)


def training_problem(state: PanelState, inputs: TrainingInputs, config: TrainConfig) -> str | None:
    """Why these inputs should not be trained on (a class's diameter, too few labels), or None."""
    for n in inputs.names:
        problem = state.check_diameter(inputs.records[0], n)
        if problem:
            return problem
        spec = next((c for c in config.class_specs() if c.name == n), None)
        count = config.expected_particles if spec is None else spec.expected_particles
        problem = few_labels_problem(inputs.count(n), replace(config, expected_particles=count))
        if problem:
            return problem if len(inputs.names) == 1 else f"{n}: {problem}"
    return None
