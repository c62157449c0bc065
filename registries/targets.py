"""Targets: what is predicted, and the loss that compares it.

Built as ``factory(config, encoder, predictor)`` (the online modules, so a
contrastive target can embed the other view through them). A target that
keeps a momentum copy lists ``(online, copy)`` pairs in ``momentum_pairs``
(solo-learn style) and its schedule in ``momentum(step, total_steps)``; the
engine does the EMA update after each optimizer step, so the schedule stays a
pure function. A ``symmetric`` target also gets the loss with the two views
swapped (MoCo v3), added to the first; it cannot be action-conditioned.
"""

from __future__ import annotations

import torch
from torch import nn


class Target(nn.Module):
    """Base class of targets."""

    #: also compute the loss with source and target views swapped, and add it
    symmetric: bool = False

    def forward(self, images: torch.Tensor, target_idx: torch.Tensor) -> torch.Tensor:
        """(B, M, Nt, D) features of ``images`` at ``target_idx`` (B, M, Nt)."""
        raise NotImplementedError

    def loss(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    @property
    def momentum_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        return []

    def target_encoder(self, online: nn.Module) -> nn.Module:
        """The encoder whose features are the targets, which evaluators and health monitors read.

        ``online`` unless the target keeps its own copy (an EMA encoder returns that).
        """
        return online

    def momentum(self, step: int, total_steps: int) -> float:
        return 1.0
