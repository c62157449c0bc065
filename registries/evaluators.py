"""Evaluators: a trained run in, a flat dict of metrics out.

Built as ``factory(config)``; ``evaluate(run)`` receives a :class:`RunView`
(the engine passes its ``TrainedRun``) and returns ``{metric: float}``.
``needs`` names what the run must have ("predictor", "actions", "world_model":
an action-conditioned predictor, "target_ops": a target pipeline that transforms) and ``data`` whether it reads image or clip
runs, so a mismatch is refused before any work.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Protocol

import torch
from torch import nn


class RunView(Protocol):
    """What an evaluator may read of a run: its modules, views, data, seed and a per-run cache."""

    #: the online encoder and the target's (the same module when the target keeps none), eval mode;
    #: both are jepa_core Encoders: embed_dim, num_heads, grid, patch_size
    encoder: nn.Module
    target_encoder: nn.Module
    predictor: nn.Module | None
    views: Any  # jepa_core.views.Views: null_action(batch, device), action_dim, ...
    device: torch.device
    seed: int
    #: where file outputs (plots) go; None outside a run directory
    run_dir: Path | None
    #: evaluators share work through it (datasets, features); it lives as long as the run object
    cache: dict

    @property
    def config(self) -> Any: ...  # the resolved jepa_core.schema.Config

    def dataset(self, split: str) -> Any: ...  # a registries.datasets.LabelledDataset

    def new_predictor(self) -> nn.Module: ...  # the run's predictor architecture, freshly initialised

    def environment(self, name: str, **params: Any) -> Any: ...  # a registries.environments.Environment


class Evaluator:
    """Base class of evaluators."""

    needs: ClassVar[frozenset[str]] = frozenset()
    #: the runs it reads: "images", "clips" or "any" (refused before training on the other kind)
    data: ClassVar[str] = "images"

    def __init__(self, config=None):
        """``config`` None: the defaults of the class's ``Config``, when it declares one."""
        config_class = getattr(type(self), "Config", None)
        self.config = config_class() if config is None and config_class is not None else config

    def label_tasks(self) -> tuple[str, ...]:
        """The dataset's labelled tasks it reads (``registries.datasets``): a missing one is refused before training."""
        return ()

    def evaluate(self, run: RunView) -> dict[str, float]:
        raise NotImplementedError
