"""The detector network (returns logits; losses and peak picking live elsewhere)."""
from .network import ARCH_SPECS, PseudoUNet3D, build_network, count_parameters, fast_layout, fold_batchnorm

__all__ = ["ARCH_SPECS", "PseudoUNet3D", "build_network", "count_parameters", "fast_layout", "fold_batchnorm"]
