"""Pseudo-3D U-Net of the cet_pick method.

Each z-slice goes through a 2D U-Net (stem with stride 2, so the output has stride 2 in y
and x), then a small 3D head mixes neighbouring slices and predicts a heatmap logit and a
per-voxel embedding for the contrastive loss.

Shapes: input ``(B, 1, D, H, W)`` with ``H`` and ``W`` multiples of ``2 ** len(levels)``;
outputs ``hm`` ``(B, K, D, H/2, W/2)`` (one logit channel per class, K = ``n_classes``) and ``proj`` ``(B, E, D, H/2, W/2)``
(L2-normalised along E).
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

# the architecture table lives in config (torch-free) so settings can be checked without torch
from ..config import ARCH_SPECS, network_multiple  # noqa: F401


def _double_conv(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True),
        nn.Conv2d(c_out, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True),
    )


class UNet2D(nn.Module):
    """2D U-Net: max-pool down, transposed convolution up, skip concatenation."""

    def __init__(self, c_in: int, levels: tuple[int, ...]):
        super().__init__()
        self.down = nn.ModuleList()
        c = c_in
        for c_out in levels:
            self.down.append(_double_conv(c, c_out))
            c = c_out
        self.up = nn.ModuleList()
        self.up_conv = nn.ModuleList()
        for c_skip in reversed(levels[:-1]):
            self.up.append(nn.ConvTranspose2d(c, c_skip, 2, stride=2))
            self.up_conv.append(_double_conv(2 * c_skip, c_skip))
            c = c_skip
        self.c_out = c

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for i, block in enumerate(self.down):
            if i:
                x = F.max_pool2d(x, 2)
            x = block(x)
            skips.append(x)
        for up, conv, skip in zip(self.up, self.up_conv, reversed(skips[:-1])):
            x = conv(torch.cat([up(x), skip], dim=1))
        return x


class PseudoUNet3D(nn.Module):
    """Per-slice 2D U-Net followed by a 3D head.

    Parameters
    ----------
    stem, levels, feat, embed : int / tuple
        Channel widths; see :data:`ARCH_SPECS`.
    """

    #: output stride (z, y, x) in input voxels; grid cell j covers inputs s*j … s*j+s-1
    out_stride = (1, 2, 2)

    def __init__(self, stem: int = 16, levels: tuple[int, ...] = (16, 32, 64), feat: int = 16, embed: int = 16,
                 stem_kernel: int = 8, n_classes: int = 1):
        super().__init__()
        self.levels = tuple(levels)
        # An even kernel at stride 2 (padding k/2 - 1) centres output j on inputs 2j and 2j+1,
        # the block the grid cell covers; an odd one (the original's 7) centres it on 2j, which
        # flipped and rotated training views contradict by one voxel.
        self.stem = nn.Sequential(
            nn.Conv2d(1, stem, stem_kernel, stride=2, padding=(stem_kernel - 1) // 2, bias=False),
            nn.BatchNorm2d(stem), nn.ReLU(inplace=True)
        )
        self.unet = UNet2D(stem, self.levels)
        self.to_feat = nn.Conv2d(self.unet.c_out, feat, 1)
        # dilation (1, 4, 4) widens the xy context of the head cheaply; z context is ±1 per conv
        self.head = nn.Sequential(
            nn.Conv3d(feat, feat, 3, padding=(1, 4, 4), dilation=(1, 4, 4)), nn.ReLU(inplace=True),
            nn.Conv3d(feat, feat, 3, padding=(1, 4, 4), dilation=(1, 4, 4)), nn.ReLU(inplace=True),
        )
        self.hm = nn.Conv3d(feat, n_classes, (3, 1, 1), padding=(1, 0, 0))
        self.proj = nn.Conv3d(feat, embed, (3, 1, 1), padding=(1, 0, 0))
        # start with a low heatmap prior so early PU losses are well behaved (CenterNet's trick)
        nn.init.constant_(self.hm.bias, -2.19)

    @property
    def multiple(self) -> int:
        """Input y/x sizes must be multiples of this."""
        return 2 ** len(self.levels)  # = config.network_multiple(arch)

    @property
    def multiple_zyx(self) -> tuple[int, int, int]:
        """Input sizes must be multiples of these, per axis."""
        return (1, self.multiple, self.multiple)

    @property
    def context_zyx(self) -> tuple[int, int, int]:
        """Halo (input voxels per side) that tiled inference reads around each tile.

        The 3D head and the output heads see ±3 slices; in y/x the receptive field is wider
        than 32 voxels, but its tail beyond that changes scores by less than 1e-2.
        """
        return (4, 32, 32)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        b, c, d, h, w = x.shape
        if h % self.multiple or w % self.multiple:
            raise ValueError(f"input y/x sizes must be multiples of {self.multiple}, got {h}x{w}")
        y = x.permute(0, 2, 1, 3, 4).reshape(b * d, c, h, w)
        y = self.to_feat(self.unet(self.stem(y)))
        y = y.reshape(b, d, y.shape[1], h // 2, w // 2).permute(0, 2, 1, 3, 4)
        return self.head(y)

    def forward(self, x: torch.Tensor, with_proj: bool = True):
        """Return ``(hm_logits, proj)``; ``proj`` is None when ``with_proj`` is False."""
        f = self.features(x)
        hm = float32_head(self.hm, f)
        if not with_proj:
            return hm, None
        return hm, F.normalize(float32_head(self.proj, f), dim=1)


def _double_conv3d(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv3d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm3d(c_out), nn.ReLU(inplace=True),
        nn.Conv3d(c_out, c_out, 3, padding=1, bias=False), nn.BatchNorm3d(c_out), nn.ReLU(inplace=True),
    )


def float32_head(head: nn.Module, f: torch.Tensor) -> torch.Tensor:
    """``head(f)`` in float32 even inside a reduced-precision autocast: the scores keep their
    resolution (a bfloat16 logit of 3 moves in steps of 0.016, so peaks would tie)."""
    if f.dtype == torch.float32:
        return head(f)
    with torch.autocast(f.device.type, enabled=False):
        return head(f.float())


class UNet3DDetector(nn.Module):
    """A true 3D U-Net: every layer sees the particle's whole 3D shape.

    A 4×4×4 stem at stride 2 (an even kernel, so output j is centred on inputs 2j and 2j+1),
    then a 3D U-Net (max-pool down, transposed convolution up, skip concatenation), then
    1×1×1 heads ``hm`` (logit) and ``proj`` (L2-normalised embedding).

    Shapes: input ``(B, 1, D, H, W)`` with every size a multiple of :attr:`multiple`;
    outputs ``hm`` ``(B, K, D/2, H/2, W/2)`` (one logit per class) and ``proj`` ``(B, E, D/2, H/2, W/2)``.
    """

    out_stride = (2, 2, 2)

    def __init__(self, stem: int = 16, levels: tuple[int, ...] = (16, 32, 64), embed: int = 16, n_classes: int = 1):
        super().__init__()
        self.levels = tuple(levels)
        self.stem = nn.Sequential(nn.Conv3d(1, stem, 4, stride=2, padding=1, bias=False),
                                  nn.BatchNorm3d(stem), nn.ReLU(inplace=True))
        self.down = nn.ModuleList()
        c = stem
        for c_out in levels:
            self.down.append(_double_conv3d(c, c_out))
            c = c_out
        self.up = nn.ModuleList()
        self.up_conv = nn.ModuleList()
        for c_skip in reversed(levels[:-1]):
            self.up.append(nn.ConvTranspose3d(c, c_skip, 2, stride=2))
            self.up_conv.append(_double_conv3d(2 * c_skip, c_skip))
            c = c_skip
        self.hm = nn.Conv3d(c, n_classes, 1)
        self.proj = nn.Conv3d(c, embed, 1)
        nn.init.constant_(self.hm.bias, -2.19)

    @property
    def multiple(self) -> int:
        """Input sizes (every axis) must be multiples of this."""
        return 2 ** len(self.levels)

    @property
    def multiple_zyx(self) -> tuple[int, int, int]:
        return (self.multiple,) * 3

    @property
    def context_zyx(self) -> tuple[int, int, int]:
        """Halo (input voxels per side) for tiled inference: most of the receptive field.

        Tiles round it up to the network's multiple: 24 for three levels, 32 for four, whose
        scores then lie within 0.006 of one untiled pass over a 512 × 512 × 160 tomogram
        (99.9 % within 0.0005; docs/benchmark.md, "Round 9")."""
        return (24, 24, 24)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        if any(n % self.multiple for n in x.shape[2:]):
            raise ValueError(f"input sizes must be multiples of {self.multiple}, got {tuple(x.shape[2:])}")
        x = self.stem(x)
        skips = []
        for i, block in enumerate(self.down):
            if i:
                x = F.max_pool3d(x, 2)
            x = block(x)
            skips.append(x)
        for up, conv, skip in zip(self.up, self.up_conv, reversed(skips[:-1])):
            x = conv(torch.cat([up(x), skip], dim=1))
        return x

    def forward(self, x: torch.Tensor, with_proj: bool = True):
        """Return ``(hm_logits, proj)``; ``proj`` is None when ``with_proj`` is False."""
        f = self.features(x)
        hm = float32_head(self.hm, f)
        if not with_proj:
            return hm, None
        return hm, F.normalize(float32_head(self.proj, f), dim=1)


def fold_batchnorm(net: nn.Module) -> nn.Module:
    """Fold every batch normalisation that follows a convolution into that convolution, in
    place, for inference (``net`` in eval mode; the scores stay equal up to rounding).

    In eval mode a batch normalisation is a fixed per-channel scale and shift, which the
    convolution's weights and bias can carry: one pass over each activation map fewer. On 2
    CPU cores the normalisations took 3.2 s of a 32 s four-view detection of 512 × 512 × 160
    (docs/benchmark.md, "Round 8").
    """
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    if net.training:
        raise ValueError("fold_batchnorm needs a network in eval mode")
    for seq in [m for m in net.modules() if isinstance(m, nn.Sequential)]:
        for i in range(len(seq) - 1):
            conv, bn = seq[i], seq[i + 1]
            if isinstance(conv, (nn.Conv2d, nn.Conv3d)) and isinstance(bn, (nn.BatchNorm2d, nn.BatchNorm3d)):
                seq[i], seq[i + 1] = fuse_conv_bn_eval(conv, bn), nn.Identity()
    return net


def fast_layout(net: nn.Module, device) -> torch.memory_format:
    """Put ``net`` in the memory layout that runs fastest on ``device``; return it for the inputs.

    The 3D network on a CPU runs channels-last (``torch.channels_last_3d``): measured on 2
    cores, a training step of 8 crops of 32 × 64 × 64 took 0.26 s instead of 0.36 s and a
    64 × 256 × 256 detection block 0.62 s instead of 0.91 s, with outputs equal to 1e-6. The
    pseudo-3D networks fold depth into the batch and stay as they are; GPUs are left alone.
    """
    fmt = torch.contiguous_format
    if isinstance(net, UNet3DDetector) and torch.device(device).type == "cpu":
        fmt = torch.channels_last_3d
        net.to(memory_format=fmt)
    return fmt


def build_network(arch: str, n_classes: int = 1) -> nn.Module:
    """Build a network by architecture name (see :data:`ARCH_SPECS`), one heatmap channel per class.

    Several classes share everything but the last 1×1 (×3) convolution: one forward and
    backward pass serves them all.
    """
    spec = ARCH_SPECS[arch]
    if spec.get("kind") == "3d":
        return UNet3DDetector(stem=spec["stem"], levels=spec["levels"], embed=spec["embed"], n_classes=n_classes)
    return PseudoUNet3D(stem=spec["stem"], levels=spec["levels"], feat=spec["feat"], embed=spec["embed"],
                        n_classes=n_classes)


def count_parameters(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())
