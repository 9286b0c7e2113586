"""The panel's session model: every open tomogram with what the user made for it, without Qt.

Per tomogram (a :class:`TomogramRecord`): its labels and negatives layers, ignore regions,
detection, picks, threshold and minimum distance the user chose, review decisions,
evaluation truth and box, and whether its autosaved session was offered back. Panel-wide:
the model (and the one it replaced, for Undo), the particle diameter.

Sections never reach into each other's widgets; they read and write this model and listen
to its signals (psygnal, so it is tested without a viewer or Qt). Layers stored here are
napari's own objects (unwrapped from the proxies a plugin receives), so identity checks
against ``event.source`` hold.
"""
from __future__ import annotations

import contextlib
import copy
from dataclasses import dataclass, field

from psygnal import Signal

import numpy as np

from napari_cetpick._napari.layers import (
    META_KEY,
    ROLE_KEY,
    image_layer_meta,
    is_tomogram_layer,
    layer_cetpick_meta,
    points_in_image_frame,
    unwrap,
)
from napari_cetpick._napari.session_file import ClassSession, SessionData
from napari_cetpick.config import DEFAULT_CLASS as DEFAULT_CLASS_NAME  # the class of a panel where none was named
from napari_cetpick.config import class_colour
from napari_cetpick.review import PickEdits

DIAMETER_UNITS = ("Å", "voxels")
DEFAULT_DIAMETER_A = 250.0  # a ribosome, the sample's labelled class
MIN_DIAMETER_VOX = 3.0  # below this a particle is a voxel or two: no detector can place it
FEW_LABELS = 3  # fewer labels than this cannot tell how densely the particles are packed


def few_labels_problem(n_labels: int, config) -> str | None:
    """Why training on so few labels needs the user's count of particles (None when fine)."""
    if n_labels >= FEW_LABELS or config.expected_particles or config.tau:
        return None
    return (f"Only {n_labels} label{'' if n_labels == 1 else 's'}: too few to tell how many particles the tomogram "
            f"holds. Click more particles (a dozen or more, spread over the tomogram), or set 'Expected particles'.")


TOMOGRAM_LAYER_KINDS = ("picks", "heatmap", "labels", "negatives")  # a class's layers that go with its tomogram
CLASS_FIELDS = ("labels", "negatives", "result", "heatmap", "picks", "edits", "shown", "chosen", "restored", "truth")


@dataclass(eq=False)
class ClassTrack:
    """What one tomogram holds for one particle class.

    Attributes
    ----------
    labels, negatives : napari Points layers or None
        The class's particle clicks and its "not this class" clicks.
    result : DetectResult or None
        The class's last detection (heatmap and cached candidates for instant re-selection);
        ``group`` the :class:`~napari_cetpick.detect.ClassDetections` it came with (one
        network pass for every class), so that overlaps are resolved again on re-selection.
    heatmap, picks : napari layers or None
    edits : PickEdits
        Picks the user accepted, added, rejected or deleted (kept across re-selection).
    shown : (n, 3) array
        The picks the panel last wrote into ``picks`` (to tell hand edits apart).
    chosen : set
        ``"threshold"`` / ``"min_distance"`` once the user set them by hand: a new detection
        keeps them instead of the model's defaults.
    restored : dict
        ``threshold`` / ``min_distance_vox`` from a restored session, for the next detection.
    truth : napari Points layer or None
        Evaluation truth of this class.
    model : Checkpoint or None
        The model ``result`` came from (a later Train, Improve or Load makes it an earlier one).
    """

    labels: object = None
    negatives: object = None
    result: object = None
    group: object = None
    heatmap: object = None
    picks: object = None
    edits: PickEdits = field(default_factory=PickEdits)
    shown: object = None
    chosen: set = field(default_factory=set)
    restored: dict = field(default_factory=dict)
    truth: object = None
    model: object = None


def _class_field(name: str):
    def get(self):
        return getattr(self.track(), name)

    def set_(self, value):
        setattr(self.track(), name, value)

    return property(get, set_, doc=f"The active class's ``{name}`` (see :class:`ClassTrack`).")


