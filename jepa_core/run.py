"""One run, start to end: run directory, loggers, training, evaluation.

Shared by the local launcher, Slurm jobs and sweeps, so a run behaves the
same wherever it executes. ``python -m jepa_core.run RUN_DIR`` executes the
run a directory holds (:func:`execute_dir`): how a sweep runs each member here.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path
from typing import Any, Callable, Iterator

import yaml

from jepa_core import distributed, hookimpl
from jepa_core.config import ConfigError, LoadedConfig, dump_yaml, load_config, to_dict
from jepa_core.distributed import DistInfo
from jepa_core.errors import RunError, cli
from jepa_core.experiment import Experiment, at, build_experiment
from jepa_core.rundir import RunDir, write_json, write_text


def _first_difference(old: Any, new: Any, prefix: str = "") -> str | None:
    if isinstance(old, dict) and isinstance(new, dict):
        for key in list(old) + [k for k in new if k not in old]:
            found = _first_difference(old.get(key), new.get(key), f"{prefix}.{key}" if prefix else str(key))
            if found:
                return found
        return None
    return None if old == new else (prefix or "<top>")


def check_run_dir(run_dir: str | Path, loaded: LoadedConfig) -> None:
    """Refuse to reuse a run directory that holds another experiment (before writing anything)."""
    path = RunDir(run_dir).config
    if not path.is_file():
        if Path(run_dir).is_file():
            raise ConfigError(f"--output {run_dir}: is a file, not a directory")
        return
    try:
        old = yaml.safe_load(path.read_text())
    except yaml.YAMLError:
        raise ConfigError(f"{path}: unreadable YAML; pass another --output") from None
    key = _first_difference(old, to_dict(loaded.config))
    if key is not None:
        raise ConfigError(
            f"{path}: this run directory holds a different config (first difference at {key}); "
            "pass another --output to start a new run, or the same config to resume"
        )


def write_config(config: Any, run_dir: str | Path) -> Path:
    """Write the resolved config.yaml unless the run has one (a resume); workers and jobs re-load it.

    Call :func:`check_run_dir` first, before anything is written.
    """
    run = RunDir(Path(run_dir).resolve())
    if not run.config.exists():
        write_text(run.config, dump_yaml(config))
    return run.path


@contextlib.contextmanager
def loggers(exp: Experiment, run_dir: Path, dist: DistInfo) -> Iterator[None]:
    """Register the YAML ``loggers:`` with the plugin manager for the run's duration."""
    active = []
    if dist.is_main:
        for i, spec in enumerate(exp.config.loggers):
            with at(exp.loaded, f"loggers.{i}"):
                plugin = exp.registries.loggers.create(spec.name, str(run_dir), **spec.params)
            exp.pm.register(plugin, name=f"logger:{i}:{spec.name}")
            active.append(plugin)
    try:
        yield
    finally:
        for plugin in active:
            exp.pm.unregister(plugin)
            close = getattr(plugin, "close", None)
            if close:
                close()


class _CollapseStatus:
    """Notes the run's first collapse alarm in status.json, at once and in the final status."""

    def __init__(self, run: RunDir):
        self.run, self.first = run, None

    @hookimpl
    def jepa_on_collapse(self, step, health, reasons):
        if self.first is None:
            self.first = {"step": step, "reasons": reasons}
            write_json(self.run.status, {"state": "running", "collapse": self.first})

    def status(self, **fields: Any) -> dict[str, Any]:
        return {**fields, "collapse": self.first} if self.first else fields


def execute(exp: Experiment, run_dir: str | Path, dist: DistInfo | None = None,
            locked: bool = False) -> dict[str, Any]:
    """Train (resuming from the run directory's checkpoint) and evaluate.

    Rank 0 owns the run directory (:mod:`jepa_core.runlock`) from before its
    first write to the end; ``locked`` says a parent process (``--nproc``) holds it.
    """
    from jepa_core.evaluate import run_evaluators
    from jepa_core.runlock import RunLock
    from jepa_core.train import Trainer

    run_dir, run = Path(run_dir), RunDir(run_dir)
    dist = dist or DistInfo()
    owner = RunLock(run_dir) if dist.is_main and not locked else contextlib.nullcontext()
    with owner:
        if dist.is_main:
            write_config(exp.config, run_dir)
        if dist.is_main and run.status.exists():
            run.status.unlink()  # running again: neither finished nor failed until it ends
        status = _CollapseStatus(run)
        exp.pm.register(status, name="collapse-status")
        try:
            with loggers(exp, run_dir, dist):
                metrics = Trainer(exp, run_dir, dist).fit()
                results = run_evaluators(exp, run_dir) if exp.evaluators and dist.is_main else {}
                baseline = _random_init_baseline(exp, run_dir) if results and exp.config.eval_random_init else None
        except Exception as exc:
            if dist.is_main:
                with contextlib.suppress(RunError):  # a full disk must not hide the error that stopped the run
                    write_json(run.status, status.status(
                        state="failed", error=f"{type(exc).__name__}: {exc}"))
            raise
        finally:
            exp.pm.unregister(status)
        if dist.is_main:
            write_json(run.status, status.status(state="finished", step=metrics.get("step")))
    return {"metrics": metrics, "eval": results, "eval_random_init": baseline}


def _random_init_baseline(exp: Experiment, run_dir: Path) -> dict[str, dict[str, float]]:
    """The evaluators on the same architecture as built before training (``train.seed``), untrained."""
    from jepa_core.evaluate import run_evaluators

    fresh = build_experiment(exp.loaded, exp.registries)
    device = next(exp.encoder.parameters()).device
    for module in fresh.modules().values():
        module.to(device)
    return run_evaluators(fresh, run_dir, random_init=True)


def execute_dir(run_dir: str | Path, locked: bool = False,
                started: Callable[[Experiment, DistInfo], None] | None = None) -> tuple[dict[str, Any], DistInfo]:
    """Execute the run ``run_dir`` holds: what ``--nproc`` workers, Slurm jobs and sweep members run.

    The config comes from the run directory's config.yaml, which the launcher
    wrote once it had validated it, not from the user's YAML, which may have
    changed since (a requeued job, a relaunched sweep). The process joins the
    group its environment asks for (torchrun's variables, a Slurm job's tasks);
    ``started(exp, dist)`` runs once it has. The group is left when the run
    ends, not when it fails or is preempted: the process ends then, and a
    preempted job's ranks still agree on its requeue through the group.
    """
    exp = build_experiment(load_config(RunDir(run_dir).config))
    dist = distributed.init(exp.config.train.device)
    if started is not None:
        started(exp, dist)
    result = execute(exp, run_dir, dist, locked=locked)
    distributed.shutdown()
    return result, dist


def report(result: dict[str, Any]) -> None:
    """Print the final loss and the evaluation table (with the random-init baseline when measured)."""
    metrics = result["metrics"]
    if metrics:
        print(f"finished at step {metrics['step']}: loss {metrics['loss']:.4f}")
    if result["eval"]:
        from jepa_core.evaluate import format_results

        print(format_results(result["eval"], result.get("eval_random_init")))


@cli
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jepa_core.run",
                                     description="Execute (or resume) the run a run directory holds.")
    parser.add_argument("run_dir", help="a run directory the launcher wrote")
    args = parser.parse_args(argv)

    def announce(exp: Experiment, dist: DistInfo) -> None:
        if dist.is_main:
            print(f"run directory: {args.run_dir}", flush=True)

    result, dist = execute_dir(args.run_dir, started=announce)
    if dist.is_main:
        report(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
