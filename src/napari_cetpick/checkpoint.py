"""A trained model and everything needed to use it, in one file.

The file is a torch archive of tensors and plain Python values only, loaded with
``weights_only=True`` so that opening a model never executes code.
"""
from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from . import __version__
from .config import DEFAULT_CLASS, TrainConfig
from .data import Geometry, make_geometry
from .errors import CetpickError

#: 2: several classes (``meta["classes"]``); files of version 1 hold one class and still load.
FORMAT_VERSION = 2
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


def voxel_sizes_differ(a: float | None, b: float | None) -> bool:
    """True when both voxel sizes are known and differ by more than :data:`VOXEL_SIZE_TOLERANCE`."""
    return bool(a and b and abs(float(b) / float(a) - 1) > VOXEL_SIZE_TOLERANCE)

#: Keys of a model's ``info`` that belong to one class (its count, calibration, labels).
CLASS_INFO_KEYS = ("density_per_vox2", "expected_particles", "n_labels", "n_positives", "n_negatives",
                   "n_offset_labels", "centre_offset_work", "centre_offset_se_work", "particles_in_labelled_region",
                   "estimated_label_fraction", "labelled_split", "threshold_calibrated", "label_boxes",
                   "profile_model")
#: What calibration read of the share the user labelled (whether the labelled region's scores
#: split, the particles there and the estimated share): round 1's stays after a self-training
#: round, whose sure picks are no labels of the user's.
SHARE_ESTIMATE_KEYS = ("estimated_label_fraction", "particles_in_labelled_region", "labelled_split")


