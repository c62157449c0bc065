"""The context encoder: a timm Vision Transformer that runs on a subset of patches.

I-JEPA's encoder has no [cls] token and fixed 2-D sin-cos positional
embeddings; the context encoder only sees the context patches, so the
forward takes token indices and gathers before the transformer blocks.

Clips (B, T, 3, H, W) take one of two paths. A video encoder (``frames`` set,
V-JEPA) embeds tubelets of ``tubelet`` frames with a Conv3d and adds fixed 3-D
sin-cos positions, so its grid is (T / tubelet, rows, cols). An image encoder
encodes every frame on its own (V-JEPA 2-AC's frame-wise encoding, so a frame's
features never see a later frame) and returns the frames' tokens in time order.

With ``rope`` (V-JEPA 2) no positions are added: every block's attention rotates its
queries and keys by the (time, row, col) grid positions of the tokens present
(jepa_core/rope.py), an image being one frame at time 0.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import nn

from jepa_core.registries import ComponentError, did_you_mean
from jepa_core.rope import grid_positions, token_positions, use_rope


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


def sincos_1d(dim: int, positions: torch.Tensor) -> torch.Tensor:
    """(N, dim) sin-cos embedding of 1-D ``positions``: sines then cosines, as MAE / V-JEPA."""
    omega = 1.0 / 10000 ** (torch.arange(dim // 2, dtype=torch.float64) / (dim / 2.0))
    angles = positions.double().reshape(-1, 1) * omega[None, :]
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=1).float()


def sincos_3d(dim: int, grid: tuple[int, int, int], uniform_power: bool = False) -> torch.Tensor:
    """(T*rows*cols, dim) fixed 3-D sin-cos embedding, V-JEPA's, in (time, row, col) order.

    Time gets half the width and rows and columns a quarter each; with
    ``uniform_power`` (V-JEPA's released models) each gets 2 * ceil(dim / 6),
    cut to ``dim``.
    """
    if dim % 8:
        raise ValueError(f"3-D sin-cos embedding needs a width divisible by 8, got {dim}")
    t, r, c = torch.meshgrid(*(torch.arange(n) for n in grid), indexing="ij")
    widths = (2 * math.ceil(dim / 6),) * 3 if uniform_power else (dim // 2, dim // 4, dim // 4)
    parts = [sincos_1d(w, axis) for w, axis in zip(widths, (t, r, c))]
    return torch.cat(parts, dim=1)[:, :dim]


def sincos(dim: int, grid: tuple[int, ...], uniform_power: bool = False) -> torch.Tensor:
    """The fixed sin-cos embedding of an image grid (rows, cols) or a video grid (time, rows, cols)."""
    return sincos_2d(dim, grid) if len(grid) == 2 else sincos_3d(dim, grid, uniform_power)


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
    """A timm ViT without [cls] token, with fixed sin-cos positions (or RoPE) and a token-subset forward."""

    def __init__(self, name: str, image_size: int, drop_path_rate: float = 0.0,
                 depth: int | None = None, patch_size: int | None = None,
                 frames: int | None = None, tubelet: int = 2, uniform_power: bool = True,
                 rope: bool = False, num_heads: int | None = None):
        super().__init__()
        import timm
        from timm.models.vision_transformer import VisionTransformer

        names = vit_names()
        if name not in names:
            raise ComponentError(
                f"unknown timm Vision Transformer {name!r}{did_you_mean(name, names)}; "
                "see timm.list_models('vit_*')"
            )
        overrides = {k: v for k, v in (("depth", depth), ("patch_size", patch_size), ("num_heads", num_heads))
                     if v is not None}
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
        self.frames = frames
        if frames is not None:
            if frames % tubelet:
                raise ComponentError(f"encoder.frames ({frames}) must be a multiple of encoder.tubelet ({tubelet})")
            self.tubelet = tubelet
            self.grid = (frames // tubelet, *self.grid)
            p = self.patch_size
            vit.patch_embed = nn.Conv3d(3, self.embed_dim, (tubelet, p, p), stride=(tubelet, p, p))
            nn.init.trunc_normal_(vit.patch_embed.weight, std=0.02)  # V-JEPA's init of its Conv3d
            nn.init.zeros_(vit.patch_embed.bias)
        self.rope = rope
        if rope:  # positions rotate q and k in every block instead of being added: no pos_embed
            self.pos_embed = None
            self.register_buffer("positions", grid_positions(self.grid), persistent=False)
            use_rope(vit.blocks)
        else:
            self.register_buffer("pos_embed", sincos(self.embed_dim, self.grid, uniform_power)[None],
                                 persistent=False)
        init_vit_weights(self.vit, self.vit.blocks)

    @property
    def num_tokens(self) -> int:
        """Tokens per image (image encoder) or per clip (video encoder)."""
        return math.prod(self.grid)

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """Patch (or tubelet) embeddings plus positions (none with RoPE), (B, N, D)."""
        if self.frames is None:
            x = self.vit.patch_embed(images)
            return x if self.pos_embed is None else x + self.pos_embed
        if images.dim() != 5 or images.shape[1] != self.frames:
            raise ValueError(f"the video encoder takes clips of {self.frames} frames (B, T, 3, H, W), "
                             f"got shape {tuple(images.shape)}")
        x = self.vit.patch_embed(images.transpose(1, 2))  # (B, D, T', rows, cols)
        x = x.flatten(2).transpose(1, 2)
        return x if self.pos_embed is None else x + self.pos_embed

    @property
    def framewise(self) -> bool:
        """Whether clips are encoded frame by frame: an image encoder, or a video encoder of one tubelet."""
        return self.frames is None or self.frames == self.tubelet

    def forward(self, images: torch.Tensor, idx: torch.Tensor | None = None) -> torch.Tensor:
        """(B, K, D) features of the tokens ``idx`` (B, K); all tokens when None.

        A frame-wise encoder given clips encodes each frame alone and returns
        (B, T * N, D); a one-tubelet video encoder sees each frame repeated over
        its tubelet, as V-JEPA 2-AC encodes frames with V-JEPA 2.
        """
        if images.dim() == 5 and self.framewise:
            batch, frames = images.shape[:2]
            flat = images.flatten(0, 1)
            if self.frames is not None:
                flat = flat[:, None].expand(-1, self.tubelet, -1, -1, -1)
            x = self._encode(flat).unflatten(0, (batch, frames)).flatten(1, 2)
            return x if idx is None else gather_tokens(x, idx)
        return self._encode(images, idx)

    def _encode(self, images: torch.Tensor, idx: torch.Tensor | None = None) -> torch.Tensor:
        x = self.embed(images)
        if idx is not None:
            x = gather_tokens(x, idx)
        x = self.vit.norm_pre(x)
        if self.rope:  # the blocks' attention rotates by the positions of the tokens present
            with token_positions(self.vit.blocks, self.positions if idx is None else self.positions[idx]):
                x = self.vit.blocks(x)
        else:
            x = self.vit.blocks(x)
        return self.vit.norm(x)
