"""Choosing the compute device and CPU thread settings."""
from __future__ import annotations

import contextlib
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


def describe(device, dtype=None) -> str:
    """A short human description of the device, for progress displays; with a reduced ``dtype``
    the arithmetic the network's pass runs in too ("CPU (2 threads) · bfloat16")."""
    import torch

    if device.type == "cuda":
        name = f"GPU ({torch.cuda.get_device_name(device)})"
    elif device.type == "mps":
        name = "Apple GPU (MPS)"
    else:
        name = f"CPU ({torch.get_num_threads()} threads)"  # the time left is measured while it runs
    return name + (f" · {dtype_name(dtype)}" if reduced(dtype) else "")


def dtype_name(dtype) -> str:
    """``"float32"`` for ``torch.float32`` (as the CLI and the model's record spell it)."""
    return str(dtype).split(".")[-1]


def reduced(dtype) -> bool:
    """Whether ``dtype`` is a reduced precision (not None, not float32)."""
    return dtype is not None and dtype_name(dtype) != "float32"


#: The arithmetic a network pass may run in (DetectConfig.precision).
PRECISIONS = ("auto", "float32", "bfloat16")


def _asked_dtype(device, precision: str):
    """``torch.float32`` or ``torch.bfloat16`` where ``precision`` decides it alone (float32, bfloat16);
    None for ``auto``."""
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
    return None if kind == "cpu" else torch.float32  # GPUs: float32 (already TF32)


def inference_dtype(device, precision: str = "auto"):
    """The dtype of a network's inference on ``device`` (``torch.float32`` or ``torch.bfloat16``).

    ``auto`` takes bfloat16 only on a CPU that computes it natively (oneDNN reports
    AVX512-BF16 or AMX), where a 3D detection block ran 2.8× faster with scores within 0.011
    (docs/benchmark.md); elsewhere — older CPUs emulate it slowly, GPUs already run TF32 —
    float32. ``bfloat16`` asks for it wherever torch can (slow where emulated).
    """
    import torch

    dtype = _asked_dtype(device, precision)
    if dtype is not None:
        return dtype
    try:
        native = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        native = False
    return torch.bfloat16 if native else torch.float32


def cpu_has_amx_bf16() -> bool:
    """Whether this CPU has AMX tiles that compute bfloat16 (Intel Xeon since Sapphire Rapids)."""
    import torch

    try:
        return bool(torch._C._cpu._get_cpu_capability().get("amx_bf16"))
    except (AttributeError, RuntimeError, TypeError):
        return False


def training_dtype(device, precision: str = "auto"):
    """The dtype of a training step's network pass on ``device`` (``torch.float32`` or ``torch.bfloat16``).

    ``auto`` takes bfloat16 only on a CPU with AMX for it, where the network's part of a step ran 1.8× faster
    and the same seed gave the same weights run after run (docs/benchmark.md, "Round 33");
    elsewhere float32: on a CPU with AVX512-BF16 but no AMX (the AMD EPYC of round 5) bfloat16
    training gave other weights each run, and GPUs are left as they are. The loss, the
    optimiser and the weights stay float32 (autocast), as do the heads that give the scores.
    ``bfloat16`` asks for it wherever torch can.
    """
    import torch

    dtype = _asked_dtype(device, precision)
    if dtype is not None:
        return dtype
    return torch.bfloat16 if cpu_has_amx_bf16() else torch.float32


def autocast(device, dtype):
    """The context of a network's pass in ``dtype``: autocast where it is reduced, else nothing
    (no autocast object at all in float32: some torch versions refuse one for MPS even disabled)."""
    import torch

    if not reduced(dtype):
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=dtype)


@contextlib.contextmanager
def deterministic_kernels(device, dtype):
    """oneDNN's deterministic kernels (``torch.backends.mkldnn.deterministic``) for a training
    step in a reduced ``dtype`` on a CPU, forward and backward: no kernel may sum in an order
    that varies from run to run. float32 and GPUs: nothing changes."""
    import torch

    if not reduced(dtype) or torch.device(device).type != "cpu":
        yield
        return
    keep = torch.backends.mkldnn.deterministic
    torch.backends.mkldnn.deterministic = True
    try:
        yield
    finally:
        torch.backends.mkldnn.deterministic = keep