@dataclass
class ModelClass:
    """One particle class of a model: its output channel's name, size, prior and threshold.

    ``info`` holds what training and calibration learnt of this class alone (the keys of
    :data:`CLASS_INFO_KEYS`).
    """

    name: str
    diameter_vox: float
    tau: float
    default_threshold: float = 0.5
    colour: str | None = None
    info: dict[str, Any] = field(default_factory=dict)


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
    classes : list of ModelClass
        One entry per output channel. A model of one class (every model before format 2)
        has one, built from the fields above. With several, ``diameter_vox``, ``tau``,
        ``default_threshold`` and the class keys of ``info`` are those of ``channel``'s
        class (:meth:`for_class`).
    channel : int or None
        The class this object speaks for: None for the whole model (a one-class model
        speaks for its class either way).
    """

    state_dict: dict
    config: TrainConfig
    diameter_vox: float
    voxel_size_a: float | None
    bin_xy: int
    default_threshold: float = 0.5
    tau: float = 0.01
    info: dict[str, Any] = field(default_factory=dict)
    classes: list = field(default_factory=list)
    channel: int | None = None
    #: network passes kept for the next detection (:class:`napari_cetpick.detect.NetworkPass`;
    #: never saved): one detection takes the one it can use and drops the rest
    passes: list = field(default_factory=list, repr=False, compare=False)

    def __post_init__(self):
        if len(self.classes) <= 1:
            self.classes = [self._one_class()]

    def _one_class(self) -> ModelClass:
        """The class of a one-class model, from the top-level fields (its truth, even after ``replace``)."""
        old = self.classes[0] if self.classes else None
        name = old.name if old is not None else (self.info.get("class_name") or DEFAULT_CLASS)
        return ModelClass(name, float(self.diameter_vox), float(self.tau), float(self.default_threshold),
                          colour=old.colour if old is not None else None,
                          info={k: self.info[k] for k in CLASS_INFO_KEYS if k in self.info})

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    @property
    def class_names(self) -> list[str]:
        return [c.name for c in self.classes]

    def class_index(self, key) -> int:
        """The channel of class ``key`` (a name or an index), else :class:`CetpickError`."""
        if isinstance(key, int) and not isinstance(key, bool):
            if 0 <= key < self.n_classes:
                return key
        elif key in self.class_names:
            return self.class_names.index(key)
        raise CetpickError(f"The model has no class {key!r}; its classes: {', '.join(self.class_names)}.")

    def for_class(self, key) -> "Checkpoint":
        """This model seen as a detector of one class: that class's size, prior, threshold and record.

        The weights are shared (not copied); detection runs the whole network and reads the
        class's channel.
        """
        k = self.class_index(key)
        if self.n_classes == 1:
            return self
        c = self.classes[k]
        shared = {n: v for n, v in self.info.items() if n not in CLASS_INFO_KEYS and n != "class_name"}
        return replace(self, diameter_vox=c.diameter_vox, tau=c.tau, default_threshold=c.default_threshold,
                       info={**shared, **c.info, "class_name": c.name}, classes=list(self.classes), channel=k)

    def take_passes(self) -> list:
        """The kept network passes, handed over and dropped from the model (a pass serves the
        next detection only, used or not: its scores hold a tomogram's worth of memory)."""
        taken = list(self.passes)
        self.passes.clear()
        return taken

    @property
    def class_name(self) -> str:
        return self.classes[self.channel or 0].name

    def voxel_size_differs(self, voxel_size_a: float | None) -> bool:
        """True when both voxel sizes are known and differ by more than :data:`VOXEL_SIZE_TOLERANCE`."""
        return voxel_sizes_differ(self.voxel_size_a, voxel_size_a)

    @property
    def geometry(self) -> Geometry:
        return make_geometry(self.bin_xy, self.config.compress)

    @property
    def diameter_a(self) -> float | None:
        return None if self.voxel_size_a is None else self.diameter_vox * self.voxel_size_a

    def build(self, device=None):
        """The network with these weights, in eval mode, on ``device``."""
        from .model import build_network

        net = build_network(self.config.arch, self.n_classes)
        net.load_state_dict(self.state_dict)
        net.eval()
        if device is not None:
            net.to(device)
        return net

    def summary(self) -> str:
        if self.n_classes > 1 and self.channel is None:
            vs = "unknown" if self.voxel_size_a is None else f"{self.voxel_size_a:g} Å"
            parts = [f"{self.config.arch}, voxel size {vs}, bin {self.bin_xy}, {self.info.get('steps', 0)} steps"
                     f"{self.smoothing_hint(', ')}, {self.n_classes} classes:"]
            for c in self.classes:
                v = self.for_class(c.name)
                d_a = "" if v.diameter_a is None else f" ({v.diameter_a:g} Å)"
                n = v.info.get("expected_particles")
                parts.append(f"  {c.name}: particle {c.diameter_vox:g} voxels{d_a}, threshold "
                             f"{c.default_threshold:.2f}, tau {c.tau:.3g}"
                             f"{f', about {n:.0f} particles expected' if n else ''}{v.share_hint(', ')}"
                             f"{v.negatives_hint(', ')}")
            return "\n".join(parts)
        vs = "unknown" if self.voxel_size_a is None else f"{self.voxel_size_a:g} Å"
        d_a = "" if self.diameter_a is None else f" ({self.diameter_a:g} Å)"
        n = self.info.get("expected_particles")
        expected = f", about {n:.0f} particles expected in the training tomograms" if n else ""
        return (f"{self.config.arch}, voxel size {vs}, particle {self.diameter_vox:g} voxels{d_a}, "
                f"bin {self.bin_xy}, threshold {self.default_threshold:.2f}"
                f"{' (not calibrated)' if self.info.get('threshold_calibrated') is False else ''}, tau {self.tau:.3g}, "
                f"{self.info.get('steps', 0)} steps{self.smoothing_hint(', ')}{expected}{self.share_hint(', ')}"
                f"{self.negatives_hint(', ')}")

    @property
    def profile_negatives(self) -> int:
        """The user's negatives (rejected picks, clicked negatives) whose profiles this (one-class
        view of the) model's profile check learned (0: none)."""
        return int((self.info.get("profile_model") or {}).get("n_negatives", 0))

    @property
    def profile_mined(self) -> int:
        """The look-alikes calibration found in the labelled region that its profile check also
        learned (:mod:`napari_cetpick.calibration`; 0: none)."""
        return int((self.info.get("profile_model") or {}).get("n_mined", 0))

    def negatives_hint(self, prefix: str = "") -> str:
        """What the profile check learned besides the labels (empty when nothing)."""
        k, m = self.profile_negatives, self.profile_mined
        parts = ([f"{k} negatives (rejected picks and clicked negatives)"] if k else []) + \
                ([f"{m} look-alikes it found in its labelled region"] if m else [])
        return f"{prefix}its profile check also learned {' and '.join(parts)}" if parts else ""

    def share_hint(self, prefix: str = "") -> str:
        """What the model's own scores say of the share of particles labelled, when it was not told.

        Empty when the share or the count was given, or the threshold was not calibrated. Where
        the labelled region's scores did not split into background and particles, it says that
        the threshold then rests on the assumed share: for a class the network barely tells from
        the noise, the share the user knows is what moves its default (docs/benchmark.md,
        "Round 27").
        """
        est = self.info.get("estimated_label_fraction")
        spec = next((c for c in self.config.class_specs() if c.name == self.class_name), None)
        told = spec is not None and (spec.label_fraction is not None or spec.expected_particles)
        if told or self.config.label_fraction is not None or self.config.expected_particles:
            return ""
        from .counts import DEFAULT_LABEL_FRACTION

        assumed = f"{100 * DEFAULT_LABEL_FRACTION:.0f} %"
        if est is None:
            # recorded by calibration since round 27 (older files: nothing said)
            if self.info.get("labelled_split") is not False:
                return ""
            return (f"{prefix}its scores in your labelled region did not split into particles and background, so "
                    f"its threshold counts the particles your labels imply at an assumed share of {assumed} (where "
                    f"you know the share or the count, --label-fraction or --expected-particles sets it; in the "
                    f"panel, Expected particles)")
        return (f"{prefix}by its own scores you labelled about {100 * est:.0f} % of the "
                f"{self.info.get('particles_in_labelled_region')} particles in your region "
                f"(training assumed {assumed}; --label-fraction sets it)")

    def smoothing_hint(self, prefix: str = "") -> str:
        """The pre-filter the model's input gets, and why (empty where none)."""
        sigma = self.config.prefilter
        if sigma <= 0:
            return ""
        records = [r["smoothing"] for r in self.info.get("rounds", []) if r.get("smoothing")]
        chosen = records[-1] if records else None
        # a later round given its own value (--gauss) records none: the value, not the record, holds
        if chosen is None or float(chosen.get("gauss") or 0.0) != sigma:
            return f"{prefix}its input smoothed by {sigma:g} working voxel (as set)"
        from .config import SMOOTHING_BELOW_SEPARATION

        return (f"{prefix}its input smoothed by {sigma:g} working voxel (chosen: the labels stand out of the "
                f"noise by {chosen['separation']:g}, below {SMOOTHING_BELOW_SEPARATION:g})")

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
        if self.n_classes == 1:
            self.classes = [self._one_class()]
        elif self.channel is not None:
            raise CetpickError("Save the whole model, not its view of one class.")
        meta = plain_types({
            "format_version": FORMAT_VERSION, "package_version": __version__,
            "config": self.config.to_dict(), "diameter_vox": float(self.diameter_vox),
            "voxel_size_a": None if self.voxel_size_a is None else float(self.voxel_size_a),
            "bin_xy": int(self.bin_xy), "default_threshold": float(self.default_threshold), "tau": float(self.tau),
            "info": copy.deepcopy(self.info), "classes": [asdict(c) for c in self.classes],
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
            keys = {f.name for f in fields(ModelClass)}
            classes = [ModelClass(**{k: v for k, v in c.items() if k in keys}) for c in meta.get("classes") or []]
            ckpt = cls(state_dict=state, config=config, diameter_vox=float(meta["diameter_vox"]),
                       voxel_size_a=None if meta["voxel_size_a"] is None else float(meta["voxel_size_a"]),
                       bin_xy=int(meta["bin_xy"]), default_threshold=float(meta["default_threshold"]),
                       tau=float(meta["tau"]), info=meta.get("info") or {}, classes=classes)
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

        net = build_network(self.config.arch, self.n_classes)
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
