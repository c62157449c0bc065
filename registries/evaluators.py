"""Evaluators: a trained run in, a flat dict of metrics out.

Built as ``factory(config)``; ``evaluate(run)`` receives a
``jepa_core.evaluate.TrainedRun`` (encoder, target encoder, predictor, views,
data loaders) and returns ``{metric: float}``. ``needs`` names what the run
must have ("predictor", "actions"), so a mismatch is refused before any work.
"""

from __future__ import annotations

from typing import Any, ClassVar


class Evaluator:
    """Base class of evaluators."""

    needs: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, config=None):
        self.config = config

    def evaluate(self, run: Any) -> dict[str, float]:
        raise NotImplementedError
