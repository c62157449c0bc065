"""Baselines in the same engine: SimCLR, VICReg, MoCo v3 and an MAE-style pixel target.

Registers (implementations in :mod:`jepa_core.plugins.contrastive` and :mod:`jepa_core.plugins.pixel`;
only this module holds hooks, so only it needs an entry point):

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

The mask samplers they use, ``full`` and ``random``, are in plugins/masking.py.
Recipes: experiments/{simclr,vicreg,mocov3,pixel}.yaml; docs/baselines.md.
"""

from __future__ import annotations

from jepa_core import hookimpl
from jepa_core.plugins.contrastive import InfoNCETarget, MoCoV3Target, Projector, VICRegTarget, bind_augment
from jepa_core.plugins.pixel import PixelTarget, bind_pixel_decoder


@hookimpl
def jepa_register_predictors(registry) -> None:
    registry.register("projector", Projector)
    registry.register("pixel_decoder", bind_pixel_decoder(registry))


@hookimpl
def jepa_register_targets(registry) -> None:
    registry.register("infonce", InfoNCETarget)
    registry.register("vicreg", VICRegTarget)
    registry.register("mocov3", MoCoV3Target)
    registry.register("pixels", PixelTarget)


@hookimpl
def jepa_register_transformations(registry) -> None:
    registry.register("augment", bind_augment(registry))
