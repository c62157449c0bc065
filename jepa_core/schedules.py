"""Training schedules as pure functions of the step.

The official I-JEPA code keeps them as generators that must be replayed on
resume; here every value is recomputed from ``step``, so a checkpoint only
needs the step.
"""

from __future__ import annotations

import math


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
