"""V-JEPA 2's 3-D rotary position embedding (RoPE) attention, a drop-in for timm's ``Attention``.

V-JEPA 2 (facebookresearch/vjepa2, ``src/models/utils/modules.py``: ``RoPEAttention`` and
``rotate_queries_or_keys``) adds no positions to the tokens. Every attention layer instead
rotates each head's queries and keys by the token's integer (time, row, col) grid position:

- the head dimension is cut into three equal even slices of ``2 * ((head_dim // 3) // 2)``
  dims, for time, rows and columns in that order; the rest (4 of head_dim 64) is not rotated;
- a slice of width w has the w / 2 frequencies ``1 / 10000 ** (j / (w / 2))``, computed in
  the queries' dtype, as upstream;
- dims pair up interleaved, (0, 1), (2, 3), ...: ``x[2m]`` turns towards ``-x[2m+1]`` and
  ``x[2m+1]`` towards ``x[2m]``; but the sines and cosines are the w / 2 frequencies tiled
  twice, not repeated per pair, so dim i turns by frequency ``i mod (w / 2)``. Upstream calls
  this a bug it keeps for its released weights; so do we, or imported checkpoints would
  compute other features.

Positions are not rescaled: a token subset (a context mask) keeps the coordinates it has in
the full grid, and an image is one frame at time 0 (upstream's image encoder, ``T = 1``).
timm's ``Block`` calls ``attn(x, attn_mask=..., is_causal=...)`` only, so the positions reach
the attention through :func:`token_positions` rather than through the block's arguments.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from jepa_core.registries import ComponentError


def axis_width(head_dim: int) -> int:
    """Dims of a head rotated per axis (time, rows, cols): upstream's ``2 * ((head_dim // 3) // 2)``."""
    return 2 * ((head_dim // 3) // 2)


def grid_positions(grid: tuple[int, ...]) -> torch.Tensor:
    """(N, 3) integer (time, row, col) of each token of a (rows, cols) or (time, rows, cols) grid, in token order."""
    grid = (1, *grid) if len(grid) == 2 else tuple(grid)
    axes = torch.meshgrid(*(torch.arange(n) for n in grid), indexing="ij")
    return torch.stack(axes, dim=-1).reshape(-1, 3)


def rotate(x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
    """``x`` (..., N, w) turned by 1-D positions ``pos`` (broadcasting against x[..., 0]), upstream's way."""
    half = x.shape[-1] // 2
    omega = 1.0 / 10000 ** (torch.arange(half, dtype=x.dtype, device=x.device) / half)
    angles = pos.to(x.dtype)[..., None] * omega  # (..., N, w / 2)
    cos, sin = angles.cos(), angles.sin()
    cos, sin = torch.cat([cos, cos], dim=-1), torch.cat([sin, sin], dim=-1)  # tiled: dim i, frequency i mod w/2
    pairs = x.unflatten(-1, (-1, 2))
    partner = torch.stack((-pairs[..., 1], pairs[..., 0]), dim=-1).flatten(-2)
    return x * cos + partner * sin


def rotate_3d(x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """Heads ``x`` (B, heads, N, head_dim) turned by ``positions`` (N, 3) or (B, N, 3): time, rows, cols slices."""
    w = axis_width(x.shape[-1])
    pos = positions if positions.dim() == 2 else positions[:, None]  # (B, 1, N, 3): the same for every head
    parts = [rotate(x[..., i * w:(i + 1) * w], pos[..., i]) for i in range(3)]
    return torch.cat([*parts, x[..., 3 * w:]], dim=-1)


class RoPEAttention(nn.Module):
    """Multi-head self-attention with V-JEPA 2's 3-D RoPE; timm ``Attention``'s module names.

    ``qkv``, ``q_norm``, ``k_norm`` (identities unless taken over from a timm attention that
    has them, applied before the rotation), ``proj``: a timm ``Block``'s ``attn`` swapped for
    this keeps its state-dict keys, so V-JEPA 2's ``blocks.N.attn.{qkv,proj}`` load as they are.
    """

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True, attn_drop: float = 0.0,
                 proj_drop: float = 0.0):
        super().__init__()
        if dim % num_heads:
            raise ComponentError(f"RoPE attention: width {dim} is not a multiple of {num_heads} heads")
        self.num_heads, self.head_dim = num_heads, dim // num_heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.q_norm, self.k_norm = nn.Identity(), nn.Identity()
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        #: (N, 3) or (B, N, 3) positions of the tokens present, set by :func:`token_positions`
        self.positions: torch.Tensor | None = None

    @classmethod
    def replacing(cls, attn: nn.Module) -> RoPEAttention:
        """The RoPE attention that takes over timm ``attn``'s own modules (weights and their init kept)."""
        if getattr(attn, "gate", None) is not None or not isinstance(getattr(attn, "norm", nn.Identity()), nn.Identity):
            raise ComponentError("RoPE attention replaces plain timm attention only (no scale_norm or gate)")
        new = cls(attn.qkv.in_features, attn.num_heads, attn.qkv.bias is not None)
        for name in ("qkv", "q_norm", "k_norm", "attn_drop", "proj", "proj_drop"):
            setattr(new, name, getattr(attn, name))
        return new

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None, is_causal: bool = False,
                positions: torch.Tensor | None = None) -> torch.Tensor:
        positions = self.positions if positions is None else positions
        if positions is None:
            raise RuntimeError("RoPEAttention needs the tokens' (time, row, col) positions: "
                               "call it with positions= or inside rope.token_positions(...)")
        batch, n, dim = x.shape
        q, k, v = self.qkv(x).reshape(batch, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        q, k = rotate_3d(self.q_norm(q), positions), rotate_3d(self.k_norm(k), positions)
        x = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, is_causal=is_causal,
                                           dropout_p=self.attn_drop.p if self.training else 0.0)
        return self.proj_drop(self.proj(x.transpose(1, 2).reshape(batch, n, dim)))


def use_rope(blocks: nn.Module) -> None:
    """Swap every timm block's ``attn`` in ``blocks`` for a :class:`RoPEAttention` holding the same weights."""
    for block in blocks:
        block.attn = RoPEAttention.replacing(block.attn)


@contextmanager
def token_positions(module: nn.Module, positions: torch.Tensor) -> Iterator[None]:
    """Every RoPE attention under ``module`` sees ``positions`` (N, 3) or (B, N, 3) while inside."""
    layers = [m for m in module.modules() if isinstance(m, RoPEAttention)]
    for layer in layers:
        layer.positions = positions
    try:
        yield
    finally:
        for layer in layers:
            layer.positions = None
