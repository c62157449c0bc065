"""Baselines in the same engine: SimCLR, VICReg, MoCo v3 and an MAE-style pixel target.

Registers (implementations beside this module: ``projector``, ``targets``, ``losses``,
``collective`` and ``pixel``; ``augment`` in :mod:`jepa_core.plugins.transformations.augment`).
Only this module holds hooks, so only it needs an entry point:

=================  ================  ===============================================
kind               name              what
=================  ================  ===============================================
predictors         projector         pooled context -> MLP projector [-> MLP predictor]
predictors         pixel_decoder     the ``vit`` predictor with a per-patch pixel output
targets            infonce           SimCLR NT-Xent, online embedding of the other view
targets            vicreg            VICReg invariance / variance / covariance
targets            mocov3            momentum encoder + projector, symmetric InfoNCE
targets            pixels            per-patch normalised pixels, MSE (MAE)
transformations    augment           image ops as augmentations (no action)
=================  ================  ===============================================

The mask samplers they use, ``full`` and ``random``, are in plugins/transformations/masking.py.
Recipes: experiments/{simclr,vicreg,mocov3,pixel}.yaml; docs/baselines.md.
"""

from __future__ import annotations

import functools

from jepa_core.api import hookimpl
from jepa_core.plugins.baselines.pixel import PixelDecoder, PixelTarget
from jepa_core.plugins.baselines.projector import Projector
from jepa_core.plugins.baselines.targets import InfoNCETarget, MoCoV3Target, VICRegTarget
from jepa_core.plugins.transformations.augment import Augment


@hookimpl
def jepa_register_predictors(registry) -> None:
    registry.register("projector", Projector)
    registry.register("pixel_decoder", PixelDecoder)


@hookimpl
def jepa_register_targets(registry) -> None:
    registry.register("infonce", InfoNCETarget)
    registry.register("vicreg", VICRegTarget)
    registry.register("mocov3", MoCoV3Target)
    registry.register("pixels", PixelTarget)


@hookimpl
def jepa_register_transformations(registry) -> None:
    registry.register("augment", functools.partial(Augment, registry=registry))
