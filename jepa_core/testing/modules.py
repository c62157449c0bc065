"""Contracts of the model components: conditioners, predictors and targets (trainable modules)."""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn

from jepa_core.api import ActionConditionedPredictor, Conditioner, Predictor
from jepa_core.registries import Registry
from jepa_core.testing._core import Subject, create, unreached

BATCH, ACTION_DIM, WIDTH = 4, 3, 32
#: the predictors' encoder width and patch grid (not square: a swapped row and column shows)
EMBED, GRID = 32, (4, 6)
#: (context tokens, target blocks, tokens per block) of the two index layouts a predictor answers
LAYOUTS = ((10, 2, 4), (16, 1, 6))


def _sample(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def token_indices(layout: tuple[int, int, int], n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per image: distinct context indices, and target blocks among the other tokens."""
    n_context, blocks, n_target = layout
    g = torch.Generator().manual_seed(seed)
    order = torch.stack([torch.randperm(n, generator=g) for _ in range(BATCH)])
    rest = order[:, n_context:]
    targets = torch.stack([rest[:, torch.randperm(rest.shape[1], generator=g)[:n_target]] for _ in range(blocks)], 1)
    return order[:, :n_context].sort(dim=1).values, targets


def _backward(outputs: list[torch.Tensor]) -> None:
    """Backpropagate a fixed random projection of ``outputs`` (a sum alone cancels through a LayerNorm)."""
    loss = sum((out.float() * _sample(tuple(out.shape), seed=i)).sum() for i, out in enumerate(outputs))
    loss.backward()


def _expect_gradients(it: Subject, module: nn.Module, what: str) -> None:
    missing = unreached(module.named_parameters())
    it.expect(not missing, f"no finite gradient reaches trainable parameter(s) {', '.join(missing[:3])} ({what})")


def check_conditioner(name: str, factory: Callable[..., Any], /, **params: Any) -> None:
    """Check a conditioner built as the engine builds it (``Cls(config, action_dim, width)``).

    Its tokens and mask tokens have the declared shapes; when it says it uses
    the action (``uses_action``) they depend on it; gradients reach every
    trainable parameter. ContractError names the first broken contract.
    """
    it = Subject("conditioner", name)
    conditioner = create("conditioning", name, factory, ACTION_DIM, WIDTH, **params)
    it.expect(isinstance(conditioner, Conditioner), f"is a {type(conditioner).__name__}, not a Conditioner")
    mask_tokens = _sample((BATCH, 5, WIDTH), seed=0)
    outputs = []
    for seed in (1, 2):
        action = _sample((BATCH, ACTION_DIM), seed)
        tokens, masked = conditioner.tokens(action), conditioner.mask_tokens(mask_tokens, action)
        n = conditioner.n_tokens
        it.expect((tokens is None and n == 0) or (isinstance(tokens, torch.Tensor) and tokens.shape == (BATCH, n, WIDTH)),
                  f"tokens() returned {tuple(tokens.shape) if isinstance(tokens, torch.Tensor) else tokens}; "
                  f"with n_tokens {n} it must be ({BATCH}, {n}, {WIDTH})" + (" or None" if n == 0 else ""))
        it.expect(isinstance(masked, torch.Tensor) and masked.shape == mask_tokens.shape,
                  f"mask_tokens() changed the tokens' shape {tuple(mask_tokens.shape)}")
        outputs.append([t for t in (tokens, masked) if t is not None])
    if conditioner.uses_action:
        same = all(torch.equal(a, b) for a, b in zip(*outputs))
        it.expect(not same, "overrides tokens() or mask_tokens(), so it says it uses the action, "
                            "but its output is the same for two different actions")
    if any(p.requires_grad for p in conditioner.parameters()):
        _backward(outputs[0])
        _expect_gradients(it, conditioner, "from its tokens and mask tokens")


class _ActionTokens(Conditioner):
    """A probe: the action as one extra token (sequence conditioning)."""

    n_tokens = 1

    def __init__(self, config, action_dim: int, width: int):
        super().__init__(config, action_dim, width)
        self.project = nn.Linear(action_dim, width)

    def tokens(self, action):
        return self.project(action)[:, None]


class _ActionFeatures(_ActionTokens):
    """A probe: the action added to every mask token (feature conditioning)."""

    n_tokens = 0
    tokens = Conditioner.tokens

    def mask_tokens(self, tokens, action):
        return tokens + self.project(action)[:, None].to(tokens.dtype)


#: the conditioners a predictor is checked with, and how each passes the action on
PROBES = ((Conditioner, "ignores the action"), (_ActionTokens, "adds action tokens"),
          (_ActionFeatures, "conditions the mask tokens on the action"))


def check_predictor(name: str, factory: Callable[..., Any], /, **params: Any) -> None:
    """Check a predictor built as the engine builds it (``Cls(config, embed_dim, grid, conditioner)``).

    It is built with probe conditioners: one that ignores the action, one
    that adds action tokens, one that rewrites the mask tokens (a predictor
    may refuse the last two with a ValueError, as ``projector`` does). Its
    output has the shape the target indices declare ((B, M, Nt, D), or
    (B, 1, 1, D) for a predictor that pools); it depends on the action exactly
    when the conditioner uses it; gradients reach the context and every
    trainable parameter, the conditioner's included.
    """
    it = Subject("predictor", name)
    registry = Registry("predictors")
    registry.register(name, factory)
    config = registry.config(name, **params)
    component = registry.get(name).component
    if isinstance(component, type) and issubclass(component, ActionConditionedPredictor):
        return _check_world_model(it, registry.get(name).factory(config, EMBED, GRID, Conditioner(None, 0, EMBED)))
    predictor_class = isinstance(component, type) and issubclass(component, Predictor)
    width = component.conditioning_width(config, EMBED) if predictor_class else EMBED
    n = GRID[0] * GRID[1]
    for probe, does in PROBES:
        what = f"with a conditioner that {does}"
        try:
            predictor = registry.get(name).factory(config, EMBED, GRID, probe(None, ACTION_DIM, width))
        except ValueError:  # it may refuse the action: projector pools the context and never reads it
            it.expect(probe is not Conditioner, f"refuses to be built {what}")
            continue
        predictor.eval()
        widths = set()
        for seed, layout in enumerate(LAYOUTS):
            context = _sample((BATCH, layout[0], EMBED), seed)
            context_idx, target_idx = token_indices(layout, n, seed)
            with torch.no_grad():
                out = [predictor(context, context_idx, target_idx, _sample((BATCH, ACTION_DIM), s)) for s in (3, 4)]
            shape = tuple(out[0].shape)
            it.expect(len(shape) == 4 and shape[:3] in ((BATCH,) + layout[1:], (BATCH, 1, 1)),
                      f"returned {shape} for target indices {tuple(target_idx.shape)}; the contract is "
                      f"({BATCH}, {layout[1]}, {layout[2]}, D), or ({BATCH}, 1, 1, D) when it pools ({what})")
            widths.add(shape[-1])
            if probe is Conditioner:
                it.expect(torch.equal(*out), "its output depends on the action although its conditioner ignores it")
            else:
                it.expect(not torch.equal(*out), f"its output ignores the action ({what})")
        it.expect(len(widths) == 1, f"its output width changes with the number of tokens: {sorted(widths)}")
        predictor.train()
        context = _sample((BATCH, LAYOUTS[0][0], EMBED), 0).requires_grad_(True)
        _backward([predictor(context, *token_indices(LAYOUTS[0], n, 0), _sample((BATCH, ACTION_DIM), 3))])
        it.expect(context.grad is not None and bool(torch.isfinite(context.grad).all()),
                  f"no gradient reaches the context, so the encoder would not learn ({what})")
        _expect_gradients(it, predictor, what)


def _check_world_model(it: Subject, predictor: ActionConditionedPredictor) -> None:
    """Frame-causal: output t has the frames' shape and reads steps <= t only; rollout; gradients."""
    frames, n = 3, GRID[0] * GRID[1]
    z = _sample((BATCH, frames, n, EMBED), 0)
    actions = _sample((BATCH, frames, predictor.action_dim), 1)
    states = _sample((BATCH, frames, predictor.state_dim), 2) if predictor.state_dim else None
    predictor.eval()
    with torch.no_grad():
        out = predictor(z, actions, states)
        it.expect(tuple(out.shape) == (BATCH, frames, n, EMBED),
                  f"returned {tuple(out.shape)} for frames {tuple(z.shape)}; the contract is the frames' shape")
        later = z.clone()
        later[:, -1] += 1.0
        it.expect(torch.allclose(out[:, :-1], predictor(later, actions, states)[:, :-1], atol=1e-5),
                  "changing the last frame changed the predictions of earlier frames: it is not frame-causal")
        other = actions.clone()
        other[:, 0] += 1.0
        it.expect(not torch.allclose(out[:, 0], predictor(z, other, states)[:, 0]), "its output ignores the action")
        rolled = predictor.rollout(z[:, :1], actions, states, frames)
        it.expect(tuple(rolled.shape) == (BATCH, frames, n, EMBED), f"rollout returned {tuple(rolled.shape)}")
    predictor.train()
    context = z.clone().requires_grad_(True)
    _backward([predictor(context, actions, states)])
    it.expect(context.grad is not None and bool(torch.isfinite(context.grad).all()), "no gradient reaches the frames")
    _expect_gradients(it, predictor, "from its predictions")
