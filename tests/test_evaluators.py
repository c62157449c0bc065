"""The built-in evaluators (plugins/evaluators/) on tiny CPU runs, fake encoders and oracle predictors."""

from __future__ import annotations

import math
import zlib

import attrs
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from jepa_core.config import ConfigError, load_config
from jepa_core.data import build_eval_loader
from jepa_core.evaluate import TrainedRun, trained_run
from jepa_core.experiment import build_experiment
from jepa_core.views import MEAN, STD, normalize
from jepa_core.plugins import evaluators as E
from jepa_core.plugins.transformations import photometric_ops as ops
from jepa_core.plugins.evaluators.equivariance import chance_mrr, expected_reciprocal_rank
from jepa_core.plugins.evaluators.tokens import variance_shares
from jepa_core.registries import ComponentError

SIZE, PATCH = 32, 8  # 4x4 patch grid
TINY = [
    f"data.dataset={{name: shapes, size: {SIZE}, train_size: 96, val_size: 48}}",  # shapes: it has colour and shape tasks
    f"data.image_size={SIZE}", "data.num_workers=0", f"encoder.patch_size={PATCH}", "encoder.depth=1",
    "predictor.depth=1", "predictor.width=32", "predictor.heads=2",
    "views.target=[]", "views.source=[]", "conditioning={name: none}",  # I-JEPA unless a test says otherwise
]
IWM_VIEWS = ["views.target=[{name: color_jitter}]", "views.source=[{name: color_jitter}, {name: grayscale}]"]


def build(*overrides: str):
    # the tests make their own evaluators; the quickstart's list needs actions some builds lack
    return build_experiment(load_config("experiments/quickstart.yaml", [*TINY, "eval=[]", *overrides]))


@pytest.fixture(scope="module")
def iwm():
    return build(*IWM_VIEWS, "conditioning={name: feature}")


@pytest.fixture(scope="module")
def ijepa():
    return build()


def make(name: str, **params):
    entry = E.EVALUATORS[name]
    return entry(entry.Config(**params))


def cpu_run(exp) -> TrainedRun:
    return trained_run(exp, torch.device("cpu"))


# --------------------------------------------------------------------------- registration


def test_every_evaluator_is_registered_with_config_description_and_needs(ijepa):
    registry = ijepa.registries.evaluators
    assert set(E.EVALUATORS) <= set(registry.names())
    for name in E.EVALUATORS:
        entry = registry.get(name)
        assert entry.description and entry.config is not None and entry.plugin.endswith("evaluators")
    assert registry.create("knn", k=[1, 3]).config.k == (1, 3)
    with pytest.raises(ComponentError, match="did you mean 'epochs'"):
        registry.create("linear_probe", epoch=3)
    with pytest.raises(ComponentError, match="'encoder' must be one of"):
        registry.create("linear_probe", encoder="ema")
    with pytest.raises(ComponentError, match="'k'"):
        registry.create("knn", k=[0])
    with pytest.raises(ComponentError, match="'tasks'"):
        registry.create("multitask_predictor", tasks=[])


def test_needs():
    assert E.LinearProbe.needs == E.KNN.needs == E.AttentiveProbe.needs == E.TokenVariance.needs == frozenset()
    assert E.PredictorFinetune.needs == E.MultitaskPredictor.needs == frozenset({"predictor"})
    assert E.EquivarianceMRR.needs == E.RetrievalGrid.needs == frozenset({"predictor", "actions", "target_ops"})


# --------------------------------------------------------------------------- probes on a tiny run


def test_knn_and_linear_probe_in_range_and_deterministic(ijepa):
    first = {n: make(n, max_train=64, max_val=32, epochs=20).evaluate(cpu_run(ijepa))
             for n in ("linear_probe",)}
    first["knn"] = make("knn", max_train=64, max_val=32).evaluate(cpu_run(ijepa))
    again = {"linear_probe": make("linear_probe", max_train=64, max_val=32, epochs=20).evaluate(cpu_run(ijepa)),
             "knn": make("knn", max_train=64, max_val=32).evaluate(cpu_run(ijepa))}
    assert first == again
    assert set(first["knn"]) == {"top1_k1", "top1_k5", "top1_k20"}
    for metrics in first.values():
        for value in metrics.values():
            assert 0.0 <= value <= 1.0


