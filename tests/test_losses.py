"""Each loss term against values computed by hand on tiny tensors."""
import math

import pytest
import torch

from napari_cetpick.losses import consistency_loss, contrastive_loss, debiased_nce, pu_heatmap_loss

L2 = math.log(2.0)


def _logit(p):
    return math.log(p / (1 - p))


@pytest.fixture
def small_case():
    # one hard positive (p=0.5), one soft positive g=0.5 (p=0.5), two unlabelled (p=0.25)
    g = torch.tensor([1.0, 0.5, -1.0, -1.0])
    logits = torch.tensor([0.0, 0.0, _logit(0.25), _logit(0.25)])
    return logits, g


def test_pu_risks_by_hand(small_case):
    logits, g = small_case
    out = pu_heatmap_loss(logits, g, tau=0.1)
    # R+ = (1-.5)^2 ln2 + (1-.5)^4 .5^2 ln2
    r_pos = 0.25 * L2 + 0.0625 * 0.25 * L2
    # R-_P = .5^2 ln2 + .5^4 (1-.5)^2 ln2
    r_neg_p = 0.25 * L2 + 0.0625 * 0.25 * L2
    # R-_U = .25^2 (-ln .75)
    r_neg_u = 0.0625 * -math.log(0.75)
    assert out["r_pos"].item() == pytest.approx(r_pos, rel=1e-5)
    assert out["r_neg_p"].item() == pytest.approx(r_neg_p, rel=1e-5)
    assert out["r_neg_u"].item() == pytest.approx(r_neg_u, rel=1e-5)
    # tau 0.1: the negative part R-_U - tau R-_P is negative, so it is clamped to 0
    assert out["loss"].item() == pytest.approx(0.1 * r_pos, rel=1e-5)
    # tau 0.05: the negative part stays
    out = pu_heatmap_loss(logits, g, tau=0.05)
    assert out["loss"].item() == pytest.approx(0.05 * r_pos + r_neg_u - 0.05 * r_neg_p, rel=1e-5)


def test_pu_empty_sets_are_zero():
    out = pu_heatmap_loss(torch.zeros(3), torch.full((3,), -1.0), tau=0.2)
    assert out["r_pos"].item() == 0 and out["r_neg_p"].item() == 0
    assert out["loss"].item() == pytest.approx(0.25 * L2, rel=1e-5)  # p=.5: .5^2 ln 2


def test_pu_loss_has_gradient_towards_positives(small_case):
    logits, g = small_case
    logits = logits.clone().requires_grad_(True)
    pu_heatmap_loss(logits, g, tau=0.1)["loss"].backward()
    assert logits.grad[0] < 0  # raising the hard positive's logit lowers the loss


def test_consistency_by_hand():
    a = torch.tensor([0.2, 0.8])
    b = torch.tensor([0.4, 0.4])
    assert consistency_loss(a, b).item() == pytest.approx((0.04 + 0.16) / 2)


@pytest.mark.parametrize("tau_plus, expected", [
    (0.0, math.log(1 + 2 / math.e)),
    (0.1, math.log(1 + 2 * (math.exp(-1) - 0.1) / 0.9)),
    (0.5, math.log(1 + 2 * math.exp(-2))),  # estimate below the floor e^{-1/t}: clamped
])
def test_debiased_nce_by_hand(tau_plus, expected):
    # temperature 1, one positive at similarity 1, two negatives at similarity 0
    s_pos = torch.tensor([[1.0]])
    s_neg = torch.tensor([[0.0, 0.0]])
    assert debiased_nce(s_pos, s_neg, tau_plus, 1.0).item() == pytest.approx(expected, rel=1e-5)


def test_debiased_nce_mask_drops_negatives():
    s_pos = torch.tensor([[1.0]])
    s_neg = torch.tensor([[0.0, 1.0]])
    masked = debiased_nce(s_pos, s_neg, 0.0, 1.0, torch.tensor([[True, False]]))
    assert masked.item() == pytest.approx(math.log(1 + 1 / math.e), rel=1e-5)


def _embed(n, e=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, e, generator=g)
    return torch.nn.functional.normalize(x, dim=1)


def test_contrastive_prefers_clustered_positives():
    n = 400
    g = torch.full((n,), -1.0)
    g[:10] = 1.0
    g[10:20] = 0.3  # soft positives: neither positives nor negatives
    p = torch.full((n,), 0.1)
    rand1, rand2 = _embed(n, seed=1), _embed(n, seed=2)
    clustered = rand1.clone()
    clustered[:10] = torch.nn.functional.normalize(torch.ones(8) + 0.01 * torch.randn(10, 8), dim=1)
    gen = torch.Generator().manual_seed(0)
    l_rand = contrastive_loss(rand1, rand2, g, p, 0.05, 0.1, 0.5, 64, 128, generator=gen)
    gen = torch.Generator().manual_seed(0)
    l_clus = contrastive_loss(clustered, clustered, g, p, 0.05, 0.1, 0.5, 64, 128, generator=gen)
    assert torch.isfinite(l_rand) and torch.isfinite(l_clus)
    assert l_clus < l_rand


