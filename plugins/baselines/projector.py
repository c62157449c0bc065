"""The projection head the joint-embedding baselines share, as a ``Predictor``.

It average-pools the context tokens and applies an MLP projection head (and, for
MoCo v3, an MLP prediction head on top), returning ``(B, 1, 1, out)`` so it fits
the predictor contract.
"""

from __future__ import annotations

import attrs
import torch
from torch import nn

from jepa_core.plugins.baselines.collective import GlobalBatchNorm1d, ScaleOnlyBatchNorm1d
from jepa_core.api import Predictor, validators as v


def mlp(in_dim: int, hidden: int, out: int, layers: int, *, hidden_bias: bool, last_bn: str) -> nn.Sequential:
    """``layers`` Linear layers; the hidden ones are followed by (global) BN and ReLU.

    ``last_bn``: "none" (VICReg), "plain" (BN without learnable parameters,
    MoCo v3) or "scale" (BN with a learnable scale only, SimCLR). The last
    Linear has no bias in the three official codes.
    """
    mods: list[nn.Module] = []
    for i in range(layers):
        d_in = in_dim if i == 0 else hidden
        d_out = out if i == layers - 1 else hidden
        last = i == layers - 1
        mods.append(nn.Linear(d_in, d_out, bias=hidden_bias and not last))
        if not last:
            mods += [GlobalBatchNorm1d(d_out), nn.ReLU(inplace=True)]
        elif last_bn == "plain":
            mods.append(GlobalBatchNorm1d(d_out, affine=False))
        elif last_bn == "scale":
            mods.append(ScaleOnlyBatchNorm1d(d_out))
    return nn.Sequential(*mods)


def pool(tokens: torch.Tensor) -> torch.Tensor:
    """(B, K, D) tokens -> (B, D): the average pooling every evaluator also uses."""
    return tokens.mean(dim=1)


class Projector(Predictor):
    """Projection head (SimCLR/VICReg/MoCo v3): average-pooled context -> MLP [-> MLP predictor]."""

    @attrs.frozen
    class Config:
        #: hidden width of the projection MLP (SimCLR 2048, VICReg 8192, MoCo v3 4096)
        hidden: int = attrs.field(default=2048, validator=v.positive_int)
        #: output width (SimCLR 128, VICReg 8192, MoCo v3 256)
        out: int = attrs.field(default=128, validator=v.positive_int)
        #: Linear layers of the projector (SimCLR 2, VICReg 3, MoCo v3 ViT 3)
        layers: int = attrs.field(default=2, validator=v.positive_int)
        #: biases on the hidden Linear layers (VICReg: yes; SimCLR, MoCo v3: no, BN follows)
        hidden_bias: bool = False
        #: BN after the last Linear: none (VICReg), plain (no parameters, MoCo v3), scale (SimCLR)
        last_bn: str = attrs.field(default="scale", validator=v.one_of("none", "plain", "scale"))
        #: MoCo v3's prediction MLP on top of the projector: Linear layers (0: none; MoCo v3: 2)
        predictor_layers: int = attrs.field(default=0, validator=v.non_negative)
        predictor_hidden: int = attrs.field(default=4096, validator=v.positive_int)

        def __attrs_post_init__(self):
            if isinstance(self.predictor_layers, bool) or not isinstance(self.predictor_layers, int):
                raise ValueError(f"'predictor_layers' must be an integer >= 0, got {self.predictor_layers!r}",
                                 attrs.fields(type(self)).predictor_layers)

    def __init__(self, config: Config, embed_dim: int, grid: tuple[int, int], conditioner):
        super().__init__()
        if conditioner.n_tokens or any(True for _ in conditioner.parameters()):
            raise ValueError("predictor 'projector' ignores the action; use conditioning: {name: none}")
        self.config = config
        self.out_dim = config.out
        self.projector = mlp(embed_dim, config.hidden, config.out, config.layers,
                             hidden_bias=config.hidden_bias, last_bn=config.last_bn)
        self.head = (mlp(config.out, config.predictor_hidden, config.out, config.predictor_layers,
                         hidden_bias=config.hidden_bias, last_bn=config.last_bn)
                     if config.predictor_layers else nn.Identity())

    def embed(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, K, D) encoder tokens -> (B, out) projector output (no prediction head)."""
        return self.projector(pool(tokens))

    def forward(self, context, context_idx, target_idx, action):
        z = self.head(self.embed(context))
        return z.view(z.shape[0], 1, 1, -1)
