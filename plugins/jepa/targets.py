"""The I-JEPA / IWM target: an EMA copy of the encoder, layer-normed, at target positions."""

from __future__ import annotations

import copy

import attrs
import torch
import torch.nn.functional as F

from jepa_core.api import Target, gather_tokens, hookimpl, validators as v


class EMATarget(Target):
    """EMA target encoder with layer-normed features; smooth L1 (official code) or L2 (paper) loss."""

    @attrs.frozen
    class Config:
        #: momentum goes linearly from the first to the second value over training
        momentum: tuple = attrs.field(default=(0.996, 1.0), converter=v.as_pair, validator=v.interval(0.0, 1.0))
        loss: str = attrs.field(default="smooth_l1", validator=v.one_of("smooth_l1", "l2"))
        layer_norm: bool = True

    def __init__(self, config: Config, encoder, predictor=None):
        super().__init__()
        self.config = config
        self.encoder = copy.deepcopy(encoder).requires_grad_(False)
        self._online = [encoder]  # a list keeps it out of this module's parameters

    @torch.no_grad()
    def forward(self, images, target_idx):
        features = self.encoder(images)
        if self.config.layer_norm:
            features = F.layer_norm(features.float(), features.shape[-1:])  # fp32 under bf16 autocast
        return gather_tokens(features, target_idx)

    def loss(self, prediction, target):
        if self.config.loss == "smooth_l1":
            return F.smooth_l1_loss(prediction, target)
        return F.mse_loss(prediction, target)

    @property
    def momentum_pairs(self):
        return [(self._online[0], self.encoder)]

    def target_encoder(self, online):
        return self.encoder

    def momentum(self, step, total_steps):
        start, end = self.config.momentum
        return start + (end - start) * min(step, total_steps) / max(total_steps, 1)


@hookimpl
def jepa_register_targets(registry):
    registry.register("ema", EMATarget)
