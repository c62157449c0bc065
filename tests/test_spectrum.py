"""The spectrum evaluator (plugins/evaluators/spectrum.py) and the sweep's spectrum.png (jepa_core/ablate.py)."""

from __future__ import annotations

import copy
import json

import attrs
import pytest
import torch
import torch.nn.functional as F
import yaml
from conftest import TINY
from torch import nn

from jepa_core.ablate import main as ablate
from jepa_core.ablate import collect, spectrum_points
from jepa_core.config import load_config
from jepa_core.evaluate import main as evaluate
from jepa_core.evaluate import trained_run
from jepa_core.experiment import build_experiment
from jepa_core.launch import main as launch
from jepa_core.plugins import evaluators as E
from jepa_core.plugins.evaluators.equivariance import chance_mrr
from jepa_core.plugins.evaluators.spectrum import r2_score, ridge_r2
from jepa_core.registries import ComponentError
from jepa_core.rundir import RunDir

PNG = b"\x89PNG\r\n\x1a\n"
SIZE, PATCH = 32, 8
# brightness factor ~ U[0.2, 1.8]: wide enough that it dominates the images' own brightness
BRIGHTNESS = {"name": "brightness", "strength": 0.8}
SMALL = dict(n_train=192, n_val=96, n_images=6, bank_size=8, batch_size=96)


def tiny(**changes) -> dict:
    config = copy.deepcopy(TINY)
    config["data"].update(image_size=SIZE, num_workers=0)
    config["data"]["dataset"].update(size=SIZE, train_size=192, val_size=96)
    config["encoder"]["patch_size"] = PATCH
    config["views"].update(target=[BRIGHTNESS], source=[])
    config["conditioning"] = {"name": "feature"}
    config.update(changes)
    return config


@pytest.fixture(scope="module")
def exp(tmp_path_factory):
    path = tmp_path_factory.mktemp("spectrum") / "tiny.yaml"
    path.write_text(yaml.safe_dump(tiny()))
    return build_experiment(load_config(path))


def projection(rows: int, dim: int) -> torch.Tensor:
    return torch.randn(rows, dim, generator=torch.Generator().manual_seed(0)) / rows ** 0.5


class MeanColour(nn.Module):
    """Passes colour through: each token is its patch's mean (normalised) RGB, linearly mapped to ``dim``."""

    def __init__(self, dim: int):
        super().__init__()
        self.register_buffer("proj", projection(3, dim))  # the predictor needs tokens of the encoder's width

    def forward(self, images, idx=None):
        return F.avg_pool2d(images, PATCH).flatten(2).transpose(1, 2) @ self.proj


class Standardised(nn.Module):
    """Normalises colour away: per-image standardised pixels, then a fixed random projection per patch."""

    def __init__(self, dim: int):
        super().__init__()
        self.register_buffer("proj", projection(3 * PATCH * PATCH, dim))

    def forward(self, images, idx=None):
        mean = images.mean(dim=(1, 2, 3), keepdim=True)
        std = images.std(dim=(1, 2, 3), keepdim=True).clamp_min(1e-6)
        return F.unfold((images - mean) / std, PATCH, stride=PATCH).transpose(1, 2) @ self.proj


def spectrum(**params):
    return E.Spectrum(E.Spectrum.Config(**{**SMALL, **params}))


def test_r2_separates_an_encoder_that_carries_colour_from_one_that_normalises_it(exp, tmp_path):
    dim = exp.encoder.embed_dim
    run = attrs.evolve(trained_run(exp, torch.device("cpu"), run_dir=tmp_path), target_encoder=MeanColour(dim))
    out = spectrum().evaluate(run)
    assert set(out) == {"mrr", "mrr_stderr", "chance", "mrr_brightness", "r2_brightness"}
    assert out["r2_brightness"] > 0.8, out
    assert out["chance"] == pytest.approx(chance_mrr(8))
    # the same value equivariance_mrr reports for the same ranking settings
    mrr = E.EquivarianceMRR(E.EquivarianceMRR.Config(n_images=6, bank_size=8, batch_size=96)).evaluate(run)
    assert out["mrr_brightness"] == mrr["mrr_brightness"] and out["mrr"] == mrr["mrr"]
    assert (tmp_path / "spectrum.png").read_bytes()[:8] == PNG

    invariant = attrs.evolve(run, target_encoder=Standardised(dim), run_dir=None)
    out = spectrum(path="never.png").evaluate(invariant)
    assert abs(out["r2_brightness"]) < 0.2, out
    assert not (tmp_path / "never.png").exists()  # relative path, no run directory: nothing drawn


