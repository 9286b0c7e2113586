"""The training settings most users never change, in plain words (the method's names in
the tooltips), folded away under "Advanced training settings"."""
from __future__ import annotations

from magicgui.widgets import CheckBox, ComboBox, Container, FloatSpinBox, SpinBox

from napari_cetpick.config import ARCHS, AUTO_SMOOTHING, SMOOTHING_BELOW_SEPARATION, TrainConfig

_DEFAULTS = TrainConfig()
AUTO_ARCH = "auto"  # the Network choice: the continued model's network, else the default

# Bounds that keep one training step within a laptop's memory: crops of 256² × 64 slices
# in batches of 32 already need several GB for the published networks. The engine's own
# memory estimate (issue 9) is checked before Train when it is available.
CROP_XY_MAX = 256
CROP_Z_MAX = 64
BATCH_MAX = 32


class AdvancedSettings(Container):
    """Method knobs of the published detector and the training crops."""

    def __init__(self):
        super().__init__(labels=True)
        self._contrastive_check = CheckBox(
            text="Compare two views", value=_DEFAULTS.contrastive,
            tooltip="The debiased contrastive regulariser of cet_pick on top of the positive-unlabelled "
                    "loss: two augmented views of a crop should give matching features.")
        self._cr_weight_spin = FloatSpinBox(
            label="Weight of that term", min=0.0, max=10.0, step=0.01, value=_DEFAULTS.cr_weight,
            tooltip="Weight of the contrastive regulariser (the original's --cr_weight).")
        self._temp_spin = FloatSpinBox(
            label="Its temperature", min=0.001, max=10.0, step=0.001, value=_DEFAULTS.temp,
            tooltip="Temperature of the contrastive loss (--temp); lower is stricter.")
        self._thresh_spin = FloatSpinBox(
            label="Particle above", min=0.0, max=1.0, step=0.01, value=_DEFAULTS.thresh,
            tooltip="Target value above which a voxel counts as a particle in the contrastive term (--thresh).")
        self._gauss_auto = CheckBox(
            text="Smoothing: from the labels", value=_DEFAULTS.gauss is None,
            tooltip=f"A 3D Gaussian pre-filter of {AUTO_SMOOTHING:g} working voxel where a class's labels stand out "
                    f"of the tomogram's noise by a separation below {SMOOTHING_BELOW_SEPARATION:g} (their radial "
                    "profiles), else none; a model continued keeps its own. Untick to set it below (--gauss).")
        self._gauss_spin = FloatSpinBox(
            label="Smoothing (voxels)", min=0.0, max=10.0, step=0.1, value=_DEFAULTS.prefilter,
            tooltip="σ of a 3D Gaussian pre-filter in working voxels (--gauss); 0 = none. 1 helps on very noisy data.")
        self._compress_check = CheckBox(
            text="Average slice pairs", value=_DEFAULTS.compress,
            tooltip="Average consecutive slice pairs before the network, halving z (--compress).")
        self._arch_combo = ComboBox(
            label="Network", choices=(AUTO_ARCH, *ARCHS), value=AUTO_ARCH,
            tooltip=f"auto: the network of the model Train continues, else {_DEFAULTS.arch} (a 3D U-Net of four "
                    "levels); unet3d_small and unet3d are 3D U-Nets of three levels (unet3d takes about twice as "
                    "long on a CPU); unet_small is a fast pseudo-3D net; unet_4 / unet_5 are the published networks "
                    "(--arch). The 3D nets need crops in multiples of 8 (unet3d_4: 16).")
        self._batch_size_spin = SpinBox(
            label="Batch size", min=1, max=BATCH_MAX, value=_DEFAULTS.batch_size,
            tooltip=f"Crops per optimiser step (1–{BATCH_MAX}); memory grows with it.")
        self._crop_xy_spin = SpinBox(
            label="Crop xy", min=32, max=CROP_XY_MAX, step=16, value=_DEFAULTS.crop_xy,
            tooltip=f"Training crop width in working voxels (multiple of 16, 32–{CROP_XY_MAX}); memory grows "
                    f"with its square.")
        self._crop_z_spin = SpinBox(
            label="Crop z", min=3, max=CROP_Z_MAX, value=_DEFAULTS.crop_z,
            tooltip=f"Training crop depth in slices (3–{CROP_Z_MAX}; a multiple of 8 for the 3D networks, 16 for unet3d_4).")
        self._seed_spin = SpinBox(
            label="Seed", min=0, max=2**31 - 1, value=_DEFAULTS.seed,
            tooltip="Seed of all random draws; the same seed gives the same model on a CPU.")
        self.extend([self._contrastive_check, self._cr_weight_spin, self._temp_spin, self._thresh_spin,
                     self._gauss_auto, self._gauss_spin, self._compress_check, self._arch_combo, self._batch_size_spin,
                     self._crop_xy_spin, self._crop_z_spin, self._seed_spin])
        self._contrastive_check.changed.connect(self._on_contrastive_changed)
        self._on_contrastive_changed(self._contrastive_check.value)  # the weights follow the box from the start
        self._gauss_auto.changed.connect(self._on_gauss_auto_changed)
        self._on_gauss_auto_changed(self._gauss_auto.value)

    def _on_contrastive_changed(self, value: bool) -> None:
        self._cr_weight_spin.enabled = bool(value)
        self._temp_spin.enabled = bool(value)

    def _on_gauss_auto_changed(self, value: bool) -> None:
        self._gauss_spin.enabled = not bool(value)

    def values(self, continued_arch: str | None = None) -> dict:
        """The settings as TrainConfig keyword arguments; Network "auto" is the continued model's
        network (``continued_arch``), else the default."""
        arch = str(self._arch_combo.value)
        if arch == AUTO_ARCH:
            arch = continued_arch or _DEFAULTS.arch
        return dict(
            thresh=float(self._thresh_spin.value), contrastive=bool(self._contrastive_check.value),
            cr_weight=float(self._cr_weight_spin.value), temp=float(self._temp_spin.value),
            arch=arch, batch_size=int(self._batch_size_spin.value),
            crop_xy=int(self._crop_xy_spin.value), crop_z=int(self._crop_z_spin.value),
            gauss=None if self._gauss_auto.value else float(self._gauss_spin.value),
            compress=bool(self._compress_check.value),
            seed=int(self._seed_spin.value),
        )

    def show_model(self, cfg: TrainConfig) -> None:
        """Show a model's own method settings (so 'continue' trains the same network)."""
        self._arch_combo.value = cfg.arch
        self._gauss_spin.value = cfg.prefilter  # "from the labels" stays: continued, a model keeps its own
        self._compress_check.value = cfg.compress
        self._contrastive_check.value = cfg.contrastive
        self._cr_weight_spin.value = cfg.cr_weight
        self._temp_spin.value = cfg.temp
        self._thresh_spin.value = cfg.thresh
