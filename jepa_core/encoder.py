"""The context encoder: a timm Vision Transformer that runs on a subset of patches.

I-JEPA's encoder has no [cls] token and fixed 2-D sin-cos positional
embeddings; the context encoder only sees the context patches, so the
forward takes token indices and gathers before the transformer blocks.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import nn

from jepa_core.registries import ComponentError, did_you_mean


def sincos_2d(dim: int, grid: tuple[int, int]) -> torch.Tensor:
    """(rows*cols, dim) fixed 2-D sin-cos embedding, as in MAE / I-JEPA."""
    if dim % 4:
        raise ValueError(f"sin-cos embedding needs a width divisible by 4, got {dim}")
    rows, cols = grid
    omega = 1.0 / 10000 ** (torch.arange(dim // 4, dtype=torch.float64) / (dim / 4.0))
    ys, xs = torch.meshgrid(
        torch.arange(rows, dtype=torch.float64), torch.arange(cols, dtype=torch.float64), indexing="ij"
    )
    parts = []
    for coord in (xs.reshape(-1), ys.reshape(-1)):  # width half first, as upstream
        angles = coord[:, None] * omega[None, :]
        parts += [torch.sin(angles), torch.cos(angles)]
    return torch.cat(parts, dim=1).float()


def gather_tokens(tokens: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """tokens (B, N, D), idx (B, K) -> (B, K, D); idx (B, M, K) -> (B, M, K, D)."""
    batch, _, width = tokens.shape
    flat = idx.reshape(batch, -1)
    picked = torch.gather(tokens, 1, flat.unsqueeze(-1).expand(-1, -1, width))
    return picked.reshape(*idx.shape, width)


def init_vit_weights(module: nn.Module, blocks: Iterable[nn.Module]) -> None:
    """I-JEPA's ViT init: every Linear truncated normal 0.02, biases 0, then each
    block's output projections scaled by 1/sqrt(2 * depth)."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    for layer, block in enumerate(blocks, start=1):
        block.attn.proj.weight.data.div_(math.sqrt(2.0 * layer))
        block.mlp.fc2.weight.data.div_(math.sqrt(2.0 * layer))


def vit_names() -> list[str]:
    import timm

    return timm.list_models("vit_*")


class Encoder(nn.Module):
    """A timm ViT without [cls] token, with fixed sin-cos positions and a token-subset forward."""

    def __init__(self, name: str, image_size: int, drop_path_rate: float = 0.0,
                 depth: int | None = None, patch_size: int | None = None):
        super().__init__()
        import timm
        from timm.models.vision_transformer import VisionTransformer

        names = vit_names()
        if name not in names:
            raise ComponentError(
                f"unknown timm Vision Transformer {name!r}{did_you_mean(name, names)}; "
                "see timm.list_models('vit_*')"
            )
        overrides = {k: v for k, v in (("depth", depth), ("patch_size", patch_size)) if v is not None}
        try:
            vit = timm.create_model(
                name, pretrained=False, num_classes=0, global_pool="avg", fc_norm=False,
                class_token=False, pos_embed="none", img_size=image_size, drop_path_rate=drop_path_rate, **overrides,
            )
        except (TypeError, ValueError, AssertionError) as exc:
            raise ComponentError(f"timm model {name!r} cannot be built at {image_size} px: {exc}") from None
        if not isinstance(vit, VisionTransformer) or vit.num_prefix_tokens:
            raise ComponentError(f"timm model {name!r} is not a plain Vision Transformer")
        self.name = name
        self.vit = vit
        self.embed_dim = vit.embed_dim
        self.num_heads = vit.blocks[0].attn.num_heads
        self.patch_size = vit.patch_embed.patch_size[0]
        self.grid = tuple(vit.patch_embed.grid_size)
        self.register_buffer("pos_embed", sincos_2d(self.embed_dim, self.grid)[None], persistent=False)
        init_vit_weights(self.vit, self.vit.blocks)

    def forward(self, images: torch.Tensor, idx: torch.Tensor | None = None) -> torch.Tensor:
        """(B, K, D) features of the patches ``idx`` (B, K); all patches when None."""
        x = self.vit.patch_embed(images) + self.pos_embed
        if idx is not None:
            x = gather_tokens(x, idx)
        x = self.vit.norm_pre(x)
        x = self.vit.blocks(x)
        return self.vit.norm(x)
