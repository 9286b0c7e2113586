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
        return (f"{self.config.arch}, voxel size {vs}, particle {self.diameter_vox:g} voxels{d_a}, "
                f"bin {self.bin_xy}, threshold {self.default_threshold:.2f}, tau {self.tau:.3g}, "
                f"{self.info.get('steps', 0)} steps")

    def save(self, path) -> Path:
        import torch

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        meta = {
            "format_version": FORMAT_VERSION, "package_version": __version__,
            "config": self.config.to_dict(), "diameter_vox": float(self.diameter_vox),
            "voxel_size_a": self.voxel_size_a, "bin_xy": int(self.bin_xy),
            "default_threshold": float(self.default_threshold), "tau": float(self.tau),
            "info": copy.deepcopy(self.info),
        }
        torch.save({"state_dict": self.state_dict, "meta": meta}, path)
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
        except (pickle.UnpicklingError, RuntimeError, KeyError, TypeError, EOFError) as exc:
            raise CetpickError(f"{path}: not a napari-cetpick model file ({type(exc).__name__}).") from None
        if meta.get("format_version", 0) > FORMAT_VERSION:
            raise CetpickError(f"{path}: made by a newer napari-cetpick ({meta.get('package_version')}); upgrade.")
        return cls(state_dict=state, config=TrainConfig.from_dict(meta["config"]),
                   diameter_vox=meta["diameter_vox"], voxel_size_a=meta["voxel_size_a"],
                   bin_xy=meta["bin_xy"], default_threshold=meta["default_threshold"],
                   tau=meta["tau"], info=meta.get("info", {}))
