"""Losses of the cet_pick method (torch).

Targets ``g`` use the method's coding: 1 hard positive, 0 < g < 1 soft positive, -1
unlabelled; ours adds 0 known negative (a negative click), -2 ignored (masked) and -3
another class's particle (several classes). ``logits`` are heatmap logits of the same shape.
"""
from __future__ import annotations

import math

import torch
from torch.nn import functional as F


def _mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    n = mask.sum()
    if n == 0:
        return x.new_zeros(())
    return (x * mask).sum() / n


#: Target code of another class's labelled particle (``data.OTHER_CLASS``).
OTHER = -3.0


def target_masks(g: torch.Tensor) -> dict[str, torch.Tensor]:
    """Boolean masks of the target codes: hard, soft, negative, unlabelled, other class, used (not ignored)."""
    other = g == OTHER
    return {
        "hard": g >= 1.0,
        "soft": (g > 0) & (g < 1.0),
        "neg": g == 0,
        "unl": (g < 0) & (g > -1.5),
        "other": other,
        "used": (g > -1.5) | other,
    }


def negative_click_weight(tau: float) -> float:
    """Weight of the negative clicks' risk: the positives' weight, tau.

    The PU risk weighs the positives by tau and the negative class by 1 - tau. The negative
    clicks (the rejected picks of a review, the negatives clicked by hand) are a handful of
    look-alikes, as certain and as rare as the labels: their risk weighs what the labels' does,
    and what another class's labelled particles weigh in a model of several classes. Heavier,
    the network learns to push the class down with its look-alikes: at 1 - tau (300 times the
    positives at a prior of 0.003) the proteasome's best F1 fell 0.45 -> 0.10; at
    sqrt(tau (1 - tau)), the default until round 35, a review of the next tomogram (13
    rejections, 7 of them shells) lowered the barrels of a third tomogram below the model's
    round 1 (F1 0.767 -> 0.717; the seven shells alone: 0.692; docs/benchmark.md, round 36).
    """
    return max(tau, 0.0)


def pu_heatmap_loss(logits: torch.Tensor, g: torch.Tensor, tau: float,
                    neg_weight: float | None = None, other_weight: float | None = None) -> dict[str, torch.Tensor]:
    """Non-negative PU risk (Kiryo et al. 2017) with CenterNet focal terms (alpha 2, beta 4).

    With P hard positives, S soft positives, U unlabelled voxels and N known negatives
    (negative clicks, target code 0; cells coded -2 are ignored)::

        R+   = -mean_P (1-p)^2 log p      - mean_S (1-g)^4 p^2 log(1-p)
        R-_P = -mean_P p^2 log(1-p)        - mean_S g^4 (1-p)^2 log p
        R-_U = -mean_U p^2 log(1-p)
        R-_N = -mean_N p^2 log(1-p)
        R-_O = -mean_O p^2 log(1-p)
        L    = tau R+ + max(0, R-_U - tau R-_P) + w_N R-_N + w_O R-_O

    The known-negative terms are added outside the non-negative correction (those cells are
    certainly negative, so they need none): negative clicks with weight ``w_N`` =
    :func:`negative_click_weight` of tau by default; the O cells of other classes'
    labelled particles (code -3, several classes) with ``w_O`` = tau by default: another
    class's label is as certain, and as rare, as one of this class's own.

    Returns a dict with ``loss`` and the four risks.
    """
    p = torch.sigmoid(logits).clamp(1e-6, 1 - 1e-6)
    log_p = F.logsigmoid(logits)
    log_1mp = F.logsigmoid(-logits)
    m = target_masks(g)
    gs = g.clamp(min=0)
    r_pos = _mean(-((1 - p) ** 2) * log_p, m["hard"]) + _mean(-((1 - gs) ** 4) * p**2 * log_1mp, m["soft"])
    r_neg_p = _mean(-(p**2) * log_1mp, m["hard"]) + _mean(-(gs**4) * (1 - p) ** 2 * log_p, m["soft"])
    r_neg_u = _mean(-(p**2) * log_1mp, m["unl"])
    r_neg_n = _mean(-(p**2) * log_1mp, m["neg"])
    r_neg_o = _mean(-(p**2) * log_1mp, m["other"])
    w_n = negative_click_weight(tau) if neg_weight is None else neg_weight
    w_o = tau if other_weight is None else other_weight
    loss = tau * r_pos + torch.clamp(r_neg_u - tau * r_neg_p, min=0) + w_n * r_neg_n + w_o * r_neg_o
    return {"loss": loss, "r_pos": r_pos, "r_neg_p": r_neg_p, "r_neg_u": r_neg_u, "r_neg_n": r_neg_n,
            "r_neg_o": r_neg_o}


def consistency_loss(p1: torch.Tensor, p2: torch.Tensor, used: torch.Tensor | None = None) -> torch.Tensor:
    """Mean squared difference of the two views' probabilities (same frame), over ``used`` cells."""
    d = (p1 - p2) ** 2
    return d.mean() if used is None else _mean(d, used)


