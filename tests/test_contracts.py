"""Every registered component of every kind against its contract, in timm's test-every-model style.

The registries are the live ones, built-ins and any installed plugin, so a new
component is covered without a test of its own. Each is built from its default
config with only its sizes shrunk (SMALL) and checked by jepa_core.testing as a
user meets it: image ops, masks, conditioners, predictors and targets built
directly and in a tiny launch, evaluators through ``python -m jepa_core.evaluate``
on one shared tiny run, loggers across one shared crash and relaunch, file
datasets on tiny roots written here.
"""

from __future__ import annotations

import functools
import json
import math
from pathlib import Path

import attrs
import pytest
from PIL import Image

from helpers import (fake_cifar10, fake_cifar100, fake_imagefolder, fake_stl10, fake_videofolder, read_metrics,
                     tensorboard_events, wandb_attempt, wandb_offline_env)
from jepa_core import evaluate, launch
from jepa_core.api import ActionConditionedPredictor, Masking
from jepa_core.config import ConfigError, load_config
from jepa_core.experiment import build_experiment
from jepa_core.manager import get_registries
from jepa_core.registries import KINDS
from jepa_core.testing import (check_conditioner, check_dataset, check_environment, check_evaluator, check_logger,
                               check_masking, check_predictor, check_target, check_transformation, resumed_run,
                               tiny_run)

ROOT = Path(__file__).resolve().parents[1]
REGISTRIES = get_registries()
pytestmark = pytest.mark.usefixtures("one_thread")

#: parameters that only size a component, shrunk wherever a component's Config declares them
SMALL = {
    "depth": 1, "width": 32, "heads": 2, "hidden": 32, "out": 16, "predictor_hidden": 32, "patch_size": 8,
    "n_images": 4, "bank_size": 8, "max_train": 16, "max_val": 8, "n_train": 16, "n_val": 8, "epochs": 1,
    "size": 32, "train_size": 16, "val_size": 8, "episodes": 2, "max_steps": 2, "samples": 16, "elites": 4,
    "clips": 8, "action_dim": 2,  # not a size: the width of moving_shapes' actions, which ac_vit must be told
}
#: the shipped tiny recipes, IWM first: a component none of them uses is swapped into the first that builds
RECIPES = sorted((ROOT / "experiments" / "tiny").glob("*.yaml"), key=lambda p: (p.stem != "iwm", p.stem))
RECIPES.remove(ROOT / "experiments" / "tiny" / "common.yaml")
#: two steps of a small batch, nothing else
FAST = ("train.steps=2", "train.log_every=1", "health.every=0", "train.precision=fp32", "data.batch_size=8",
        "data.dataset.train_size=32", "data.dataset.val_size=8", "eval=[]", "loggers=[]")
SECTIONS = {"conditioning": "conditioning", "predictors": "predictor", "targets": "target"}


def test_every_component_kind_has_its_contract_tests():
    """A new kind in registries.KINDS needs a check in jepa_core.testing and its tests below."""
    assert set(KINDS) == {"transformations", "conditioning", "predictors", "targets", "evaluators", "datasets",
                          "loggers", "environments"}


def small(entry) -> dict:
    fields = {f.name for f in attrs.fields(entry.config)} if entry.config else set()
    return {key: value for key, value in SMALL.items() if key in fields}


def is_masking(entry) -> bool:
    return isinstance(entry.component, type) and issubclass(entry.component, Masking)


def entries(kind: str, keep=lambda entry: True) -> list:
    return [pytest.param(e, id=e.name) for e in getattr(REGISTRIES, kind).entries() if keep(e)]


# --------------------------------------------------------------------------- built directly


@pytest.mark.parametrize("entry", entries("transformations", lambda e: not is_masking(e)))
def test_transformation(entry):
    check_transformation(entry.name, entry.factory, **small(entry))


@pytest.mark.parametrize("entry", entries("transformations", is_masking))
def test_masking(entry):
    check_masking(entry.name, entry.factory, **small(entry))