class LabelEncoder(nn.Module):
    """A fake encoder whose every token is the one-hot label of the image (looked up by its pixels)."""

    def __init__(self, exp, classes: int = 8):
        super().__init__()
        self.table = {}
        size = exp.config.data.image_size
        for split in ("train", "val"):
            for batch in build_eval_loader(exp.dataset(split), image_size=size, batch_size=64, num_workers=0):
                for image, label in zip(batch["image"], batch["label"]):
                    self.table[image.numpy().tobytes()] = int(label)
        self.classes = classes
        self.embed_dim, self.num_heads, self.grid = classes, 1, exp.encoder.grid
        self.weight = nn.Parameter(torch.zeros(1))

    def forward(self, images, idx=None):
        mean = torch.tensor(MEAN).view(1, 3, 1, 1)
        std = torch.tensor(STD).view(1, 3, 1, 1)
        pixels = (images * std + mean).mul(255).round().clamp(0, 255).to(torch.uint8)
        labels = torch.tensor([self.table[p.numpy().tobytes()] for p in pixels])
        n = self.grid[0] * self.grid[1]
        return F.one_hot(labels, self.classes).float()[:, None].expand(-1, n, -1) * (1 - self.weight)


def test_label_features_give_perfect_knn_and_linear_probe(ijepa):
    fake = LabelEncoder(ijepa)
    run = attrs.evolve(cpu_run(ijepa), encoder=fake, target_encoder=fake)
    assert make("knn", max_train=96, max_val=48).evaluate(run) == {"top1_k1": 1.0, "top1_k5": 1.0, "top1_k20": 1.0}
    assert make("linear_probe", max_train=96, max_val=48, epochs=30).evaluate(run) == {"top1": 1.0}
    assert make("linear_probe", max_train=96, max_val=48, epochs=30, optimizer="adam").evaluate(run) == {"top1": 1.0}
    assert make("attentive_probe", max_train=96, max_val=48, epochs=30, head_batch_size=32).evaluate(run) == {"top1": 1.0}
    # and random features do not: the test can fail
    assert make("knn", max_train=96, max_val=48).evaluate(cpu_run(ijepa))["top1_k1"] < 1.0


class NuisanceEncoder(LabelEncoder):
    """The label's one-hot, faint, beside three loud directions that vary per image and say nothing
    of the label: what the quickstart's pooled features look like (mean colour, 90% of their variance)."""

    def __init__(self, exp):
        super().__init__(exp)
        self.embed_dim = self.classes + 3

    def forward(self, images, idx=None):
        label = super().forward(images)
        loud = torch.stack([torch.randn(3, generator=torch.Generator().manual_seed(zlib.crc32(i.numpy().tobytes())))
                            for i in images])
        return torch.cat([0.1 * label, 10 * loud[:, None].expand(-1, label.shape[1], -1)], dim=-1)


def test_knn_drop_components_reads_a_label_that_loud_directions_hide(ijepa):
    fake = NuisanceEncoder(ijepa)
    run = attrs.evolve(cpu_run(ijepa), encoder=fake, target_encoder=fake)
    dino = make("knn", max_train=96, max_val=48, k=[1]).evaluate(run)["top1_k1"]
    assert dino < 0.5, dino
    assert make("knn", max_train=96, max_val=48, k=[1], drop_components=3).evaluate(run) == {"top1_k1": 1.0}
    with pytest.raises(ComponentError, match=r"'drop_components' \(11\) must be under the 11 principal components"):
        make("knn", max_train=96, max_val=48, drop_components=11).evaluate(run)


def test_token_variance_shares_read_where_the_variance_lives():
    g = torch.Generator().manual_seed(0)
    image, position = torch.randn(64, 1, 8, generator=g), torch.randn(1, 16, 8, generator=g)
    local = torch.randn(64, 16, 8, generator=g)
    assert variance_shares(image.expand(-1, 16, -1))["image_share"] == pytest.approx(1.0)
    assert variance_shares(position.expand(64, -1, -1))["position_share"] == pytest.approx(1.0)
    mixed = variance_shares(image + position + local)
    assert sum(mixed[k] for k in ("image_share", "position_share", "local_share")) == pytest.approx(1.0)
    assert 0.3 < mixed["local_share"] < 0.4 and mixed["image_share"] > 0.25 and mixed["position_share"] > 0.25
    # the spread ignores scale: a collapsed set is near 0 however large its tokens
    assert variance_shares(100 + 0.01 * local)["spread"] < 1e-6 < variance_shares(local)["spread"]
    with pytest.raises(ValueError, match="one vector"):
        variance_shares(torch.ones(4, 16, 8))


