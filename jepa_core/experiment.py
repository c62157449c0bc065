"""Build every component of an experiment from a validated config.

This is where YAML names meet the registries. Everything is built before any
training or submission, so a wrong name, parameter or size is a
:class:`jepa_core.config.ConfigError` naming the YAML key, never a crash
halfway through a job.
"""

from __future__ import annotations

import contextlib
import functools
from typing import Any, Callable, Iterator

import attrs
import torch
from torch import nn

from jepa_core.config import ConfigError, LoadedConfig
from jepa_core.encoder import Encoder
from jepa_core.manager import PluginLoadError, Registries, get_plugin_manager, load_plugin
from jepa_core.schema import Component, ExperimentConfig
from jepa_core.views import Views
from jepa_core.registries import ComponentError
from jepa_core.registries.conditioning import Conditioner
from jepa_core.registries.datasets import MissingDataError, dataset_tasks, is_clip_dataset
from jepa_core.registries.predictors import ActionConditionedPredictor
from jepa_core.registries.transformations import ENCODINGS, Masking, Transformation


@attrs.define
class Experiment:
    """All components of one run; modules live on the CPU until training moves them."""

    loaded: LoadedConfig
    registries: Registries
    encoder: Encoder
    predictor: nn.Module
    target: nn.Module
    views: Views
    evaluators: list[tuple[str, Any]]

    @property
    def config(self) -> ExperimentConfig:
        return self.loaded.config

    @property
    def pm(self):
        return self.registries.pm

    def modules(self) -> dict[str, nn.Module]:
        """The modules a checkpoint holds, by name."""
        return {"encoder": self.encoder, "predictor": self.predictor, "target": self.target}

    def parameter_counts(self) -> dict[str, int]:
        counts = {
            "encoder": _count(self.encoder),
            "predictor": _count(self.predictor),
            "target (trainable)": _count(self.target, trainable_only=True),
        }
        counts["total trainable"] = sum(
            p.numel() for m in self.modules().values() for p in m.parameters() if p.requires_grad
        )
        return counts

    def dataset(self, split: str):
        with at(self.loaded, "data.dataset"):
            spec = self.config.data.dataset
            return self.registries.datasets.create(spec.name, split, **spec.params)


