"""Section 2 · Train: settings, the plan (steps, τ) before Train, progress, model files."""
from __future__ import annotations

from pathlib import Path

from magicgui.widgets import CheckBox, ComboBox, Container, FloatSpinBox, ProgressBar, PushButton, SpinBox
from napari.utils.notifications import show_error, show_info, show_warning

from napari_cetpick.checkpoint import Checkpoint
from napari_cetpick.config import DEFAULT_MAX_STEPS, DEFAULT_MIN_EPOCHS, DEFAULT_STEPS, TrainConfig
from napari_cetpick.device import DEVICES
from napari_cetpick.errors import CetpickError
from napari_cetpick.widgets._advanced import AdvancedSettings
from napari_cetpick.widgets._common import fmt_duration, heading, holder, narrow, row, status_label
from napari_cetpick.widgets._inputs import class_config, gather_training_inputs, training_problem
from napari_cetpick.widgets._plots import LossCurve
from napari_cetpick.widgets._runner import WorkerRunner
from napari_cetpick._napari.session import PanelState
from napari_cetpick.widgets._workers import TrainJob, TrainStarted

_DEFAULTS = TrainConfig()
MODEL_SUFFIX = ".ckpt"  # as the command line writes; .pt files of earlier versions still load
MODEL_FILTER = "cetpick model (*.ckpt *.pt);;All files (*)"


