"""Heads trained on frozen features: an attentive pooler and classifier, and their trainer.

The pooler is V-JEPA's AttentivePooler (one learned query per task); the trainer
is a small seeded mini-batch AdamW loop.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
from torch import nn

from jepa_core.api import ComponentError


def standardise(train: torch.Tensor, *others: torch.Tensor) -> list[torch.Tensor]:
    mean = train.mean(dim=0, keepdim=True)
    std = train.std(dim=0, keepdim=True).clamp_min(1e-6)
    return [(t - mean) / std for t in (train, *others)]


class AttentivePooler(nn.Module):
    """Cross-attention pooling (V-JEPA's AttentivePooler, one block): learned queries attend to the tokens.

    ``n_queries`` queries give (B, n_queries, D); the multi-task evaluator uses
    one query per task.
    """

    def __init__(self, dim: int, heads: int, n_queries: int = 1, mlp_ratio: float = 4.0):
        super().__init__()
        self.query = nn.Parameter(torch.zeros(1, n_queries, dim))
        self.norm_q = nn.LayerNorm(dim, eps=1e-6)
        self.norm_kv = nn.LayerNorm(dim, eps=1e-6)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm_mlp = nn.LayerNorm(dim, eps=1e-6)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))
        nn.init.trunc_normal_(self.query, std=0.02)
        for m in self.mlp:
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        q = self.query.expand(tokens.shape[0], -1, -1)
        kv = self.norm_kv(tokens)
        q = q + self.attn(self.norm_q(q), kv, kv, need_weights=False)[0]
        return q + self.mlp(self.norm_mlp(q))


def pick_heads(dim: int, wanted: int | None, fallback: int) -> int:
    if wanted is not None:
        if dim % wanted:
            raise ComponentError(f"'heads' ({wanted}) must divide the feature width {dim}", key="heads")
        return wanted
    for h in (fallback, 8, 4, 2, 1):
        if h and dim % h == 0:
            return h
    return 1


class AttentiveClassifier(nn.Module):
    """Attentive pooler then one linear head per task: (B, T, D) -> list of logits."""

    def __init__(self, dim: int, heads: int, classes: Sequence[int]):
        super().__init__()
        self.pooler = AttentivePooler(dim, heads, n_queries=len(classes))
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.heads = nn.ModuleList(nn.Linear(dim, c) for c in classes)
        for head in self.heads:
            nn.init.trunc_normal_(head.weight, std=0.02)
            nn.init.zeros_(head.bias)

    def forward(self, tokens: torch.Tensor) -> list[torch.Tensor]:
        pooled = self.norm(self.pooler(tokens))
        return [head(pooled[:, i]) for i, head in enumerate(self.heads)]


def fit(groups: list[dict], loss_fn: Callable[[torch.Tensor], torch.Tensor], n: int, *, epochs: int,
        batch_size: int, g: torch.Generator, weight_decay: float = 0.0,
        train_modules: Sequence[nn.Module] = ()) -> None:
    """Mini-batch AdamW over ``n`` samples, cosine lr decay; ``loss_fn(indices) -> loss``.

    The sample order of every epoch comes from ``g``; ``train_modules`` are in
    train mode while fitting and in eval mode after.
    """
    optimiser = torch.optim.AdamW(groups, weight_decay=weight_decay)
    for group in optimiser.param_groups:
        group["base_lr"] = group["lr"]
    steps_per_epoch = max(1, math.ceil(n / batch_size))
    total = epochs * steps_per_epoch
    step = 0
    for module in train_modules:
        module.train()
    for _ in range(epochs):
        order = torch.randperm(n, generator=g)
        for start in range(0, n, batch_size):
            scale = 0.5 * (1.0 + math.cos(math.pi * step / total))
            for group in optimiser.param_groups:
                group["lr"] = group["base_lr"] * scale
            loss = loss_fn(order[start:start + batch_size])
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            step += 1
    for module in train_modules:
        module.eval()


@torch.no_grad()
def predict_batches(fn: Callable[[torch.Tensor], list[torch.Tensor] | torch.Tensor], n: int,
                    batch_size: int) -> list[torch.Tensor]:
    """Argmax predictions of ``fn(indices)`` (logits or a list of logits) over ``n`` samples."""
    outs: list[list[torch.Tensor]] = []
    for start in range(0, n, batch_size):
        logits = fn(torch.arange(start, min(n, start + batch_size)))
        logits = logits if isinstance(logits, list) else [logits]
        outs.append([lg.argmax(dim=-1).cpu() for lg in logits])
    return [torch.cat(parts) for parts in zip(*outs)]


def accuracy(predicted: torch.Tensor, labels: torch.Tensor) -> float:
    """Top-1 of predictions against labels, wherever each lives (a probe predicts on the GPU)."""
    return float((predicted.cpu() == labels.cpu()).float().mean()) if labels.numel() else float("nan")
