"""``train.precision``: fp32, bf16 autocast, or ``auto``, which measures before it picks.

Machines of one kind come with different CPUs: bf16 matmul is about 5x faster
than fp32 on a Xeon with AMX and hundreds of times slower on an AVX2 EPYC. So
``auto`` times one matmul of the model's MLP shape in both precisions on the
device it will train on and picks bf16 only where it is clearly faster
(``BF16_SPEEDUP``). On CUDA it picks bf16 where the GPU supports it. The probe
runs once per process and shape, takes well under a second (a bf16 kernel
that is hopeless is abandoned after one small call), and its figures are
written to the run directory (``precision.json``) and printed once.
"""

from __future__ import annotations

import functools
import time

import attrs
import torch

#: bf16 must beat fp32 by this factor at the model's shapes for ``auto`` to pick it
BF16_SPEEDUP = 1.3
#: bf16 this many times slower than fp32 on the probe's slice is not timed at the full shape
HOPELESS = 10
_BUDGET_S = 0.1  # timing per precision
#: the slice's bf16 timing runs at least this long: under load, a Zen 4's first one or two bf16 calls
#: took 8-12 ms against 0.16 ms after, and one such call alone once read as hopeless
_SLICE_MIN_S = 0.05


@attrs.frozen
class Precision:
    """What the run trains in, and why."""

    name: str  # "fp32" or "bf16"
    requested: str  # the config's value
    reason: str
    fp32_gflops: float | None = None
    bf16_gflops: float | None = None

    @property
    def dtype(self) -> torch.dtype | None:
        """The autocast dtype (None: plain fp32)."""
        return torch.bfloat16 if self.name == "bf16" else None

    def summary(self) -> str:
        return f"precision: {self.name} ({self.reason})"


def _gflops(device: torch.device, dtype: torch.dtype, m: int, k: int, n: int, deadline_s: float) -> float:
    """Throughput of ``(m, k) @ (k, n)`` in ``dtype``, its fastest call; stops early past ``deadline_s``.

    The fastest call, not the mean: on a shared machine a slow spell during one
    precision's turn would otherwise decide the choice (after a few training steps
    on an AMX Xeon the mean once read bf16 at 1.45x fp32, where fresh processes read 4-7.5x).
    """
    g = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(m, k, device=device, generator=g).to(dtype)
    b = torch.randn(k, n, device=device, generator=g).to(dtype)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    a @ b  # warm-up: kernel selection, allocations
    sync()
    calls, start, best = 0, time.perf_counter(), float("inf")
    while True:
        began = time.perf_counter()
        a @ b
        sync()
        calls, now = calls + 1, time.perf_counter()
        best = min(best, now - began)
        if now - start >= _BUDGET_S or now - start >= deadline_s or calls >= 200:
            return 2.0 * m * k * n / best / 1e9


def _slice_deadline(fp32_gflops: float, m: int, k: int, n: int) -> float:
    """How long bf16 is timed on the slice: four fp32 calls, but never under ``_SLICE_MIN_S``.

    A hopeless kernel (an AVX2 CPU's bf16: ~0.2 s a call on the slice) still stops
    after one call; a kernel slow only in its first calls gets time to warm up.
    """
    return max(4 * 2.0 * m * k * n / fp32_gflops / 1e9, _SLICE_MIN_S)


@functools.lru_cache(maxsize=None)
def _measure(device_type: str, m: int, width: int) -> tuple[int, float, float]:
    """(rows, fp32, bf16 GFLOP/s) of the MLP's first matmul, both at ``rows`` rows.

    bf16 is first timed on a sixteenth of the rows against fp32 on the same
    slice; a hopeless bf16 kernel there (an AVX2 CPU: hundreds of times slower)
    is not timed at the full shape, where one call could take a second. Only the
    full shape decides: on a slice of 36 rows an AMX Xeon's bf16 read 0.62-0.75x
    fp32 in two fresh processes of six and 3.8-6.1x in the others.
    """
    device = torch.device(device_type)
    k, n = width, 4 * width  # the MLP's first layer: most of a ViT's FLOPs
    small = max(1, m // 16)
    fp32 = _gflops(device, torch.float32, small, k, n, deadline_s=_BUDGET_S)
    bf16 = _gflops(device, torch.bfloat16, small, k, n, deadline_s=_slice_deadline(fp32, small, k, n))
    if bf16 < fp32 / HOPELESS:
        return small, fp32, bf16
    fp32 = _gflops(device, torch.float32, m, k, n, deadline_s=_BUDGET_S)
    bf16 = _gflops(device, torch.bfloat16, m, k, n, deadline_s=_BUDGET_S)
    return m, fp32, bf16


def choose(requested: str, device: torch.device, tokens: int, width: int) -> Precision:
    """The run's precision: ``requested`` as given, or ``auto`` decided on ``device`` for
    ``tokens`` rows (batch x tokens per image, capped) of ``width`` features."""
    if requested != "auto":
        return Precision(requested, requested, "set in the config")
    if device.type == "cuda":
        ok = torch.cuda.is_bf16_supported()
        return Precision("bf16" if ok else "fp32", requested, f"CUDA {'supports' if ok else 'lacks'} bf16")
    if device.type != "cpu":
        return Precision("fp32", requested, f"no probe for device {device.type}")
    rows, fp32, bf16 = _measure(device.type, min(max(tokens, 64), 4096), width)
    ratio = bf16 / fp32
    pick = "bf16" if ratio >= BF16_SPEEDUP else "fp32"
    reason = (f"measured matmul {rows}x{width}x{4 * width}: bf16 {bf16:.1f} vs fp32 {fp32:.1f} GFLOP/s, "
              f"{ratio:.2f}x; bf16 needs {BF16_SPEEDUP}x")
    return Precision(pick, requested, reason, round(fp32, 1), round(bf16, 1))