class TrainSection(Container):
    """Train a detector on the labels (and negatives) in the background; save and load models."""

    def __init__(self, state: PanelState, runner: WorkerRunner, ask_path):
        super().__init__(labels=True)
        self._state, self._runner, self._ask_path = state, runner, ask_path
        self._job: TrainJob | None = None
        self._origin = (None, "")  # (id, file name) of a loaded model
        self._expected_particles_spin = SpinBox(
            label="Expected particles", min=0, max=10_000_000, value=0,
            tooltip="Roughly how many particles the tomogram holds; sets the share of particle voxels "
                    "(the class prior τ). 0 = estimate it from how densely you labelled.")
        self._tau_spin = FloatSpinBox(
            label="Particle share τ", min=0.0, max=0.5, step=0.0001, value=0.0,
            tooltip="Fraction of heatmap voxels that are particle: the class prior τ of the positive-unlabelled "
                    "loss (--tau). Overrides 'Expected particles'. 0 = automatic (the value used is shown below).")
        self._epochs_spin = SpinBox(
            label="Epochs", min=0, max=100_000, value=_DEFAULTS.num_epochs or 0,
            tooltip="Train this many epochs (--num_epochs; one epoch = one step per batch of labels). "
                    f"0 = the default schedule: {DEFAULT_STEPS} steps, or {DEFAULT_MIN_EPOCHS} epochs with many "
                    f"labels, up to {DEFAULT_MAX_STEPS} steps. The plan below says what will run.")
        self._max_steps_spin = SpinBox(
            label="Max steps", min=0, max=10_000_000, value=_DEFAULTS.max_steps or 0,
            tooltip="Optimiser steps (--max-steps): the whole schedule when Epochs is 0, else a cap on it "
                    "(0 = none).")
        self._lr_spin = FloatSpinBox(
            label="Learning rate", min=1e-6, max=1.0, step=1e-4, value=_DEFAULTS.lr, tooltip="Adam learning rate (--lr).")
        self._device_combo = ComboBox(
            label="Device", choices=DEVICES, value="auto",
            tooltip="auto = CUDA GPU, then Apple MPS, then CPU. Also used for detection and Improve.")
        self._all_tomograms_check = CheckBox(
            text="All tomograms with labels", value=False,
            tooltip="Use the labels and negatives of all open tomograms (same voxel size), not only the selected one.")
        self._tau_spin.native.setDecimals(5)  # τ is often a few 1e-4: three decimals would read 0.000
        self._plan_label = status_label("", "What Train will do: the number of steps and the class prior τ it will use.")
        self._advanced = AdvancedSettings()
        from superqt import QCollapsible

        self._advanced_collapsible = QCollapsible("Advanced training settings")
        self._advanced_collapsible.addWidget(self._advanced.native)
        self._continue_check = CheckBox(
            text="Continue from the current model", value=False,
            tooltip="Start from the current model's weights instead of a fresh network (same architecture).")
        self._train_button = PushButton(text="Train", tooltip="Train a detector on the labels, in the background.")
        self._cancel_button = PushButton(text="Cancel", tooltip="Stop after the current step; the last good model is kept.")
        self._train_progress = ProgressBar(min=0, max=1, value=0, tooltip="Training steps done.")
        self._train_status_label = status_label("not trained", "Step, loss and time left.")
        self._device_label = status_label("Device: chosen when training starts", "Where the network runs.")
        self._loss_plot = LossCurve()
        self._save_model_button = PushButton(
            text="Save model…", tooltip="Save the model with its voxel size, diameter and settings (.ckpt).")
        self._load_model_button = PushButton(
            text="Load model…", tooltip="Load a model saved by napari-cetpick (panel or command line, .ckpt or .pt).")
        self._model_label = status_label("No model yet.", "The current model.")
        self._undo_model_button = PushButton(
            text="Undo model", tooltip="Go back to the model the current one replaced (a new Train, Improve or "
                                       "Load keeps the previous model; press again to redo).")
        narrow(self._device_combo)
        self.extend([
            heading("2 · Train"), self._expected_particles_spin, self._tau_spin, self._epochs_spin,
            self._max_steps_spin, self._lr_spin, self._device_combo, row(self._all_tomograms_check),
            row(self._plan_label), holder(self._advanced_collapsible), row(self._continue_check),
            row(self._train_button, self._cancel_button), self._train_progress, row(self._train_status_label),
            row(self._device_label), holder(self._loss_plot), row(self._save_model_button, self._load_model_button, self._undo_model_button),
            row(self._model_label),
        ])
        self._train_button.changed.connect(self._on_train_clicked)
        self._cancel_button.changed.connect(self._on_cancel_clicked)
        self._save_model_button.changed.connect(self._on_save_model_clicked)
        self._load_model_button.changed.connect(self._on_load_model_clicked)
        self._undo_model_button.changed.connect(self._on_undo_model_clicked)
        for w in (self._expected_particles_spin, self._tau_spin, self._epochs_spin, self._max_steps_spin,
                  self._all_tomograms_check, self._continue_check, *self._advanced):
            w.changed.connect(self._on_settings_changed)
        runner.busy_changed.connect(self._on_busy_changed)
        for signal in (state.points_changed, state.current_changed, state.diameter_changed, state.classes_changed):
            signal.connect(self._on_settings_changed)
        state.checkpoint_changed.connect(self._on_checkpoint_changed)
        self._on_busy_changed(None)

    # ------------------------------------------------------------------ settings
    def train_config(self) -> TrainConfig:
        """A TrainConfig from the panel's controls."""
        unit_is_a, diameter = self._state.diameter_unit == "Å", float(self._state.diameter)
        return TrainConfig(
            bbox=None if unit_is_a else diameter, diameter_a=diameter if unit_is_a else None,
            tau=float(self._tau_spin.value) or None,
            expected_particles=int(self._expected_particles_spin.value) or None,
            num_epochs=int(self._epochs_spin.value) or None, max_steps=int(self._max_steps_spin.value) or None,
            lr=float(self._lr_spin.value), **self._advanced.values(self._continued_arch()))

    def _continued_arch(self) -> str | None:
        """The network of the model Train would continue from (Network "auto" keeps it), else None."""
        init = self._init_model()
        return None if init is None else init.config.arch

    def _init_model(self):
        return self._state.checkpoint if self._continue_check.value else None

    def _on_settings_changed(self, *_) -> None:
        """Show the plan: steps and τ that Train would use now (or why it would refuse)."""
        from napari_cetpick.widgets._engine import plan_training

        try:
            inputs = gather_training_inputs(self._state, bool(self._all_tomograms_check.value), masks=False,
                                            model=self._init_model())
            config = class_config(self._state, self.train_config(), inputs.names)
            problem = training_problem(self._state, inputs, config)
            if problem:
                self._plan_label.value = f"Plan: {problem}"
                return
            plan = plan_training(config, [r.shape for r in inputs.records], inputs.labels, inputs.voxel_size_a,
                                 init=self._init_model())
        except CetpickError as err:
            self._plan_label.value = f"Plan: {err}"  # where the labels are missing, and where there are some
            return
        self._plan_label.value = f"Plan: {plan.describe()}"

    def _on_busy_changed(self, kind=None) -> None:
        idle = kind is None
        self._train_button.enabled = idle
        self._load_model_button.enabled = idle
        self._cancel_button.enabled = kind == "train"
        self._save_model_button.enabled = idle and self._state.checkpoint is not None
        self._undo_model_button.enabled = idle and self._state.previous_checkpoint is not None

    # ------------------------------------------------------------------ training
    def _on_train_clicked(self, *_) -> None:
        from napari_cetpick.widgets._engine import check_memory

        try:
            inputs = gather_training_inputs(self._state, bool(self._all_tomograms_check.value),
                                            model=self._init_model())
            config = class_config(self._state, self.train_config(), inputs.names)
            problem = training_problem(self._state, inputs, config)
            if problem:
                raise CetpickError(problem)
            config.validate()
            device = str(self._device_combo.value)  # the memory check: the host's, or a CUDA device's
            check_memory(config, [v.shape for v in inputs.volumes], inputs.voxel_size_a,
                         device=device if device.startswith("cuda") else None)
        except CetpickError as err:
            show_error(str(err))
            return
        init = self._init_model()
        self._job = TrainJob(inputs.volumes, inputs.labels, config, inputs.voxel_size_a,
                             device=str(self._device_combo.value), init=init, negatives=inputs.negatives,
                             masks=inputs.masks)
        self._loss_plot.clear()
        self._train_progress.value = 0
        self._train_status_label.value = (f"{'Continuing from the current model' if init is not None else 'Preparing'}"
                                          f": reading and binning the tomogram…")
        self._runner.start("train", self._job.run, yielded=self._on_train_yielded,
                           returned=self._on_train_returned, aborted=self._on_train_aborted,
                           on_error=self._on_error, uses=[r.layer.unique_id for r in inputs.records])

    def _on_train_yielded(self, record) -> None:
        if isinstance(record, TrainStarted):
            self._train_progress.max = max(record.total_steps, 1)
            self._train_progress.value = 0
            self._device_label.value = f"Device: {record.device}"
            self._train_status_label.value = (f"Training {record.total_steps} steps on {record.n_labels} labels "
                                              f"(bin {record.bin_xy}, τ {record.tau:.3g})…")
            return
        if record.message:
            show_warning(record.message)
        self._train_progress.value = min(record.step, self._train_progress.max)
        self._loss_plot.append(record.step, record.loss)
        self._train_status_label.value = (f"step {record.step}/{record.total} · loss {record.loss:.3g} · "
                                          f"{fmt_duration(record.eta_s)} left")

    def _on_train_returned(self, ckpt: Checkpoint | None) -> None:
        job, self._job = self._job, None
        cancelled = self._runner.user_cancelled
        if ckpt is None:
            self._train_status_label.value = "Cancelled before the first step; the previous model is kept."
            show_info("Training cancelled before the first step; the previous model is kept.")
            return
        replaced = self._state.checkpoint is not None
        self._state.set_checkpoint(ckpt)
        info = ckpt.info
        done, planned = int(info.get("steps", 0)), int(info.get("total_steps", 0) or 0)
        run_steps = done - (int(job.init.info.get("steps", 0)) if job is not None and job.init is not None else 0)
        status = "cancelled" if cancelled else str(info.get("status", "finished"))
        self._train_status_label.value = (f"Training {status}: {done} steps in "
                                          f"{fmt_duration(info.get('elapsed_s', 0.0))}; default threshold "
                                          f"{ckpt.default_threshold:.2f}.")
        if cancelled:
            why, then = self._runner.cancel_reason, "Detect to try it, or Train again with 'Continue from the current model'."
            show_info(f"Training {f'stopped ({why})' if why else 'cancelled'} after {run_steps} of {planned} steps; the "
                      f"model of step {done} is kept and may be undertrained. {'Train again to go on.' if why else then}")
        else:
            keep = " The previous model is kept: Undo model goes back to it." if replaced else ""
            show_info(f"Model ready ({done} steps). Press Detect.{keep}")

    def _on_train_aborted(self) -> None:
        """After Cancel: fetch the last good model from the Trainer, off the main thread."""
        job = self._job
        if not self._runner.user_cancelled or job is None:
            return
        self._train_status_label.value = "Cancelled; keeping the model of the last finished step…"
        self._runner.start("finalise", job.last_good_checkpoint, returned=self._on_train_returned,
                           on_error=self._on_error, keep_cancel=True)

    def _on_cancel_clicked(self, *_) -> None:
        if self._runner.kind == "train" and self._runner.cancel():
            self._train_status_label.value = "Cancelling after the current step…"

    def _on_error(self, kind: str, message: str) -> None:
        self._train_status_label.value = message

    # ------------------------------------------------------------------ model
    def _on_checkpoint_changed(self, ckpt) -> None:
        if ckpt is None:
            self._model_label.value = "No model yet."
            return
        origin = self._origin[1] if self._origin[0] == id(ckpt) else ""
        self._model_label.value = origin + ckpt.summary()
        self._model_label.tooltip = "\n".join(f"{k}: {v}" for k, v in ckpt.config.to_dict().items())
        # improved, loaded or undone (back to the one trained here too): the status says which model is
        # current; a training that just ended says more right after
        where = f" from {Path(self._state.model_path).name}" if self._state.model_path else ""
        self._train_status_label.value = (f"Current model{where}: {int(ckpt.info.get('steps', 0))} steps, default "
                                          f"threshold {ckpt.default_threshold:.2f}.")
        self._on_busy_changed(self._runner.kind)
        self._check_model_voxel_size()
        self._on_settings_changed()

    def _on_undo_model_clicked(self, *_) -> None:
        if self._state.undo_model():
            show_info("Back to the previous model (press Undo model again to return). Detect to see its picks.")

    def _check_model_voxel_size(self) -> None:
        ckpt, rec = self._state.checkpoint, self._state.current
        vs = None if rec is None else rec.voxel_size_a
        if ckpt is None or not ckpt.voxel_size_a or not vs:
            return
        if ckpt.voxel_size_differs(vs):
            show_warning(f"The model was trained at {ckpt.voxel_size_a:g} Å/voxel but the selected tomogram "
                         f"has {vs:g} Å/voxel; detection rebins when the ratio is a whole number and refuses "
                         f"otherwise. Correct the voxel size if the header is wrong.")

    def _on_save_model_clicked(self, *_) -> None:
        if self._state.checkpoint is None:
            show_error("No model to save: train or load one first.")
            return
        path = self._ask_path(True, "Save model", MODEL_FILTER, "cetpick_model" + MODEL_SUFFIX)
        if path:
            self.save_model(path)

    def save_model(self, path) -> Path | None:
        path = Path(path)
        if not path.suffix:
            path = path.with_suffix(MODEL_SUFFIX)
        try:
            out = self._state.checkpoint.save(path)
        except (CetpickError, OSError) as err:
            show_error(f"Could not save the model: {err}")
            return None
        self._state.note_model_path(self._state.checkpoint, out)
        show_info(f"Model saved to {out}")
        return out

    def _on_load_model_clicked(self, *_) -> None:
        path = self._ask_path(False, "Load model", MODEL_FILTER)
        if path:
            self.load_model(path)

    def load_model(self, path) -> Checkpoint | None:
        try:
            ckpt = Checkpoint.load(path)
        except CetpickError as err:
            show_error(str(err))
            return None
        self._origin = (id(ckpt), f"{Path(path).name}: ")
        history = ckpt.info.get("loss_history") or []
        self._loss_plot.set_history(range(1, len(history) + 1), history)
        self._advanced.show_model(ckpt.config)
        self._state.take_model_classes(ckpt)
        replaced = self._state.checkpoint is not None
        self._state.set_checkpoint(ckpt, path=Path(path).resolve())
        keep = " The previous model is kept: Undo model goes back to it." if replaced else ""
        show_info(f"Model {Path(path).name} loaded ({', '.join(ckpt.class_names)}). Press Detect.{keep}")
        return ckpt
