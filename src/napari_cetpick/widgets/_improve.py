"""Improve: the correction round — continue from the current model with the labels and
negatives, then detect again in the current tomogram at the threshold the user chose."""
from __future__ import annotations

from functools import partial

from magicgui.widgets import Container, ProgressBar, PushButton
from napari.utils.notifications import show_error, show_info

from napari_cetpick.errors import CetpickError
from napari_cetpick.widgets._common import fmt_duration, plural, row, status_label
from napari_cetpick.widgets._runner import WorkerRunner
from napari_cetpick._napari.session import PanelState
from napari_cetpick.widgets._workers import ImproveStep, improve_job

IDLE_TEXT = ("Improve fine-tunes the model on your labels and negatives, then detects again (at your "
             "threshold, if you set one); the time left shows once it runs.")


class ImproveSection(Container):
    """One button for the correction round, with progress and Cancel."""

    def __init__(self, state: PanelState, runner: WorkerRunner, detect, device):
        super().__init__(labels=False)
        self._state, self._runner = state, runner
        self._detect = detect              # callable(records, kind) -> bool
        self._device = device              # callable: the chosen device
        self._records = []
        self._others = []  # the other tomograms detected again after the round
        self._improve_button = PushButton(
            text="Improve", tooltip="Continue training the current model with the labels and negatives of every open "
                                    "tomogram (a short round), then detect again in this tomogram and in the others "
                                    "the old model had detected in, keeping your thresholds. It learns "
                                    "from accepted and rejected picks; in noisy data, particles the picks missed "
                                    "teach a model when you click them and Train anew (docs/tutorial.md, Improve).")
        self._improve_cancel_button = PushButton(
            text="Cancel", tooltip="Stop the round; the model you had is kept.")
        self._improve_progress = ProgressBar(min=0, max=1, value=0, tooltip="Steps of the correction round.")
        self._improve_status_label = status_label(IDLE_TEXT, "What Improve is doing.")
        self.extend([row(self._improve_button, self._improve_cancel_button), self._improve_progress,
                     row(self._improve_status_label)])
        self._improve_button.changed.connect(self._on_improve_clicked)
        self._improve_cancel_button.changed.connect(self._on_cancel_clicked)
        runner.busy_changed.connect(self._on_busy_changed)
        self._on_busy_changed(None)

    def _on_busy_changed(self, kind=None) -> None:
        self._improve_button.enabled = kind is None
        self._improve_cancel_button.enabled = kind in ("improve", "improve-detect")

    def _on_improve_clicked(self, *_) -> None:
        self.improve()

    def improve(self) -> bool:
        """Start the correction round; False when the inputs are unusable (the reason is shown)."""
        from napari_cetpick.widgets._inputs import gather_training_inputs

        try:
            if self._state.checkpoint is None:
                raise CetpickError("No model to improve: Train (or load a model) and Detect first.")
            # every open tomogram's labels and decisions: a round on the selected one alone would
            # forget the others' (and calibrate the model's default on a handful of clicks)
            inputs = gather_training_inputs(self._state, True, model=self._state.checkpoint)
            recs, volumes, labels, negatives, masks, vs = (inputs.records, inputs.volumes, inputs.labels,
                                                           inputs.negatives, inputs.masks, inputs.voxel_size_a)
        except CetpickError as err:
            show_error(str(err))
            return False
        self._records = recs
        n_neg = 0 if negatives is None else sum(
            len(v) for n in negatives for v in (n.values() if isinstance(n, dict) else [n]))
        self._improve_progress.value = 0
        where = f" in {plural(len(recs), 'tomogram')}" if len(recs) > 1 else ""
        self._improve_status_label.value = (f"Improving on {plural(sum(inputs.count(n) for n in inputs.names), 'label')} and "
                                            f"{plural(n_neg, 'negative')}{where}…")
        current = self._state.current
        # the detection that follows runs in the current tomogram: the model keeps its pass there
        nxt = next((v for r, v in zip(recs, volumes) if current is not None and r is current), None)
        job = partial(improve_job, self._state.checkpoint, volumes, labels, negatives, masks, vs, str(self._device()),
                      detect_next=nxt)
        self._runner.start("improve", job, yielded=self._on_improve_yielded, returned=self._on_improve_returned,
                           aborted=self._on_improve_aborted, on_error=self._on_error,
                           uses=[r.layer.unique_id for r in recs])
        return True

    def _on_improve_yielded(self, record) -> None:
        if not isinstance(record, ImproveStep):
            return
        p = record.progress
        self._improve_progress.max = max(int(p.total), 1)
        self._improve_progress.value = min(int(p.step), self._improve_progress.max)
        self._improve_status_label.value = (f"Improving: step {p.step}/{p.total} · loss {p.loss:.3g} · "
                                            f"{fmt_duration(p.eta_s)} left, then detection")

    def _on_improve_returned(self, ckpt) -> None:
        if ckpt is None:
            self._on_improve_aborted()
            return
        previous = self._state.checkpoint
        self._state.set_checkpoint(ckpt)
        rec = self._state.current
        # the selected tomogram first (its network pass is kept), then every other one whose picks
        # came from the model this round continued: exports then come from one model
        self._others = [r for r in self._state.records.values()
                        if r is not rec and self._state.live(r.layer)
                        and any(t.result is not None and t.model is previous for t in r.per_class.values())]
        self._improve_status_label.value = "Model improved; detecting again…"
        if rec is None or not self._detect([rec, *self._others], "improve-detect"):
            ckpt.take_passes()  # the network pass kept for that detection: not held any longer
            self._improve_status_label.value = "Model improved; press Detect."
            return
        self._runner.busy_changed.connect(self._on_detect_finished)

    def _on_detect_finished(self, kind=None) -> None:
        if kind is not None:
            return
        self._runner.busy_changed.disconnect(self._on_detect_finished)
        rec = self._state.current
        if self._runner.user_cancelled:
            self._improve_status_label.value = "Model improved; the new detection was cancelled: press Detect."
        elif rec is not None and rec.result is not None:
            n = rec.count("picks")
            whose = ("your threshold (the same margin over the new model's default)" if "threshold" in rec.chosen
                     else "the new model's threshold")
            others = [r.name for r in self._others if r.result is not None and not self._state.from_other_model(r)]
            also = f" Detected again in {', '.join(others)} too." if others else ""
            self._improve_status_label.value = (f"Improved: {plural(n, 'pick')} at {whose} "
                                                f"{rec.result.threshold:.3f}.{also} Review again, or Improve "
                                                "once more.")
            show_info(f"Improved model: {plural(n, 'pick')} in {rec.name}.{also}")

    def _on_improve_aborted(self) -> None:
        done = int(self._improve_progress.value)
        self._improve_status_label.value = (f"Improve cancelled after {done} of {self._improve_progress.max} "
                                            f"steps; the model you had is kept.")
        show_info(self._improve_status_label.value)

    def _on_cancel_clicked(self, *_) -> None:
        if self._runner.kind in ("improve", "improve-detect") and self._runner.cancel():
            self._improve_status_label.value = "Cancelling…"

    def _on_error(self, kind: str, message: str) -> None:
        self._improve_status_label.value = message
