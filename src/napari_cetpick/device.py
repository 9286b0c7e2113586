"""Choosing the compute device and CPU thread settings."""
from __future__ import annotations

import os

# OpenMP's default spin-wait makes two threads 3x slower than one when the GUI thread is
# busy (see docs); passive waiting must be set before torch is first imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from .errors import CetpickError  # noqa: E402

DEVICES = ("auto", "cpu", "cuda", "mps")


def resolve_device(name: str | None = "auto"):
    """Return a ``torch.device``: CUDA, then Apple MPS, then CPU for ``auto``.

    The environment variable ``CETPICK_DEVICE`` overrides ``auto`` (tests force ``cpu``).
    """
    import torch

    if isinstance(name, torch.device):
        return name
    name = (name or "auto").lower()
    if name == "auto":
        name = os.environ.get("CETPICK_DEVICE", "auto").lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise CetpickError("Device 'cuda' was requested but no CUDA GPU is available.")
        return torch.device(name)
    if name == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise CetpickError("Device 'mps' was requested but Apple MPS is not available.")
        return torch.device("mps")
    if name == "cpu":
        return torch.device("cpu")
    raise CetpickError(f"Unknown device {name!r}; choose one of {', '.join(DEVICES)}.")


def configure_threads(n_threads: int | None = None) -> int:
    """Set torch's CPU threads (all cores by default) and return the number used.

    The environment variable ``CETPICK_NUM_THREADS`` replaces the default, so that several
    worker processes on one machine (``cetpick detect --dask local:N``) share its cores.
    """
    import torch

    if n_threads is None and os.environ.get("CETPICK_NUM_THREADS", "").strip().isdigit():
        n_threads = int(os.environ["CETPICK_NUM_THREADS"])
    if n_threads is None:
        n_threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    n_threads = max(1, int(n_threads))
    torch.set_num_threads(n_threads)
    return n_threads


def describe(device) -> str:
    """A short human description of the device, for progress displays."""
    import torch

    if device.type == "cuda":
        return f"GPU ({torch.cuda.get_device_name(device)})"
    if device.type == "mps":
        return "Apple GPU (MPS)"
    return f"CPU ({torch.get_num_threads()} threads)"  # the time left is measured while it runs


#: The arithmetic a network pass may run in (DetectConfig.precision).
PRECISIONS = ("auto", "float32", "bfloat16")


def inference_dtype(device, precision: str = "auto"):
    """The dtype of a network's inference on ``device`` (``torch.float32`` or ``torch.bfloat16``).

    ``auto`` takes bfloat16 only on a CPU that computes it natively (oneDNN reports
    AVX512-BF16 or AMX), where a 3D detection block ran 2.8× faster with scores within 0.011
    (docs/benchmark.md); elsewhere — older CPUs emulate it slowly, GPUs already run TF32 —
    float32. ``bfloat16`` asks for it wherever torch can (slow where emulated).
    """
    import torch

    if precision not in PRECISIONS:
        raise CetpickError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}.")
    if precision == "float32":
        return torch.float32
    kind = torch.device(device).type
    if precision == "bfloat16":
        if kind == "cuda" and not torch.cuda.is_bf16_supported():
            raise CetpickError("This GPU does not compute bfloat16; use --precision float32 (or auto).")
        return torch.bfloat16 if kind in ("cpu", "cuda") else torch.float32
    if kind != "cpu":
        return torch.float32
    try:
        native = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        native = False
    return torch.bfloat16 if native else torch.float32
