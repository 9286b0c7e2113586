import pytest
import torch

from napari_cetpick.model import ARCH_SPECS, build_network, count_parameters


@pytest.mark.parametrize("arch, approx", [("unet_4", 2.0e6), ("unet_5", 7.8e6)])
def test_published_sizes(arch, approx):
    assert count_parameters(build_network(arch)) == pytest.approx(approx, rel=0.05)


def test_small_is_small():
    assert count_parameters(build_network("unet_small")) < 3e5


@pytest.mark.parametrize("arch", sorted(ARCH_SPECS))
def test_shapes_and_batches(arch):
    net = build_network(arch).eval()
    m = net.multiple
    mz = net.multiple_zyx[0]
    d = 5 if mz == 1 else 2 * mz
    x = torch.rand(3, 1, d, 2 * m, 3 * m)
    with torch.no_grad():
        hm, proj = net(x)
    sz, sy, sx = net.out_stride
    assert hm.shape == (3, 1, d // sz, 2 * m // sy, 3 * m // sx)
    assert proj.shape[0] == 3 and proj.shape[2:] == hm.shape[2:]
    assert torch.allclose(proj.norm(dim=1), torch.ones(1), atol=1e-4)
    # batch elements are independent (real batches, no squeeze)
    with torch.no_grad():
        hm1, _ = net(x[1:2])
    assert torch.allclose(hm[1:2], hm1, atol=1e-5)


def test_bad_input_size():
    net = build_network("unet_small")
    with pytest.raises(ValueError, match="multiples"):
        net(torch.rand(1, 1, 4, 30, 32))


@pytest.mark.parametrize("arch", sorted(ARCH_SPECS))
def test_config_knows_the_network_multiple(arch):
    # config (torch-free) validates crops with the multiple the network really needs
    from napari_cetpick.config import TrainConfig, network_multiple
    from napari_cetpick.errors import CetpickError

    m = network_multiple(arch)
    net = build_network(arch).eval()
    assert m == net.multiple
    with torch.no_grad():
        if hasattr(net, "unet"):  # the pseudo-3D networks: the 2D part really needs it
            net.unet(net.stem(torch.zeros(1, 1, 3 * m, m)))  # any multiple works
            with pytest.raises(RuntimeError):
                net.unet(net.stem(torch.zeros(1, 1, 3 * m + m // 2, m)))  # half of it does not
        else:  # the 3D networks: on every axis
            net(torch.zeros(1, 1, m, 2 * m, m), with_proj=False)
            with pytest.raises(ValueError, match="multiples"):
                net(torch.zeros(1, 1, m + m // 2, 2 * m, m), with_proj=False)
    TrainConfig(arch=arch, crop_xy=max(32, m) * 2).validate()
    with pytest.raises(CetpickError, match=f"multiple of {m}"):
        TrainConfig(arch=arch, crop_xy=max(32, m) * 2 + m // 2).validate()


def test_unet_5_crop_of_48_is_refused_before_training():
    # 48 is a multiple of 16 (the old check) but not of unet_5's 32: it used to pass
    # validation and fail inside training or calibration
    from napari_cetpick.config import TrainConfig
    from napari_cetpick.errors import CetpickError

    with pytest.raises(CetpickError, match=r"crop_xy must be a multiple of 32 \(the unet_5 network's\)"):
        TrainConfig(arch="unet_5", crop_xy=48).validate()


def test_default_network_is_the_four_level_3d_unet():
    """One default network on every device (the CLI without --arch, the panel's Network "auto"):
    the 3D U-Net of four levels, whose input must divide by 16 on every axis; a crop depth that
    does not is refused before training, in one sentence."""
    from napari_cetpick.config import TrainConfig
    from napari_cetpick.errors import CetpickError
    from napari_cetpick.memory import arch_parameter_count

    cfg = TrainConfig()
    assert cfg.arch == "unet3d_4" and len(ARCH_SPECS[cfg.arch]["levels"]) == 4
    net = build_network(cfg.arch)
    assert net.multiple_zyx == (16, 16, 16) and cfg.crop_z % 16 == 0 and cfg.crop_xy % 16 == 0
    assert sum(p.numel() for p in net.parameters()) == arch_parameter_count(cfg.arch)
    cfg.validate()
    with pytest.raises(CetpickError, match=r"crop_z must be a multiple of 16 \(the unet3d_4 network's\), got 24"):
        TrainConfig(crop_z=24).validate()
    TrainConfig(crop_z=24, arch="unet3d_small").validate()  # three levels: multiples of 8


@pytest.mark.parametrize("arch", sorted(ARCH_SPECS))
def test_folding_batchnorm_keeps_the_scores(arch):
    """Detection folds each batch normalisation into its convolution: the same scores (float32
    rounding), no normalisation left, and only for a network in eval mode."""
    import copy

    from napari_cetpick.model import fold_batchnorm

    torch.manual_seed(0)
    net = build_network(arch, n_classes=2)
    norms = [m for m in net.modules() if isinstance(m, (torch.nn.BatchNorm2d, torch.nn.BatchNorm3d))]
    assert norms
    for m in norms:  # statistics and affine terms far from the identity a fresh network has
        m.running_mean.uniform_(-1, 1), m.running_var.uniform_(0.3, 3.0)
        m.weight.data.uniform_(0.5, 1.5), m.bias.data.uniform_(-0.5, 0.5)
    with pytest.raises(ValueError, match="eval"):
        fold_batchnorm(copy.deepcopy(net))
    net.eval()
    mult = net.multiple_zyx
    x = torch.randn(1, 1, max(8, mult[0]), 2 * mult[1], 2 * mult[2])
    with torch.inference_mode():
        want, _ = net(x, with_proj=False)
        folded = fold_batchnorm(copy.deepcopy(net))
        got, _ = folded(x, with_proj=False)
    assert not any(isinstance(m, (torch.nn.BatchNorm2d, torch.nn.BatchNorm3d)) for m in folded.modules())
    assert want.abs().max() > 0.1 and torch.allclose(got, want, atol=1e-4, rtol=1e-4)
