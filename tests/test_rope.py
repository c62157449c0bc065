"""Our RoPE attention computes V-JEPA 2's (facebookresearch/vjepa2 ``RoPEAttention``).

The reference below is written out from upstream's description, one number at a time
(numpy, float64), without calling jepa_core.rope:

- positions come from each token's flat index into the (T, H, W) grid, as upstream's
  ``separate_positions``: t = id // (H W), row = (id - t H W) // W, col = the rest;
- each head's dims are cut into time, row and col slices of ``2 * ((head_dim // 3) // 2)``
  (the rest is left alone); in a slice of width w, dim i pairs with i + 1 (i even) or
  i - 1 (i odd), its partner negated for even i, and turns by the angle
  ``pos / 10000 ** ((i mod (w / 2)) / (w / 2))`` (upstream's tiled sines, kept for its weights);
- softmax(q k^T / sqrt(head_dim)) v, heads concatenated, then ``proj``.
"""

import math

import numpy as np
import pytest
import torch

from jepa_core.encoder import Encoder
from jepa_core.rope import RoPEAttention, grid_positions, token_positions

DIM, HEADS, GRID = 192, 3, (2, 4, 4)  # head_dim 64: slices of 20, 4 dims not rotated


def separate_positions(ids, rows, cols):
    t = ids // (rows * cols)
    r = (ids - t * rows * cols) // cols
    return t, r, ids - t * rows * cols - r * cols


def turned(vec, pos):
    """One slice of a query or key (w values) turned by one position, dim by dim."""
    w = len(vec)
    out = np.empty(w)
    for i in range(w):
        angle = pos / 10000 ** ((i % (w // 2)) / (w / 2))
        partner = -vec[i + 1] if i % 2 == 0 else vec[i - 1]
        out[i] = vec[i] * math.cos(angle) + partner * math.sin(angle)
    return out


def reference(x, ids, attn, grid):
    """Upstream's RoPE attention of tokens ``x`` (B, N, C) at flat grid indices ``ids`` (B, N)."""
    x, ids = x.double().numpy(), ids.numpy()
    w_qkv, b_qkv = attn.qkv.weight.double().detach().numpy(), attn.qkv.bias.double().detach().numpy()
    w_proj, b_proj = attn.proj.weight.double().detach().numpy(), attn.proj.bias.double().detach().numpy()
    batch, n, c = x.shape
    hd = c // HEADS
    width = 2 * ((hd // 3) // 2)
    qkv = (x @ w_qkv.T + b_qkv).reshape(batch, n, 3, HEADS, hd)
    out = np.zeros((batch, n, c))
    for b in range(batch):
        pos = np.stack(separate_positions(ids[b], grid[1], grid[2]), axis=1)  # (N, 3)
        for h in range(HEADS):
            q, k, v = (qkv[b, :, j, h].copy() for j in range(3))
            for m in (q, k):
                for tok in range(n):
                    for axis in range(3):
                        cut = slice(axis * width, (axis + 1) * width)
                        m[tok, cut] = turned(m[tok, cut], pos[tok, axis])
            scores = q @ k.T / math.sqrt(hd)
            weights = np.exp(scores - scores.max(axis=1, keepdims=True))
            weights /= weights.sum(axis=1, keepdims=True)
            out[b, :, h * hd:(h + 1) * hd] = weights @ v
    return torch.from_numpy(out @ w_proj.T + b_proj)


@pytest.fixture(scope="module")
def attn():
    torch.manual_seed(0)
    layer = RoPEAttention(DIM, HEADS)
    with torch.no_grad():
        for p in layer.parameters():
            p.copy_(torch.randn(p.shape) * 0.1)
    return layer.eval()


def tokens(n, seed=0):
    return torch.randn(2, n, DIM, generator=torch.Generator().manual_seed(seed))


def test_all_tokens_match_upstream(attn):
    n = math.prod(GRID)
    x, ids = tokens(n), torch.arange(n).expand(2, -1)
    with torch.no_grad():
        ours = attn(x, positions=grid_positions(GRID))
    torch.testing.assert_close(ours.double(), reference(x, ids, attn, GRID), atol=1e-5, rtol=0)


def test_a_token_subset_matches_upstream_with_its_positions(attn):
    """The context encoder's case: tokens gathered by index keep their full-grid positions."""
    ids = torch.tensor([[0, 1, 2, 5, 16, 17, 30, 31], [3, 7, 11, 15, 19, 23, 27, 31]])
    x = tokens(ids.shape[1], seed=1)
    with torch.no_grad(), token_positions(attn, grid_positions(GRID)[ids]):
        ours = attn(x)
    torch.testing.assert_close(ours.double(), reference(x, ids, attn, GRID), atol=1e-5, rtol=0)
    assert attn.positions is None  # reset on the way out


def test_an_image_is_one_frame_at_time_zero(attn):
    """Upstream's image encoder (T = 1): positions (0, row, col), so the time slice does not turn."""
    x, ids = tokens(16, seed=2), torch.arange(16).expand(2, -1)
    with torch.no_grad():
        ours = attn(x, positions=grid_positions(GRID[1:]))
    torch.testing.assert_close(ours.double(), reference(x, ids, attn, (1, *GRID[1:])), atol=1e-5, rtol=0)


def test_without_positions_it_says_how_to_give_them(attn):
    with pytest.raises(RuntimeError, match="token_positions"):
        attn(tokens(4))


def test_a_rope_encoder_keeps_timm_names_and_adds_no_positions():
    def build(rope):
        torch.manual_seed(0)
        return Encoder("vit_tiny_patch16_224", 32, depth=2, patch_size=8, frames=4, rope=rope)

    plain, rope = build(False), build(True)
    assert set(rope.state_dict()) == set(plain.state_dict())  # same keys: weights move between them
    assert rope.pos_embed is None and all(isinstance(b.attn, RoPEAttention) for b in rope.vit.blocks)
    rope.load_state_dict(plain.state_dict())
    clips = torch.randn(1, 4, 3, 32, 32)
    idx = torch.tensor([[0, 5, 17, 31]])
    with torch.no_grad():  # same weights, but positions turn q and k instead of being added
        assert rope(clips, idx).shape == (1, 4, DIM)
        assert not torch.allclose(rope(clips), plain(clips), atol=1e-3)
