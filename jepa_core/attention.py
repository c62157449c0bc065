"""Training attention for bf16 on the CPU: forward and backward on the matrix units.

On an Intel Xeon with AMX (torch 2.14.1), the bf16 backward of torch's CPU
flash attention is slower than its fp32 one: at the bench predictor's shape
(64 sequences x 3 heads x 95 tokens x 128) forward and backward took 63-66 ms
in bf16 against 33-37 ms in fp32 (docs/performance.md, "Attention in bf16 on
the CPU"). :func:`attention` is the textbook formula instead: bf16 matmuls, the
softmax and its backward in fp32, the probabilities kept for the backward, and
the tokens padded to a multiple of ``PAD`` (a 95-token ``q @ k^T`` runs up to
4x slower than a 96-token one); 17-23 ms there.

:func:`training_attention` routes the step's eligible
``F.scaled_dot_product_attention`` calls (CPU, bf16, a gradient wanted, no
mask, dropout or causal flag) to it, so timm's blocks and the RoPE attention
need no change; every other call, and every call on another device or
precision, is torch's own. Both are custom ops, so the FLOP counter and
``torch.compile`` see one attention op forward and one backward.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.overrides import TorchFunctionMode

aten = torch.ops.aten


#: token counts are padded to a multiple of this: the matrix units run a 95-token
#: ``q @ k^T`` 1.5-4x slower than a 96-token one (docs/performance.md)
PAD = 16


def _padded(t: Tensor, length: int) -> Tensor:
    """``t`` (B, H, L, D) with zero tokens appended up to ``length``: one contiguous copy."""
    return F.pad(t, (0, 0, 0, length - t.shape[-2]))


def _round_up(length: int) -> int:
    return -(-length // PAD) * PAD


def _softmax_dtype(t: Tensor) -> torch.dtype:
    """fp32 for bf16 and fp32 inputs, float64 for float64 (the exact gradient check)."""
    return torch.promote_types(t.dtype, torch.float32)


@torch.library.custom_op("jepa_core::attention", mutates_args=())
def attention_forward(q: Tensor, k: Tensor, v: Tensor, scale: float) -> tuple[Tensor, Tensor]:
    """Softmax attention of (B, H, L, D) ``q``, ``k``, ``v``, and its probabilities for the backward.

    Queries and keys are padded to a multiple of ``PAD`` tokens; padded keys get
    no weight. The scores' softmax is in fp32, the probabilities kept in ``q``'s
    dtype (what the ``@ v`` matmul reads). The output is laid out (B, L, H, D),
    as a flash kernel writes it for the heads of a fused qkv projection (a fixed
    layout for the compiler; merging the heads back is then free).
    """
    length, keys = q.shape[-2], k.shape[-2]
    k, v = _padded(k, _round_up(keys)), _padded(v, _round_up(keys))
    scores = torch.matmul(_padded(q, _round_up(length)), k.transpose(-2, -1)).to(_softmax_dtype(q)).mul_(scale)
    scores[..., keys:] = float("-inf")
    probs = torch.softmax(scores, dim=-1).to(q.dtype)
    out = torch.matmul(probs, v)[..., :length, :]
    return out.transpose(1, 2).contiguous().transpose(1, 2), probs


@attention_forward.register_fake
def _(q: Tensor, k: Tensor, v: Tensor, scale: float) -> tuple[Tensor, Tensor]:
    batch, heads, length = q.shape[:-1]
    out = q.new_empty(batch, length, heads, v.shape[-1]).transpose(1, 2)  # the (B, L, H, D) layout
    return out, q.new_empty(batch, heads, _round_up(length), _round_up(k.shape[-2]))


def attention(q: Tensor, k: Tensor, v: Tensor, scale: float) -> Tensor:
    """Softmax attention of (B, H, L, D) ``q``, ``k``, ``v`` (:func:`attention_forward`'s output)."""
    return attention_forward(q, k, v, scale)[0]


@torch.library.custom_op("jepa_core::attention_backward", mutates_args=())
def attention_backward(grad: Tensor, q: Tensor, k: Tensor, v: Tensor, probs: Tensor,
                       scale: float) -> tuple[Tensor, Tensor, Tensor]:
    """Gradients of :func:`attention` in ``q``'s dtype, padded as the forward was; the softmax's in fp32."""
    length, keys = q.shape[-2], k.shape[-2]
    q, grad = _padded(q, probs.shape[-2]), _padded(grad, probs.shape[-2])  # padded queries: no gradient
    k, v = _padded(k, probs.shape[-1]), _padded(v, probs.shape[-1])
    grad_v = torch.matmul(probs.transpose(-2, -1), grad)
    wide = _softmax_dtype(q)
    grad_probs = torch.matmul(grad, v.transpose(-2, -1)).to(wide)
    # softmax's own backward kernel: probs * (grad_probs - rowsum(probs * grad_probs)) in one pass
    grad_scores = aten._softmax_backward_data(grad_probs, probs.to(wide), -1, wide).mul_(scale).to(q.dtype)
    grad_q = torch.matmul(grad_scores, k)[..., :length, :]
    return grad_q, torch.matmul(grad_scores.transpose(-2, -1), q)[..., :keys, :], grad_v[..., :keys, :]


@attention_backward.register_fake
def _(grad: Tensor, q: Tensor, k: Tensor, v: Tensor, probs: Tensor, scale: float) -> tuple[Tensor, Tensor, Tensor]:
    return tuple(t.new_empty(*t.shape[:-2], n, t.shape[-1])[..., :t.shape[-2], :]  # slices of padded matmuls
                 for t, n in ((q, probs.shape[-2]), (k, probs.shape[-1]), (v, probs.shape[-1])))


def _save(ctx, inputs: tuple, output: tuple[Tensor, Tensor]) -> None:
    q, k, v, scale = inputs
    ctx.save_for_backward(q, k, v, output[1])
    ctx.mark_non_differentiable(output[1])
    ctx.scale = scale


def _backward(ctx, grad: Tensor, _grad_probs: Tensor | None) -> tuple[Tensor, Tensor, Tensor, None]:
    return (*attention_backward(grad, *ctx.saved_tensors, ctx.scale), None)


attention_forward.register_autograd(_backward, setup_context=_save)


class _Route(TorchFunctionMode):
    """Sends eligible ``F.scaled_dot_product_attention`` calls to :func:`attention`."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.scaled_dot_product_attention and _eligible(*args, **kwargs):
            q = args[0]
            scale = kwargs.get("scale")
            return attention(*args[:3], q.shape[-1] ** -0.5 if scale is None else scale)
        return func(*args, **kwargs)


def _eligible(q: Tensor, k: Tensor, v: Tensor, attn_mask: Tensor | None = None, dropout_p: float = 0.0,
              is_causal: bool = False, scale: float | None = None, enable_gqa: bool = False) -> bool:
    tensors = (q, k, v)
    return (attn_mask is None and not dropout_p and not is_causal and not enable_gqa
            and all(t.device.type == "cpu" and t.dtype == torch.bfloat16 and t.dim() == 4 for t in tensors)
            and q.shape[:2] == k.shape[:2] == v.shape[:2]
            and torch.is_grad_enabled() and any(t.requires_grad for t in tensors))


@contextlib.contextmanager
def training_attention(device: torch.device, dtype: torch.dtype | None) -> Iterator[None]:
    """Inside: a training step's attention on ``device`` in autocast ``dtype`` (None: fp32).

    Routes to :func:`attention` on the CPU in bf16 only; elsewhere torch's own kernels.
    """
    if device.type == "cpu" and dtype == torch.bfloat16:
        with _Route():
            yield
    else:
        yield
