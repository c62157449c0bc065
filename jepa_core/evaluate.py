"""Evaluation driver: ``python -m jepa_core.evaluate RUN_DIR [--evaluator NAME ...] [--set K=V ...]``.

Loads the run's config and latest checkpoint, runs the evaluators named
(default: the YAML ``eval:`` list), writes ``RUN_DIR/eval.json`` atomically as
``{evaluator: {metric: value}}`` and prints a table. ``--random-init`` evaluates
the same architecture at initialisation into ``eval_random_init.json``: the
baseline a trained encoder must beat. Training calls
:func:`run_evaluators` at its end with the modules it has in memory.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import attrs
import torch
from torch import nn

from jepa_core import checkpoint
from jepa_core.config import ConfigError, load_config
from jepa_core.errors import cli
from jepa_core.experiment import Experiment, build_experiment, build_predictor
from jepa_core.registries import ComponentError
from jepa_core.rundir import RunDir, write_json
from jepa_core.views import Views


@attrs.define
class TrainedRun:
    """What an evaluator gets: the trained modules, the views and the data, on one device."""

    experiment: Experiment
    encoder: nn.Module
    target_encoder: nn.Module
    predictor: nn.Module | None
    views: Views
    device: torch.device
    seed: int
    #: where file outputs (plots) go; None outside a run directory
    run_dir: Path | None = None
    #: what evaluators share (datasets, features): it lives and dies with this object
    cache: dict = attrs.field(factory=dict, eq=False, repr=False)

    @property
    def config(self):
        return self.experiment.config

    def dataset(self, split: str):
        return self.experiment.dataset(split)

    def new_predictor(self) -> nn.Module:
        """A freshly initialised predictor of the run's architecture, from the global RNG, on the CPU."""
        return build_predictor(self.experiment.loaded, self.experiment.registries, self.experiment.encoder,
                               self.views)[1]

    def environment(self, name: str, **params):
        """Environment ``name``; the keys it shares with the run's dataset (same name) come from data.dataset."""
        registry = self.experiment.registries.environments
        config, spec = registry.get(name).config, self.config.data.dataset
        fields = {f.name for f in attrs.fields(config)} if config is not None and spec.name == name else set()
        shared = {k: val for k, val in spec.params.items() if k in fields}
        return registry.create(name, **{**shared, **params})


def trained_run(exp: Experiment, device: torch.device | None = None, run_dir: str | Path | None = None) -> TrainedRun:
    device = device or next(exp.encoder.parameters()).device
    target_encoder = exp.target.target_encoder(exp.encoder)
    return TrainedRun(exp, exp.encoder.eval(), target_encoder.eval(), exp.predictor.eval(), exp.views,
                      device, exp.config.train.seed, Path(run_dir) if run_dir is not None else None)


def run_evaluators(exp: Experiment, run_dir: str | Path, names: list[str] | None = None,
                   random_init: bool = False) -> dict[str, dict]:
    """Run evaluators on ``exp``'s modules; write eval.json atomically and call the hook.

    ``random_init``: the modules are untrained baselines; their results go to
    eval_random_init.json and the loggers' hook is not called.
    """
    run = trained_run(exp, run_dir=run_dir)
    chosen = [(n, e) for n, e in exp.evaluators if names is None or n in names]
    results: dict[str, dict[str, float]] = {}
    for name, evaluator in chosen:
        torch.manual_seed(run.seed)
        with torch.random.fork_rng():
            try:
                results[name] = {k: float(v) for k, v in evaluator.evaluate(run).items()}
            except ComponentError as exc:  # a setting only this run's data or model can refuse
                raise ConfigError(f"eval: {name}: {exc}") from None
    out = RunDir(run_dir)
    write_json(out.eval_random_init if random_init else out.eval, results)
    if not random_init:
        exp.pm.hook.jepa_after_evaluation(results=results, run_dir=str(run_dir))
    return results


def format_results(results: dict[str, dict[str, float]],
                   random_init: dict[str, dict[str, float]] | None = None) -> str:
    """A table of evaluator, metric and value, with the random-init value beside it when given."""
    header = ("evaluator", "metric", "trained", "random init") if random_init is not None else ("evaluator", "metric", "value")
    rows = []
    for ev, metrics in results.items():
        for metric, value in metrics.items():
            row = (ev, metric, f"{value:.4f}")
            if random_init is not None:
                base = random_init.get(ev, {}).get(metric)
                row += ("-" if base is None else f"{base:.4f}",)
            rows.append(row)
    if not rows:
        return "(no evaluators ran)"
    widths = [max(len(r[i]) for r in rows + [header]) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in [header] + rows)


def load_run(run_dir: str | Path, evaluators: list[str] = (), overrides: list[str] = (),
             random_init: bool = False) -> Experiment:
    """The experiment of ``run_dir`` with its latest checkpoint loaded (ConfigError on bad input).

    ``random_init``: keep the freshly initialised weights (seeded by ``train.seed``), the
    baseline a trained encoder must beat; the run still needs a checkpoint to compare with.
    """
    run = RunDir(run_dir)
    if not run.config.is_file():
        raise ConfigError(f"{run_dir}: not a run directory (no {run.config.name})")
    extra = list(overrides)
    if evaluators:
        extra.append("eval=[" + ", ".join(f"{{name: {n}}}" for n in evaluators) + "]")
    loaded = load_config(run.config, extra)
    exp = build_experiment(loaded)
    path = run.latest_checkpoint()
    if path is None:
        raise ConfigError(f"{run_dir}: no checkpoint in {run.checkpoints} (train first)")
    if not random_init:
        try:
            checkpoint.load_modules(exp.modules(), checkpoint.load(path), str(path))
        except checkpoint.CheckpointError as exc:
            raise ConfigError(str(exc)) from None
    return exp


@cli
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jepa_core.evaluate", description=__doc__.splitlines()[0])
    parser.add_argument("run_dir")
    parser.add_argument("--evaluator", action="append", default=[], metavar="NAME",
                        help="evaluator to run (repeatable; default: the config's eval: list)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides")
    parser.add_argument("--random-init", action="store_true",
                        help="evaluate the same architecture at initialisation instead "
                             f"(writes {RunDir('RUN_DIR').eval_random_init})")
    args = parser.parse_args(argv)
    exp = load_run(args.run_dir, args.evaluator, args.overrides, random_init=args.random_init)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    for module in exp.modules().values():
        module.to(device)
    results = run_evaluators(exp, args.run_dir, random_init=args.random_init)
    print(format_results(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