class TomogramRecord:
    """Everything the panel keeps for one open tomogram: per class a :class:`ClassTrack`
    (``labels``, ``picks``, ``result`` … read and write the active class's), and for the
    tomogram as a whole:

    Attributes
    ----------
    layer : napari Image layer
    active : str
        The class the class-level attributes refer to (the panel's selected class).
    ignore : napari Shapes or Labels layer or None
        This tomogram's ignore regions; ``ignore_z_range`` the slices its shapes apply to.
    box : napari Shapes layer or None
        The box in which the evaluation truth is complete; ``box_z_range`` its slices.
    autosave : str
        ``"unchecked"`` until its autosaved session was looked for, ``"offered"`` while the
        user has not chosen to restore or dismiss it (nothing is written meanwhile),
        ``"clear"`` once autosave may write.
    """

    def __init__(self, layer, active: str = DEFAULT_CLASS_NAME):
        self.layer = layer
        self.active = active
        self.per_class: dict[str, ClassTrack] = {}
        self.ignore = None
        self.ignore_z_range: tuple = (0, 0)
        self.box = None
        self.box_z_range: tuple = (0, 0)
        self.autosave = "unchecked"

    def track(self, name: str | None = None) -> ClassTrack:
        """The :class:`ClassTrack` of a class (the active one by default), made on first use."""
        name = self.active if name is None else name
        if name not in self.per_class:
            self.per_class[name] = ClassTrack()
        return self.per_class[name]

    def view(self, name: str) -> TomogramRecord:
        """This record seen with ``name`` as its active class (class-level attributes are shared;
        set tomogram-level ones on the record itself)."""
        other = copy.copy(self)
        other.active = name
        return other

    def layers_held(self, kinds=("picks", "heatmap", "labels", "negatives", "truth")) -> list:
        """Its ignore-regions and box layers and every class's layers of these kinds (None left out)."""
        own = [self.ignore, self.box, *(getattr(t, k) for t in self.per_class.values() for k in kinds)]
        return [lay for lay in own if lay is not None]

    def holds(self, layer) -> bool:
        """True when this tomogram uses the layer (its image, regions, box, any class's layers)."""
        return layer is self.layer or any(layer is h for h in self.layers_held())

    def same(self, other) -> bool:
        """The same tomogram (a record or a view of it)."""
        return other is not None and other.layer is self.layer

    @property
    def name(self) -> str:
        return self.layer.name

    @property
    def shape(self) -> tuple:
        return tuple(int(s) for s in self.layer.data.shape)

    @property
    def voxel_size_a(self) -> float | None:
        value = layer_cetpick_meta(self.layer).get("voxel_size_a")
        return float(value) if value else None

    @property
    def threshold(self) -> float | None:
        return None if self.result is None else float(self.result.threshold)

    def count(self, what: str) -> int:
        layer = getattr(self, what)
        return 0 if layer is None else len(layer.data)

    def points(self, what: str) -> np.ndarray:
        """``(n, 3)`` zyx of its labels or negatives in the tomogram's voxels (empty if none)."""
        layer = getattr(self, what)
        if layer is None or len(layer.data) == 0:
            return np.zeros((0, 3))
        return points_in_image_frame(layer, self.layer)


for _name in CLASS_FIELDS:
    setattr(TomogramRecord, _name, _class_field(_name))


@dataclass
class ParticleClass:
    """A particle class of the panel: its name, diameter (in ``unit``, Å or voxels) and colour."""

    name: str
    diameter: float = DEFAULT_DIAMETER_A
    unit: str = "Å"
    colour: str = "#ffff00"


