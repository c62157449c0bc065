"""bf16 training attention on the CPU: the same attention, its gradients right, routed only where eligible."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from jepa_core.attention import attention, attention_forward, training_attention
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
        for kv_len in (None, 16, 17):  # padded or not, queries and keys alike
            torch.library.opcheck(attention_forward, (*_qkv(dtype, (2, 3, 16, 8), kv_len), 0.3))


@pytest.mark.parametrize("kv_len", [None, 5, 16])  # 7 and 5 tokens padded to 16, 16 not padded
def test_the_output_and_its_gradient_are_exact_in_float64(kv_len):
    q, k, v = _qkv(torch.float64, kv_len=kv_len)
    expected = F.scaled_dot_product_attention(q, k, v, scale=0.3)
    torch.testing.assert_close(attention(q, k, v, 0.3), expected, rtol=1e-12, atol=1e-12)  # padding gets no weight
    assert torch.autograd.gradcheck(lambda q, k, v: attention(q, k, v, 0.3), (q, k, v))


@pytest.mark.parametrize("length", [95, 96])  # padded to 96, and not padded
def test_bf16_output_and_gradients_are_as_close_to_float64_as_torchs_own_bf16_kernel(length):
    """Ours rounds the probabilities and the backward's matmul inputs to bf16 where torch's flash
    kernel does not; its error stays of the same order."""
    shape, errors = (4, 3, length, 64), {}
    exact = _qkv(torch.float64, shape)
    grad_out = torch.randn(shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    out = F.scaled_dot_product_attention(*exact)
    reference = (out.detach(), *torch.autograd.grad(out, exact, grad_out))
    for name, fn in {"torch": F.scaled_dot_product_attention,
                     "ours": lambda q, k, v: attention(q, k, v, q.shape[-1] ** -0.5)}.items():
        inputs = _qkv(torch.bfloat16, shape)
        out = fn(*inputs)
        found = (out.detach(), *torch.autograd.grad(out, inputs, grad_out.bfloat16()))
        errors[name] = [float((f.double() - r).norm() / r.norm()) for f, r in zip(found, reference)]
    assert all(o < 2 * t for o, t in zip(errors["ours"], errors["torch"])), errors  # 1.1-1.4x on an AMX Xeon


def _routed_ops(fn) -> set[str]:
    with training_attention(CPU, torch.bfloat16):
        _, per_op = count_flops(fn)
    return {op for op in per_op if "attention" in op}


def test_an_eligible_bf16_call_goes_to_our_op():
    q, k, v = _qkv(torch.bfloat16, (2, 3, 20, 16))
    with training_attention(CPU, torch.bfloat16):
        out = F.scaled_dot_product_attention(q, k, v)
    assert torch.equal(out, attention(q, k, v, 16**-0.5))
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
