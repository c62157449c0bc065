"""The official I-JEPA models written out: their parameter names and their forward.

Two users: the interop tests save these modules' state dicts as the official
training loop does and check our modules compute the same after import
(the released checkpoints cannot be downloaded here), and the ``peer``
benchmark times a training step written as the official loop writes it.
Plain attention (``softmax(q k^T / sqrt(d)) v``), as upstream.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from jepa_core.encoder import sincos_2d


class Attention(nn.Module):
    def __init__(self, dim, heads):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        attn = (q @ k.transpose(-2, -1) / math.sqrt(c // self.heads)).softmax(-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(b, n, c))


class MLP(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(dim, hidden), nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, dim, heads):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim, eps=1e-6), nn.LayerNorm(dim, eps=1e-6)
        self.attn, self.mlp = Attention(dim, heads), MLP(dim, 4 * dim)

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


def _randomise(module: nn.Module, seed: int) -> None:
    """Non-trivial weights everywhere (norm scales and biases too), so a misplaced key shows."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if "pos_embed" in name:
                continue
            p.copy_(torch.randn(p.shape, generator=g) * 0.1)
            if p.ndim == 1 and name.endswith("weight"):  # LayerNorm scale around 1
                p.add_(1.0)


class PatchEmbed(nn.Module):
    def __init__(self, patch, dim):
        super().__init__()
        self.proj = nn.Conv2d(3, dim, patch, patch)


class VisionTransformer(nn.Module):
    """Upstream ``VisionTransformer``: patch_embed.proj, pos_embed, blocks, norm."""

    def __init__(self, grid, patch, dim, depth, heads, seed):
        super().__init__()
        self.patch_embed = PatchEmbed(patch, dim)
        self.pos_embed = nn.Parameter(sincos_2d(dim, grid)[None], requires_grad=False)
        self.blocks = nn.ModuleList(Block(dim, heads) for _ in range(depth))
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        _randomise(self, seed)

    def forward(self, images, idx=None):
        x = self.patch_embed.proj(images).flatten(2).transpose(1, 2) + self.pos_embed
        if idx is not None:
            x = torch.gather(x, 1, idx[..., None].expand(-1, -1, x.shape[-1]))
        for block in self.blocks:
            x = block(x)
        return self.norm(x)


class VisionTransformerPredictor(nn.Module):
    """Upstream predictor: predictor_embed, mask_token, predictor_pos_embed, predictor_blocks, ..."""

    def __init__(self, grid, embed_dim, width, depth, heads, seed):
        super().__init__()
        self.predictor_embed = nn.Linear(embed_dim, width)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, width))
        self.predictor_pos_embed = nn.Parameter(sincos_2d(width, grid)[None], requires_grad=False)
        self.predictor_blocks = nn.ModuleList(Block(width, heads) for _ in range(depth))
        self.predictor_norm = nn.LayerNorm(width, eps=1e-6)
        self.predictor_proj = nn.Linear(width, embed_dim)
        _randomise(self, seed)

    def forward(self, context, context_idx, target_idx):
        """One target block: context (B, Nc, D), indices (B, Nc) and (B, Nt) -> (B, Nt, D)."""
        def at(idx):
            pos = self.predictor_pos_embed.expand(idx.shape[0], -1, -1)
            return torch.gather(pos, 1, idx[..., None].expand(-1, -1, pos.shape[-1]))

        x = self.predictor_embed(context) + at(context_idx)
        x = torch.cat([x, self.mask_token + at(target_idx)], dim=1)
        for block in self.predictor_blocks:
            x = block(x)
        return self.predictor_proj(self.predictor_norm(x)[:, context.shape[1]:])
