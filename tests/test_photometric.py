"""Photometric transformations: torchvision is the oracle, image by image."""

from __future__ import annotations

import pytest
import torch
import torchvision.transforms.v2.functional as TF

from jepa_core.plugins.transformations import photometric as P
from jepa_core.registries import ComponentError, build_config

B, H, W = 4, 32, 40
JITTER_TV = {
    "brightness": TF.adjust_brightness,
    "contrast": TF.adjust_contrast,
    "saturation": TF.adjust_saturation,
    "hue": TF.adjust_hue,
}


def _images(seed: int = 0) -> torch.Tensor:
    x = torch.rand(B, 3, H, W, generator=torch.Generator().manual_seed(seed))
    x[0, :, :4] = 0.5  # gray pixels: zero chroma, hue undefined
    x[1, 1] = x[1, 0]  # ties between the max channels
    x[2, :, -3:] = torch.tensor([1.0, 0.0, 0.0]).view(3, 1, 1)  # saturated primaries
    return x


def _make(cls, **params):
    return cls(build_config(cls.Config, params, cls.__name__))


def _all(cls, seed: int = 0, **params):
    """The op with p=1 and its parameters for the test batch."""
    op = _make(cls, p=1.0, **params)
    return op, op.sample(B, torch.Generator().manual_seed(seed))


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).abs().max().item()


@pytest.mark.parametrize("name", list(JITTER_TV))
def test_jitter_ops_match_torchvision(name):
    cls = P.TRANSFORMATIONS[name]
    op, params = _all(cls, strength=0.5 if name == "hue" else 0.9)
    x = _images()
    ref = torch.stack([JITTER_TV[name](x[i], float(params["factor"][i])) for i in range(B)])
    assert _max_diff(op.apply(x, params), ref) <= (1e-4 if name == "hue" else 1e-5)


def test_destructive_ops_match_torchvision():
    x = _images()
    op, params = _all(P.Grayscale)
    assert _max_diff(op.apply(x, params), torch.stack([TF.rgb_to_grayscale(i, 3) for i in x])) <= 1e-5
    op, params = _all(P.Solarize, threshold=0.4)
    assert _max_diff(op.apply(x, params), torch.stack([TF.solarize(i, 0.4) for i in x])) <= 1e-5
    op, params = _all(P.GaussianBlur, kernel_size=9, sigma=(0.1, 3.0))
    ref = [TF.gaussian_blur(x[i], [9, 9], [float(params["sigma"][i])] * 2) for i in range(B)]
    assert _max_diff(op.apply(x, params), torch.stack(ref)) <= 1e-5


def test_color_jitter_matches_torchvision_in_the_sampled_order():
    op, params = _all(P.ColorJitter, brightness=0.8, contrast=0.8, saturation=0.8, hue=0.3)
    assert not (params["order"] == params["order"][0]).all(), "orders should differ across samples"
    assert (params["order"].sort(dim=1).values == torch.arange(4)).all()
    x = _images()
    ref = []
    for i in range(B):
        img = x[i]
        for o in params["order"][i].tolist():
            name = P.JITTERS[o]
            img = JITTER_TV[name](img, float(params[name][i]))
        ref.append(img)
    assert _max_diff(op.apply(x, params), torch.stack(ref)) <= 1e-4


def test_blocks_and_subsets_give_the_batched_result(monkeypatch):
    """CPU blocking and subset gathering change the schedule, never the result."""
    op = _make(P.ColorJitter, p=0.6)
    params = op.sample(B, torch.Generator().manual_seed(3))
    x = _images()
    whole = op.apply(x, params)
    monkeypatch.setattr(P.ops, "CPU_BLOCK_BYTES", 1)  # one image per block
    assert torch.equal(op.apply(x, params), whole)
    assert torch.equal(x, _images()), "apply must not modify its input"


@pytest.mark.parametrize("name", list(P.TRANSFORMATIONS))
def test_p0_is_identity_and_p1_applies_everywhere(name):
    cls = P.TRANSFORMATIONS[name]
    x = _images()
    op = _make(cls, p=0.0)
    params = op.sample(B, torch.Generator().manual_seed(0))
    assert not params["applied"].any()
    for key, value in op.identity(B).items():
        assert torch.equal(params[key], value)
    assert torch.equal(op.apply(x, params), x)
    assert torch.equal(op.encode(params, params), torch.zeros(B, op.action_dim))
    op, params = _all(cls)
    assert params["applied"].all()
    out = op.apply(x, params)
    assert out.shape == x.shape and ((out - x).abs().flatten(1).amax(1) > 0).all()
    assert torch.equal(x, _images()), "apply must not modify its input"


