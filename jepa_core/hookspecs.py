"""Every hook a jepa-core plugin can implement.

Registration hooks receive a :class:`jepa_core.registries.Registry` and call
``registry.register(name, factory)``. Runtime hooks observe a run; they are
called on rank 0 only and must not change the training state. Each hook is
documented in docs/hooks.md (a test keeps the two in step).
"""

from __future__ import annotations

from typing import Any

from jepa_core import hookspec
from jepa_core.registries import Registry


@hookspec
def jepa_register_transformations(registry: Registry) -> None:
    """Register photometric transformations and mask samplers."""


@hookspec
def jepa_register_conditioning(registry: Registry) -> None:
    """Register conditioning schemes (how the action reaches the predictor)."""


@hookspec
def jepa_register_predictors(registry: Registry) -> None:
    """Register predictors."""


@hookspec
def jepa_register_targets(registry: Registry) -> None:
    """Register targets (what is predicted, with its loss)."""


@hookspec
def jepa_register_evaluators(registry: Registry) -> None:
    """Register evaluators (a trained run in, a flat dict of metrics out)."""


@hookspec
def jepa_register_datasets(registry: Registry) -> None:
    """Register datasets."""


@hookspec
def jepa_register_loggers(registry: Registry) -> None:
    """Register loggers: runtime-hook objects that a YAML ``loggers:`` list enables."""


@hookspec
def jepa_register_environments(registry: Registry) -> None:
    """Register environments: worlds a planner acts in (``reset``, ``step``, ``distance``)."""


@hookspec
def jepa_run_start(run_dir: str, config: Any, start_step: int, total_steps: int) -> None:
    """A run starts (``start_step`` > 0 when it resumes)."""


@hookspec
def jepa_after_step(step: int, metrics: dict[str, float]) -> None:
    """A logged optimizer step finished; ``metrics`` has at least step and loss."""


@hookspec
def jepa_on_collapse(step: int, health: dict[str, float], reasons: list[str]) -> None:
    """The health monitors crossed a collapse threshold at ``step``; ``reasons`` says which (docs/health.md)."""


@hookspec
def jepa_on_checkpoint(step: int, path: str) -> None:
    """A checkpoint was written (atomically) to ``path``."""


@hookspec
def jepa_after_evaluation(results: dict[str, dict[str, float]], run_dir: str) -> None:
    """Evaluators ran; ``results`` is what eval.json holds."""


@hookspec
def jepa_run_end(run_dir: str, step: int, metrics: dict[str, float]) -> None:
    """A run finished its last step (not called when it fails or is preempted)."""
