"""Targets of the JEPA family: the layer-normed features of an encoder at target positions.

``ema`` (I-JEPA, IWM, V-JEPA) keeps an EMA copy of the encoder; ``frozen``
(V-JEPA 2-AC) fixes the encoder itself, so only the predictor learns.
"""

from __future__ import annotations

import copy

import attrs
import torch
import torch.nn.functional as F

from jepa_core.api import Target, gather_tokens, hookimpl, validators as v


_LOSSES = {"l1": F.l1_loss, "smooth_l1": F.smooth_l1_loss, "l2": F.mse_loss}


class EMATarget(Target):
    """EMA target encoder with layer-normed features; smooth L1 (I-JEPA code), L2 (I-JEPA paper) or L1 (V-JEPA)."""

    @attrs.frozen
    class Config:
        #: momentum goes linearly from the first to the second value over training
        momentum: tuple = attrs.field(default=(0.996, 1.0), converter=v.as_pair, validator=v.interval(0.0, 1.0))
        #: smooth_l1 (I-JEPA code), l2 (I-JEPA paper), l1 (V-JEPA)
        loss: str = attrs.field(default="smooth_l1", validator=v.one_of(*_LOSSES))
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
        return _LOSSES[self.config.loss](prediction, target)

    @property
    def momentum_pairs(self):
        return [(self._online[0], self.encoder)]

    def target_encoder(self, online):
        return self.encoder

    def momentum(self, step, total_steps):
        start, end = self.config.momentum
        return start + (end - start) * min(step, total_steps) / max(total_steps, 1)


class FrozenTarget(Target):
    """The encoder itself, frozen (no gradient, no EMA): V-JEPA 2-AC trains a predictor on fixed features."""

    @attrs.frozen
    class Config:
        #: V-JEPA 2-AC: l1
        loss: str = attrs.field(default="l1", validator=v.one_of(*_LOSSES))
        layer_norm: bool = True

    def __init__(self, config: Config, encoder, predictor=None):
        super().__init__()
        self.config = config
        self._encoder = [encoder.requires_grad_(False)]  # a list: the encoder is the run's, not a copy

    @torch.no_grad()
    def forward(self, images, target_idx):
        features = self._encoder[0](images)
        if self.config.layer_norm:
            features = F.layer_norm(features.float(), features.shape[-1:])
        return gather_tokens(features, target_idx)

    def loss(self, prediction, target):
        return _LOSSES[self.config.loss](prediction, target)


@hookimpl
def jepa_register_targets(registry):
    registry.register("ema", EMATarget)
    registry.register("frozen", FrozenTarget)