def test_partial_application_touches_only_the_drawn_samples():
    x = _images()
    for cls in (P.ColorJitter, P.GaussianBlur, P.Hue):
        op = _make(cls, p=0.5)
        params = op.sample(B, torch.Generator().manual_seed(1))
        applied = params["applied"]
        assert 0 < applied.sum() < B
        out = op.apply(x, params)
        assert torch.equal(out[~applied], x[~applied])
        assert not torch.equal(out[applied], x[applied])


def test_encode_differences_and_flags():
    g = torch.Generator().manual_seed(0)
    jitter = _make(P.ColorJitter, p=1.0)
    source, target = jitter.sample(B, g), jitter.sample(B, g)
    expected = torch.stack([target[n] - source[n] for n in P.JITTERS], dim=1)
    assert torch.allclose(jitter.encode(source, target), expected)
    null = jitter.null_params(B)
    assert torch.equal(jitter.encode(null, null), torch.zeros(B, 4))
    assert torch.allclose(jitter.encode(null, target)[:, 0], target["brightness"] - 1)

    blur = _make(P.GaussianBlur, p=1.0)
    src = blur.sample(B, g)
    assert torch.equal(blur.encode(src, blur.null_params(B)), torch.ones(B, 1))
    assert torch.equal(blur.encode(blur.null_params(B), src), -torch.ones(B, 1))
    assert torch.equal(blur.encode(blur.null_params(B), blur.null_params(B)), torch.zeros(B, 1))

    hue = _make(P.Hue, p=1.0)
    s, t = hue.sample(B, g), hue.sample(B, g)
    assert torch.allclose(hue.encode(s, t)[:, 0], t["factor"] - s["factor"])
    assert torch.equal(hue.encode(hue.null_params(B), hue.null_params(B)), torch.zeros(B, 1))


@pytest.mark.parametrize("name", list(P.TRANSFORMATIONS))
def test_sampling_is_deterministic_and_on_cpu(name):
    op = _make(P.TRANSFORMATIONS[name], p=0.5)
    a = op.sample(B, torch.Generator().manual_seed(7))
    b = op.sample(B, torch.Generator().manual_seed(7))
    assert a.keys() == b.keys()
    for key in a:
        assert a[key].device.type == "cpu" and torch.equal(a[key], b[key])


def test_factor_ranges():
    op = _make(P.Brightness, strength=1.5, p=1.0)
    f = op.sample(1000, torch.Generator().manual_seed(0))["factor"]
    assert f.min() >= 0.0 and f.max() <= 2.5 and f.min() < 0.1
    op = _make(P.Hue, strength=0.1, p=1.0)
    f = op.sample(1000, torch.Generator().manual_seed(0))["factor"]
    assert -0.1 <= f.min() < -0.09 and 0.09 < f.max() <= 0.1


@pytest.mark.parametrize(
    "cls, params, key",
    [
        (P.Brightness, {"p": 1.5}, "p"),
        (P.Contrast, {"strength": -0.1}, "strength"),
        (P.Hue, {"strength": 0.6}, "strength"),
        (P.ColorJitter, {"saturation": -1.0}, "saturation"),
        (P.ColorJitter, {"p": 1.5}, "p"),
        (P.GaussianBlur, {"kernel_size": 22}, "kernel_size"),
        (P.GaussianBlur, {"sigma": [0.0, 1.0]}, "sigma"),
        (P.Solarize, {"threshold": 2.0}, "threshold"),
    ],
)
def test_bad_configs_name_the_key(cls, params, key):
    with pytest.raises(ComponentError) as info:
        build_config(cls.Config, params, "what")
    assert info.value.key == key


def test_blur_kernel_must_fit_the_image():
    op = _make(P.GaussianBlur, kernel_size=23)
    op.check_image_size(224, 224)
    with pytest.raises(ValueError, match="'kernel_size' .* must be odd and smaller than the image \\(16x32\\)"):
        op.check_image_size(16, 32)


def test_registered_through_the_hook():
    from jepa_core.registries import Registry

    registry = Registry("transformations")
    P.jepa_register_transformations(registry)
    assert set(registry.names()) == set(P.TRANSFORMATIONS)
    for entry in registry.entries():
        assert entry.description and entry.config is entry.factory.Config
    op = registry.create("color_jitter")
    assert (op.config.brightness, op.config.contrast, op.config.saturation, op.config.hue, op.p) == (
        0.4,
        0.4,
        0.2,
        0.1,
        0.8,
    )