def _count(module: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


@contextlib.contextmanager
def at(loaded: LoadedConfig, key: str) -> Iterator[None]:
    """Turn component errors raised inside into a ConfigError at YAML ``key``."""
    try:
        yield
    except ConfigError:
        raise
    except ComponentError as exc:
        sub = f"{key}.{exc.key}" if exc.key else (f"{key}.name" if _is_component(loaded, key) else key)
        raise loaded.error(sub, str(exc)) from None
    except MissingDataError as exc:
        raise loaded.error(f"{key}.root", str(exc)) from None
    except (ValueError, TypeError) as exc:
        message = exc.args[0] if exc.args and isinstance(exc.args[0], str) else str(exc)
        raise loaded.error(key, " ".join(message.split())) from None


def _is_component(loaded: LoadedConfig, key: str) -> bool:
    node: Any = loaded.config
    for part in key.split("."):
        node = node[int(part)] if isinstance(node, list) else getattr(node, part, None)
    return isinstance(node, Component)


def load_registries(loaded: LoadedConfig) -> Registries:
    """The built-in and entry-point plugins plus the YAML ``plugins:`` list."""
    try:
        pm = get_plugin_manager()
    except PluginLoadError as exc:
        raise ConfigError(f"{loaded.path}: {exc}") from None
    for i, spec in enumerate(loaded.config.plugins):
        try:
            load_plugin(pm, spec)
        except PluginLoadError as exc:
            raise loaded.error(f"plugins.{i}", str(exc)) from None
    try:
        return Registries(pm)
    except (PluginLoadError, ComponentError) as exc:  # an unknown hook; two plugins registering one name
        raise ConfigError(f"{loaded.path}: plugins: {exc}") from None


def _pipeline(loaded: LoadedConfig, registries: Registries, which: str, image_size: int):
    ops: list[tuple[str, Transformation]] = []
    for i, spec in enumerate(getattr(loaded.config.views, which)):
        key = f"views.{which}.{i}"
        with at(loaded, key):
            _expect(registries, spec.name, Transformation, "an image transformation; masks go under views.masking")
            op = registries.transformations.create(spec.name, **spec.params)
            op.check_image_size(image_size, image_size)
            _check_encodable(spec.name, op)
        if spec.name in dict(ops):
            raise loaded.error(f"{key}.name", f"{spec.name!r} appears twice in views.{which}")
        ops.append((spec.name, op))
    return ops


def _expect(registries: Registries, name: str, base: type, what: str) -> None:
    component = registries.transformations.get(name).component
    if isinstance(component, type) and not issubclass(component, base):
        raise ComponentError(f"{name!r} is not {what}")


def _check_encodable(name: str, op: Transformation) -> None:
    """Try the action encoding on two samples, so a broken op fails before training."""
    if op.encoding not in ENCODINGS:
        raise ValueError(f"{name!r} declares action encoding {op.encoding!r}; valid: {', '.join(ENCODINGS)}")
    params = op.sample(2, torch.Generator().manual_seed(0))
    try:
        action = op.encode(params, op.null_params(2))
    except Exception as exc:
        raise ValueError(f"the action of {name!r} cannot be encoded ({type(exc).__name__}: {exc})") from None
    if tuple(action.shape) != (2, op.action_dim):
        raise ValueError(f"{name!r} encodes an action of shape {tuple(action.shape)[1:]}, but declares action_dim "
                         f"{op.action_dim}")


def build_views(loaded: LoadedConfig, registries: Registries, grid: tuple[int, int]) -> Views:
    size = loaded.config.data.image_size
    target = _pipeline(loaded, registries, "target", size)
    source = _pipeline(loaded, registries, "source", size)
    specs = loaded.config.views.masking
    keys = ([(f"views.masking.{i}", spec) for i, spec in enumerate(specs)] if isinstance(specs, list)
            else [("views.masking", specs)])
    if not keys:
        raise loaded.error("views.masking", "is an empty list; name at least one mask sampler")
    maskings = []
    for key, spec in keys:
        with at(loaded, key):
            _expect(registries, spec.name, Masking, "a masking transformation (it outputs images, not token indices)")
            dims = getattr(registries.transformations.get(spec.name).component, "grid_dims", None)
            if dims not in (None, len(grid)):
                raise ComponentError(f"{spec.name!r} masks {'a video' if dims == 3 else 'an image'} token grid, but the "
                                     f"encoder's is {'x'.join(map(str, grid))}; use "
                                     + ("'tubes' or 'full'" if len(grid) == 3 else "'multiblock', 'random' or 'full'"))
            maskings.append(registries.transformations.create(spec.name, grid, **spec.params))
    with at(loaded, "views"):
        for name, op in target:
            other = dict(source).get(name)
            if other is not None and type(other) is not type(op):
                raise ValueError(f"{name!r} names different transformations in source and target")
    return Views(target, source, maskings)


def build_predictor(loaded: LoadedConfig, registries: Registries, encoder: Encoder,
                    views: Views) -> tuple[Conditioner, nn.Module]:
    """The conditioner and the predictor that holds it, freshly initialised from the global RNG."""
    cfg = loaded.config
    with at(loaded, "predictor"):  # the conditioner works at the predictor's width
        predictor_config = registries.predictors.config(cfg.predictor.name, **cfg.predictor.params)
        width = registries.predictors.get(cfg.predictor.name).factory.conditioning_width(
            predictor_config, encoder.embed_dim)
    with at(loaded, "conditioning"):
        conditioner = registries.conditioning.create(
            cfg.conditioning.name, views.action_dim, width, **cfg.conditioning.params
        )
    with at(loaded, "predictor"):
        predictor = registries.predictors.create(
            cfg.predictor.name, encoder.embed_dim, encoder.grid, conditioner, **cfg.predictor.params
        )
    tokens = getattr(predictor, "mask_tokens", 1)
    if len(views.maskings) > tokens:
        raise loaded.error("views.masking", f"lists {len(views.maskings)} mask samplers, each with its own mask token; "
                                            f"predictor {cfg.predictor.name!r} has {tokens}: set predictor.mask_tokens "
                                            f"to {len(views.maskings)}")
    return conditioner, predictor


def build_experiment(loaded: LoadedConfig, registries: Registries | None = None, meta: bool = False) -> Experiment:
    """Build every component (seeded, on the CPU); raises ConfigError on bad input.

    ``meta``: the modules get shapes but no memory and no initial values (torch's
    meta device), for a launcher that only checks the config before a dry run or
    a submission: a ViT-H/14 run then builds in a second instead of 25. A plugin
    that reads a tensor's values while it builds gets a real build instead.
    """
    cfg = loaded.config
    registries = registries or load_registries(loaded)
    try:
        encoder, views, predictor, target = _modules(loaded, registries, meta)
    except RuntimeError as exc:  # NotImplementedError included: meta tensors raise either
        if not meta or "meta" not in str(exc):
            raise
        encoder, views, predictor, target = _modules(loaded, registries, meta=False)
    evaluators = []
    for i, spec in enumerate(cfg.eval):
        with at(loaded, f"eval.{i}"):
            evaluators.append((spec.name, registries.evaluators.create(spec.name, **spec.params)))
    for i, spec in enumerate(cfg.loggers):
        with at(loaded, f"loggers.{i}"):
            registries.loggers.config(spec.name, **spec.params)
    with at(loaded, "data.dataset"):
        registries.datasets.config(cfg.data.dataset.name, **cfg.data.dataset.params)
    exp = Experiment(loaded, registries, encoder, predictor, target, views, evaluators)
    train_split = functools.cache(functools.partial(_local_dataset, exp))  # built once, if a check needs it
    _check_clips(exp, train_split)
    _check_evaluators(exp, train_split)
    _check_health(exp, train_split)
    return exp


def _modules(loaded: LoadedConfig, registries: Registries, meta: bool):
    """Encoder, views, predictor and target, from the seed (``meta``: on torch's meta device)."""
    cfg = loaded.config
    torch.manual_seed(cfg.train.seed)
    with torch.device("meta") if meta else contextlib.nullcontext():
        with at(loaded, "encoder.name"):
            encoder = Encoder(cfg.encoder.name, cfg.data.image_size, cfg.encoder.drop_path_rate,
                              cfg.encoder.depth, cfg.encoder.patch_size, cfg.encoder.frames,
                              cfg.encoder.tubelet, cfg.encoder.uniform_power, rope=cfg.encoder.rope,
                              num_heads=cfg.encoder.num_heads)
        if cfg.encoder.init is not None:
            _init_encoder(loaded, encoder, cfg.encoder.init)
        views = build_views(loaded, registries, encoder.grid)
        conditioner, predictor = build_predictor(loaded, registries, encoder, views)
        with at(loaded, "target"):
            target = registries.targets.create(cfg.target.name, encoder, predictor, **cfg.target.params)
            if target.symmetric and views.action_dim and conditioner.uses_action:
                raise ValueError(f"target {cfg.target.name!r} is symmetric (views swapped), so it cannot be "
                                 "action-conditioned; use conditioning 'none' or another target")
    return encoder, views, predictor, target


def _init_encoder(loaded: LoadedConfig, encoder: Encoder, run_dir: str) -> None:
    """Start from the weights of ``run_dir``'s target encoder (its positions are rebuilt here, not copied)."""
    from jepa_core.evaluate import load_run

    try:
        other = load_run(run_dir)
    except ConfigError as exc:
        raise loaded.error("encoder.init", str(exc)) from None
    weights = other.target.target_encoder(other.encoder).state_dict()
    try:
        encoder.load_state_dict(weights)
    except RuntimeError as exc:
        first = str(exc).splitlines()[1].strip() if "\n" in str(exc) else str(exc)
        raise loaded.error("encoder.init", f"{run_dir}'s encoder does not fit this encoder ({first}); "
                                           "set encoder.name, depth, patch_size and tubelet to its") from None


def _check_clips(exp: Experiment, train_split: Callable[[], Any]) -> None:
    """A video encoder on clips of its length; an action-conditioned predictor on clips with its actions."""
    cfg, loaded = exp.config, exp.loaded
    world_model = isinstance(exp.predictor, ActionConditionedPredictor)
    if world_model:
        if any(p.requires_grad for p in exp.encoder.parameters()):
            raise loaded.error("target.name", f"predictor {cfg.predictor.name!r} trains on fixed features; "
                                              "use target 'frozen'")
        if cfg.data.flip_p or tuple(cfg.data.crop_scale) != (1.0, 1.0):
            raise loaded.error("data.flip_p" if cfg.data.flip_p else "data.crop_scale",
                               "a crop or flip changes what the clips' actions do on screen; "
                               "set data.flip_p: 0 and data.crop_scale: [1.0, 1.0]")
    if cfg.encoder.frames is None and not world_model:
        return
    dataset = train_split()
    if dataset is None:
        return
    name = cfg.data.dataset.name
    clips = is_clip_dataset(dataset)
    if exp.encoder.framewise and cfg.encoder.frames is not None and not world_model:
        raise loaded.error("encoder.frames", f"equals encoder.tubelet ({cfg.encoder.tubelet}): a video encoder of one "
                                             "tubelet encodes clips frame by frame, for ac_vit; V-JEPA needs more frames")
    if not exp.encoder.framewise and (not clips or dataset.frames != cfg.encoder.frames):
        got = f"clips of {dataset.frames} frames" if clips else "images"
        raise loaded.error("encoder.frames", f"the video encoder takes clips of {cfg.encoder.frames} frames; "
                                             f"dataset {name!r} gives {got}")
    if world_model:
        predictor = exp.predictor
        if not clips or not dataset.action_dim:
            raise loaded.error("data.dataset.name", f"predictor {cfg.predictor.name!r} needs clips with actions; "
                                                    f"dataset {name!r} has none")
        if predictor.action_dim != dataset.action_dim:
            raise loaded.error("predictor.action_dim", f"is {predictor.action_dim}, but dataset {name!r} "
                                                       f"records actions of {dataset.action_dim} entries")
        if predictor.state_dim not in (0, dataset.state_dim):
            raise loaded.error("predictor.state_dim", f"is {predictor.state_dim}, but dataset {name!r} records "
                                                      f"states of {dataset.state_dim} entries (0: no state tokens)")


def _check_evaluators(exp: Experiment, train_split: Callable[[], Any]) -> None:
    """Each evaluator's ``needs`` and label tasks met by this run, before training (not after it, at evaluation)."""
    have = {"actions": exp.views.action_dim > 0, "predictor": exp.predictor is not None,
            "world_model": isinstance(exp.predictor, ActionConditionedPredictor),
            "target_ops": bool(exp.views.target)}
    for i, (name, evaluator) in enumerate(exp.evaluators):
        missing = sorted(need for need in evaluator.needs if not have.get(need, True))
        if missing:
            hint = "; add photometric ops to views.target" if "target_ops" in missing else ""
            raise exp.loaded.error(f"eval.{i}.name", f"evaluator {name!r} needs {' and '.join(missing)}, "
                                                     f"which this run does not have{hint}")
    kinds = {evaluator.data for _, evaluator in exp.evaluators} - {"any"}
    dataset = train_split() if kinds else None
    if dataset is not None:
        data = "clips" if is_clip_dataset(dataset) else "images"
        for i, (name, evaluator) in enumerate(exp.evaluators):
            if evaluator.data not in (data, "any"):
                raise exp.loaded.error(f"eval.{i}.name", f"evaluator {name!r} reads {evaluator.data}; dataset "
                                                         f"{exp.config.data.dataset.name!r} gives {data}")
    wanted = [(i, name, evaluator.label_tasks()) for i, (name, evaluator) in enumerate(exp.evaluators)]
    dataset = train_split() if any(tasks for _, _, tasks in wanted) else None
    if dataset is None:
        return
    tasks = dataset_tasks(dataset)
    for i, name, wanted_tasks in wanted:
        for task in wanted_tasks:
            if task not in tasks:
                raise exp.loaded.error(
                    f"eval.{i}", f"evaluator {name!r} reads the labelled task {task!r}; dataset "
                    f"{exp.config.data.dataset.name!r} has {', '.join(map(repr, tasks)) or 'none (a single label)'}")


def _local_dataset(exp: Experiment) -> Any | None:
    """The train split when its files are here; None where the data lives only where the job runs (Slurm).

    The job builds the experiment again from config.yaml before training, so the
    checks that need the data run there.
    """
    spec = exp.config.data.dataset
    with at(exp.loaded, "data.dataset"):  # a bad file or key: one line, before training
        try:
            return exp.registries.datasets.create(spec.name, "train", **spec.params)
        except MissingDataError:
            return None


def _check_health(exp: Experiment, train_split: Callable[[], Any]) -> None:
    """A probe only with the monitors on, and on a dataset with its labels (when the data is here)."""
    from jepa_core.health import check_probe

    cfg, loaded = exp.config, exp.loaded
    if not cfg.health.probe_every:
        return
    if cfg.health.every == 0:
        raise loaded.error("health.probe_every", "the online probe runs with the monitors; "
                                                 "health.every is 0 (off)")
    dataset = train_split()
    if dataset is None:
        return
    with at(loaded, "health.probe_task"):
        check_probe(dataset, cfg.health.probe_task)
