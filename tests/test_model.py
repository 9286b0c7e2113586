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
    x = torch.rand(3, 1, 5, 2 * m, 3 * m)
    with torch.no_grad():
        hm, proj = net(x)
    assert hm.shape == (3, 1, 5, m, 3 * m // 2)
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
