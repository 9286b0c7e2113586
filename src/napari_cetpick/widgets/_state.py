"""The panel's shared state: what every section needs to know, and signals when it changes.

Sections never reach into each other's widgets; they read and write this state and listen
to its signals. Layers stored here are napari's own objects (unwrapped from the proxies a
plugin receives), so identity checks against ``event.source`` hold.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from psygnal import Signal

from napari_cetpick._napari.layers import META_KEY, layer_cetpick_meta, unwrap
from napari_cetpick.review import PickEdits

DIAMETER_UNITS = ("Å", "voxels")
DEFAULT_DIAMETER_A = 250.0  # a ribosome, the sample's labelled class


@dataclass(eq=False)
class TomogramRecord:
    """Everything the panel keeps for one open tomogram.

    Attributes
    ----------
    layer : napari Image layer
    labels, negatives : napari Points layers or None
        The layers holding this tomogram's particle clicks and "not a particle" clicks.
    result : DetectResult or None
        The last detection (heatmap and cached candidates for instant re-selection).
    heatmap, picks : napari layers or None
    edits : PickEdits
        Picks the user accepted, added, rejected or deleted (kept across re-selection).
    shown : (n, 3) array
        The picks the panel last wrote into ``picks`` (to tell hand edits apart).
    chosen : set
        ``"threshold"`` / ``"min_distance"`` once the user set them by hand: a new detection
        of this tomogram (after Improve) keeps them instead of the model's defaults.
    """

    layer: object
    labels: object = None
    negatives: object = None
    result: object = None
    heatmap: object = None
    picks: object = None
    edits: PickEdits = field(default_factory=PickEdits)
    shown: object = None
    chosen: set = field(default_factory=set)

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


class PanelState:
    """Current tomogram, its records, the model and the particle diameter, with signals.

    Parameters
    ----------
    viewer : napari.viewer.Viewer (or the proxy napari hands plugins)
    """

    current_changed = Signal(object)      # TomogramRecord or None
    checkpoint_changed = Signal(object)   # Checkpoint or None
    detection_changed = Signal(object)    # TomogramRecord: new result, heatmap or picks layer
    picks_changed = Signal(object)        # TomogramRecord: picks re-selected or edited
    points_changed = Signal(object)       # TomogramRecord: its labels or negatives changed
    layers_changed = Signal()             # layers were added, removed or renamed
    diameter_changed = Signal()
    mask_changed = Signal()               # the ignore regions changed

    def __init__(self, viewer):
        self.viewer = viewer
        self.records: dict = {}
        self.current: TomogramRecord | None = None
        self.checkpoint = None
        self.diameter = DEFAULT_DIAMETER_A
        self.diameter_unit = "Å"
        self.mask_source = None  # callable(record) -> keep mask or None; set by the mask section

    # ------------------------------------------------------------------ tomograms
    def record(self, layer, create: bool = True) -> TomogramRecord | None:
        """The record of a tomogram layer (made on first use when ``create``)."""
        if layer is None:
            return None
        layer = unwrap(layer)
        rec = self.records.get(layer.unique_id)
        if rec is None and create:
            rec = self.records[layer.unique_id] = TomogramRecord(layer)
        return rec

    def set_current(self, layer) -> None:
        rec = self.record(layer)
        if rec is not self.current:
            self.current = rec
            self.current_changed.emit(rec)

    def forget(self, layer) -> TomogramRecord | None:
        """Drop the record of a removed tomogram layer."""
        rec = self.records.pop(unwrap(layer).unique_id, None)
        if rec is not None and rec is self.current:
            self.current = None
            self.current_changed.emit(None)
        return rec

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

    # ------------------------------------------------------------------ model, units
    def set_checkpoint(self, ckpt) -> None:
        self.checkpoint = ckpt
        self.checkpoint_changed.emit(ckpt)

    def set_diameter(self, value: float, unit: str) -> None:
        if (value, unit) != (self.diameter, self.diameter_unit):
            self.diameter, self.diameter_unit = float(value), unit
            self.diameter_changed.emit()

    def diameter_vox(self, record: TomogramRecord | None = None) -> float | None:
        """Particle diameter in voxels of a tomogram (the current one by default)."""
        value = float(self.diameter)
        if value <= 0:
            return None
        if self.diameter_unit == "voxels":
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
        return float(self.diameter_vox(record) or 10.0)

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
