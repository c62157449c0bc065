"""The scaled comparison the numerical tests share: round-off passes, real mismatches fail."""

import pytest
import torch

from helpers import DDP_RTOL, assert_all_close_scaled, assert_close_scaled


def _grads():
    g = torch.Generator().manual_seed(0)
    weight = torch.randn(5, 6, generator=g)
    # a bias right before a BatchNorm: true gradient zero, what is there is round-off
    return {"projector.0.weight": weight, "projector.0.bias": 1e-7 * torch.randn(5, generator=g)}


def test_round_off_of_a_zero_gradient_passes_at_the_module_scale():
    expected = _grads()
    actual = dict(expected, **{"projector.0.bias": -expected["projector.0.bias"]})  # 100% off, all round-off
    assert_all_close_scaled(actual, expected, DDP_RTOL, "grad")
    with pytest.raises(AssertionError, match=r"projector\.0\.bias: max \|actual - expected\|"):
        assert_close_scaled(actual["projector.0.bias"], expected["projector.0.bias"], DDP_RTOL, "projector.0.bias")


@pytest.mark.parametrize("wrong", ["halved", "one entry 0.1% off", "nan", "missing"])
def test_real_mismatches_fail(wrong):
    expected = _grads()
    actual = dict(expected)
    weight = expected["projector.0.weight"]
    if wrong == "halved":
        actual["projector.0.weight"] = weight / 2
    elif wrong == "one entry 0.1% off":
        actual["projector.0.weight"] = weight.clone()
        actual["projector.0.weight"][2, 3] += 1e-3 * weight.abs().max()
    elif wrong == "nan":
        actual["projector.0.weight"] = weight.clone()
        actual["projector.0.weight"][0, 0] = float("nan")
    else:
        del actual["projector.0.bias"]
    with pytest.raises(AssertionError):
        assert_all_close_scaled(actual, expected, DDP_RTOL, "grad")


def test_the_scale_comes_from_the_reference_not_the_result():
    expected = torch.tensor([1.0, 0.0])
    assert_close_scaled(expected + 5e-6, expected, 1e-5, "x")
    with pytest.raises(AssertionError, match=r"at \(1,\) \(actual 1000"):
        assert_close_scaled(torch.tensor([1.0, 1000.0]), expected, 1e-5, "x")  # not widened by its own 1000
