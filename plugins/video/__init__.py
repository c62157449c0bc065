"""Video and action-conditioned world models: clip datasets, tube masking, the
action-conditioned predictor, environments and planning.

Only this module holds hooks, so only it needs an entry point.
"""

from __future__ import annotations

from jepa_core.api import hookimpl
from jepa_core.plugins.video.ac_predictor import ACPredictor
from jepa_core.plugins.video.moving_shapes import MovingShapes, MovingShapesEnv
from jepa_core.plugins.video.planning import Plan, Rollout
from jepa_core.plugins.video.tubes import TubeMasking
from jepa_core.plugins.video.videofolder import VideoFolder


@hookimpl
def jepa_register_transformations(registry):
    registry.register("tubes", TubeMasking)


@hookimpl
def jepa_register_predictors(registry):
    registry.register("ac_vit", ACPredictor)


@hookimpl
def jepa_register_datasets(registry):
    registry.register("moving_shapes", MovingShapes)
    registry.register("videofolder", VideoFolder)


@hookimpl
def jepa_register_environments(registry):
    registry.register("moving_shapes", MovingShapesEnv)


@hookimpl
def jepa_register_evaluators(registry):
    registry.register("plan", Plan)
    registry.register("rollout", Rollout)