class PanelState:
    """Current tomogram, its records, the particle classes, the model, with signals.

    Parameters
    ----------
    viewer : napari.viewer.Viewer (or the proxy napari hands plugins)
    """

    current_changed = Signal(object)      # TomogramRecord or None
    checkpoint_changed = Signal(object)   # Checkpoint or None
    closed = Signal(object)               # TomogramRecord of a tomogram layer that was removed
    detection_changed = Signal(object)    # TomogramRecord: new result, heatmap or picks layer
    picks_changed = Signal(object)        # TomogramRecord: picks re-selected or edited
    points_changed = Signal(object)       # TomogramRecord: its labels or negatives changed
    layers_changed = Signal()             # layers were added, removed or renamed
    diameter_changed = Signal()
    classes_changed = Signal()            # a class was added, renamed, recoloured or removed
    class_changed = Signal(str)           # the active class is now this one
    mask_changed = Signal()               # the ignore regions changed

    def __init__(self, viewer):
        self.viewer = viewer
        self.records: dict = {}
        self.current: TomogramRecord | None = None
        self.checkpoint = None
        self.previous_checkpoint = None  # the model the current one replaced (Undo model)
        self.model_path: str | None = None  # the file the current model was loaded from or saved to
        self._paths: dict = {}  # id(checkpoint) -> its file
        self.classes: list[ParticleClass] = [ParticleClass(DEFAULT_CLASS_NAME, colour=class_colour(0))]
        self.active_class = DEFAULT_CLASS_NAME
        self.mask_source = None  # callable(record) -> keep mask or None; set by the mask section
        self.closing: set = set()  # ids of the layers of a closed tomogram, about to be removed

    # ------------------------------------------------------------------ tomograms
    def record(self, layer, create: bool = True) -> TomogramRecord | None:
        """The record of a tomogram layer (made on first use when ``create``)."""
        if layer is None:
            return None
        layer = unwrap(layer)
        rec = self.records.get(layer.unique_id)
        if rec is None and create:
            rec = self.records[layer.unique_id] = TomogramRecord(layer, self.active_class)
        return rec

    def set_current(self, layer) -> None:
        rec = self.record(layer)
        if rec is not self.current:
            self.current = rec
            self.current_changed.emit(rec)

    def forget(self, layer) -> TomogramRecord | None:
        """Drop the record of a removed tomogram layer (``closed`` is emitted first)."""
        rec = self.records.get(unwrap(layer).unique_id)
        if rec is None:
            return None
        self.closed.emit(rec)
        self.records.pop(unwrap(layer).unique_id, None)
        if rec is self.current:
            self.current = None
            self.current_changed.emit(None)
        return rec

    def owned_layers(self, rec: TomogramRecord) -> list:
        """The layers the panel made for (or holds for) this tomogram and no other: picks,
        heatmap, labels, negatives, ignore regions, box, the review ring."""
        held = rec.layers_held(TOMOGRAM_LAYER_KINDS)
        out = []
        for lay in self.viewer.layers:
            lay = unwrap(lay)
            if lay is rec.layer:
                continue
            made_for_it = layer_cetpick_meta(lay).get(ROLE_KEY) and layer_cetpick_meta(lay).get("source") == rec.name
            if (made_for_it or any(lay is h for h in held)) and not self.held_by_another(lay, rec):
                out.append(lay)
        return out

    def held_by_another(self, layer, rec: TomogramRecord | None) -> bool:
        """True when another tomogram's record uses this layer."""
        layer = unwrap(layer)
        for other in self.records.values():
            if rec is not None and other.same(rec):
                continue
            if other.holds(layer):
                return True
        return False

    def belongs_elsewhere(self, layer, rec: TomogramRecord) -> bool:
        """True when a points or shapes layer was made for, or read onto, another tomogram."""
        meta = layer_cetpick_meta(layer)
        if self.held_by_another(layer, rec):
            return True
        mine = {rec.name, image_layer_meta(rec.layer).get("tomogram_name")}
        # every other open tomogram, whether the panel has worked on it yet or not
        others = [unwrap(lay) for lay in self.viewer.layers if is_tomogram_layer(lay) and unwrap(lay) is not rec.layer]
        for tomo in others:
            theirs = {tomo.name, image_layer_meta(tomo).get("tomogram_name")} - mine
            if meta.get("source") in theirs or (meta.get("tomogram_name") and meta.get("tomogram_name") in theirs
                                                and meta.get("tomogram_name") not in mine):
                return True
        return False

    def record_of_points(self, layer) -> TomogramRecord | None:
        """The record whose labels, negatives or picks layer this is."""
        layer = unwrap(layer)
        for rec in self.records.values():
            if layer is rec.labels or layer is rec.negatives or layer is rec.picks:
                return rec
        return None

    def live(self, layer) -> bool:
        """True while a layer is still in the viewer."""
        if layer is None:
            return False
        layer = unwrap(layer)
        return any(unwrap(lay) is layer for lay in self.viewer.layers)

    # ------------------------------------------------------------------ which layers are whose
    @staticmethod
    def made_for(layer, tomo) -> bool:
        """A points layer made for (or read onto) this tomogram layer."""
        meta, tmeta = layer_cetpick_meta(layer), image_layer_meta(tomo)
        return meta.get("source") == tomo.name or (
            bool(meta.get("tomogram_name")) and meta.get("tomogram_name") == tmeta.get("tomogram_name"))

    def fits(self, layer, rec: TomogramRecord) -> bool:
        """A layer that can be this tomogram's active class's: no other class's (by its
        metadata, or held for another class), no other tomogram's."""
        if id(layer) in self.closing or self.held_by_another(layer, rec) or any(
                layer is t.labels or layer is t.negatives for n, t in rec.per_class.items() if n != rec.active):
            return False
        meta = layer_cetpick_meta(layer)
        cls = meta.get("class") or meta.get("label_class")
        return cls is None or cls == rec.active or len(self.classes) == 1

    def default_points_layer(self, candidates, rec: TomogramRecord, fallback: bool):
        """Of these points layers, this tomogram's own for its active class; else (``fallback``)
        one of no other tomogram or class."""
        fitting = [layer for layer in candidates if self.fits(layer, rec)]
        mine = [layer for layer in fitting if self.made_for(layer, rec.layer)]
        if mine:
            return mine[0]
        if fallback:
            free = [layer for layer in fitting if not self.belongs_elsewhere(layer, rec)]
            return free[0] if free else None
        return None

    def name_default_class(self, rec: TomogramRecord) -> None:
        """The unnamed class takes the name of the labels it adopted (the sample's: ribosome)."""
        from napari_cetpick.errors import CetpickError

        cls = layer_cetpick_meta(rec.labels).get("label_class") if rec.labels is not None else None
        if cls and self.class_names == [DEFAULT_CLASS_NAME] and cls != DEFAULT_CLASS_NAME:
            with contextlib.suppress(CetpickError):  # a name that cannot name a class: ours stays
                self.rename_class(DEFAULT_CLASS_NAME, cls)

    # ------------------------------------------------------------------ model, units
    def set_checkpoint(self, ckpt, path=None) -> None:
        """Make ``ckpt`` the current model; the one it replaces stays as :attr:`previous_checkpoint`."""
        if ckpt is self.checkpoint:
            return
        if path is not None:
            self._paths[id(ckpt)] = str(path)
        if self.checkpoint is not None and ckpt is not None:
            self.previous_checkpoint = self.checkpoint
        self.checkpoint = ckpt
        self.model_path = self._paths.get(id(ckpt))
        self.checkpoint_changed.emit(ckpt)

    def note_model_path(self, ckpt, path) -> None:
        """The file a model was saved to (kept in the session file)."""
        self._paths[id(ckpt)] = str(path)
        if ckpt is self.checkpoint:
            self.model_path = str(path)

    def undo_model(self) -> bool:
        """Back to the model the current one replaced (and the current one becomes the previous)."""
        if self.previous_checkpoint is None:
            return False
        self.checkpoint, self.previous_checkpoint = self.previous_checkpoint, self.checkpoint
        self.model_path = self._paths.get(id(self.checkpoint))
        self.checkpoint_changed.emit(self.checkpoint)
        return True

    def from_other_model(self, rec: TomogramRecord) -> bool:
        """True when the record's detection (of its active class) came from another model than the current one."""
        return rec.result is not None and rec.track().model is not self.checkpoint

    # ------------------------------------------------------------------ classes
    def particle_class(self, name: str | None = None) -> ParticleClass:
        """A class by name (the active one by default)."""
        name = self.active_class if name is None else name
        for c in self.classes:
            if c.name == name:
                return c
        raise KeyError(name)

    @property
    def class_names(self) -> list[str]:
        return [c.name for c in self.classes]

    def add_class(self, name: str, diameter: float | None = None, unit: str | None = None,
                  colour: str | None = None, activate: bool = True) -> ParticleClass:
        """A new class (its size that of the active class unless given); CetpickError on a bad or
        taken name."""
        from napari_cetpick.config import check_class_name

        name = check_class_name(str(name).strip())
        self._check_new_name(name)
        base = self.particle_class()
        new = ParticleClass(name, float(base.diameter if diameter is None else diameter), unit or base.unit,
                            colour or class_colour(len(self.classes)))
        self.classes.append(new)
        self.classes_changed.emit()
        if activate:
            self.set_class(name)
        return new

    def rename_class(self, old: str, new: str) -> None:
        """Rename a class everywhere (records, layers' metadata)."""
        from napari_cetpick.config import check_class_name

        new = check_class_name(str(new).strip())
        if new == old:
            return
        self._check_new_name(new, old)
        self.particle_class(old).name = new
        for rec in self.records.values():
            if old in rec.per_class:
                rec.per_class[new] = rec.per_class.pop(old)
            if rec.active == old:
                rec.active = new
        if self.active_class == old:
            self.active_class = new
        self.classes_changed.emit()

    def _check_new_name(self, name: str, renaming: str | None = None) -> None:
        """Refuse a name taken by another class, also in another case (files would clash on
        case-insensitive disks)."""
        from napari_cetpick.errors import CetpickError

        taken = next((c for c in self.class_names if c.lower() == name.lower() and c != renaming), None)
        if taken is not None:
            raise CetpickError(f"There is a class {taken!r} already" +
                               (f" ({name!r} differs only in case)." if taken != name else "."))

    def set_class(self, name: str) -> None:
        """Make ``name`` the active class: every record's class-level attributes follow."""
        self.particle_class(name)  # KeyError when unknown
        if name == self.active_class:
            return
        self.active_class = name
        for rec in self.records.values():
            rec.active = name
        self.class_changed.emit(name)
        self.diameter_changed.emit()
        self.current_changed.emit(self.current)

    def take_model_classes(self, ckpt) -> None:
        """The classes take a loaded model's sizes; classes the panel lacks are added (a model of
        one class sizes the class of its name, else the active one)."""
        for name in ckpt.class_names:
            view = ckpt.for_class(name) if ckpt.n_classes > 1 else ckpt
            target = name if (name in self.class_names or ckpt.n_classes > 1) else self.active_class
            if target not in self.class_names:
                self.add_class(target, activate=False, colour=ckpt.classes[ckpt.class_index(name)].colour)
            if self.particle_class(target).unit == "Å" and view.diameter_a:
                self.set_diameter(round(view.diameter_a, 2), "Å", target)
            else:
                self.set_diameter(round(view.diameter_vox, 2), "voxels", target)

    def classes_with_labels(self, records, what: str = "labels") -> list[str]:
        """The classes (in the panel's order) with at least one label (or ``what``: negative) in these records."""
        def has(track) -> bool:
            layer = getattr(track, what)
            return layer is not None and self.live(layer) and len(layer.data) > 0

        return [c.name for c in self.classes if any(has(r.track(c.name)) for r in records)]

    @property
    def diameter(self) -> float:
        """The active class's diameter, in :attr:`diameter_unit`."""
        return self.particle_class().diameter

    @property
    def diameter_unit(self) -> str:
        return self.particle_class().unit

    def set_diameter(self, value: float, unit: str, name: str | None = None) -> None:
        c = self.particle_class(name)
        if (float(value), unit) != (c.diameter, c.unit):
            c.diameter, c.unit = float(value), unit
            self.diameter_changed.emit()

    def check_diameter(self, record: TomogramRecord | None = None, name: str | None = None) -> str | None:
        """Why a class's particle diameter cannot be trained with (None when it can)."""
        c = self.particle_class(name)
        of = f" of {c.name}" if len(self.classes) > 1 else ""
        if float(c.diameter) <= 0:
            return f"Set the particle diameter{of} (it is 0): the particle's size in Å or voxels."
        d = self.diameter_vox(record, c.name)
        if d is None:
            return ("The particle diameter is in Å but the tomogram's voxel size is unknown: set the voxel size, "
                    "or give the diameter in voxels.")
        if d < MIN_DIAMETER_VOX:
            return (f"A particle diameter{of} of {d:.2g} voxels is too small to detect (at least "
                    f"{MIN_DIAMETER_VOX:g}): check the diameter and its unit, and the voxel size.")
        return None

    def diameter_vox(self, record: TomogramRecord | None = None, name: str | None = None) -> float | None:
        """A class's (the active one's) particle diameter in voxels of a tomogram (the current one)."""
        c = self.particle_class(name)
        value = float(c.diameter)
        if value <= 0:
            return None
        if c.unit == "voxels":
            return value
        rec = record or self.current
        vs = None if rec is None else rec.voxel_size_a
        return value / vs if vs else None

    def pick_size(self, record: TomogramRecord) -> float:
        """Point size of picks and negatives in a tomogram: the particle diameter in its voxels."""
        ckpt, vs = self.checkpoint, record.voxel_size_a
        if record.result is not None:
            ratio = ckpt.voxel_size_a / vs if (ckpt is not None and ckpt.voxel_size_a and vs) else 1.0
            return float(record.result.diameter_vox * ratio)
        return float(self.diameter_vox(record, record.active) or 10.0)

    def named_class(self, name: str | None = None) -> str | None:
        """A class's name for layer names and files: None while the panel has one class."""
        return (name or self.active_class) if len(self.classes) > 1 else None

    def set_voxel_size(self, record: TomogramRecord, value: float | None) -> None:
        """Store a corrected voxel size where exports and the writer look for it."""
        record.layer.metadata.setdefault(META_KEY, {})["voxel_size_a"] = value
        for layer in (record.picks, record.labels, record.negatives):
            if layer is not None and META_KEY in layer.metadata:
                layer.metadata[META_KEY]["voxel_size_a"] = value
        self.diameter_changed.emit()

    def keep_mask(self, record: TomogramRecord):
        """The ignore-region mask of a tomogram (1 = keep), or None when there is none."""
        return None if self.mask_source is None else self.mask_source(record)

    # ------------------------------------------------------------------ the session file
    def snapshot(self, rec: TomogramRecord) -> SessionData:
        """What this tomogram's session file holds now (every class)."""
        meta = image_layer_meta(rec.layer)
        ignore = []
        if rec.ignore is not None and rec.ignore.__class__.__name__ == "Shapes" and self.live(rec.ignore):
            ignore = [{"type": str(t), "vertices": np.round(np.asarray(v, float), 4).tolist()}
                      for t, v in zip(rec.ignore.shape_type, rec.ignore.data)]
        classes = []
        for c in self.classes:
            t = rec.track(c.name)
            res = t.result
            pts = {k: (points_in_image_frame(getattr(t, k), rec.layer) if getattr(t, k) is not None
                       and self.live(getattr(t, k)) else np.zeros((0, 3))) for k in ("labels", "negatives")}
            classes.append(ClassSession(
                name=c.name, diameter=c.diameter, unit=c.unit, colour=c.colour, labels=pts["labels"],
                negatives=pts["negatives"], kept=t.edits.kept, kept_scores=t.edits.kept_scores,
                removed=t.edits.removed,
                threshold=(float(res.threshold) if res is not None and "threshold" in t.chosen
                           else t.restored.get("threshold")),
                min_distance_vox=(float(res.min_distance_vox) if res is not None and "min_distance" in t.chosen
                                  else t.restored.get("min_distance_vox"))))
        return SessionData(tomogram={"name": rec.name, "path": meta.get("path"), "shape": list(rec.shape)},
                           classes=classes, ignore=ignore, ignore_z_range=tuple(rec.ignore_z_range) if ignore else (0, 0),
                           model_path=self.model_path)
