"""A trained model and everything needed to use it, in one file.

The file is a torch archive of tensors and plain Python values only, loaded with
``weights_only=True`` so that opening a model never executes code.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import __version__
from .config import TrainConfig
from .data import Geometry, make_geometry
from .errors import CetpickError

FORMAT_VERSION = 1
# the one extension of model files, in the CLI, the panel and the docs
MODEL_EXTENSION = ".ckpt"
REQUIRED_META = ("config", "diameter_vox", "voxel_size_a", "bin_xy", "default_threshold", "tau")


def plain_types(value):
    """``value`` with numpy scalars and arrays, tuples and paths turned into plain Python.

    ``torch.load(weights_only=True)`` refuses numpy objects, so metadata holding, say, a
    ``np.float64`` voxel size would make a saved model unloadable.
    """
    import numbers

    if isinstance(value, dict):
        return {str(k): plain_types(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain_types(v) for v in value]
    if hasattr(value, "tolist") and not hasattr(value, "requires_grad"):  # numpy, not torch
        return plain_types(value.tolist())
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    if isinstance(value, Path):
        return str(value)
    return value


#: Voxel sizes within this relative difference count as the same (header rounding).
VOXEL_SIZE_TOLERANCE = 0.02


@dataclass
class Checkpoint:
    """Weights plus metadata.

    Attributes
    ----------
    state_dict : dict
        Network weights (CPU tensors).
    config : TrainConfig
        All training settings.
    diameter_vox : float
        Particle diameter in voxels of the training tomograms.
    voxel_size_a : float or None
        Voxel size of the training tomograms (None when unknown).
    bin_xy : int
        Binning applied before the network.
    default_threshold : float
        Score threshold calibrated on the labelled particles after training.
    tau : float
        Class prior used by the PU loss.
    info : dict
        Training record: steps done, losses, seconds, device, status, package version.
    """

    state_dict: dict
    config: TrainConfig
    diameter_vox: float
    voxel_size_a: float | None
    bin_xy: int
    default_threshold: float = 0.5
    tau: float = 0.01
    info: dict[str, Any] = field(default_factory=dict)

    def voxel_size_differs(self, voxel_size_a: float | None) -> bool:
        """True when both voxel sizes are known and differ by more than :data:`VOXEL_SIZE_TOLERANCE`."""
        return bool(self.voxel_size_a and voxel_size_a
                    and abs(float(voxel_size_a) / float(self.voxel_size_a) - 1) > VOXEL_SIZE_TOLERANCE)

    @property
    def geometry(self) -> Geometry:
        return make_geometry(self.bin_xy, self.config.compress)

    @property
    def diameter_a(self) -> float | None:
        return None if self.voxel_size_a is None else self.diameter_vox * self.voxel_size_a

    def build(self, device=None):
        """The network with these weights, in eval mode, on ``device``."""
        from .model import build_network

        net = build_network(self.config.arch)
        net.load_state_dict(self.state_dict)
        net.eval()
        if device is not None:
            net.to(device)
        return net

    def summary(self) -> str:
        vs = "unknown" if self.voxel_size_a is None else f"{self.voxel_size_a:g} Å"
        d_a = "" if self.diameter_a is None else f" ({self.diameter_a:g} Å)"
        n = self.info.get("expected_particles")
        expected = f", about {n:.0f} particles expected in the training tomograms" if n else ""
        return (f"{self.config.arch}, voxel size {vs}, particle {self.diameter_vox:g} voxels{d_a}, "
                f"bin {self.bin_xy}, threshold {self.default_threshold:.2f}"
                f"{' (not calibrated)' if self.info.get('threshold_calibrated') is False else ''}, tau {self.tau:.3g}, "
                f"{self.info.get('steps', 0)} steps{expected}{self.share_hint(', ')}")

    def share_hint(self, prefix: str = "") -> str:
        """What the model's own scores say of the share of particles labelled, when it was not told.

        Empty when the share or the count was given, or the labelled region's scores did not
        split into background and particles.
        """
        est = self.info.get("estimated_label_fraction")
        if est is None or self.config.label_fraction is not None or self.config.expected_particles:
            return ""
        from .counts import DEFAULT_LABEL_FRACTION

        return (f"{prefix}by its own scores you labelled about {100 * est:.0f} % of the "
                f"{self.info.get('particles_in_labelled_region')} particles in your region "
                f"(training assumed {100 * DEFAULT_LABEL_FRACTION:.0f} %; --label-fraction sets it)")

    def save(self, path) -> Path:
        """Write the model; a path without an extension gets :data:`MODEL_EXTENSION`.

        Metadata is converted to plain Python types (:func:`plain_types`) so the file loads
        with ``weights_only=True``. Raises :class:`CetpickError` when the file cannot be
        written.
        """
        import torch

        path = Path(path)
        if not path.suffix:
            path = path.with_suffix(MODEL_EXTENSION)
        meta = plain_types({
            "format_version": FORMAT_VERSION, "package_version": __version__,
            "config": self.config.to_dict(), "diameter_vox": float(self.diameter_vox),
            "voxel_size_a": None if self.voxel_size_a is None else float(self.voxel_size_a),
            "bin_xy": int(self.bin_xy), "default_threshold": float(self.default_threshold), "tau": float(self.tau),
            "info": copy.deepcopy(self.info),
        })
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            torch.save({"state_dict": self.state_dict, "meta": meta}, path)
        except OSError as exc:
            raise CetpickError(f"{path}: cannot write the model file ({exc.strerror or exc}).") from None
        return path

    @classmethod
    def load(cls, path) -> "Checkpoint":
        import pickle

        import torch

        path = Path(path)
        if not path.is_file():
            raise CetpickError(f"{path}: model file not found.")
        try:
            blob = torch.load(path, map_location="cpu", weights_only=True)
            meta = blob["meta"]
            state = blob["state_dict"]
        except (pickle.UnpicklingError, RuntimeError, KeyError, TypeError, EOFError, ValueError) as exc:
            raise CetpickError(f"{path}: not a napari-cetpick model file ({type(exc).__name__}).") from None
        except OSError as exc:
            raise CetpickError(f"{path}: cannot read the model file ({exc.strerror or exc}).") from None
        if not isinstance(meta, dict) or not isinstance(state, dict):
            raise CetpickError(f"{path}: not a napari-cetpick model file (no metadata).")
        if meta.get("format_version", 0) > FORMAT_VERSION:
            raise CetpickError(f"{path}: made by a newer napari-cetpick ({meta.get('package_version')}); upgrade.")
        missing = [k for k in REQUIRED_META if k not in meta]
        if missing:
            raise CetpickError(f"{path}: the model file lacks {', '.join(missing)}; it was not written by "
                               "napari-cetpick or is damaged.")
        try:
            config = TrainConfig.from_dict(meta["config"])
            ckpt = cls(state_dict=state, config=config, diameter_vox=float(meta["diameter_vox"]),
                       voxel_size_a=None if meta["voxel_size_a"] is None else float(meta["voxel_size_a"]),
                       bin_xy=int(meta["bin_xy"]), default_threshold=float(meta["default_threshold"]),
                       tau=float(meta["tau"]), info=meta.get("info") or {})
        except (TypeError, ValueError, AttributeError) as exc:
            raise CetpickError(f"{path}: the model's metadata is damaged ({exc}).") from None
        ckpt.check_weights(path)
        return ckpt

    def check_weights(self, path=None) -> None:
        """Raise :class:`CetpickError` unless the weights fit the configured architecture."""
        from .config import ARCHS

        where = f"{path}: " if path is not None else ""
        if self.config.arch not in ARCHS:
            raise CetpickError(f"{where}unknown network {self.config.arch!r} (this version knows {', '.join(ARCHS)}).")
        from .model import build_network

        net = build_network(self.config.arch)
        expected = net.state_dict()
        missing = [k for k in expected if k not in self.state_dict]
        extra = [k for k in self.state_dict if k not in expected]
        wrong = [k for k in expected if k in self.state_dict
                 and tuple(getattr(self.state_dict[k], "shape", ())) != tuple(expected[k].shape)]
        if missing or extra or wrong:
            raise CetpickError(
                f"{where}the weights do not fit the {self.config.arch} network ({len(missing)} missing, "
                f"{len(extra)} unexpected, {len(wrong)} of the wrong shape); the file is damaged or was made "
                "for another architecture.")
