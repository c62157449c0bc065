"""Conditioning schemes: how the action a(x->y) reaches the predictor (IWM).

``none`` ignores the action (I-JEPA); ``sequence`` adds action tokens to the
predictor sequence; ``feature`` concatenates the action to every mask token
and mixes it back to the predictor width with a per-token MLP.
"""

from __future__ import annotations

import attrs
import torch
from torch import nn

from jepa_core.api import Conditioner, hookimpl, validators as v


class NoConditioning(Conditioner):
    """No conditioning: the predictor never sees the action (I-JEPA)."""


def _needs_action(kind: str, action_dim: int) -> None:
    if action_dim < 1:
        raise ValueError(
            f"conditioning {kind!r} needs an action, but the views define none (action dimension 0); "
            "add photometric ops to views.source/views.target or use conditioning 'none'"
        )


class SequenceConditioning(Conditioner):
    """Sequence conditioning: the action becomes extra predictor tokens (dropped from the output)."""

    @attrs.frozen
    class Config:
        #: how many action tokens the learned linear projection produces
        n_tokens: int = attrs.field(default=1, validator=v.positive_int)

    def __init__(self, config: Config, action_dim: int, width: int):
        super().__init__(config, action_dim, width)
        _needs_action("sequence", action_dim)
        self.n_tokens = config.n_tokens
        self.project = nn.Linear(action_dim, config.n_tokens * width)

    def tokens(self, action: torch.Tensor) -> torch.Tensor:
        return self.project(action).view(action.shape[0], self.n_tokens, self.width)


class FeatureConditioning(Conditioner):
    """Feature conditioning: the action is concatenated to each mask token and mixed by an MLP."""

    @attrs.frozen
    class Config:
        #: hidden width of the per-token MLP, as a multiple of the predictor width
        hidden_mult: int = attrs.field(default=1, validator=v.positive_int)

    def __init__(self, config: Config, action_dim: int, width: int):
        super().__init__(config, action_dim, width)
        _needs_action("feature", action_dim)
        hidden = config.hidden_mult * width
        self.mix = nn.Sequential(nn.Linear(width + action_dim, hidden), nn.GELU(), nn.Linear(hidden, width))

    def mask_tokens(self, tokens: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        expanded = action[:, None, :].expand(-1, tokens.shape[1], -1).to(tokens.dtype)
        return self.mix(torch.cat([tokens, expanded], dim=-1))


@hookimpl
def jepa_register_conditioning(registry):
    registry.register("none", NoConditioning)
    registry.register("sequence", SequenceConditioning)
    registry.register("feature", FeatureConditioning)
