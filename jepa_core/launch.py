"""``python -m jepa_core.launch CONFIG [--local | --slurm] [--set K=V ...] [--output DIR] [--dry-run]``.

Validates the whole config and builds every component before anything runs
or is submitted; config errors exit with status 2 and one line, no traceback.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from jepa_core.config import ConfigError, LoadedConfig, dump_yaml, load_config
from jepa_core.experiment import Experiment, build_experiment
from jepa_core.run import check_run_dir, execute

DEFAULT_ROOT = Path("runs")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m jepa_core.launch", description=__doc__.splitlines()[0])
    p.add_argument("config", help="experiment YAML file")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--local", action="store_true", help="run here (the default)")
    where.add_argument("--slurm", action="store_true", help="submit to Slurm through submitit")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                   help="override a config value, YAML-typed (repeatable), e.g. --set train.steps=30")
    p.add_argument("--output", metavar="DIR", help="run directory (default: runs/<name>)")
    p.add_argument("--dry-run", action="store_true",
                   help="validate and build every component, print the resolved config, run nothing")
    return p


def run_dir_for(loaded: LoadedConfig, output: str | None) -> Path:
    return Path(output) if output else DEFAULT_ROOT / loaded.config.name


def describe(exp: Experiment) -> str:
    counts = "\n".join(f"#   {name}: {n:,}" for name, n in exp.parameter_counts().items())
    views = exp.views
    layout = ", ".join(f"{s.name}[{s.dim}, {s.encoding}]" for s in views.slots if s.dim) or "none"
    return (f"{dump_yaml(exp.config)}# parameters\n{counts}\n"
            f"# action dimension: {views.action_dim} ({layout})\n"
            f"# patch grid: {exp.encoder.grid[0]}x{exp.encoder.grid[1]}")


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        loaded = load_config(args.config, args.overrides)
        exp = build_experiment(loaded)
        run_dir = run_dir_for(loaded, args.output)
        if not args.dry_run:
            check_run_dir(run_dir, loaded)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.dry_run:
        print(describe(exp))
        return 0
    print(f"run directory: {run_dir}")
    result = execute(exp, run_dir)
    metrics = result["metrics"]
    if metrics:
        print(f"finished at step {metrics['step']}: loss {metrics['loss']:.4f}")
    if result["eval"]:
        from jepa_core.evaluate import format_results

        print(format_results(result["eval"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