def test_token_variance_of_an_encoder_whose_tokens_are_the_image_label(ijepa):
    fake = LabelEncoder(ijepa)
    run = attrs.evolve(cpu_run(ijepa), encoder=fake, target_encoder=fake)
    shares = make("token_variance", max_val=48).evaluate(run)
    assert shares["image_share"] == pytest.approx(1.0) and shares["position_share"] == pytest.approx(0.0, abs=1e-9)
    random = make("token_variance", max_val=48).evaluate(cpu_run(ijepa))
    assert random["local_share"] > 0.1 and random["position_share"] > 0.0


def test_features_are_cached_per_run_and_encoder_weights(ijepa):
    fake = LabelEncoder(ijepa)
    run = attrs.evolve(cpu_run(ijepa), encoder=fake, target_encoder=fake)
    calls = []
    fake.register_forward_hook(lambda *args: calls.append(1))
    knn = make("knn", max_train=96, max_val=48)
    assert knn.evaluate(run)["top1_k1"] == 1.0
    n = len(calls)
    assert make("linear_probe", max_train=96, max_val=48, epochs=1).evaluate(run) and len(calls) == n  # shared
    with torch.no_grad():
        fake.weight.fill_(1.0)  # in place: every feature becomes 0, the cache must not serve the old ones
    assert knn.evaluate(run)["top1_k1"] < 1.0 and len(calls) == 2 * n
    make("knn", encoder="online", max_train=96, max_val=48).evaluate(run)
    assert len(calls) == 2 * n  # online and target are the same module here: same cache entry


def test_attentive_probe_runs(ijepa):
    out = make("attentive_probe", max_train=32, max_val=16, epochs=1).evaluate(cpu_run(ijepa))
    assert set(out) == {"top1"} and 0.0 <= out["top1"] <= 1.0


# --------------------------------------------------------------------------- predictor tuning


def test_predictor_finetune_and_random_baseline(iwm):
    ev = make("predictor_finetune", max_train=32, max_val=16, epochs=1, head_batch_size=16)
    run = cpu_run(iwm)
    before = {k: v.clone() for k, v in run.predictor.state_dict().items()}
    out = ev.evaluate(run)
    assert set(out) == {"top1", "top1_random_predictor", "gain"}
    assert 0.0 <= out["top1"] <= 1.0 and 0.0 <= out["top1_random_predictor"] <= 1.0
    assert out["gain"] == pytest.approx(out["top1"] - out["top1_random_predictor"])
    after = run.predictor.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # the run's predictor is untouched
    assert ev.evaluate(cpu_run(iwm)) == out


def test_predictor_finetune_reads_the_task_it_is_given(iwm):
    """task: shape is the main label (the same figures as no task); task: colour classifies something else."""
    def top1(**task):
        ev = make("predictor_finetune", max_train=32, max_val=16, epochs=1, head_batch_size=16,
                  random_baseline=False, **task)
        return ev.label_tasks(), ev.evaluate(cpu_run(iwm))["top1"]

    assert top1() == ((), top1(task="shape")[1])
    assert top1(task="shape")[0] == ("shape",)
    assert top1(task="colour")[1] != top1()[1]


def test_multitask_predictor_reports_every_task_and_refuses_unknown_ones(iwm):
    out = make("multitask_predictor", max_train=32, max_val=16, epochs=1, head_batch_size=16).evaluate(cpu_run(iwm))
    assert set(out) == {"top1_shape", "top1_colour", "top1_mean"}
    assert out["top1_mean"] == pytest.approx((out["top1_shape"] + out["top1_colour"]) / 2)
    with pytest.raises(ValueError, match="no labelled task 'texture'.*'shape', 'colour'"):
        make("multitask_predictor", tasks=["shape", "texture"]).evaluate(cpu_run(iwm))


