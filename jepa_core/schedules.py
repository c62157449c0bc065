"""Training schedules as pure functions of the step.

The official I-JEPA code keeps them as generators that must be replayed on
resume; here every value is recomputed from ``step``, so a checkpoint only
needs the step.
"""

from __future__ import annotations

import math
from typing import Any

import attrs


def warmup_cosine(step: int, *, warmup: int, total: int, start: float, peak: float, final: float) -> float:
    """Linear warmup ``start -> peak`` over ``warmup`` steps, then cosine ``peak -> final``."""
    if step < warmup:
        return start + (peak - start) * step / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return final + 0.5 * (peak - final) * (1.0 + math.cos(math.pi * progress))


def cosine(step: int, *, total: int, start: float, final: float) -> float:
    """Cosine ``start -> final`` over ``total`` steps (I-JEPA's weight-decay schedule)."""
    progress = min(1.0, step / max(1, total))
    return final + 0.5 * (start - final) * (1.0 + math.cos(math.pi * progress))


@attrs.define
class Schedule:
    """lr and weight decay as pure functions of the step (the target owns the momentum schedule)."""

    total: int
    warmup: int
    optim: Any

    def lr(self, step: int) -> float:
        o = self.optim
        return warmup_cosine(step, warmup=self.warmup, total=self.total, start=o.start_lr, peak=o.lr, final=o.final_lr)

    def weight_decay(self, step: int) -> float:
        return cosine(step, total=self.total, start=self.optim.weight_decay, final=self.optim.final_weight_decay)


def total_steps(config: Any, steps_per_epoch: int) -> int:
    """``train.steps``, or ``train.epochs`` worth of steps."""
    return config.train.steps or config.train.epochs * steps_per_epoch


def warmup_steps(config: Any, steps_per_epoch: int, total: int) -> int:
    """``optim.warmup_steps``, or ``optim.warmup_epochs`` worth of steps; never past the end."""
    optim = config.optim
    warmup = optim.warmup_steps if optim.warmup_steps is not None else round(optim.warmup_epochs * steps_per_epoch)
    return min(warmup, total)
