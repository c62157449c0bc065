"""Small helpers the tests share (fixtures live in conftest.py)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import torch


def read_metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]


# --------------------------------------------------------------------------- numerical comparisons
#
# For results that two computations reach in different orders (another batch split, another
# process count, another kernel or implementation); see tests/README.md, "Exact versus numerical
# comparisons". Results that are bitwise equal by design are compared with torch.equal instead.

#: one process with the whole batch against several with a share each (tests/test_baselines.py,
#: tests/test_distributed.py): the same sums in another order. Gradients and BatchNorm statistics
#: are judged at the scale of their module; the worst seen is 7e-6 of it (an encoder's final-norm
#: bias feeding a BatchNorm projector, true gradient zero), with AVX-512 and with AVX2 kernels.
#: A real mismatch (no all-reduce, a sum for a mean) is a large fraction of the scale.
DDP_RTOL = 1e-4


def assert_close_scaled(actual, expected, rtol: float, name: str, scale: float = 0.0) -> None:
    """Assert ``max |actual - expected| <= rtol * max(max |expected|, scale)``.

    Float round-off is relative to the magnitude of what was summed, not to each
    element: an entry that cancels to nearly zero (a bias right before a BatchNorm,
    whose true gradient is zero) carries the round-off of the large terms it was
    summed from. So every entry gets the same room, ``rtol`` times the tensor's
    largest entry, or ``scale`` when ``expected`` itself may be pure round-off
    (for gradients: the largest entry of the whole module's gradient, as
    ``assert_all_close_scaled`` passes). Take ``scale`` from the reference, never
    from ``actual``, so a wrong result cannot widen its own tolerance.
    """
    actual, expected = torch.as_tensor(actual).detach(), torch.as_tensor(expected).detach()
    assert actual.shape == expected.shape, f"{name}: shape {tuple(actual.shape)}, expected {tuple(expected.shape)}"
    assert torch.isfinite(actual).all(), f"{name}: non-finite values in the result"
    a, e = actual.cpu().double(), expected.cpu().double()
    largest = e.abs().max().item() if e.numel() else 0.0
    reference = max(largest, scale)
    diff = (a - e).abs()
    worst = diff.max().item() if diff.numel() else 0.0
    if worst <= rtol * reference:
        return
    flat = int(diff.argmax())
    where = tuple(int(i) for i in torch.unravel_index(torch.tensor(flat), diff.shape))
    raise AssertionError(
        f"{name}: max |actual - expected| = {worst:.3g} at {where} (actual {a.flatten()[flat].item():.7g}, "
        f"expected {e.flatten()[flat].item():.7g}) exceeds rtol {rtol:g} x {reference:.3g} = {rtol * reference:.3g}; "
        f"it is {worst / reference:.3g} of the scale (max |expected| {largest:.3g}, reference scale {scale:.3g})")


def module_scales(tensors: Mapping[str, torch.Tensor]) -> dict[str, float]:
    """Largest |entry| over each top-level module's tensors ("encoder.vit.norm.bias" counts for "encoder")."""
    scales: dict[str, float] = {}
    for key, value in tensors.items():
        module = key.split(".")[0]
        scales[module] = max(scales.get(module, 0.0), value.detach().abs().max().item() if value.numel() else 0.0)
    return scales


def assert_all_close_scaled(actual: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Tensor],
                            rtol: float, what: str) -> None:
    """The same keys, and each tensor close to the reference's at the scale of its module (``module_scales``).

    For gradients and BatchNorm statistics of a model: a tensor whose true value is
    zero is judged against the module's largest gradient (statistic), not against
    its own round-off.
    """
    assert set(actual) == set(expected), f"{what}: keys differ: {sorted(set(actual) ^ set(expected))}"
    scales = module_scales(expected)
    for key, value in expected.items():
        assert_close_scaled(actual[key], value, rtol, f"{what} {key}", scale=scales[key.split(".")[0]])
