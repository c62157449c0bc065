"""Targets of the joint-embedding baselines: SimCLR (``infonce``), ``vicreg`` and ``mocov3``.

``infonce`` and ``vicreg`` embed the target view with the *online* encoder and
projector, with gradients; ``mocov3`` uses a momentum encoder and projector and a
symmetric loss (the engine adds the swapped pass).
"""

from __future__ import annotations

import copy
import math
from typing import ClassVar

import attrs
import torch
from torch import nn

from jepa_core.plugins.baselines.losses import moco_contrastive, nt_xent, vicreg_terms
from jepa_core.plugins.baselines.projector import Projector, pool
from jepa_core.api import Target, validators as v


def _needs_projector(name: str, predictor) -> None:
    if not isinstance(predictor, Projector):
        raise ValueError(f"target {name!r} embeds both views through the online projection head; "
                         f"use predictor: {{name: projector}} (got {type(predictor).__name__})")


class _OnlineTarget(Target):
    """The target view embedded by the online encoder and projector, with gradients."""

    name: ClassVar[str] = ""

    def __init__(self, config, encoder, predictor):
        super().__init__()
        _needs_projector(self.name, predictor)
        self.config = config
        self._online = [encoder, predictor]  # a list keeps them out of this module's parameters

    def forward(self, images, target_idx):
        encoder, predictor = self._online
        idx = target_idx.reshape(target_idx.shape[0], -1)
        return predictor.embed(encoder(images, idx)).unsqueeze(1).unsqueeze(1)

    @staticmethod
    def _flat(prediction: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return prediction.reshape(prediction.shape[0], -1), target.reshape(target.shape[0], -1)


class InfoNCETarget(_OnlineTarget):
    """SimCLR: NT-Xent between the two views' online projections, negatives from the global batch."""

    name = "infonce"

    @attrs.frozen
    class Config:
        #: SimCLR ImageNet (large batch): 0.1
        temperature: float = attrs.field(default=0.1, validator=v.positive)

    def loss(self, prediction, target):
        return nt_xent(*self._flat(prediction, target), self.config.temperature)


class VICRegTarget(_OnlineTarget):
    """VICReg: invariance (MSE) + variance (std hinge) + covariance (off-diagonal) on the expander outputs."""

    name = "vicreg"

    @attrs.frozen
    class Config:
        #: published weights: 25, 25, 1
        sim_coeff: float = attrs.field(default=25.0, validator=v.non_negative)
        std_coeff: float = attrs.field(default=25.0, validator=v.non_negative)
        cov_coeff: float = attrs.field(default=1.0, validator=v.non_negative)
        #: target standard deviation of the hinge
        gamma: float = attrs.field(default=1.0, validator=v.positive)
        eps: float = attrs.field(default=1e-4, validator=v.positive)

    def __init__(self, config, encoder, predictor):
        super().__init__(config, encoder, predictor)
        if predictor.head is not None and not isinstance(predictor.head, nn.Identity):
            raise ValueError("target 'vicreg' compares the expander outputs of both views; "
                             "set predictor.predictor_layers: 0")

    def loss(self, prediction, target):
        c = self.config
        inv, var, cov = vicreg_terms(*self._flat(prediction, target), gamma=c.gamma, eps=c.eps)
        return c.sim_coeff * inv + c.std_coeff * var + c.cov_coeff * cov


class MoCoV3Target(Target):
    """MoCo v3: momentum encoder + projector as keys, symmetric InfoNCE (t 0.2, scaled by 2t)."""

    symmetric = True

    @attrs.frozen
    class Config:
        temperature: float = attrs.field(default=0.2, validator=v.positive)
        #: initial momentum; it rises to 1 along a half cosine (MoCo v3 --moco-m-cos)
        momentum: float = attrs.field(default=0.99, validator=v.in_range(0.0, 1.0))
        #: freeze the encoder's patch projection (MoCo v3 --stop-grad-conv1, "random patch projection")
        freeze_patch_embed: bool = False

    def __init__(self, config: Config, encoder, predictor):
        super().__init__()
        _needs_projector("mocov3", predictor)
        self.config = config
        if config.freeze_patch_embed:
            encoder.vit.patch_embed.requires_grad_(False)
        self.encoder = copy.deepcopy(encoder).requires_grad_(False)
        self.projector = copy.deepcopy(predictor.projector).requires_grad_(False)
        self._online = [encoder, predictor]  # a list keeps them out of this module's parameters

    @torch.no_grad()
    def forward(self, images, target_idx):
        idx = target_idx.reshape(target_idx.shape[0], -1)
        k = self.projector(pool(self.encoder(images, idx)))
        return k.view(k.shape[0], 1, 1, -1)

    def loss(self, prediction, target):
        return moco_contrastive(prediction.reshape(prediction.shape[0], -1), target.reshape(target.shape[0], -1),
                                self.config.temperature)

    @property
    def momentum_pairs(self):
        encoder, predictor = self._online
        return [(encoder, self.encoder), (predictor.projector, self.projector)]

    def target_encoder(self, online):
        return self.encoder

    def momentum(self, step, total_steps):
        progress = min(step, total_steps) / max(total_steps, 1)
        return 1.0 - 0.5 * (1.0 + math.cos(math.pi * progress)) * (1.0 - self.config.momentum)
