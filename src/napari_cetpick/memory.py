"""How much memory a training step needs, and whether the machine has it (torch-free).

The panel and the CLI call :func:`check_train_memory` (the :class:`~napari_cetpick.train.Trainer`
does it before it allocates anything), so a crop that cannot fit is refused with a plain
message instead of growing the process until the kernel kills it (and the user's unsaved
labels with it). Widgets can bound their crop and batch spin boxes with
:func:`estimate_train_memory_bytes` and :func:`largest_crop_xy`.
"""
from __future__ import annotations

from .config import ARCH_SPECS, TrainConfig, network_multiple
from .errors import CetpickError

GB = 1024**3

# Calibration (see estimate_train_memory_bytes): the growth of peak RSS during training steps
# on CPU (torch 2.13, benchmarks/train_memory.py) is 1.97 x (4 bytes x the activation elements
# that activation_elements_per_pixel counts) + about 35 MiB, for all three networks; the
# constants below round both up so the estimate stays above what was measured.
ACTIVATION_FACTOR = 2.1
STEP_OVERHEAD_BYTES = 64 * 1024**2

# Never plan to use more than this share of the memory that is available now.
USABLE_SHARE = 0.8


def _unet_parameter_count(stem: int, levels, taps: int, up_taps: int) -> tuple[int, int]:
    """Weights of a stem (64 taps: 8×8 or 4×4×4, bias-free, BatchNorm) and a U-Net of bias-free
    double convolutions with ``taps`` taps and transposed convolutions with ``up_taps``;
    returns the count and the channels that leave the U-Net."""

    def double_conv(c_in, c_out):  # two bias-free convolutions, each with a BatchNorm
        return taps * c_in * c_out + taps * c_out * c_out + 4 * c_out

    n = 64 * stem + 2 * stem
    c = stem
    for c_out in levels:
        n += double_conv(c, c_out)
        c = c_out
    for c_skip in reversed(levels[:-1]):
        n += up_taps * c * c_skip + c_skip + double_conv(2 * c_skip, c_skip)
        c = c_skip
    return n, c


def _parameter_count_3d(spec: dict) -> int:
    """Weights of a :class:`~napari_cetpick.model.network.UNet3DDetector`."""
    embed = spec["embed"]
    n, c = _unet_parameter_count(spec["stem"], spec["levels"], taps=27, up_taps=8)
    return n + c + 1 + c * embed + embed


def _activations_3d(spec: dict) -> float:
    """As :func:`activation_elements_per_pixel` for the 3D U-Net, per input voxel."""
    stem, levels, embed = spec["stem"], spec["levels"], spec["embed"]
    e = 2.0 * stem
    for i, c in enumerate(levels):
        vol = 8.0**-i
        if i:
            e += levels[i - 1] * vol
        e += 4.0 * c * vol
    for i, c in enumerate(levels[:-1]):
        e += 7.0 * c * 8.0**-i
    e += 1 + 3.0 * embed + 4
    return e / 8.0  # everything lives at half resolution on every axis


def arch_parameter_count(arch: str) -> int:
    """Number of weights of an architecture, counted from :data:`~napari_cetpick.config.ARCH_SPECS`."""
    spec = ARCH_SPECS[arch]
    if spec.get("kind") == "3d":
        return _parameter_count_3d(spec)
    feat, embed = spec["feat"], spec["embed"]
    n, c = _unet_parameter_count(spec["stem"], spec["levels"], taps=9, up_taps=4)  # per-slice 2D U-Net
    n += c * feat + feat                      # to_feat
    n += 2 * (27 * feat * feat + feat)        # 3D head
    n += 3 * feat + 1 + 3 * feat * embed + embed  # heatmap and embedding heads
    return n


def activation_elements_per_pixel(arch: str) -> float:
    """Tensor elements the forward pass keeps for backward, per input pixel of one slice.

    Counts the outputs of every convolution, BatchNorm, pooling, up-sampling and
    concatenation of the per-slice 2D U-Net (the stem halves y and x, each level halves
    again), the 3D head and the two output heads, plus a few heatmap-sized tensors of the
    loss. In-place ReLUs add nothing.
    """
    spec = ARCH_SPECS[arch]
    if spec.get("kind") == "3d":
        return _activations_3d(spec)
    stem, levels, feat, embed = spec["stem"], spec["levels"], spec["feat"], spec["embed"]
    e = 2.0 * stem                      # stem convolution and BatchNorm at 1/4 of the pixels
    for i, c in enumerate(levels):
        area = 4.0**-i
        if i:
            e += levels[i - 1] * area   # max-pool output
        e += 4.0 * c * area             # double convolution: 2 convolutions + 2 BatchNorms
    for i, c in enumerate(levels[:-1]):
        e += 7.0 * c * 4.0**-i          # up-sampling, concatenation (2c), double convolution
    e += 3.0 * feat + 1 + 3.0 * embed + 4  # to_feat, head, outputs, normalisation, loss maps
    return e / 4.0                      # all of the above live at half resolution in y and x


def training_views(config: TrainConfig) -> int:
    """Augmented views of each crop in a step: two where a loss compares them, else one."""
    return 2 if config.consistency_weight > 0 or (config.contrastive and config.cr_weight > 0) else 1


