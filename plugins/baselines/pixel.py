"""The generative baseline: MAE-style pixel targets (implementations; hooks in jepa_core.plugins.baselines).

* predictor ``pixel_decoder``: the ``vit`` predictor (a subclass, so its code
  is reused, not copied) with its output projection replaced by ``Linear(width, patch_size * patch_size * 3)``: mask
  tokens at the masked positions, a few transformer blocks, pixels out. With
  ``views.masking: random`` it is MAE's decoder (embed, mask tokens + fixed
  sin-cos positions, blocks, norm, linear prediction).
* target ``pixels``: the target view's patches at the target positions, each
  normalised by its own mean and variance (MAE ``norm_pix_loss``); MSE loss.
"""

from __future__ import annotations

import attrs
import torch
import torch.nn.functional as F
from torch import nn

from jepa_core.api import Target, validators as v
from jepa_core.plugins.jepa.predictors import ViTPredictor


def patchify(images: torch.Tensor, patch_size: int) -> torch.Tensor:
    """(B, 3, H, W) -> (B, N, p*p*3), patches row-major, pixels (row, col, channel) as MAE's patchify."""
    b, c, h, w = images.shape
    p = patch_size
    if h % p or w % p:
        raise ValueError(f"pixels: images of {h}x{w} px do not tile into {p}x{p} patches")
    x = images.reshape(b, c, h // p, p, w // p, p)
    x = torch.einsum("nchpwq->nhwpqc", x)
    return x.reshape(b, (h // p) * (w // p), p * p * c)


def normalise_patches(patches: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Each patch minus its mean, over sqrt(its unbiased variance + eps) (MAE norm_pix_loss)."""
    mean = patches.mean(dim=-1, keepdim=True)
    var = patches.var(dim=-1, keepdim=True)
    return (patches - mean) / (var + eps) ** 0.5


class PixelDecoder(ViTPredictor):
    """MAE-style pixel decoder: the ViT predictor with a patch_size*patch_size*3 pixel output per target token."""

    @attrs.frozen
    class Config(ViTPredictor.Config):
        """Defaults: MAE's ViT-B/16 decoder (8 blocks, width 512, 16 heads)."""

        depth: int = attrs.field(default=8, validator=v.positive_int)
        width: int = attrs.field(default=512, validator=v.positive_int)
        heads: int = attrs.field(default=16, validator=v.positive_int)
        #: pixels per patch side: must be the encoder's (the target 'pixels' checks it)
        patch_size: int = attrs.field(default=16, validator=v.positive_int)

    def __init__(self, config: Config, embed_dim: int, grid: tuple[int, int], conditioner):
        super().__init__(config, embed_dim, grid, conditioner)
        self.out_dim = config.patch_size * config.patch_size * 3
        self.proj = nn.Linear(config.width, self.out_dim)
        nn.init.trunc_normal_(self.proj.weight, std=0.02)
        nn.init.zeros_(self.proj.bias)


class PixelTarget(Target):
    """MAE pixel target: the target view's patches, each normalised by its own mean/var; MSE loss."""

    @attrs.frozen
    class Config:
        #: per-patch normalisation (MAE norm_pix_loss, used for its best results)
        normalize: bool = True
        eps: float = attrs.field(default=1e-6, validator=v.positive)

    def __init__(self, config: Config, encoder, predictor=None):
        super().__init__()
        self.config = config
        self.patch_size = encoder.patch_size
        expected = 3 * self.patch_size ** 2
        out_dim = predictor.out_dim if isinstance(predictor, PixelDecoder) else expected
        if out_dim != expected:
            raise ValueError(
                f"target 'pixels' predicts {self.patch_size}x{self.patch_size}x3 = {expected} values per patch, but "
                f"the predictor outputs {out_dim}; set predictor.patch_size: {self.patch_size} (the encoder's)")

    @torch.no_grad()
    def forward(self, images, target_idx):
        patches = patchify(images.float(), self.patch_size)
        if self.config.normalize:
            patches = normalise_patches(patches, self.config.eps)
        b, m, n = target_idx.shape
        picked = torch.gather(patches, 1, target_idx.reshape(b, -1, 1).expand(-1, -1, patches.shape[-1]))
        return picked.view(b, m, n, -1)

    def loss(self, prediction, target):
        if prediction.shape != target.shape:
            raise ValueError(f"target 'pixels': the predictor returned {tuple(prediction.shape)} for target pixels of "
                             f"shape {tuple(target.shape)}; use predictor 'pixel_decoder'")
        return F.mse_loss(prediction, target)