# --------------------------------------------------------------------------- equivariance


def test_chance_and_tie_formulas():
    assert chance_mrr(1) == 1.0
    assert chance_mrr(2) == pytest.approx(0.75)
    assert chance_mrr(256) == pytest.approx(sum(1 / r for r in range(1, 257)) / 256)
    assert chance_mrr(256) == pytest.approx(0.0239232, abs=1e-6)
    assert expected_reciprocal_rank(1, 0) == 1.0
    assert expected_reciprocal_rank(1, 1) == pytest.approx(0.75)
    assert expected_reciprocal_rank(3, 0) == pytest.approx(1 / 3)


class PatchPixels(nn.Module):
    """Fake encoder: tokens are the (normalised) pixels of each patch plus a fixed offset."""

    def __init__(self, grid, patch: int):
        super().__init__()
        self.grid, self.patch, self.num_heads = grid, patch, 1
        self.embed_dim = 3 * patch * patch
        self.register_buffer("offset", torch.randn(self.embed_dim, generator=torch.Generator().manual_seed(0)) * 3)

    def forward(self, images, idx=None):
        return F.unfold(images, self.patch, stride=self.patch).transpose(1, 2) + self.offset

    def invert(self, tokens):
        size = self.grid[0] * self.patch
        return F.fold((tokens - self.offset).transpose(1, 2), (size, size), self.patch, stride=self.patch)


class BrightnessOracle(nn.Module):
    """Knows the world: undoes the fake encoder, applies the action's brightness, re-encodes (layer-normed)."""

    def __init__(self, encoder: PatchPixels, slot: int, use_action: bool = True):
        super().__init__()
        self.encoder, self.slot, self.use_action = encoder, slot, use_action

    def forward(self, context, context_idx, target_idx, action):
        mean, std = torch.tensor(MEAN).view(1, 3, 1, 1), torch.tensor(STD).view(1, 3, 1, 1)
        pixels = self.encoder.invert(context) * std + mean
        factor = 1.0 + (action[:, self.slot] if self.use_action else torch.zeros(len(action)))
        z = self.encoder(normalize(ops.brightness(pixels, factor)))
        return F.layer_norm(z, z.shape[-1:])[:, None]


@pytest.fixture(scope="module")
def brightness_exp():
    return build("views.target=[{name: brightness}]")


def oracle_run(exp, use_action=True) -> TrainedRun:
    fake = PatchPixels(exp.encoder.grid, PATCH)
    (slot,) = [s.start for s in exp.views.slots if s.name == "brightness"]
    return attrs.evolve(cpu_run(exp), encoder=fake, target_encoder=fake,
                        predictor=BrightnessOracle(fake, slot, use_action))


def test_oracle_predictor_has_mrr_one_and_one_ignoring_the_action_is_near_chance(brightness_exp, tmp_path):
    params = dict(n_images=24, bank_size=32, batch_size=64)
    out = make("equivariance_mrr", **params).evaluate(oracle_run(brightness_exp))
    assert out["mrr"] == pytest.approx(1.0) and out["mrr_brightness"] == pytest.approx(1.0)
    assert out["chance"] == pytest.approx(chance_mrr(32))
    blind = make("equivariance_mrr", **params).evaluate(oracle_run(brightness_exp, use_action=False))
    assert abs(blind["mrr"] - chance_mrr(32)) < 0.1 and blind["mrr"] < 0.4
    cosine = make("equivariance_mrr", distance="cosine", pool="mean", **params).evaluate(oracle_run(brightness_exp))
    assert cosine["mrr"] > 0.9

    path = tmp_path / "figs" / "retrieval.png"
    grid = make("retrieval_grid", path=str(path), n_rows=3, k=4, n_images=8, bank_size=32)
    assert grid.evaluate(oracle_run(brightness_exp)) == {"top1_retrieval": 1.0}
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert grid.evaluate(oracle_run(brightness_exp, use_action=False))["top1_retrieval"] < 0.5


