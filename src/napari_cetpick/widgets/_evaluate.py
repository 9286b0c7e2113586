"""Section 7 · Evaluate: precision, recall and F1 of the picks inside a fully labelled box."""
from __future__ import annotations

from magicgui.widgets import ComboBox, Container, FloatSpinBox, PushButton, SpinBox

from napari_cetpick._napari.layers import META_KEY, layer_cetpick_meta
from napari_cetpick._napari.masks import box_around_points, box_from_shapes, describe_box
from napari_cetpick.errors import CetpickError
from napari_cetpick.widgets import _layers as L
from napari_cetpick.widgets._common import heading, narrow, row, status_label
from napari_cetpick._napari.session import PanelState


class EvaluateSection(Container):
    """Score the current picks against a truth layer, counting only inside a box."""

    def __init__(self, state: PanelState):
        super().__init__(labels=True)
        self._state = state
        self._updating = False
        self.last_evaluation = None  # EvalResult of the current picks, when scored
        self.last_box = None
        self._truth_combo = ComboBox(
            label="Ground truth", choices=self._truth_choices, nullable=True,
            tooltip="Points layer with the true particle centres (the sample has 'truth: <class>'); for your own "
                    "data, every particle clicked inside a box.")
        self._match_radius_spin = FloatSpinBox(
            label="Match radius (voxels)", min=0.0, max=10000.0, step=0.5, value=0.0,
            tooltip="A pick finds a true particle closer than this. 0 = half the particle diameter.")
        self._box_combo = ComboBox(
            label="Box", choices=self._box_choices, nullable=True,
            tooltip="Count only picks and true particles inside the rectangle(s) of this Shapes layer, over the z "
                    "range below. None = the truth layer's extent.")
        self._new_box_button = PushButton(text="Draw box", tooltip="Add a Shapes layer in rectangle mode to draw "
                                                                  "the box in which every particle is labelled.")
        self._box_z_from_spin = SpinBox(min=0, max=100_000, value=0, tooltip="First slice of the box.")
        self._box_z_to_spin = SpinBox(min=0, max=100_000, value=0,
                                      tooltip="Slice after the box's last one; 0 = to the last slice.")
        self._eval_label = status_label("", "Precision, recall and F1 of the current picks, and the box used.")
        narrow(self._truth_combo, self._box_combo)
        self.extend([
            heading("7 · Evaluate"), self._truth_combo, self._match_radius_spin,
            row(self._box_combo, self._new_box_button, label="Box"),
            row(self._box_z_from_spin, self._box_z_to_spin, label="Box over z"), row(self._eval_label),
        ])
        for w in (self._truth_combo, self._match_radius_spin, self._box_combo, self._box_z_from_spin,
                  self._box_z_to_spin):
            w.changed.connect(self._on_settings_changed)
        self._new_box_button.changed.connect(self._on_new_box_clicked)
        state.picks_changed.connect(self._on_picks_changed)
        state.current_changed.connect(self.reset_choices)
        self._watched_box = None

    # ------------------------------------------------------------------ choices
    def _layers(self):
        return [L.unwrap(layer) for layer in self._state.viewer.layers]

    def _truth_choices(self, widget=None) -> list:
        return [(lay.name, lay) for lay in self._layers()
                if L.is_points_layer(lay) and L.layer_role(lay) not in ("picks", "labels", "negatives", "cursor",
                                                                      "candidates")]

    def _box_choices(self, widget=None) -> list:
        return [(lay.name, lay) for lay in self._layers()
                if lay.__class__.__name__ == "Shapes" and L.layer_role(lay) != "ignore"]

    def _default_truth(self):
        """The sample's ground truth for the labelled class, when present."""
        rec = self._state.current
        labels = None if rec is None else rec.labels
        wanted = layer_cetpick_meta(labels).get("label_class") if labels is not None else None
        wanted = rec.active if rec is not None and len(self._state.classes) > 1 else wanted
        candidates = [lay for _, lay in self._truth_choices()
                      if (layer_cetpick_meta(lay).get("truth_class") or layer_cetpick_meta(lay).get("kind") == "truth")
                      and not (rec is not None and self._state.belongs_elsewhere(lay, rec))]
        for lay in candidates:
            if wanted and layer_cetpick_meta(lay).get("truth_class") == wanted:
                return lay
        return candidates[0] if candidates else None

    def reset_choices(self, *_) -> None:
        """Refresh the layer lists and show the selected tomogram's own truth, box and slices."""
        rec = self._state.current
        self._updating = True
        try:
            super().reset_choices()
            if rec is not None:
                if rec.truth is None or not self._state.live(rec.truth):
                    rec.truth = self._default_truth()
                if rec.box is not None and not self._state.live(rec.box):
                    rec.box = None
                for combo, layer in ((self._truth_combo, rec.truth), (self._box_combo, rec.box)):
                    combo.value = layer if any(c is layer for c in combo.choices) else None
                self._box_z_from_spin.value, self._box_z_to_spin.value = rec.box_z_range
        finally:
            self._updating = False
        self._watch_box(self._box_combo.value)
        self.update()

    def _watch_box(self, layer) -> None:
        layer = L.unwrap(layer)
        if layer is self._watched_box:
            return
        if self._watched_box is not None:
            try:
                self._watched_box.events.data.disconnect(self._on_settings_changed)
            except (TypeError, ValueError, RuntimeError):
                pass
        self._watched_box = layer
        if layer is not None:
            layer.events.data.connect(self._on_settings_changed)

    def _on_new_box_clicked(self, *_) -> None:
        rec = self._state.current
        if rec is None:
            return
        layer = L.unwrap(self._state.viewer.add_shapes(
            ndim=3, name=f"{rec.name} evaluation box", scale=rec.layer.scale, translate=rec.layer.translate,
            edge_color="white", face_color="transparent", edge_width=2,
            metadata={META_KEY: {L.ROLE_KEY: "box", "source": rec.name}}))
        layer.mode = "add_rectangle"
        rec.box = layer
        self.reset_choices()

    def _on_settings_changed(self, *_) -> None:
        rec = self._state.current
        if not self._updating:
            if rec is not None:
                rec.truth, rec.box = L.unwrap(self._truth_combo.value), L.unwrap(self._box_combo.value)
                rec.box_z_range = (int(self._box_z_from_spin.value), int(self._box_z_to_spin.value))
            self._watch_box(self._box_combo.value)
            self.update()

    def _on_picks_changed(self, rec=None) -> None:
        if rec is None or rec is self._state.current:
            self.update()

    # ------------------------------------------------------------------ scoring
    def box(self, rec):
        """The box used for scoring and the words describing it."""
        shapes = self._box_combo.value
        if shapes is not None:
            z = (int(self._box_z_from_spin.value), int(self._box_z_to_spin.value))
            box = box_from_shapes(shapes, rec.layer, z)
            if box is not None:
                return box, f"in the box of '{shapes.name}' ({describe_box(box)})"
        truth = self._truth_combo.value
        box = box_around_points(L.points_in_image_frame(truth, rec.layer), rec.shape)
        return box, f"in the truth's extent ({describe_box(box)})"

    def update(self, *_) -> None:
        """Score the current picks (called whenever picks, truth or the box change)."""
        from napari_cetpick.evaluate import evaluate

        rec, truth = self._state.current, self._truth_combo.value
        self.last_evaluation = None
        if truth is None:
            self._eval_label.value = "Choose a ground-truth Points layer to score the picks."
            return
        if rec is None or rec.picks is None or not self._state.live(rec.picks):
            self._eval_label.value = "Detect to score the picks against the ground truth."
            return
        radius = float(self._match_radius_spin.value) or 0.5 * self._state.pick_size(rec)
        pred = L.points_in_image_frame(rec.picks, rec.layer)
        feats = rec.picks.features
        scores = feats["score"].to_numpy(float) if "score" in feats.columns else None
        true = L.points_in_image_frame(truth, rec.layer)
        try:
            box, where = self.box(rec)
            res = evaluate(pred, scores, true, radius, box=box)
        except CetpickError as err:
            self._eval_label.value = str(err)
            return
        self.last_evaluation, self.last_box = res, box
        self._eval_label.value = (f"precision {res.precision:.2f} · recall {res.recall:.2f} · "
                                  f"<b>F1 {res.f1:.2f}</b><br>{res.n_matched} of {res.n_true} true particles "
                                  f"found by {res.n_pred} picks {where}, match radius {radius:.1f} voxels")
