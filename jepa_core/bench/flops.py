"""Model FLOPs of a step, counted by ``torch.utils.flop_counter`` with attention counted on every device.

torch 2.14's counter has formulas for the CUDA attention kernels only: on the
CPU, ``scaled_dot_product_attention`` runs ``_scaled_dot_product_flash_attention_for_cpu``,
which it counts as zero FLOPs. Attention is counted here the model-FLOPs way
on every device: ``q @ k^T`` and ``attn @ v`` forward, twice that backward;
the scores a flash kernel recomputes in its backward are not model FLOPs
(torch's CUDA formula counts them).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

import jepa_core.attention  # noqa: F401  (registers torch.ops.jepa_core)

aten = torch.ops.aten


def _forward(query, key, value, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop_count(query, key, value)


def _backward(grad_out, query, key, value, *args, out_shape=None, **kwargs) -> int:
    return 2 * sdpa_flop_count(query, key, value)


ATTENTION = {
    aten._scaled_dot_product_flash_attention_for_cpu: _forward,
    aten._scaled_dot_product_flash_attention_for_cpu_backward: _backward,
    aten._scaled_dot_product_flash_attention_backward: _backward,
    aten._scaled_dot_product_efficient_attention_backward: _backward,
    aten._scaled_dot_product_cudnn_attention_backward: _backward,
    torch.ops.jepa_core.attention: _forward,  # bf16 on the CPU (jepa_core.attention)
    torch.ops.jepa_core.attention_backward: _backward,
}


def count_flops(fn: Callable[[], object]) -> tuple[int, dict[str, int]]:
    """Total model FLOPs of ``fn()`` and the FLOPs per aten op."""
    with FlopCounterMode(display=False, custom_mapping=ATTENTION) as counter:
        fn()
    per_op = {str(op): n for op, n in counter.get_flop_counts()["Global"].items()}
    return counter.get_total_flops(), per_op
