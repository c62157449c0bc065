"""bf16 training attention on the CPU: the same attention, its gradients right, routed only where eligible."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from jepa_core.attention import attention, training_attention
from jepa_core.bench.flops import count_flops

CPU = torch.device("cpu")


def _qkv(dtype: torch.dtype, shape=(2, 3, 7, 8), kv_len: int | None = None, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    kv_shape = (*shape[:2], kv_len or shape[2], shape[3])
    return [torch.randn(s, generator=g, dtype=torch.float64).to(dtype).requires_grad_()
            for s in (shape, kv_shape, kv_shape)]


def test_the_ops_pass_torchs_custom_op_checks():
    """Schemas, fake (meta) kernels with the real layouts, and the autograd registration."""
    for dtype in (torch.float32, torch.bfloat16):
        torch.library.opcheck(attention, (*_qkv(dtype), 0.3))


@pytest.mark.parametrize("kv_len", [None, 5])
def test_the_backward_is_the_exact_gradient_in_float64(kv_len):
    assert torch.autograd.gradcheck(lambda q, k, v: attention(q, k, v, 0.3), _qkv(torch.float64, kv_len=kv_len))


def test_bf16_gradients_are_as_close_to_float64_as_torchs_own_bf16_kernel():
    """The backward rounds to bf16 where torch's flash kernel does not; its error stays of the same order."""
    shape, errors = (4, 3, 95, 64), {}
    exact = _qkv(torch.float64, shape)
    grad_out = torch.randn(shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    reference = torch.autograd.grad(F.scaled_dot_product_attention(*exact), exact, grad_out)
    for name, fn in {"torch": F.scaled_dot_product_attention,
                     "ours": lambda q, k, v: attention(q, k, v, q.shape[-1] ** -0.5)}.items():
        inputs = _qkv(torch.bfloat16, shape)
        grads = torch.autograd.grad(fn(*inputs), inputs, grad_out.bfloat16())
        errors[name] = max(float((g.double() - r).norm() / r.norm()) for g, r in zip(grads, reference))
    assert errors["ours"] < max(2 * errors["torch"], 1e-2), errors


def _routed_ops(fn) -> set[str]:
    with training_attention(CPU, torch.bfloat16):
        _, per_op = count_flops(fn)
    return {op for op in per_op if "attention" in op}


def test_an_eligible_bf16_call_goes_to_our_op_with_torchs_forward():
    q, k, v = _qkv(torch.bfloat16, (2, 3, 20, 16))
    with training_attention(CPU, torch.bfloat16):
        out = F.scaled_dot_product_attention(q, k, v)
    assert torch.equal(out, F.scaled_dot_product_attention(q, k, v))  # the same flash forward
    assert _routed_ops(lambda: F.scaled_dot_product_attention(q, k, v).sum().backward()) == {
        "jepa_core.attention", "jepa_core.attention_backward"}


@pytest.mark.parametrize("call", ["mask", "causal", "dropout", "fp32", "no_grad"])
def test_other_calls_stay_with_torch(call):
    """A mask, causal flag, dropout, fp32 or no gradient: torch's kernel and result, untouched."""
    dtype = torch.float32 if call == "fp32" else torch.bfloat16
    q, k, v = _qkv(dtype, (2, 3, 20, 16))
    kwargs = {"mask": {"attn_mask": torch.ones(20, 20, dtype=torch.bool).tril()}, "causal": {"is_causal": True},
              "dropout": {"dropout_p": 0.5}}.get(call, {})

    def run():
        torch.manual_seed(0)
        with torch.set_grad_enabled(call != "no_grad"):
            return F.scaled_dot_product_attention(q, k, v, **kwargs)

    assert not any(op.startswith("jepa_core") for op in _routed_ops(run))
    with training_attention(CPU, torch.bfloat16):
        routed = run()
    assert torch.equal(routed, run())


@pytest.mark.parametrize("device, dtype", [("cpu", None), ("meta", torch.bfloat16)])
def test_only_bf16_on_the_cpu_is_routed(device, dtype):
    q, k, v = _qkv(torch.bfloat16, (2, 3, 20, 16))
    with training_attention(torch.device(device), dtype):
        _, per_op = count_flops(lambda: F.scaled_dot_product_attention(q, k, v).sum().backward())
    assert not any(op.startswith("jepa_core") for op in per_op)