def test_contrastive_memory_is_bounded():
    # 200k voxels: a dense similarity matrix would need 160 GB; sampled anchors need little
    n = 200_000
    e = _embed(n, e=16)
    g = torch.full((n,), -1.0)
    g[:50] = 1.0
    loss = contrastive_loss(e, e, g, torch.full((n,), 0.1), 0.05, 0.07, 0.5, 128, 512)
    assert torch.isfinite(loss)


def test_contrastive_without_positives_uses_unlabelled_only():
    n = 100
    e = _embed(n)
    g = torch.full((n,), -1.0)
    loss = contrastive_loss(e, e, g, torch.zeros(n), 0.05, 0.1, 0.5, 16, 32)
    assert torch.isfinite(loss) and loss >= 0


def test_known_negatives_and_ignored_cells_by_hand():
    # codes: hard positive, known negative, unlabelled, ignored
    g = torch.tensor([1.0, 0.0, -1.0, -2.0])
    logits = torch.tensor([0.0, _logit(0.5), _logit(0.25), 3.0])
    out = pu_heatmap_loss(logits, g, tau=0.05)
    r_pos = 0.25 * L2
    r_neg_p = 0.25 * L2
    r_neg_u = 0.0625 * -math.log(0.75)
    r_neg_n = 0.25 * L2  # p = .5 at the negative: .5^2 (-ln .5)
    assert out["r_neg_n"].item() == pytest.approx(r_neg_n, rel=1e-5)
    assert out["r_neg_u"].item() == pytest.approx(r_neg_u, rel=1e-5)
    # the negative cell is not unlabelled, and the known-negative term weighs what the positives'
    # does (tau), not what the whole negative class does (1 - tau)
    w_n = 0.05
    expected = 0.05 * r_pos + max(0.0, r_neg_u - 0.05 * r_neg_p) + w_n * r_neg_n
    assert out["loss"].item() == pytest.approx(expected, rel=1e-5)
    # an ignored cell takes no part, whatever its score
    other = pu_heatmap_loss(torch.tensor([0.0, _logit(0.5), _logit(0.25), -5.0]), g, tau=0.05)
    assert other["loss"].item() == pytest.approx(out["loss"].item(), rel=1e-6)
    # a weight given in the settings wins
    assert pu_heatmap_loss(logits, g, tau=0.05, neg_weight=0.5)["loss"].item() == \
        pytest.approx(expected - w_n * r_neg_n + 0.5 * r_neg_n, rel=1e-5)
    # without negatives the term is 0
    assert pu_heatmap_loss(logits, torch.tensor([1.0, -1.0, -1.0, -2.0]), tau=0.05)["r_neg_n"].item() == 0.0


def test_consistency_skips_ignored_cells():
    p1 = torch.tensor([0.2, 0.9])
    p2 = torch.tensor([0.4, 0.1])
    assert consistency_loss(p1, p2, torch.tensor([True, False])).item() == pytest.approx(0.04)


def test_other_class_cells_are_negatives_weighed_by_their_own_weight():
    import torch

    from napari_cetpick.losses import OTHER, pu_heatmap_loss, target_masks

    g = torch.tensor([1.0, -1.0, -1.0, OTHER, -2.0])
    logits = torch.tensor([0.0, -3.0, -3.0, 2.0, 5.0])
    m = target_masks(g)
    assert m["other"].tolist() == [False, False, False, True, False]
    assert m["used"].tolist() == [True, True, True, True, False]
    assert not m["unl"][3]
    base = pu_heatmap_loss(logits, g, 0.01, other_weight=0.0)
    heavy = pu_heatmap_loss(logits, g, 0.01, other_weight=0.5)
    p = torch.sigmoid(torch.tensor(2.0))
    assert heavy["r_neg_o"].item() == pytest.approx((-(p**2) * torch.log(1 - p)).item(), rel=1e-5)
    assert (heavy["loss"] - base["loss"]).item() == pytest.approx(0.5 * heavy["r_neg_o"].item(), rel=1e-5)
    # by default another class's particle weighs as one of this class's own labels (tau)
    assert pu_heatmap_loss(logits, g, 0.01)["loss"].item() == pytest.approx(
        pu_heatmap_loss(logits, g, 0.01, other_weight=0.01)["loss"].item())
