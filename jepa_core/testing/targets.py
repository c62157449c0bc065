"""The contract of targets: features to regress, a loss, and the momentum copies the engine updates."""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn

from jepa_core.api import Conditioner, Predictor, Target, normalize
from jepa_core.encoder import Encoder
from jepa_core.testing._core import Subject, create, unreached
from jepa_core.testing.modules import BATCH, token_indices

#: the encoder a target is checked with: a one-block ViT-Tiny, 4x4 patches of 8 px
IMAGE_SIZE, PATCH = 32, 8
#: (context tokens, target blocks, tokens per block)
LAYOUT = (8, 2, 3)


class _TokenPredictor(Predictor):
    """The default partner of a checked target: the pooled context plus a learned embedding per target token."""

    def __init__(self, embed_dim: int, grid: tuple[int, int], conditioner: Conditioner):
        super().__init__()
        self.conditioner = conditioner
        self.mix = nn.Linear(embed_dim, embed_dim)
        self.positions = nn.Parameter(torch.randn(grid[0] * grid[1], embed_dim) * 0.02)

    def forward(self, context, context_idx, target_idx, action):
        return self.mix(context.mean(dim=1))[:, None, None] + self.positions[target_idx]


def check_target(name: str, factory: Callable[..., Any], predictor: Callable[..., nn.Module] | None = None,
                 /, **params: Any) -> None:
    """Check a target built as the engine builds it (``Cls(config, encoder, predictor)``), through one training step.

    ``predictor`` is the predictor it pairs with, called as
    ``predictor(embed_dim, grid, conditioner)`` (for example
    ``functools.partial(MyPredictor, MyPredictor.Config())``); by default a
    minimal one that predicts every target token. Its features have the
    prediction's shape; the loss is a finite scalar whose gradient reaches
    every trainable parameter (encoder, predictor, target); momentum copies
    match their online modules and are not trained; the momentum is in [0, 1].
    """
    it = Subject("target", name)
    torch.manual_seed(0)
    encoder = Encoder("vit_tiny_patch16_224", IMAGE_SIZE, depth=1, patch_size=PATCH)
    partner = (predictor or _TokenPredictor)(encoder.embed_dim, encoder.grid, Conditioner(None, 0, encoder.embed_dim))
    target = create("targets", name, factory, encoder, partner, **params)
    it.expect(isinstance(target, Target), f"is a {type(target).__name__}, not a Target")
    g = torch.Generator().manual_seed(0)
    views = [normalize(torch.rand(BATCH, 3, IMAGE_SIZE, IMAGE_SIZE, generator=g)) for _ in range(2)]
    context_idx, target_idx = token_indices(LAYOUT, encoder.grid[0] * encoder.grid[1], seed=0)

    def loss(source: torch.Tensor, view: torch.Tensor) -> torch.Tensor:
        """As the training step computes it (without autocast)."""
        prediction = partner(encoder(source, context_idx), context_idx, target_idx, None).float()
        features = target(view, target_idx).float()
        it.expect(features.dim() == 4 and features.shape == prediction.shape,
                  f"its features have shape {tuple(features.shape)} for target indices {tuple(target_idx.shape)}, "
                  f"the prediction {tuple(prediction.shape)}; the loss compares the two")
        value = target.loss(prediction, features)
        it.expect(isinstance(value, torch.Tensor) and value.dim() == 0 and bool(torch.isfinite(value)),
                  f"loss() returned {value!r}, not a finite scalar tensor")
        return value

    total = loss(*views) + (loss(*reversed(views)) if target.symmetric else 0.0)
    total.backward()
    modules = {"encoder": encoder, "predictor": partner, "target": target}
    missing = unreached((f"{m}.{n}", p) for m, module in modules.items() for n, p in module.named_parameters())
    it.expect(not missing, f"no finite gradient of the loss reaches trainable parameter(s) {', '.join(missing[:3])}")
    _check_momentum(it, target)
    _check_target_encoder(it, target.target_encoder(encoder), views[0])


def _check_momentum(it: Subject, target: Target) -> None:
    online_ids = set()
    for online, copy in target.momentum_pairs:
        shapes = [tuple(p.shape) for p in online.parameters()], [tuple(p.shape) for p in copy.parameters()]
        it.expect(shapes[0] == shapes[1], "a momentum pair's copy does not have its online module's parameters")
        online_ids |= {id(p) for p in online.parameters()}
        trained = [n for n, p in copy.named_parameters() if p.requires_grad or id(p) in online_ids]
        it.expect(not trained, f"momentum copy parameter {trained[:1]} is trainable or shared with the online "
                               "module; the optimizer would move what the EMA owns")
    values = [target.momentum(step, 10) for step in (0, 5, 10, 10)]
    it.expect(all(0.0 <= v <= 1.0 for v in values) and values[2] == values[3],
              f"momentum(step, 10) at steps 0, 5, 10 gave {values[:3]}: it must be a pure function in [0, 1]")


def _check_target_encoder(it: Subject, encoder: nn.Module, images: torch.Tensor) -> None:
    """Evaluators and health monitors read it as a jepa_core Encoder."""
    missing = [a for a in ("embed_dim", "num_heads", "grid", "patch_size") if not hasattr(encoder, a)]
    it.expect(not missing, f"target_encoder() has no {', '.join(missing)}; evaluators read it as an Encoder")
    with torch.no_grad():
        tokens = encoder(images)
    n = encoder.grid[0] * encoder.grid[1]
    it.expect(tuple(tokens.shape) == (BATCH, n, encoder.embed_dim),
              f"target_encoder() gives features of shape {tuple(tokens.shape)}, not ({BATCH}, {n}, {encoder.embed_dim})")
