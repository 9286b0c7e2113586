"""Section 3 · Detect: run the model over tomograms, then threshold the cached candidates live."""
from __future__ import annotations

import math
from functools import partial

import numpy as np

from magicgui.widgets import CheckBox, ComboBox, Container, FloatSlider, FloatSpinBox, ProgressBar, PushButton
from napari.utils.notifications import show_error

from napari_cetpick.config import DetectConfig
from napari_cetpick.errors import CetpickError
from napari_cetpick.widgets import _layers as L
from napari_cetpick.widgets._common import fmt_duration, heading, holder, plural, row, status_label
from napari_cetpick.widgets._plots import ScoreHistogram
from napari_cetpick.widgets._runner import WorkerRunner
from napari_cetpick._napari.session import PanelState, TomogramRecord
from napari_cetpick.widgets._tracking import LayerTracker
from napari_cetpick.widgets._workers import DetectDone, DetectFailed, DetectItem, DetectStep, detect_job


#: The panel's choice of views (:data:`napari_cetpick.config.VIEWS`), as (label, views).
VIEW_CHOICES = [("4 views: mirrored, turned", 4), ("2 views: mirrored", 2), ("1 view: fastest", 1)]


class DetectSection(Container):
    """Detect in the selected (or every) tomogram; threshold and distance act on the cache."""

    def __init__(self, state: PanelState, runner: WorkerRunner, tracker: LayerTracker, device):
        super().__init__(labels=True)
        self._state, self._runner, self._tracker = state, runner, tracker
        self._device = device  # callable: the device chosen in the train section
        self._updating = False
        self._keep_threshold: dict = {}  # record key -> threshold to restore after a re-detection
        self._job_model = None  # the model of the detection running (or last run)
        self._detect_all_check = CheckBox(
            text="All open tomograms", value=False, tooltip="Detect in every open tomogram instead of the selected one.")
        self._views_choice = ComboBox(
            label="Views", value=DetectConfig().views, choices=VIEW_CHOICES,
            tooltip="How many views of each tile the model scores, averaged: 4 (mirrored through the centre and "
                    "turned a quarter in xy) gave higher AP on every class measured and best F1 on most; 2 "
                    "(mirrored) takes about half the time; 1 is one pass, the fastest.")
        self._profile_check = CheckBox(
            text="Profile check", value=DetectConfig().profile_weight > 0,
            tooltip="Lower the score of candidates whose radial profile (mean density in thin shells around "
                    "the centre, in any orientation) is less like your labels' than like this tomogram's other "
                    "candidates, and raise those more like your labels: fewer picks on other complexes, gold "
                    "and membranes; given 5 negatives or more, also lower candidates more like them than "
                    "your labels (the look-alikes training found among its best picks in your labelled region, "
                    "your rejections and negatives). Each pick gets its 'profile_excess' (above 0: lowered, "
                    "below 0: raised). Models trained on fewer than 5 labels of the class skip it (the status "
                    "says so). Applies at the next Detect.")
        self._detect_button = PushButton(
            text="Detect", tooltip="Run the model over the whole tomogram (tiled, in the background).")
        self._detect_cancel_button = PushButton(text="Cancel", tooltip="Stop the detection.")
        self._detect_progress = ProgressBar(min=0, max=1, value=0, tooltip="Tiles done.")
        self._detect_status_label = status_label("", "Detection progress.")
        self._threshold_slider = FloatSlider(
            label="Score threshold", min=0.0, max=1.0, step=0.001, value=0.5,
            tooltip="Keep picks scoring at least this much (selected tomogram). Updates the picks instantly "
                    "from the cached heatmap; picks you accepted, rejected, added or deleted stay as you left them.")
        self._min_distance_spin = FloatSpinBox(
            label="Min. distance (voxels)", min=0.0, max=10000.0, step=0.5, value=0.0,
            tooltip="No two picks closer than this (tomogram voxels); defaults to half the particle "
                    "diameter. Updates the picks instantly.")
        readout = getattr(getattr(self._threshold_slider, "_widget", None), "_readout_widget", None)
        if readout is not None and hasattr(readout, "setDecimals"):
            readout.setDecimals(3)  # barely trained models score in a narrow band
        self._pick_count_label = status_label("no picks", "Number of picks in the selected tomogram.")
        self._histogram = ScoreHistogram()
        self.extend([
            heading("3 · Detect"), row(self._detect_all_check, self._views_choice), row(self._profile_check),
            row(self._detect_button, self._detect_cancel_button),
            self._detect_progress, row(self._detect_status_label), self._threshold_slider,
            self._min_distance_spin, row(self._pick_count_label), holder(self._histogram),
        ])
        self._detect_button.changed.connect(self._on_detect_clicked)
        self._detect_cancel_button.changed.connect(self._on_cancel_clicked)
        self._threshold_slider.changed.connect(self._on_threshold_changed)
        self._min_distance_spin.changed.connect(self._on_min_distance_changed)
        self._histogram.threshold_clicked.connect(self._on_histogram_clicked)
        runner.busy_changed.connect(self._on_busy_changed)
        state.current_changed.connect(self._show_current)
        state.detection_changed.connect(self._on_detection_changed)
        state.picks_changed.connect(self._on_picks_changed)
        state.checkpoint_changed.connect(lambda *_: self._show_status(self._state.current))
        self._on_busy_changed(None)

    # ------------------------------------------------------------------ running
    def _on_busy_changed(self, kind=None) -> None:
        self._detect_button.enabled = kind is None
        self._detect_cancel_button.enabled = kind in ("detect", "improve-detect")

    def _on_detect_clicked(self, *_) -> None:
        try:
            if self._state.checkpoint is None:
                raise CetpickError("No model: train one (Train) or load one (Load model…) first.")
            if self._detect_all_check.value:
                recs = [self._state.record(layer) for layer in L.tomogram_layers(self._state.viewer)]
                if not recs:
                    raise CetpickError("No tomogram is open.")
            else:
                if self._state.current is None:
                    raise CetpickError("No tomogram: open one (File › Open) or the sample (File › Open Sample).")
                recs = [self._state.current]
        except CetpickError as err:
            show_error(str(err))
            return
        self.detect(recs)

    def detect(self, recs: list[TomogramRecord], kind: str = "detect") -> bool:
        """Detect in these tomograms in the background; False when the inputs are unusable.

        Where the user chose a threshold or minimum distance for a tomogram, the new picks
        keep it (a threshold as the same margin over a retrained model's default), so
        neither Detect nor Improve undoes a choice.
        """
        try:
            items = [DetectItem(r.layer.unique_id, r.name, r.layer.data, r.voxel_size_a, self._state.keep_mask(r))
                     for r in recs]
        except CetpickError as err:
            show_error(str(err))
            return False
        # a chosen threshold is kept as its margin from the old model's default: retraining
        # shifts every score, but "a little stricter than the model's default" carries over
        self._keep_threshold = {
            (r.layer.unique_id, name): (t.result.threshold if "threshold" in t.chosen else None,
                                        t.result.model_threshold,
                                        t.result.min_distance_vox if "min_distance" in t.chosen else None)
            for r in recs for name, t in r.per_class.items() if t.result is not None and t.chosen}
        self._detect_progress.value = 0
        self._detect_status_label.value = "Starting…"
        config = DetectConfig(views=int(self._views_choice.value),
                              profile_weight=DetectConfig().profile_weight if self._profile_check.value else 0.0)
        self._job_model = self._state.checkpoint  # each detection remembers the model it came from
        job = partial(detect_job, self._state.checkpoint, items, config, str(self._device()))
        self._runner.start(kind, job, yielded=self._on_detect_yielded, returned=self._on_detect_returned,
                           on_error=self._on_error, uses=[r.layer.unique_id for r in recs])
        return True

    def _on_cancel_clicked(self, *_) -> None:
        if self._runner.kind in ("detect", "improve-detect") and self._runner.cancel():
            self._detect_status_label.value = "Cancelling…"

    def _on_error(self, kind: str, message: str) -> None:
        self._detect_status_label.value = message

    def _on_detect_yielded(self, record) -> None:
        if isinstance(record, DetectStep):
            p = record.progress
            self._detect_progress.max = max(p.n_tiles, 1)
            self._detect_progress.value = p.tile
            prefix = f"{record.name} ({record.index + 1}/{record.count}): " if record.count > 1 else ""
            self._detect_status_label.value = (f"{prefix}tile {p.tile}/{p.n_tiles} · "
                                               f"{fmt_duration(p.eta_s)} left · {p.device.split(' —')[0]}")
        elif isinstance(record, DetectFailed):
            show_error(f"{record.name}: {record.message}")
        elif isinstance(record, DetectDone):
            rec = next((r for r in self._state.records.values() if r.layer.unique_id == record.key), None)
            if rec is not None and self._state.live(rec.layer):  # the layer may have been closed meanwhile
                self._add_detection(rec, record.result)

    def _on_detect_returned(self, n_ok: int) -> None:
        rec = self._state.current
        if rec is not None and rec.result is not None:
            self._show_status(rec, f"Done in {fmt_duration(rec.result.elapsed_s)} · ")
        elif not n_ok:
            self._detect_status_label.value = "No tomogram could be processed."

    def _show_status(self, rec: TomogramRecord | None, prefix: str = "") -> None:
        """The status of the selected tomogram's (and class's) detection: how its threshold was
        chosen and what the profile check did; the tooltip says it in full."""
        if rec is None:
            text = detail = ""
        else:
            cls = self._state.named_class(rec.active)
            where = f"{rec.name}{f' · {cls}' if cls else ''}"
            if rec.result is None:
                text = detail = (f"{where}: no detection yet; press Detect." if self._state.checkpoint is not None
                                 else "")
            else:
                res = rec.result
                head = (f"{prefix}{where}: {len(res.cand_scores)} candidate peaks cached; threshold "
                        f"{res.model_threshold:.3f} from {res.threshold_source}")
                short, full = self._profile_note(res)
                old = (" From another model than the current one: press Detect to renew them."
                       if self._state.from_other_model(rec) else "")
                # the status says what changed the picks; its tooltip says how
                text, detail = head + short + old, head + full + old
        self._detect_status_label.value = text
        self._detect_status_label.tooltip = detail or "Detection progress."

    def _profile_note(self, result) -> tuple[str, str]:
        """The end of the status, short and in full: what the profile check did to the picks
        (or why it did not run)."""
        from napari_cetpick.descriptors import gain_differs
        from napari_cetpick.detect import PROFILE_SKIPPED

        if result.cand_profile_excess is None:  # off, or asked for and skipped (detection warned)
            skipped = PROFILE_SKIPPED.format(name=result.class_name) in result.warnings
            note = (f"; no profile check: the model holds no profile of the {result.class_name} labels (it needs "
                    f"5 labels or more)." if skipped else ".")
            return note, note
        charge = np.nan_to_num(result.cand_profile_excess)
        lowered, raised = int(np.sum(charge > 0)), int(np.sum(charge < 0))
        moved, added = result.profile_moved or 0, result.profile_raised or 0
        short = f"; the profile check dropped {moved} picks and added {added}."
        unlike = "unlike your labels"
        if result.profile_negatives:
            unlike += f" or like your {result.profile_negatives} rejections and negatives"
        if result.profile_mined:
            unlike += f" or like the {result.profile_mined} look-alikes training found in your labelled region"
        up = (f"; it raised {raised} more like your labels than the tomogram's other candidates, "
              f"{added} of them from below that threshold to above it") if raised else ""
        gain = result.profile_gain
        contrast = f" (read at the class's contrast here, {gain:.2f} × your labels')" if gain_differs(gain) else ""
        return short, (f"; the profile check lowered {lowered} candidates {unlike}{contrast}, {moved} of "
                       f"them from above that threshold to below it{up}.")

    def _add_detection(self, rec: TomogramRecord, result) -> None:
        """Show a detection: each class's heatmap and picks (a model of one class: the panel's
        class of that name, else the selected class)."""
        from napari_cetpick.detect import DetectResult

        if isinstance(result, DetectResult):
            name = result.class_name if result.class_name in self._state.class_names else rec.active
            self._add_class_detection(rec.view(name) if name != rec.active else rec, result, None)
        else:
            if set(result.names) - set(self._state.class_names):
                self._state.take_model_classes(self._state.checkpoint)
            for name in result.names:
                self._add_class_detection(rec.view(name) if name != rec.active else rec, result[name], result)
        self._state.detection_changed.emit(rec)

    def _add_class_detection(self, rec: TomogramRecord, result, group) -> None:
        kept = self._keep_threshold.get((rec.layer.unique_id, rec.active))
        if kept is not None:
            result.reselect(threshold=carried_threshold(kept[0], kept[1], result.model_threshold),
                            min_distance_vox=kept[2])
        elif rec.result is None and rec.restored:  # the first detection after a restored session
            result.reselect(threshold=rec.restored.get("threshold"), min_distance_vox=rec.restored.get("min_distance_vox"))
            rec.chosen.update({"threshold"} if "threshold" in rec.restored else set())
            rec.chosen.update({"min_distance"} if "min_distance_vox" in rec.restored else set())
        rec.result = result
        rec.track().group = group
        rec.track().model = self._job_model
        rec.heatmap = L.show_heatmap(self._state.viewer, rec.layer, result, self._state.named_class(rec.active),
                                     layer=rec.heatmap if self._state.live(rec.heatmap) else None)
        self._tracker.reselect(rec)

    # ------------------------------------------------------------------ live selection
    def _on_detection_changed(self, rec: TomogramRecord) -> None:
        if rec is self._state.current:
            self._show_current(rec)

    def _show_current(self, rec=None) -> None:
        """Put the selected tomogram's detection into the threshold controls and plots."""
        rec = self._state.current
        self._updating = True
        try:
            detected = rec is not None and rec.result is not None
            # nothing to re-threshold before a detection: the controls would show another tomogram's values
            self._threshold_slider.enabled = self._min_distance_spin.enabled = detected
            if not detected:
                self._histogram.set_scores(None)
            else:
                self._threshold_slider.value = round(rec.result.threshold, 3)
                self._min_distance_spin.value = float(rec.result.min_distance_vox)
                self._histogram.set_scores(rec.result.cand_scores)
        finally:
            self._updating = False
        if self._runner.kind not in ("detect", "improve-detect"):  # else the progress stays
            self._show_status(rec)
        self._update_pick_count()

    def _on_threshold_changed(self, value: float) -> None:
        rec = self._state.current
        if not self._updating and rec is not None:
            rec.chosen.add("threshold")
            # the slider moves in steps of 0.001 but reports its integer position scaled back
            # (0.100999 for 0.101): the user chose the step they see
            self._tracker.reselect(rec, threshold=round(float(value), 3))

    def _on_min_distance_changed(self, value: float) -> None:
        rec = self._state.current
        if not self._updating and rec is not None:
            rec.chosen.add("min_distance")
            self._tracker.reselect(rec, min_distance=float(value))

    def _on_histogram_clicked(self, value: float) -> None:
        self._threshold_slider.value = round(value, 3)

    def _on_picks_changed(self, rec=None) -> None:
        self._update_pick_count()  # the total over tomograms changes with any of them

    def _update_pick_count(self) -> None:
        rec = self._state.current
        if rec is None or rec.picks is None:
            self._pick_count_label.value = "no picks: press Detect"
            return
        n = rec.count("picks") if self._state.live(rec.picks) else 0
        with_picks = [r for r in self._state.records.values() if r.picks is not None and self._state.live(r.picks)]
        total = sum(r.count("picks") for r in with_picks)
        extra = f" ({total} in {len(with_picks)} tomograms)" if len(with_picks) > 1 else ""
        edits = (f" · {len(rec.edits.kept)} accepted or added, {len(rec.edits.removed)} rejected or deleted"
                 if len(rec.edits) else "")
        self._pick_count_label.value = f"{plural(n, 'pick')}{extra}{edits}"
        if rec.result is not None:
            self._histogram.set_threshold(rec.result.threshold, n)


def carried_threshold(chosen: float | None, old_default: float | None, new_default: float | None) -> float | None:
    """The threshold a user chose for one model, carried to a retrained one: the same margin
    logit(chosen) − logit(old default) above the new model's default (the chosen value itself
    where a default is unknown)."""
    if chosen is None or old_default is None or new_default is None:
        return chosen
    from napari_cetpick.utils import logit

    z = float(logit(new_default) + logit(chosen) - logit(old_default))
    return round(1.0 / (1.0 + math.exp(-z)), 6)
