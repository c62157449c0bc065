"""Where a frozen encoder's token variance lives: shared by the image, fixed by the position, or local.

A JEPA's loss is low when its target tokens are predictable from other patches,
and the probes alone do not say which cheap route a run took. Two failures look
alike on a k-NN probe and apart here: a run that learns a feature every patch of
an image shares (a background colour, a palette) puts most of the variance in
``image_share`` and may drop the class; a run that collapses keeps little
``spread``. Registered by plugins/evaluators/__init__.py.
"""

from __future__ import annotations

import attrs
import torch

from jepa_core.api import Evaluator
from jepa_core.plugins.evaluators.features import encoder_of, features
from jepa_core.plugins.evaluators.fields import batch_size_field, encoder_choice, max_val_field, workers_field
from jepa_core.plugins.evaluators.subsets import split


def variance_shares(tokens: torch.Tensor) -> dict[str, float]:
    """Two-way decomposition of (N images, T positions, D) tokens' squared deviation from the mean token.

    Every image has every position, so the image effect (an image's mean token),
    the position effect (a position's mean over images) and the rest are
    orthogonal and their shares sum to 1. ``spread``: that variance over the
    tokens' mean squared norm, 0 when every token is one vector whatever its scale.
    """
    t = tokens.double()
    mean = t.mean(dim=(0, 1))
    total = (t - mean).pow(2).sum(-1).mean()
    if total <= 0:
        raise ValueError("the tokens are all one vector: no variance to decompose")
    image = (t.mean(dim=1) - mean).pow(2).sum(-1).mean() / total
    position = (t.mean(dim=0) - mean).pow(2).sum(-1).mean() / total
    return {"image_share": float(image), "position_share": float(position),
            "local_share": float(1 - image - position), "spread": float(total / t.pow(2).sum(-1).mean())}


class TokenVariance(Evaluator):
    """Shares of the frozen encoder's token variance on val images: image, position, local; and its spread."""

    @attrs.frozen
    class Config:
        #: which encoder: I-JEPA evaluates the EMA target encoder
        encoder: str = encoder_choice()
        max_val: int | None = max_val_field()
        batch_size: int = batch_size_field()
        num_workers: int | None = workers_field()

    def evaluate(self, run) -> dict[str, float]:
        cfg = self.config
        val = split(run, "val", cfg.max_val)
        tokens, _ = features(run, encoder_of(run, cfg.encoder), val, tokens=True, batch_size=cfg.batch_size,
                             num_workers=cfg.num_workers)
        return variance_shares(tokens)
