"""Conditioning: how the action reaches the predictor.

A conditioner is built as ``factory(config, action_dim, width)`` and is an
``nn.Module`` owned by the predictor. It may add ``n_tokens`` extra tokens to
the predictor's sequence (sequence conditioning), rewrite the mask tokens
(feature conditioning), both, or neither (no conditioning).
"""

from __future__ import annotations

import torch
from torch import nn


class Conditioner(nn.Module):
    """Base class; the defaults are "ignore the action"."""

    #: extra tokens this conditioner appends to the predictor sequence
    n_tokens: int = 0

    def __init__(self, config, action_dim: int, width: int):
        super().__init__()
        self.config = config
        self.action_dim = action_dim
        self.width = width

    @property
    def uses_action(self) -> bool:
        """Whether the action reaches the predictor: a conditioner says so by overriding ``tokens`` or ``mask_tokens``.

        The engine refuses an action-using conditioner with a symmetric target
        (the swapped pass has no action); jepa_core.testing checks the output then
        depends on the action.
        """
        cls = type(self)
        return cls.tokens is not Conditioner.tokens or cls.mask_tokens is not Conditioner.mask_tokens

    def tokens(self, action: torch.Tensor) -> torch.Tensor | None:
        """(B, n_tokens, width) tokens for the sequence, or None."""
        return None

    def mask_tokens(self, tokens: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """Condition (B, N, width) mask tokens (positional embedding already added)."""
        return tokens