def debiased_nce(s_pos: torch.Tensor, s_neg: torch.Tensor, tau_plus: torch.Tensor | float, temp: float,
                 neg_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Debiased InfoNCE (Chuang et al. 2020) for each (anchor, positive) pair.

    Parameters
    ----------
    s_pos : (A, P) cosine similarities of anchors to their positives.
    s_neg : (A, M) cosine similarities of anchors to sampled negatives.
    tau_plus : float or (A, 1)
        Prior probability that a "negative" is in fact of the anchor's class.
    neg_mask : (A, M) bool, optional
        Which negatives count for each anchor (e.g. to drop the anchor itself).

    Returns
    -------
    (A, P) losses ``-log(e^{s+/t} / (e^{s+/t} + M Ng))`` with
    ``Ng = max((mean e^{s-/t} - tau+ e^{s+/t}) / (1 - tau+), e^{-1/t})``.
    """
    # exponentials shifted by e^{-1/t} so they stay in [e^{-2/t}, 1]
    a_pos = torch.exp((s_pos - 1.0) / temp)
    a_neg = torch.exp((s_neg - 1.0) / temp)
    if neg_mask is None:
        neg_mask = torch.ones_like(a_neg, dtype=torch.bool)
    m = neg_mask.sum(dim=1, keepdim=True).clamp(min=1).to(a_neg.dtype)
    mean_neg = (a_neg * neg_mask).sum(dim=1, keepdim=True) / m
    floor = math.exp(-2.0 / temp)
    ng = ((mean_neg - tau_plus * a_pos) / (1.0 - tau_plus)).clamp(min=floor)
    return -torch.log(a_pos / (a_pos + m * ng))


def contrastive_loss(e1: torch.Tensor, e2: torch.Tensor, g: torch.Tensor, p: torch.Tensor, tau: float,
                     temp: float, thresh: float, n_unlabelled: int, n_negatives: int,
                     generator: torch.Generator | None = None, max_positives: int = 256,
                     unlabelled_weight: float = 0.1) -> torch.Tensor:
    """Debiased contrastive regulariser on per-voxel embeddings, with sampled anchors.

    Instead of the original's dense all-pairs similarity matrix (tens of GB), anchors are
    all positives (at most ``max_positives``) plus ``n_unlabelled`` unlabelled voxels, and
    negatives ``n_negatives`` unlabelled voxels: memory is bounded and the loss per anchor
    is the same. The self pair never appears in a denominator; soft positives are neither
    positives nor negatives.

    Parameters
    ----------
    e1, e2 : (N, E) L2-normalised embeddings of the same N voxels in two views.
    g : (N,) targets. p : (N,) predicted probabilities (treated as constants).
    """
    dev = e1.device
    pos_idx = torch.nonzero(g > thresh).flatten()
    # unlabelled and known-negative voxels (g == 0; their probability is forced to 0 below,
    # so they are treated as negatives); ignored voxels (g < -1.5) take no part
    unl_idx = torch.nonzero(((g < 0) & (g > -1.5)) | (g == 0)).flatten()
    p = torch.where(g == 0, torch.zeros_like(p), p)
    if len(unl_idx) == 0:
        return e1.new_zeros(())

    def sample(idx: torch.Tensor, n: int) -> torch.Tensor:
        if len(idx) <= n:
            return idx
        perm = torch.randperm(len(idx), generator=generator)[:n].to(dev)
        return idx[perm]

    neg_idx = sample(unl_idx, n_negatives)
    negs = e2[neg_idx]
    total = e1.new_zeros(())
    if len(pos_idx) >= 1:
        pos_idx = sample(pos_idx, max_positives)
        anchors = e1[pos_idx]
        # positives: every positive voxel in both views except the anchor itself in view 1
        pos_set = torch.cat([e1[pos_idx], e2[pos_idx]], dim=0)
        s_pos = anchors @ pos_set.T
        a = len(pos_idx)
        keep = torch.ones(a, 2 * a, dtype=torch.bool, device=dev)
        keep[torch.arange(a), torch.arange(a)] = False
        per_pair = debiased_nce(s_pos, anchors @ negs.T, tau, temp)
        total = total + (per_pair * keep).sum() / keep.sum()
    u_idx = sample(unl_idx, n_unlabelled)
    anchors = e1[u_idx]
    s_pos = (anchors * e2[u_idx]).sum(dim=1, keepdim=True)
    s_neg = anchors @ negs.T
    not_self = u_idx[:, None] != neg_idx[None, :]
    pu = p[u_idx].detach().clamp(0, 1)[:, None]
    l_as_pos = debiased_nce(s_pos, s_neg, tau, temp, not_self)
    l_as_neg = debiased_nce(s_pos, s_neg, 1.0 - tau, temp, not_self)
    total = total + unlabelled_weight * (pu * l_as_pos + (1 - pu) * l_as_neg).mean()
    return total