def test_deterministic_and_validated(exp):
    run = trained_run(exp, torch.device("cpu"))
    ev = spectrum(n_train=48, n_val=24, n_images=4)
    first = ev.evaluate(run)
    assert ev.evaluate(trained_run(exp, torch.device("cpu"))) == first
    registry = exp.registries.evaluators
    assert registry.create("spectrum", ridge=[1.0]).config.ridge == (1.0,)
    for bad in ({"ridge": []}, {"ridge": [0.0]}, {"n_train": 0}, {"pool": "max"}):
        with pytest.raises(ComponentError):
            registry.create("spectrum", **bad)


def test_ridge_protocol_on_known_data():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(300, 5, generator=g)
    y = x[:, :2] @ torch.tensor([[1.0, 0.0], [0.0, 2.0]]) + 0.01 * torch.randn(300, 2, generator=g)
    r2, lam = ridge_r2(x[:200], y[:200], x[200:], y[200:], (1e-3, 10.0), torch.Generator().manual_seed(1))
    assert r2 > 0.99 and lam == 1e-3
    noise, _ = ridge_r2(x[:200], torch.randn(200, 1, generator=g), x[200:], torch.randn(100, 1, generator=g),
                        (1.0,), g)
    assert noise < 0.05  # raw R^2, not clipped: around or below 0
    assert r2_score(torch.zeros(4, 1), torch.ones(4, 1)) != r2_score(torch.zeros(4, 1), torch.ones(4, 1))  # nan


def test_the_cli_writes_the_png_into_the_run_directory(tmp_path):
    config = tmp_path / "tiny.yaml"
    small = {k: v // 6 if k.startswith("n_") else v for k, v in SMALL.items()}
    config.write_text(yaml.safe_dump(tiny(eval=[{"name": "spectrum", **small}])))
    run_dir = tmp_path / "run"
    assert launch([str(config), "--output", str(run_dir), "--set", "train.steps=2"]) == 0
    png = run_dir / "spectrum.png"
    assert png.read_bytes()[:8] == PNG  # training's own evaluation
    png.unlink()
    assert evaluate([str(run_dir)]) == 0
    assert png.read_bytes()[:8] == PNG
    assert set(json.loads(RunDir(run_dir).eval.read_text())["spectrum"]) >= {"mrr_brightness", "r2_brightness"}


def _sweep(root, members):
    """A sweep directory as launch leaves it: manifest, finished members with eval.json."""
    entries = []
    for name, overrides, results in members:
        run_dir = root / name
        run_dir.mkdir(parents=True)
        (run_dir / "status.json").write_text(json.dumps({"state": "finished"}))
        RunDir(run_dir).eval.write_text(json.dumps(results))
        entries.append({"name": name, "overrides": overrides, "run_dir": str(run_dir), "state": "finished"})
    (root / "manifest.json").write_text(json.dumps({"sweep": "x.yaml", "members": entries}))
    return root


def _spectrum(r2, mrr):
    return {"spectrum": {"mrr": 0.5, "mrr_stderr": 0.01, "chance": 0.074, "mrr_color_jitter": mrr,
                         "r2_color_jitter": r2, "mrr_hue": mrr / 2, "r2_hue": r2 / 2}}


def test_ablate_draws_the_spectrum_of_a_sweep(tmp_path, capsys):
    members = [
        (f"conditioning-{c}_train.seed-{s}", {"conditioning.name": c, "train.seed": s}, _spectrum(r2 + 0.02 * s, m))
        for c, r2, m in (("none", 0.6, 0.08), ("feature", 0.3, 0.7)) for s in (0, 1)
    ]
    sweep = _sweep(tmp_path / "sweep", members)
    assert ablate([str(sweep)]) == 0
    assert (sweep / "spectrum.png").read_bytes()[:8] == PNG
    assert (sweep / "ablation.png").read_bytes()[:8] == PNG
    assert "spectrum.r2_hue" in (sweep / "ablation.csv").read_text()
    rows, keys, _ = collect(sweep)
    points = {p["label"]: p for p in spectrum_points(rows, keys)}
    assert set(points) == {"conditioning.name=none", "conditioning.name=feature"}
    x, sx, n = points["conditioning.name=feature"]["x"]  # seeds: mean of (0.3, 0.15) and of (0.32, 0.16)
    assert n == 2 and x == pytest.approx((0.225 + 0.24) / 2) and sx == pytest.approx(0.0075)
    assert points["conditioning.name=none"]["y"][0] == pytest.approx(0.06)

    plain = _sweep(tmp_path / "plain", [("a", {"train.seed": 0}, {"knn": {"top1_k1": 0.5}})])
    assert ablate([str(plain)]) == 0
    assert not (plain / "spectrum.png").exists() and (plain / "ablation.png").exists()
