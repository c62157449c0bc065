"""The contract of environments: episodes a planner acts in."""

from __future__ import annotations

from typing import Any, Callable

import torch

from jepa_core.api import Environment
from jepa_core.testing._core import Subject, create


def check_environment(name: str, factory: Callable[..., Any], /, **params: Any) -> None:
    """Check an environment built as the engine builds it (``Cls(config)``).

    ``reset(seed)`` is a pure function of the seed and gives uint8 (3, H, W)
    observation and goal images; ``random_actions`` has the declared width
    (one-hot when ``discrete``, norm at most ``max_step`` otherwise) and comes
    from its generator; ``step`` moves the state; ``distance`` is 0 from a
    state to itself. ContractError names the first broken contract.
    """
    it = Subject("environment", name)
    env = create("environments", name, factory, **params)
    it.expect(isinstance(env, Environment), f"is a {type(env).__name__}, not an Environment")
    first, again = env.reset(3), create("environments", name, factory, **params).reset(3)
    keys = ("observation", "goal", "state", "goal_state")
    it.expect(all(k in first for k in keys), f"reset() returned keys {sorted(first)}; the contract has {keys}")
    it.expect(all(torch.equal(first[k], again[k]) for k in keys), "reset(seed) gives another episode for the same seed")
    for key in ("observation", "goal"):
        image = first[key]
        it.expect(image.dtype == torch.uint8 and image.dim() == 3 and image.shape[0] == 3,
                  f"reset()'s {key} is {image.dtype} {tuple(image.shape)}, not uint8 (3, H, W)")
    actions = env.random_actions(8, torch.Generator().manual_seed(0))
    it.expect(torch.equal(actions, env.random_actions(8, torch.Generator().manual_seed(0))),
              "random_actions() does not draw from its generator alone")
    it.expect(tuple(actions.shape) == (8, env.action_dim), f"random_actions(8) is {tuple(actions.shape)}, "
                                                           f"not (8, action_dim={env.action_dim})")
    if env.discrete:
        it.expect(bool((actions.sum(dim=1) == 1).all()), "discrete random actions are not one-hot")
    else:
        it.expect(bool((actions.norm(dim=1) <= env.max_step + 1e-6).all()), "random actions exceed max_step")
    state = first["state"]
    moved = [env.step(action)["state"] for action in actions]
    it.expect(any(not torch.equal(s, state) for s in moved), "eight random actions never moved the state")
    it.expect(env.distance(state, state) == 0.0, "distance() from a state to itself is not 0")
