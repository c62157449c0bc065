"""Image World Models: views, the action vector and the three conditioning schemes."""

import pytest
import torch

from jepa_core.config import load_config
from jepa_core.experiment import build_experiment
from jepa_core.launch import main as launch
from jepa_core.manager import get_registries
from helpers import assert_close_scaled

IWM_SOURCE = ("views.source=[{name: color_jitter, p: 0.8}, {name: grayscale, p: 0.2}, "
              "{name: gaussian_blur, p: 0.2, kernel_size: 5}, {name: solarize, p: 0.2}]")
IWM_TARGET = "views.target=[{name: color_jitter, p: 0.8}]"

#: a prediction computed in another batch (another size, another row): the same sums, maybe in another
#: order; relative to the predictions' largest entry (~0.5). The worst seen is 4e-7 of it.
ROW_RTOL = 1e-5


def _experiment(tiny_config, conditioning, *extra):
    return build_experiment(load_config(tiny_config, [IWM_SOURCE, IWM_TARGET, f"conditioning.name={conditioning}",
                                                      *extra]))


def test_action_dimension_follows_the_yaml(tiny_config):
    exp = _experiment(tiny_config, "feature")
    assert exp.views.action_dim == 4 + 1 + 1 + 1
    assert [(s.name, s.dim, s.encoding) for s in exp.views.slots] == [
        ("color_jitter", 4, "difference"), ("grayscale", 1, "flag"),
        ("gaussian_blur", 1, "flag"), ("solarize", 1, "flag")]
    null = exp.views.null_action(3)
    assert null.shape == (3, 7) and torch.count_nonzero(null) == 0
    jitter_only = build_experiment(load_config(tiny_config, ["views.source=[{name: color_jitter}]"]))
    assert jitter_only.views.action_dim == 4


def test_views_share_the_crop_and_encode_the_action(tiny_config):
    exp = _experiment(tiny_config, "feature")
    images = torch.randint(0, 256, (8, 3, 48, 48), dtype=torch.uint8)
    batch = exp.views(images, torch.Generator().manual_seed(1))
    assert batch.source.shape == batch.target.shape == (8, 3, 48, 48)
    assert batch.action.shape == (8, 7)
    src, tgt = batch.source_params["color_jitter"], batch.target_params["color_jitter"]
    factors = lambda p: torch.stack([p[k] for k in ("brightness", "contrast", "saturation", "hue")], 1)  # noqa: E731
    if "brightness" in src:
        assert torch.allclose(batch.action[:, :4], factors(tgt) - factors(src))
    flags = batch.action[:, 4:]
    assert set(flags.unique().tolist()) <= {0.0, 1.0}  # destructive ops exist only in the source view
    again = exp.views(images, torch.Generator().manual_seed(1))
    assert torch.equal(again.action, batch.action) and torch.equal(again.source, batch.source)


@pytest.fixture(scope="module")
def fixed_batch():
    torch.manual_seed(0)
    context_idx = torch.arange(20).repeat(4, 1)
    target_idx = torch.arange(20, 26).repeat(4, 1).view(4, 1, 6)
    return torch.randn(4, 20, 192), context_idx, target_idx


@pytest.mark.parametrize("conditioning", ["none", "sequence", "feature"])
def test_conditioned_predictions_follow_the_action(tiny_config, fixed_batch, conditioning):
    exp = _experiment(tiny_config, conditioning)
    predictor = exp.predictor.eval()
    context, context_idx, target_idx = fixed_batch
    actions = torch.randn(4, 7)
    with torch.no_grad():
        out = predictor(context, context_idx, target_idx, actions)
        other = predictor(context, context_idx, target_idx, actions + 1.0)
        swapped = predictor(context, context_idx, target_idx, actions[[1, 0, 2, 3]])
    if conditioning == "none":
        assert torch.equal(out, other) and torch.equal(out, swapped)
        return
    assert (out - other).abs().max() > 1e-4
    # swapping two images' actions swaps exactly those images' conditioned predictions
    same_context = predictor(context[[0, 0]], context_idx[:2], target_idx[:2], actions[[1, 0]])
    alone = predictor(context[:1], context_idx[:1], target_idx[:1], actions[1:2])  # a batch of one: other kernels
    scale = out.abs().max().item()
    assert_close_scaled(same_context[0], alone[0], ROW_RTOL, "batch of two vs one", scale=scale)
    assert_close_scaled(swapped[2:], out[2:], ROW_RTOL, "untouched rows", scale=scale)
    assert not torch.allclose(swapped[0], out[0], atol=1e-4)


