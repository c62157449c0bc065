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
        Returns (B, M, Nt, D). When ``views.masking`` lists several samplers the
        engine also passes ``mask_index=i`` for the i-th (from 1), and only to a
        predictor whose ``mask_tokens`` attribute is more than i.
        """
        raise NotImplementedError


class ActionConditionedPredictor(Predictor):
    """Base class of frame-causal world models over clips (V-JEPA 2-AC).

    Trained on clips with per-step actions: the engine encodes every frame with
    the target encoder (frame by frame) and calls ``forward`` with teacher
    forcing, then ``rollout`` from the first frame for ``auto_steps`` steps, and
    adds the two losses. Planners call ``rollout`` with candidate actions.
    """

    #: steps of the rollout loss (1: the rollout loss is the teacher-forcing loss of the first step)
    auto_steps: int = 1
    #: entries of the per-step action and of the per-frame state it reads (0: no state tokens)
    action_dim: int = 0
    state_dim: int = 0

    def forward(
        self,
        frames: torch.Tensor,
        actions: torch.Tensor,
        states: torch.Tensor | None,
    ) -> torch.Tensor:
        """frames (B, T, N, D) features, actions (B, T, A), states (B, T, S) or None -> (B, T, N, D).

        Output t predicts frame t + 1 from frames, actions and states of steps <= t only.
        """
        raise NotImplementedError

    def rollout(
        self,
        frames: torch.Tensor,
        actions: torch.Tensor,
        states: torch.Tensor | None,
        steps: int,
    ) -> torch.Tensor:
        """Predict ``steps`` frames after ``frames`` (B, T0, N, D), each from the ones before, predicted included.

        actions (B, T0 + steps - 1, A): one per step taken; states likewise or None
        (a planner that cannot know future states repeats the last one). Returns (B, steps, N, D).
        """
        return autoregress(self, frames, actions, states, steps)


def autoregress(predict, frames: torch.Tensor, actions: torch.Tensor, states: torch.Tensor | None,
                steps: int) -> torch.Tensor:
    """:meth:`ActionConditionedPredictor.rollout` through any callable with its ``forward`` (a DDP wrapper)."""
    z = frames
    for _ in range(steps):
        k = z.shape[1]
        step_states = None if states is None else states[:, :k]
        z = torch.cat([z, predict(z, actions[:, :k], step_states)[:, -1:]], dim=1)
    return z[:, frames.shape[1]:]