def estimate_train_memory_bytes(config: TrainConfig) -> int:
    """Memory one training step needs on top of the loaded data, in bytes.

    From the crop (``crop_z`` x ``crop_xy`` x ``crop_xy`` working voxels), the batch (with
    :func:`training_views` augmented views per crop) and the architecture::

        bytes = ACTIVATION_FACTOR x 4 x activation_elements_per_pixel(arch)
                x views x batch_size x crop_z x crop_xy**2
                + 16 x parameters (weights, gradients, two Adam moments) + STEP_OVERHEAD_BYTES

    ``ACTIVATION_FACTOR`` (saved activations, their gradients and allocator slack) and
    ``STEP_OVERHEAD_BYTES`` were calibrated against the growth of the peak resident memory
    during real training steps on CPU (torch 2.13), measured with
    ``benchmarks/train_memory.py`` for unet_small at crop xy 64, 128 and 256 (crop z 6 and
    16, batch 2 and 4) and for unet_4 and unet_5 at crop xy 128: the estimate was 0.99 to
    1.3 times the measurement (``docs/architecture.md`` has the table). GPU steps were not
    measured; their activations are the same tensors, cuDNN workspaces come on top. The
    preprocessed training tomograms (4 bytes per working voxel) are extra;
    :func:`check_train_memory` adds them.
    """
    pixels = training_views(config) * int(config.batch_size) * int(config.crop_z) * int(config.crop_xy) ** 2
    act = ACTIVATION_FACTOR * 4.0 * activation_elements_per_pixel(config.arch) * pixels
    return int(act + 16 * arch_parameter_count(config.arch) + STEP_OVERHEAD_BYTES)


def available_memory_bytes(device=None) -> int | None:
    """Memory available now: free GPU memory for a CUDA device, else the machine's.

    The machine's available memory is psutil's ``available`` when psutil is installed,
    else ``MemAvailable`` from ``/proc/meminfo``; None when neither can be read (the check
    is then skipped).
    """
    if device is not None and getattr(device, "type", str(device)).startswith("cuda"):
        try:
            import torch

            free, _ = torch.cuda.mem_get_info(device)
            return int(free)
        except Exception:  # no driver information: fall back to the host's memory
            pass
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except Exception:
        pass
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def largest_crop_xy(config: TrainConfig, budget_bytes: int, upper: int = 1024) -> int | None:
    """The largest ``crop_xy`` (a multiple of the network's) whose step fits ``budget_bytes``.

    Keeps the other settings of ``config``; None when not even the smallest crop fits.
    """
    from dataclasses import replace

    mult = network_multiple(config.arch)
    best = None
    c = max(32, mult)
    while c <= upper:
        if estimate_train_memory_bytes(replace(config, crop_xy=c)) > budget_bytes:
            break
        best = c
        c += mult
    return best


def _gb(n: float) -> str:
    return f"{n / GB:.1f} GB"


def _is_cuda(device) -> bool:
    return device is not None and str(getattr(device, "type", device)).startswith("cuda")


def check_train_memory(config: TrainConfig, data_bytes: int = 0, device=None,
                       available_bytes: int | None = None) -> int:
    """Refuse settings whose training would not fit in the memory available now.

    Parameters
    ----------
    config : TrainConfig
    data_bytes : int
        Host memory of the training data still to be loaded (preprocessed tomograms).
    device : torch.device or str, optional
        On a CUDA device the step is checked against the GPU's free memory and the data
        against the machine's; otherwise both against the machine's available memory.
    available_bytes : int, optional
        Override of :func:`available_memory_bytes` for the step's memory (tests, or a
        budget the caller sets).

    Returns
    -------
    int
        The estimated bytes of a step (plus the data when both share the machine's memory).

    Raises
    ------
    CetpickError
        When an estimate exceeds ``USABLE_SHARE`` of the available memory; the message
        gives both figures and the largest crop that would fit.
    """
    step = estimate_train_memory_bytes(config)
    data_bytes = int(data_bytes)
    cuda = _is_cuda(device)
    if cuda:
        host = available_memory_bytes(None)
        if host is not None and data_bytes > USABLE_SHARE * host:
            raise CetpickError(f"The training tomograms need about {_gb(data_bytes)} of memory once loaded but "
                               f"only {_gb(host)} is available; bin them or train on fewer.")
        need, shared_data = step, 0
    else:
        need, shared_data = step + data_bytes, data_bytes
    avail = available_memory_bytes(device) if available_bytes is None else int(available_bytes)
    if avail is None:
        return need
    budget = USABLE_SHARE * avail
    if need <= budget:
        return need
    fit = largest_crop_xy(config, int(budget - shared_data)) if budget > shared_data else None
    if fit is not None:
        advice = (f"crop xy {fit} fits with batch {config.batch_size} and crop z {config.crop_z}; "
                  "or lower the batch or crop z")
    elif budget > shared_data:
        advice = "lower the batch size or crop z"
    else:
        advice = "the training tomograms alone do not fit: bin them or train on fewer"
    where = " on the GPU" if cuda else ""
    raise CetpickError(
        f"Training with crop {config.crop_xy}x{config.crop_xy}x{config.crop_z}, batch {config.batch_size} "
        f"and {config.arch} needs about {_gb(need)} but only {_gb(avail)} of memory is available{where}; "
        f"{advice}.")


__all__ = ["estimate_train_memory_bytes", "check_train_memory", "available_memory_bytes", "largest_crop_xy",
           "arch_parameter_count", "activation_elements_per_pixel"]
