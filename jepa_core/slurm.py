"""Slurm through submitit: one run per job (or per array member), requeued on preemption.

This module submits, on the login node. The launcher has validated the
config and built every component; here each run directory is checked and
given its resolved ``config.yaml`` (the job re-loads it), and only then is
:class:`~jepa_core.slurm_job.RunJob`, which holds nothing but the run
directory, submitted. The other two parts:

- :mod:`jepa_core.slurm_params`: the ``slurm:`` block as submitit parameters
  and the sbatch script they render (``--dry-run --slurm``), the one place
  that touches submitit's private functions;
- :mod:`jepa_core.slurm_job`: what every task of a job runs, and the
  preemption handling that checkpoints at a step boundary before requeueing.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shlex
import shutil
from pathlib import Path
from typing import Sequence, Union

import submitit

from jepa_core.config import ConfigError, LoadedConfig, to_dict
from jepa_core.errors import UserError
from jepa_core.experiment import Experiment
from jepa_core.rundir import RunDir, SweepDir
from jepa_core.schema import SlurmConfig
from jepa_core.slurm_job import RunJob
from jepa_core.slurm_params import executor_parameters

Runnable = Union[LoadedConfig, Experiment]


class SlurmUnavailable(UserError):
    """No ``sbatch`` on PATH: this is not a Slurm login node."""


class SubmissionError(UserError):
    """sbatch refused the job (unknown partition, account, ...)."""


def require_slurm() -> None:
    if shutil.which("sbatch") is None or shutil.which("srun") is None:
        missing = "sbatch" if shutil.which("sbatch") is None else "srun"
        raise SlurmUnavailable(f"Slurm is not on PATH (no {missing} command): run here with --local, "
                               "or submit from a Slurm login node")


def make_executor(slurm: SlurmConfig, name: str, folder: str | Path):
    """A submitit AutoExecutor for the ``slurm:`` block, writing pickles and logs to ``folder``."""
    require_slurm()
    executor = submitit.AutoExecutor(folder=str(folder), cluster="slurm", slurm_max_num_timeout=slurm.max_num_timeout)
    executor.update_parameters(**executor_parameters(slurm, name))
    return executor


def prepare_run_dir(item: Runnable, run_dir: str | Path) -> Path:
    """Check ``run_dir`` and write the resolved config.yaml (the job re-loads it)."""
    from jepa_core.run import check_run_dir, write_config

    check_run_dir(run_dir, _loaded(item))
    return write_config(_loaded(item).config, run_dir)


def _loaded(item: Runnable) -> LoadedConfig:
    return item.loaded if isinstance(item, Experiment) else item


def _quiet():
    """submitit prints sbatch's stderr when it fails; the error we raise says it in one line."""
    return contextlib.redirect_stderr(io.StringIO())


def _submission_error(exc: Exception) -> SubmissionError:
    text = " ".join(str(exc).split())
    match = re.search(r"sbatch: error: (.*?)(?: sbatch: error:|$)", text)
    return SubmissionError(f"sbatch refused the job: {match.group(1) if match else text}")


def submit(item: Runnable, run_dir: str | Path):
    """Submit one run; returns the submitit Job (its logs are in the run directory's ``submitit/``)."""
    from submitit.core.utils import FailedJobError

    config = item.config
    require_slurm()
    run_dir = prepare_run_dir(item, run_dir)
    executor = make_executor(config.slurm, config.name, RunDir(run_dir).submitit)
    try:
        with _quiet():
            return executor.submit(RunJob(run_dir))
    except (FailedJobError, OSError) as exc:
        raise _submission_error(exc) from None


def submit_array(items: Sequence[tuple[Runnable, str | Path]], folder: str | Path | None = None) -> list:
    """Submit several runs as ONE Slurm array (``executor.batch()``), each in its own run directory.

    Every member must have the same ``slurm:`` block (an array has one set of
    sbatch parameters). ``folder`` holds submitit's pickles and logs (default:
    ``submitit/`` in the run directories' common parent). Returns the jobs in
    the order of ``items``.
    """
    from submitit.core.utils import FailedJobError

    if not items:
        raise ValueError("submit_array: no runs")
    require_slurm()
    configs = [item.config for item, _ in items]
    first = to_dict(configs[0].slurm)
    for i, config in enumerate(configs[1:], 1):
        if to_dict(config.slurm) != first:
            key = next(k for k in first if to_dict(config.slurm)[k] != first[k])
            raise ConfigError(f"array member {i} ({config.name}): slurm.{key} differs from member 0's; "
                              "an array has one set of sbatch parameters")
    run_dirs = [Path(run_dir).resolve() for _, run_dir in items]
    if len(set(run_dirs)) != len(run_dirs):
        raise ConfigError("submit_array: two members share a run directory")
    from jepa_core.run import check_run_dir

    for (item, _), run_dir in zip(items, run_dirs):  # check all before writing any
        check_run_dir(run_dir, _loaded(item))
    for (item, _), run_dir in zip(items, run_dirs):
        prepare_run_dir(item, run_dir)
    folder = Path(folder).resolve() if folder else SweepDir(os.path.commonpath(run_dirs)).submitit
    executor = make_executor(configs[0].slurm, configs[0].name, folder)
    try:
        with _quiet(), executor.batch():
            jobs = [executor.submit(RunJob(run_dir)) for run_dir in run_dirs]
    except (FailedJobError, OSError) as exc:
        raise _submission_error(exc) from None
    return jobs


def describe_job(job, run_dir: str | Path) -> str:
    """What the launcher prints after a submission: ids, paths, how to follow and cancel."""
    out, err = job.paths.stdout, job.paths.stderr
    return "\n".join([
        f"submitted Slurm job {job.job_id}",
        f"run directory: {Path(run_dir).resolve()}",
        f"log: {out}",
        f"errors: {err}",
        f"follow: tail -f {shlex.quote(str(out))}",
        f"cancel: scancel {job.job_id}",
    ])

