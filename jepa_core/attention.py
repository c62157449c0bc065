"""Training attention for bf16 on the CPU: torch's flash forward, a backward on the matrix units.

On an Intel Xeon with AMX (torch 2.14.1), the bf16 backward of torch's CPU
flash attention is slower than its fp32 one: at the bench predictor's shape
(64 sequences x 3 heads x 95 tokens x 128) forward and backward took 40 ms in
bf16 against 23 ms in fp32, a quarter of the whole bf16 I-JEPA step
(docs/performance.md, "Attention in bf16 on the CPU"). :func:`attention` keeps
the flash forward and computes the backward as the textbook formula: the
probabilities recomputed from a bf16 ``q @ k^T`` with the softmax in fp32, and
the four gradient matmuls in bf16, which the matrix units run; 19-22 ms there.

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


@torch.library.custom_op("jepa_core::attention", mutates_args=())
def attention(q: Tensor, k: Tensor, v: Tensor, scale: float) -> Tensor:
    """Softmax attention of (B, H, L, D) ``q``, ``k``, ``v``: torch's CPU flash kernel forward.

    The output is laid out (B, L, H, D), as the kernel writes it for the heads of
    a fused qkv projection, whatever the inputs' layout (a fixed layout for the
    compiler; merging the heads back is then free).
    """
    out = aten._scaled_dot_product_flash_attention_for_cpu(q, k, v, scale=scale)[0]
    return out.transpose(1, 2).contiguous().transpose(1, 2)


@attention.register_fake
def _(q: Tensor, k: Tensor, v: Tensor, scale: float) -> Tensor:
    batch, heads, length = q.shape[:-1]
    return q.new_empty(batch, length, heads, v.shape[-1]).transpose(1, 2)  # the kernel's (B, L, H, D) layout


@torch.library.custom_op("jepa_core::attention_backward", mutates_args=())
def attention_backward(grad: Tensor, q: Tensor, k: Tensor, v: Tensor, scale: float) -> tuple[Tensor, Tensor, Tensor]:
    """Gradients of :func:`attention` in ``q``'s dtype; the probabilities and their gradient in fp32."""
    probs = torch.softmax(torch.matmul(q, k.transpose(-2, -1)).float().mul_(scale), dim=-1)
    grad_v = torch.matmul(probs.to(q.dtype).transpose(-2, -1), grad)
    grad_probs = torch.matmul(grad, v.transpose(-2, -1)).float()
    # softmax's own backward kernel: probs * (grad_probs - rowsum(probs * grad_probs)) in one pass
    grad_scores = aten._softmax_backward_data(grad_probs, probs, -1, torch.float32).mul_(scale).to(q.dtype)
    return torch.matmul(grad_scores, k), torch.matmul(grad_scores.transpose(-2, -1), q), grad_v


@attention_backward.register_fake
def _(grad: Tensor, q: Tensor, k: Tensor, v: Tensor, scale: float) -> tuple[Tensor, Tensor, Tensor]:
    return tuple(torch.empty(t.shape, dtype=t.dtype, device=t.device) for t in (q, k, v))  # matmuls: contiguous


def _save(ctx, inputs: tuple, output: Tensor) -> None:
    q, k, v, scale = inputs
    ctx.save_for_backward(q, k, v)
    ctx.scale = scale


def _backward(ctx, grad: Tensor) -> tuple[Tensor, Tensor, Tensor, None]:
    return (*attention_backward(grad, *ctx.saved_tensors, ctx.scale), None)


attention.register_autograd(_backward, setup_context=_save)


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
