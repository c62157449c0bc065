"""``python -m jepa_core.launch CONFIG [--local [--nproc N] | --slurm] [--set K=V ...] [--output DIR] [--dry-run]``.

Validates the whole config and builds every component before anything runs
or is submitted; config errors exit with status 2 and one line, no traceback.

``--local --nproc N`` trains with N processes on this machine (DDP: gloo on
the CPU, NCCL on GPUs), ``--slurm`` submits one job through submitit with
the YAML ``slurm:`` block (docs/slurm.md); ``--dry-run --slurm`` prints the
sbatch script instead of submitting it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from jepa_core import runlock, sweep
from jepa_core.config import LoadedConfig, dump_yaml, load_config
from jepa_core.errors import RunError, UserError, cli
from jepa_core.experiment import Experiment, build_experiment
from jepa_core.run import check_run_dir, execute, execute_dir, report, write_config
from jepa_core.rundir import RunDir, SweepDir

DEFAULT_ROOT = Path("runs")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m jepa_core.launch", description=__doc__.splitlines()[0])
    p.add_argument("config", help="experiment YAML file")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--local", action="store_true", help="run here (the default)")
    where.add_argument("--slurm", action="store_true", help="submit to Slurm through submitit (slurm: block)")
    p.add_argument("--nproc", type=int, default=1, metavar="N",
                   help="with --local: train with N processes (DDP) on this machine")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                   help="override a config value, YAML-typed (repeatable), e.g. --set train.steps=30")
    p.add_argument("--parallel", type=int, default=1, metavar="N",
                   help="sweeps with --local: run N members at a time (default: one after another)")
    p.add_argument("--output", metavar="DIR", help="run directory, or sweep directory (default: runs/<name>)")
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
            f"# token grid: {'x'.join(map(str, exp.encoder.grid))}")


@cli
def main(argv: list[str] | None = None) -> int:
    p = parser()
    args = p.parse_args(argv)
    if args.nproc < 1:
        p.error("--nproc must be >= 1")
    if args.nproc > 1 and args.slurm:
        p.error("--nproc is for --local runs; under --slurm set slurm.tasks_per_node (and slurm.nodes)")
    if args.parallel < 1:
        p.error("--parallel must be >= 1")
    if sweep.is_sweep(args.config, args.overrides):
        return launch_sweep(args)
    loaded = load_config(args.config, args.overrides)
    exp = build_experiment(loaded, meta=args.dry_run or args.slurm)  # those only check it: the job rebuilds
    run_dir = run_dir_for(loaded, args.output)
    if not args.dry_run:
        check_run_dir(run_dir, loaded)
        runlock.check_free(run_dir)
    if args.slurm:
        from jepa_core import slurm, slurm_params

        folder = RunDir(run_dir.resolve()).submitit  # where slurm.submit puts it
        script = slurm_params.sbatch_script(loaded.config, folder)  # checks the slurm: block too
        if not args.dry_run:
            slurm.require_slurm()
    if args.dry_run:
        print(describe(exp))
        if args.slurm:
            print(f"# ---- sbatch script (not submitted); submitit's folder: {folder}")
            print(script)
        return 0
    if args.slurm:
        print(slurm.describe_job(slurm.submit(exp, run_dir), run_dir))
        return 0
    if args.nproc > 1:
        print(f"run directory: {run_dir} ({args.nproc} processes)")
        return run_local_processes(exp, run_dir, args.nproc)
    from jepa_core import distributed

    dist = distributed.init(exp.config.train.device)  # several processes under torchrun, else one
    if dist.is_main:
        print(f"run directory: {run_dir}")
    try:
        result = execute(exp, run_dir, dist)
    finally:
        distributed.shutdown()
    if dist.is_main:
        report(result)
    return 0


def launch_sweep(args: argparse.Namespace) -> int:
    """A sweep file: validate and build every member, then run them here or as one Slurm array."""
    members = sweep.expand(args.config, args.output, args.overrides)
    sweep_dir = members[0].run_dir.parent
    for member in members:
        try:
            build_experiment(member.loaded, meta=True)  # a check: each member's process builds its own
            if not args.dry_run:
                check_run_dir(member.run_dir, member.loaded)
                runlock.check_free(member.run_dir)
        except UserError as exc:
            raise UserError(f"{exc} (sweep member {member.name})") from None
    if args.slurm:
        from jepa_core import slurm, slurm_params

        folder = SweepDir(sweep_dir.resolve()).submitit  # one array's, for the dry run and the submission
        script = slurm_params.sbatch_script(members[0].loaded.config, folder, array_size=len(members))
        if not args.dry_run:
            slurm.require_slurm()
    print(f"sweep directory: {sweep_dir} ({len(members)} members)")
    for member in members:
        print(f"  {member.name}: {member.state}")
    if args.dry_run:
        if args.slurm:
            print(f"# ---- sbatch script of the array (not submitted)\n{script}")
        return 0
    if args.slurm:
        todo = [m for m in members if m.state != "finished"]
        sweep.prepare(members, sweep_dir, args.config)
        jobs = slurm.submit_array([(m.loaded, m.run_dir) for m in todo], folder) if todo else []
        for member, job in zip(todo, jobs):
            print(f"  {member.name}: Slurm job {job.job_id}")
        if jobs:
            print(f"follow: squeue -j {jobs[0].job_id.split('_')[0]}; cancel: scancel {jobs[0].job_id.split('_')[0]}")
        print(f"then: python -m jepa_core.ablate {sweep_dir}")
        return 0
    sweep.prepare(members, sweep_dir, args.config)
    states = sweep.run_local(members, sweep_dir, args.config, parallel=args.parallel)
    print(f"sweep finished: {states.count('finished')}/{len(states)} members; "
          f"table: python -m jepa_core.ablate {sweep_dir}")
    return 0 if all(state == "finished" for state in states) else 1


# ------------------------------------------------------------ several processes

def _local_worker(rank: int, nproc: int, port: int, run_dir: str) -> None:
    import os

    import torch

    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(nproc),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    if not torch.cuda.is_available():  # share the cores instead of each process taking them all
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // nproc))
    result, dist = execute_dir(run_dir, locked=True)  # the parent holds the run directory's lock
    if dist.is_main:
        report(result)


def run_local_processes(exp: Experiment, run_dir: str | Path, nproc: int) -> int:
    """``--local --nproc N``: N processes on this machine, rendezvous on a free local port."""
    import torch.multiprocessing as mp

    from jepa_core import launch as this  # by module name, also when run as __main__
    from jepa_core.distributed import free_port

    with runlock.RunLock(run_dir):
        run_dir = write_config(exp.config, run_dir)
        try:
            mp.spawn(this._local_worker, args=(nproc, free_port(), str(run_dir)), nprocs=nproc, join=True)
        except mp.ProcessRaisedException as exc:
            lines = str(exc).strip().splitlines()
            raise RunError(f"{lines[0]} {lines[-1]}") from None
        except mp.ProcessExitedException as exc:
            raise RunError(str(exc)) from None
    return 0


if __name__ == "__main__":
    sys.exit(main())