def test_swapping_actions_between_identical_contexts_swaps_predictions(tiny_config, fixed_batch):
    exp = _experiment(tiny_config, "feature")
    predictor = exp.predictor.eval()
    context, context_idx, target_idx = fixed_batch
    twin = context[:1].expand(2, -1, -1)
    actions = torch.randn(2, 7)
    with torch.no_grad():
        out = predictor(twin, context_idx[:2], target_idx[:2], actions)
        swapped = predictor(twin, context_idx[:2], target_idx[:2], actions.flip(0))
    assert_close_scaled(swapped, out.flip(0), ROW_RTOL, "swapped rows", scale=out.abs().max().item())
    assert not torch.allclose(out[0], out[1], atol=1e-4)


@pytest.mark.parametrize("override, expected", [
    ("views.source=[{name: colour_jitter}]", "views.source.0.name: unknown transformations 'colour_jitter' "
                                             "(did you mean 'color_jitter'?)"),
    ("conditioning.name=feture", "conditioning.name: unknown conditioning 'feture' (did you mean 'feature'?)"),
    ("views.source=[{name: grayscale, p: 1.5}]", "views.source.0.p: transformations 'grayscale': 'p' is a "
                                                 "probability and must be in [0, 1]"),
    ("views.source=[{name: brightness, strength: -0.1}]", "views.source.0.strength:"),
    ("views.source=[{name: gaussian_blur, kernel_size: 4}]", "views.source.0.kernel_size:"),
    ("views.source=[{name: gaussian_blur, kernel_size: 49}]", "views.source.0: 'kernel_size' (49) must be odd and "
                                                              "smaller than the image (48x48)"),
    ("views.source=[{name: grayscale}, {name: grayscale}]", "views.source.1.name: 'grayscale' appears twice"),
    ("views.source=[{name: multiblock}]", "views.source.0.name:"),
])
def test_bad_views_are_one_line_errors_before_training(tiny_config, tmp_path, capsys, override, expected):
    out = tmp_path / "run"
    assert launch([str(tiny_config), "--output", str(out), "--set", "conditioning.name=feature",
                   "--set", override]) == 2
    err = capsys.readouterr().err.strip()
    assert expected in err and "\n" not in err, err
    assert not out.exists()


def test_an_action_that_cannot_be_encoded_is_refused(tiny_config, write, capsys):
    plugin = write("broken.py", '''
        import torch
        from jepa_core import hookimpl
        from jepa_core.registries.transformations import Transformation

        class Broken(Transformation):
            """Declares a 2-entry difference action but encodes 3 entries."""
            action_dim = 2
            encoding = "difference"
            def identity(self, n): return {"v": torch.zeros(n)}
            def sample_applied(self, n, g): return {"v": torch.rand(n, generator=g)}
            def apply(self, images, params): return images
            def action_params(self, params): return params["v"].view(-1, 1).repeat(1, 3)

        @hookimpl
        def jepa_register_transformations(registry):
            registry.register("broken", Broken)
    ''')
    assert launch([str(tiny_config), "--dry-run", "--set", f"plugins=[{plugin}]",
                   "--set", "views.source=[{name: broken}]"]) == 2
    err = capsys.readouterr().err
    assert "views.source.0: 'broken' encodes an action of shape (3,), but declares action_dim 2" in err


def test_feature_conditioning_without_actions_is_refused(tiny_config, capsys):
    assert launch([str(tiny_config), "--dry-run", "--set", "conditioning.name=sequence"]) == 2
    assert "conditioning: conditioning 'sequence' needs an action" in capsys.readouterr().err


def test_iwm_recipes_build_with_their_published_predictor_sizes():
    sizes = {}
    for name in ("iwm_inv", "iwm_equi"):
        cfg = load_config(f"experiments/{name}.yaml").config
        sizes[name] = (cfg.predictor.params["depth"], cfg.predictor.params["width"])
        assert cfg.conditioning.name == "feature" and cfg.target.params["loss"] == "l2"
    assert sizes == {"iwm_inv": (12, 384), "iwm_equi": (18, 384)}
    jitter = load_config("experiments/iwm_difficulty/jitter.yaml").config
    assert [s.name for s in jitter.views.source] == ["color_jitter"]
    assert get_registries().conditioning.names() >= ["feature", "none", "sequence"]
