"""The I-JEPA predictor: a narrow ViT that fills in target blocks from context tokens."""

from __future__ import annotations

from functools import partial

import attrs
import torch
from timm.models.vision_transformer import Block
from torch import nn

from jepa_core.api import Predictor, gather_tokens, hookimpl, init_vit_weights, sincos, validators as v


class ViTPredictor(Predictor):
    """Narrow ViT predictor (I-JEPA/IWM): mask tokens at target positions, run once per target block."""

    @attrs.frozen
    class Config:
        depth: int = attrs.field(default=6, validator=v.positive_int)
        width: int = attrs.field(default=384, validator=v.positive_int)
        heads: int = attrs.field(default=12, validator=v.positive_int)
        mlp_ratio: float = attrs.field(default=4.0, validator=v.positive)
        drop_path_rate: float = attrs.field(default=0.0, validator=v.in_range(0.0, 1.0))
        #: one learned mask token per mask sampler of a ``views.masking`` list (V-JEPA: 2)
        mask_tokens: int = attrs.field(default=1, validator=v.positive_int)

        def __attrs_post_init__(self):
            if self.width % self.heads or self.width % 4:
                raise ValueError(
                    f"'width' ({self.width}) must be divisible by 'heads' ({self.heads}) and by 4",
                    attrs.fields(type(self)).width,
                )

    def __init__(self, config: Config, embed_dim: int, grid: tuple[int, int], conditioner):
        super().__init__()
        width = config.width
        self.embed = nn.Linear(embed_dim, width)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, width))
        self.mask_tokens = config.mask_tokens
        # the later samplers' tokens, apart: mask_token keeps I-JEPA's checkpoint layout
        more = config.mask_tokens - 1
        self.more_mask_tokens = nn.Parameter(torch.zeros(more, 1, width)) if more else None
        # a video grid (time, rows, cols) gets V-JEPA's 3-D positions, with the released models' uniform split
        self.register_buffer("pos_embed", sincos(width, grid, uniform_power=True)[None], persistent=False)
        self.conditioner = conditioner
        rates = torch.linspace(0, config.drop_path_rate, config.depth, device="cpu").tolist()  # also under a meta device
        self.blocks = nn.Sequential(*[
            Block(width, config.heads, config.mlp_ratio, qkv_bias=True, drop_path=rate,
                  norm_layer=partial(nn.LayerNorm, eps=1e-6))
            for rate in rates
        ])
        self.norm = nn.LayerNorm(width, eps=1e-6)
        self.proj = nn.Linear(width, embed_dim)
        for token in (self.mask_token, self.more_mask_tokens):
            if token is not None:
                nn.init.trunc_normal_(token, std=0.02)
        init_vit_weights(self, self.blocks)

    @classmethod
    def conditioning_width(cls, config: Config, embed_dim: int) -> int:
        return config.width

    def forward(self, context, context_idx, target_idx, action, mask_index: int = 0):
        batch, blocks, n_target = target_idx.shape
        n_context = context_idx.shape[1]
        pos = self.pos_embed.expand(batch, -1, -1)
        x = self.embed(context) + gather_tokens(pos, context_idx)
        token = self.mask_token if mask_index == 0 else self.more_mask_tokens[mask_index - 1]
        masks = token + gather_tokens(pos, target_idx).reshape(batch * blocks, n_target, -1)
        per_block = [masks]  # (batch * blocks, tokens, width) each
        if action is not None:
            action = action.repeat_interleave(blocks, dim=0)
            per_block[0] = self.conditioner.mask_tokens(masks, action)
            extra = self.conditioner.tokens(action)
            if extra is not None:
                per_block.append(extra.to(masks.dtype))
        # One predictor pass per target block: the context, broadcast (not copied) over the
        # blocks, and each block's tokens meet in a single cat, block-major per image.
        context_per_block = x[:, None].expand(-1, blocks, -1, -1)
        x = torch.cat([context_per_block] + [t.view(batch, blocks, t.shape[1], -1) for t in per_block], dim=2)
        x = self.norm(self.blocks(x.flatten(0, 1)))
        out = self.proj(x[:, n_context:n_context + n_target])
        return out.reshape(batch, blocks, n_target, -1)


@hookimpl
def jepa_register_predictors(registry):
    registry.register("vit", ViTPredictor)
