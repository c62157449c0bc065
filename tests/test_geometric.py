"""random_resized_crop: torchvision's crop distribution and resampling, batched per view."""

from __future__ import annotations

import math

import pytest
import torch
import torchvision.transforms.v2.functional as TF
from torchvision.transforms import RandomResizedCrop as TorchvisionRRC

from jepa_core.plugins.transformations.geometric import RandomResizedCrop
from jepa_core.registries import ComponentError, build_config


def _op(**params) -> RandomResizedCrop:
    return RandomResizedCrop(build_config(RandomResizedCrop.Config, params, "random_resized_crop"))


def test_a_pixel_aligned_box_matches_torchvision_inside_the_crop():
    """Interior pixels equal torchvision's crop+resize; the border row reads the image around the
    crop (a continuous crop) where torchvision replicates the crop's own edge."""
    images = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    params = {
        "box": torch.tensor([[16 / 64, 8 / 64, 32 / 64, 32 / 64], [0.0, 0.0, 1.0, 1.0]]),
        "flip": torch.tensor([True, False]),
        "applied": torch.tensor([True, False]),
    }
    out = _op().apply(images, params)
    ref = TF.horizontal_flip(TF.resized_crop(images[0], 16, 8, 32, 32, [64, 64], antialias=False))
    assert (out[0] - ref)[:, 1:-1, 1:-1].abs().max() < 1e-5
    assert (out[1] - images[1]).abs().max() < 1e-5  # the identity box is the identity


def test_boxes_follow_torchvisions_distribution():
    """Area fraction, aspect and position as RandomResizedCrop.get_params draws them (100k boxes, 20k boxes)."""
    scale, ratio = (0.08, 1.0), (3 / 4, 4 / 3)
    params = _op(scale=list(scale)).sample(100_000, torch.Generator().manual_seed(0))
    top, left, h, w = params["box"].unbind(1)
    assert top.min() >= 0 and left.min() >= 0 and (top + h).max() <= 1 + 1e-6 and (left + w).max() <= 1 + 1e-6
    ours = torch.stack([h * w, (w / h).log(), top + h / 2, left + w / 2], 1)

    torch.manual_seed(0)
    size = 1000
    boxes = torch.tensor([TorchvisionRRC.get_params(torch.empty(1, size, size), scale, ratio) for _ in range(20_000)])
    t_top, t_left, t_h, t_w = (boxes.float() / size).unbind(1)
    theirs = torch.stack([t_h * t_w, (t_w / t_h).log(), t_top + t_h / 2, t_left + t_w / 2], 1)
    for name, a, b in zip(["area", "log aspect", "centre y", "centre x"], ours.T, theirs.T):
        tol = 4 * math.sqrt(a.var() / len(a) + b.var() / len(b)) + 2 / size  # 4 standard errors
        assert abs(a.mean() - b.mean()) < tol, (name, a.mean(), b.mean())
        assert abs(a.std() - b.std()) < 0.02, (name, a.std(), b.std())
    assert abs(params["flip"].float().mean() - 0.5) < 0.01


def test_sampling_is_a_pure_function_of_the_generator_and_falls_back_to_a_centred_crop():
    op = _op()
    a, b = (op.sample(64, torch.Generator().manual_seed(3)) for _ in range(2))
    assert all(torch.equal(a[k], b[k]) for k in a)
    wide = _op(scale=[1.0, 1.0], ratio=[2.0, 3.0]).sample(8, torch.Generator().manual_seed(0))
    assert torch.allclose(wide["box"], torch.tensor([0.25, 0.0, 0.5, 1.0]).expand(8, 4))  # no try fits: 2:1 centred
    none = _op(p=0.0).sample(8, torch.Generator().manual_seed(0))
    assert torch.equal(none["box"], torch.tensor([0.0, 0.0, 1.0, 1.0]).expand(8, 4)) and not none["flip"].any()


@pytest.mark.parametrize(
    "params, key",
    [({"scale": [0.5, 0.2]}, "scale"), ({"scale": [0.0, 0.0]}, "scale"), ({"flip_p": 2}, "flip_p"), ({"ratio": [0, 1]}, "ratio")],
)
def test_bad_parameters_name_the_key(params, key):
    with pytest.raises((ComponentError, ValueError), match=key):
        _op(**params)