@pytest.mark.parametrize("entry", entries("conditioning"))
def test_conditioner(entry):
    check_conditioner(entry.name, entry.factory, **small(entry))


@pytest.mark.parametrize("entry", entries("predictors"))
def test_predictor(entry):
    check_predictor(entry.name, entry.factory, **small(entry))


@pytest.mark.parametrize("entry", entries("targets"))
def test_target(entry):
    """With the predictor of the recipe that trains it (the contrastive targets need the projector); the default
    token predictor for a target a world model trains on (ac_vit reads whole frames, not context tokens)."""
    path, swap = recipe("targets", entry.name)
    spec = load_config(path, [*FAST, *swap]).config.predictor
    partner = functools.partial(REGISTRIES.predictors.create, spec.name, **spec.params)
    if issubclass(REGISTRIES.predictors.get(spec.name).component, ActionConditionedPredictor):
        partner = None
    check_target(entry.name, entry.factory, partner, **small(entry))


@pytest.mark.parametrize("entry", entries("environments"))
def test_environment(entry):
    check_environment(entry.name, entry.factory, **small(entry))


#: the files each file-backed dataset reads, written into a tmp root: name -> (writer, params)
ROOTS = {
    "imagefolder": (fake_imagefolder, {}),
    "videofolder": (fake_videofolder, {"frames": 3}),
    "cifar10": (fake_cifar10, {"verify_md5": False}),
    "cifar100": (fake_cifar100, {"verify_md5": False}),
    "stl10": (fake_stl10, {"verify_md5": False}),
}


@pytest.mark.parametrize("entry", entries("datasets"))
def test_dataset(entry, tmp_path):
    params = small(entry)
    required = [f.name for f in attrs.fields(entry.config) if f.default is attrs.NOTHING] if entry.config else []
    if entry.name in ROOTS:
        write, extra = ROOTS[entry.name]
        write(tmp_path)
        params.update(root=str(tmp_path), **extra)
    elif required:
        pytest.skip(f"dataset {entry.name!r} needs {', '.join(required)}: ROOTS here has no tiny files for it")
    check_dataset(entry.name, entry.factory, **params)


# --------------------------------------------------------------------------- in a tiny launch


def _names(config, kind: str) -> set[str]:
    if kind != "transformations":
        return {getattr(config, SECTIONS[kind]).name}
    views = config.views
    maskings = views.masking if isinstance(views.masking, list) else [views.masking]
    return {op.name for op in views.source + views.target + maskings}


def _swap(config, kind: str, entry) -> str:
    spec = {"name": entry.name, **small(entry)}
    if kind != "transformations":
        return f"{SECTIONS[kind]}={json.dumps(spec)}"
    if is_masking(entry):
        return f"views.masking={json.dumps(spec)}"
    return f"views.source={json.dumps([op.to_yaml() for op in config.views.source] + [spec])}"


@functools.cache
def recipe(kind: str, name: str) -> tuple[Path, tuple[str, ...]]:
    """The tiny recipe that trains a component: one that uses it, else the first that builds with it swapped in."""
    for path in RECIPES:
        if name in _names(load_config(path, FAST).config, kind):
            return path, ()
    entry = getattr(REGISTRIES, kind).get(name)
    errors = []
    for path in RECIPES:
        swap = (_swap(load_config(path, FAST).config, kind, entry),)
        try:
            build_experiment(load_config(path, [*FAST, *swap]))
        except ConfigError as exc:
            errors.append(str(exc))
            continue
        return path, swap
    pytest.fail(f"no tiny recipe trains {kind} {name!r}: " + "; ".join(errors))


@pytest.fixture(scope="module")
def launched(tmp_path_factory):
    """recipe, swap -> its run directory, launched once for every component it trains."""
    runs: dict = {}

    def run(path: Path, swap: tuple[str, ...]) -> Path:
        if (path, swap) not in runs:
            run_dir = tmp_path_factory.mktemp(path.stem) / "run"
            overrides = [arg for value in (*FAST, *swap) for arg in ("--set", value)]
            assert launch.main([str(path), "--output", str(run_dir), *overrides]) == 0
            runs[path, swap] = run_dir
        return runs[path, swap]

    return run


