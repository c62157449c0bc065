"""The baselines' losses: SimCLR's NT-Xent, VICReg's three terms, MoCo v3's InfoNCE."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from jepa_core.plugins.baselines.collective import gather


def nt_xent(a: torch.Tensor, b: torch.Tensor, temperature: float) -> torch.Tensor:
    """SimCLR's NT-Xent on (n, d) embeddings of two views, negatives from the global batch.

    For each of the 2N embeddings (N = global batch), with cosine similarity s:
    ``l(i, j) = -log(exp(s_ij / t) / sum_{k != i} exp(s_ik / t))`` where j is the
    other view of the same image and k runs over the other 2N - 1 embeddings of
    both views. Returns the mean over this rank's 2n anchors, so the mean over
    ranks is the paper's ``1/(2N) sum_k [l(2k-1, 2k) + l(2k, 2k-1)]``.
    """
    a, b = F.normalize(a.float(), dim=1), F.normalize(b.float(), dim=1)
    a_all, offset = gather(a)
    b_all, _ = gather(b)
    labels = torch.arange(a.shape[0], device=a.device) + offset
    self_mask = F.one_hot(labels, a_all.shape[0]).bool()
    losses = []
    for anchor, same, other in ((a, a_all, b_all), (b, b_all, a_all)):
        positives_and_others = anchor @ other.T / temperature
        same_view = (anchor @ same.T / temperature).masked_fill(self_mask, float("-inf"))
        losses.append(F.cross_entropy(torch.cat([positives_and_others, same_view], dim=1), labels))
    return (losses[0] + losses[1]) / 2


def off_diagonal(m: torch.Tensor) -> torch.Tensor:
    n = m.shape[0]
    return m.flatten()[:-1].view(n - 1, n + 1)[:, 1:].flatten()


def vicreg_terms(x: torch.Tensor, y: torch.Tensor, gamma: float = 1.0, eps: float = 1e-4):
    """VICReg's (invariance, variance, covariance) terms, unweighted, as the official code.

    invariance: MSE between this rank's x and y (its mean over ranks is the
    global MSE); variance: ``mean_d relu(gamma - sqrt(Var(x_d) + eps))``
    averaged over x and y; covariance: squared off-diagonal entries of the
    covariance (normalised by N - 1) summed and divided by the dimension, for x
    plus y. Variance and covariance use the global batch (gathered with
    gradients).
    """
    x, y = x.float(), y.float()
    invariance = F.mse_loss(x, y)
    x, _ = gather(x)
    y, _ = gather(y)
    n, dim = x.shape
    x = x - x.mean(dim=0)
    y = y - y.mean(dim=0)
    std_x = torch.sqrt(x.var(dim=0) + eps)
    std_y = torch.sqrt(y.var(dim=0) + eps)
    variance = F.relu(gamma - std_x).mean() / 2 + F.relu(gamma - std_y).mean() / 2
    cov_x = x.T @ x / (n - 1)
    cov_y = y.T @ y / (n - 1)
    covariance = off_diagonal(cov_x).pow(2).sum() / dim + off_diagonal(cov_y).pow(2).sum() / dim
    return invariance, variance, covariance


def moco_contrastive(q: torch.Tensor, k: torch.Tensor, temperature: float) -> torch.Tensor:
    """MoCo v3's ``ctr(q, k)``: cross-entropy of q against every key of the global batch, times 2t."""
    q, k = F.normalize(q.float(), dim=1), F.normalize(k.float(), dim=1)
    with torch.no_grad():  # keys come from the momentum branch: gathered without gradient
        k_all, offset = gather(k.detach())
    logits = q @ k_all.T / temperature
    labels = torch.arange(q.shape[0], device=q.device) + offset
    return F.cross_entropy(logits, labels) * (2 * temperature)
