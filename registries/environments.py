"""Environments: worlds a planner acts in, to test what a world model learnt.

Built as ``factory(config)``. An :class:`Environment` starts an episode from a
seed and takes actions; a planner reads its observations, compares states with
``distance`` and keeps its actions within ``max_step`` (continuous: the largest
action norm) or among one-hot choices (``discrete``).
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch


@runtime_checkable
class Environment(Protocol):
    """What an environment factory returns."""

    #: entries of an action
    action_dim: int
    #: one-hot actions (True) or continuous ones of norm at most ``max_step`` (False)
    discrete: bool
    max_step: float

    def reset(self, seed: int) -> dict[str, torch.Tensor]:
        """A new episode, a pure function of ``seed``: ``observation`` and ``goal`` (uint8 (3, H, W)),
        ``state`` and ``goal_state``."""
        ...

    def step(self, action: torch.Tensor) -> dict[str, torch.Tensor]:
        """Take ``action`` (action_dim,): the new ``observation`` and ``state``."""
        ...

    def distance(self, state: torch.Tensor, goal_state: torch.Tensor) -> float:
        """How far a state is from the goal state (success is a distance under the planner's threshold)."""
        ...

    def random_actions(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """(n, action_dim) actions of the kind the environment's data was recorded with."""
        ...