def test_the_retrieval_grid_default_path_lands_in_the_run_directory(brightness_exp, tmp_path):
    """The default path is relative: the branch every user takes (it raised NameError once)."""
    run = attrs.evolve(oracle_run(brightness_exp), run_dir=tmp_path)
    grid = make("retrieval_grid", n_rows=2, k=3, n_images=4, bank_size=16)
    assert grid.evaluate(run) == {"top1_retrieval": 1.0}
    assert (tmp_path / "retrieval.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["retrieval.png"]  # no temporary file left


def test_more_queries_per_image_rank_other_bank_entries_with_their_own_actions(brightness_exp, tmp_path):
    params = dict(n_images=8, bank_size=16, batch_size=64)
    oracle = make("equivariance_mrr", queries=5, **params).evaluate(oracle_run(brightness_exp))
    assert oracle["mrr"] == pytest.approx(1.0) and oracle["mrr_brightness"] == pytest.approx(1.0)
    # one prediction whatever the action: querying every entry ranks each once, so each image
    # scores the mean of 1/1 .. 1/bank exactly, and the images do not differ
    blind = make("equivariance_mrr", queries=16, **params).evaluate(oracle_run(brightness_exp, use_action=False))
    assert blind["mrr"] == pytest.approx(chance_mrr(16), abs=1e-9) and blind["mrr_stderr"] < 1e-9
    grid = make("retrieval_grid", n_rows=2, k=3, queries=4, path=str(tmp_path / "grid.png"), **params)
    assert grid.evaluate(oracle_run(brightness_exp)) == {"top1_retrieval": 1.0}


def test_untrained_predictor_without_conditioning_is_near_chance_and_deterministic():
    exp = build(*IWM_VIEWS)  # conditioning none: the predictor never sees the action
    ev = make("equivariance_mrr", n_images=16, bank_size=16, per_transformation=False)
    out = ev.evaluate(cpu_run(exp))
    assert set(out) == {"mrr", "mrr_stderr", "chance"}
    assert abs(out["mrr"] - chance_mrr(16)) < 0.15
    assert ev.evaluate(cpu_run(exp)) == out


@pytest.mark.parametrize("name", ["equivariance_mrr", "retrieval_grid"])
def test_ranking_refuses_views_whose_target_never_varies_before_training(name):
    """Source ops alone give actions (grayscale's flag), but every bank entry would be one image."""
    with pytest.raises(ConfigError, match=rf"eval.0.name: evaluator '{name}' needs target_ops, .*views.target"):
        build("views.source=[{name: grayscale}]", "conditioning={name: feature}", f"eval=[{{name: {name}}}]")


def test_math_of_chance_is_what_a_blind_ranker_gets_on_average():
    # sanity of the estimator itself: uniform random ranks average to chance_mrr
    g = torch.Generator().manual_seed(0)
    ranks = torch.randint(1, 257, (200_000,), generator=g).double()
    assert (1 / ranks).mean().item() == pytest.approx(chance_mrr(256), rel=0.02)
    assert math.isclose(chance_mrr(256) * 256, sum(1 / r for r in range(1, 257)))


def test_the_evaluation_driver_runs_them_from_the_config(tmp_path):
    import json

    from jepa_core.evaluate import run_evaluators
    from jepa_core.rundir import RunDir

    exp = build(*IWM_VIEWS, "conditioning={name: sequence}",
                "eval=[{name: knn, max_train: 32, max_val: 16, k: [1, 3]}, "
                "{name: equivariance_mrr, n_images: 4, bank_size: 8, per_transformation: false}]")
    results = run_evaluators(exp, tmp_path)
    assert json.loads(RunDir(tmp_path).eval.read_text()) == results
    assert set(results) == {"knn", "equivariance_mrr"}
    assert set(results["knn"]) == {"top1_k1", "top1_k3"}
    assert results["equivariance_mrr"]["chance"] == pytest.approx(chance_mrr(8))


def test_probes_can_classify_another_task_of_the_dataset(ijepa):
    fake = LabelEncoder(ijepa)  # features = the shape label: useless for colour
    run = attrs.evolve(cpu_run(ijepa), encoder=fake, target_encoder=fake)
    assert make("knn", max_train=96, max_val=48, task="shape").evaluate(run)["top1_k1"] == 1.0
    assert make("knn", max_train=96, max_val=48, task="colour").evaluate(run)["top1_k1"] < 0.6
    with pytest.raises(ValueError, match="no labelled task 'texture'"):
        make("linear_probe", task="texture").evaluate(run)