TRAINED_KINDS = ("transformations", "conditioning", "predictors", "targets")


@pytest.mark.parametrize("kind, entry", [pytest.param(kind, e, id=f"{kind}-{e.name}") for kind in TRAINED_KINDS
                                         for e in getattr(REGISTRIES, kind).entries()])
def test_trains_in_a_tiny_launch(kind, entry, launched):
    losses = [row["loss"] for row in read_metrics(launched(*recipe(kind, entry.name)))]
    assert len(losses) == 2 and all(map(math.isfinite, losses)), losses


# --------------------------------------------------------------------------- on a trained run


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Runs by the data they read: "images" (IWM on shapes) and "clips" (ac_vit on moving_shapes), trained once."""
    runs: dict[str, Path] = {}

    def run(data: str) -> Path:
        if data not in runs:
            runs[data] = tiny_run(tmp_path_factory.mktemp(f"evaluated_{data}") / "run", clips=data == "clips")
        return runs[data]

    return run


@pytest.mark.parametrize("entry", entries("evaluators"))
def test_evaluator(entry, trained):
    check_evaluator(trained(getattr(entry.component, "data", "images")), entry.name, **small(entry))


def test_retrieval_grid_with_its_default_config_draws_into_the_run_directory(trained, monkeypatch, tmp_path):
    """``python -m jepa_core.evaluate RUN --evaluator retrieval_grid``: the default path is relative (it raised
    NameError once); from another working directory the PNG still lands in the run directory."""
    trained = trained("images")
    (trained / "retrieval.png").unlink(missing_ok=True)
    monkeypatch.chdir(tmp_path)
    assert evaluate.main([str(trained), "--evaluator", "retrieval_grid"]) == 0
    with Image.open(trained / "retrieval.png") as png:
        assert png.format == "PNG" and png.size == (1120, 680)  # 4 rows of source, target and 5 neighbours
    assert list(tmp_path.iterdir()) == []


def _csv_steps(run_dir: Path) -> list[int]:
    import csv

    with open(run_dir / "metrics.csv", newline="") as f:
        return [int(row["step"]) for row in csv.DictReader(f)]


def _tensorboard_steps(run_dir: Path) -> list[int]:
    return [event.step for event in tensorboard_events(run_dir / "tensorboard").Scalars("train/loss")]


def _wandb_steps(run_dir: Path) -> list[int]:
    """What W&B keeps of the launches' offline files, synced in order: a step only above the last one."""
    kept: list[int] = []
    for attempt in sorted((run_dir / "wandb").glob("offline-run-*")):
        kept += [step for step in sorted(wandb_attempt(attempt)["history"]) if not kept or step > kept[-1]]
    return kept


#: how each logger's sink is read back: what arrived there, step by step
SINKS = {"csv": _csv_steps, "tensorboard": _tensorboard_steps, "wandb": _wandb_steps}
MODES = {"wandb": {"mode": "offline"}}


@pytest.fixture(scope="module")
def resumed(tmp_path_factory):
    """Every registered logger in one tiny run that crashes after step 5 and resumes from step 4."""
    root = tmp_path_factory.mktemp("logged")
    with pytest.MonkeyPatch.context() as env:
        for var, value in wandb_offline_env(root).items():
            env.setenv(var, value)
        env.delenv("WANDB_MODE", raising=False)
        specs = [{"name": name, **MODES.get(name, {})} for name in REGISTRIES.loggers.names()]
        return resumed_run(root / "run", specs)


@pytest.mark.parametrize("entry", entries("loggers"))
def test_logger(entry, resumed):
    if entry.name not in SINKS:
        pytest.skip(f"no reader for logger {entry.name!r}'s sink here; it ran through the resume without error")
    check_logger(resumed, entry.name, SINKS[entry.name](resumed))
