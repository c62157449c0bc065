"""Predictors: from context tokens to predictions at target positions.

Built as ``factory(config, embed_dim, grid, conditioner)`` where ``embed_dim``
is the encoder width, ``grid`` the patch grid and ``conditioner`` a
:class:`jepa_core.registries.conditioning.Conditioner` the engine builds at
:meth:`Predictor.conditioning_width` before the predictor.
"""

from __future__ import annotations

import torch
from torch import nn


class Predictor(nn.Module):
    """Base class of predictors."""

    @classmethod
    def conditioning_width(cls, config, embed_dim: int) -> int:
        """The width the conditioner works at (its action tokens join the predictor's): the encoder's by default."""
        return embed_dim

    def forward(
        self,
        context: torch.Tensor,
        context_idx: torch.Tensor,
        target_idx: torch.Tensor,
        action: torch.Tensor | None,
    ) -> torch.Tensor:
        """Predict the target features.

        context: (B, Nc, D) encoder outputs at ``context_idx`` (B, Nc);
        target_idx: (B, M, Nt), M target blocks; action: (B, A) or None.
        Returns (B, M, Nt, D).
        """
        raise NotImplementedError
