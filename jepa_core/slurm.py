"""Slurm through submitit: one run per job (or per array member), requeued on preemption.

The login node validates the config and builds every component, writes the
resolved ``config.yaml`` into the run directory and only then submits
:class:`RunJob`, a submitit ``Checkpointable`` holding nothing but the run
directory. In the job every task re-loads that ``config.yaml``, rebuilds the
experiment, joins the process group (:func:`jepa_core.distributed.init`) and
calls :func:`jepa_core.run.execute`, which resumes from
``checkpoints/latest.pt`` when there is one.

Preemption and time limits (submitit's ``USR2``, ``signal_delay_s`` before the
limit or when the scheduler preempts): submitit's handler would call
``checkpoint()`` in the middle of whatever the main thread is doing, possibly
half-way through an optimizer step. Instead :class:`RunJob` wraps it: while a
training loop is running the signal only raises :data:`jepa_core.distributed.STOP`;
the loop notices it after the step it is in (all ranks agree on that step),
rank 0 writes the checkpoint of that completed step, and the loop raises
:class:`~jepa_core.distributed.Preempted`. Only then is submitit's own handler
called, from the main thread at a step boundary: it calls :meth:`RunJob.checkpoint`
(which only re-submits itself: the state is already on disk), counts timeouts
against ``max_num_timeout`` and requeues the job with ``scontrol requeue``.
When no loop is running (start-up, evaluation) the handler acts at once and
the requeued job resumes from the last checkpoint written. A job that fails
with an exception is never requeued.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shlex
import shutil
import signal
import sys
from pathlib import Path
from typing import Any, Sequence, Union

import submitit
import submitit.helpers

from jepa_core import hookimpl
from jepa_core.config import ConfigError, LoadedConfig, to_dict
from jepa_core.errors import UserError
from jepa_core.experiment import Experiment
from jepa_core.rundir import RunDir, SweepDir
from jepa_core.schema import ExperimentConfig, SlurmConfig

#: submitit's preemption signal (it honours SUBMITIT_PREEMPT_SIGNAL, default USR2)
PREEMPT_SIGNAL = os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2")

Runnable = Union[LoadedConfig, Experiment]


class SlurmUnavailable(UserError):
    """No ``sbatch`` on PATH: this is not a Slurm login node."""


class SubmissionError(UserError):
    """sbatch refused the job (unknown partition, account, ...)."""


# ----------------------------------------------------------------------- executor

def _config(item: Runnable) -> ExperimentConfig:
    return item.config


def executor_parameters(slurm: SlurmConfig, name: str) -> dict[str, Any]:
    """``AutoExecutor.update_parameters`` keywords for a ``slurm:`` block."""
    _check_signal(slurm)
    params: dict[str, Any] = {
        "name": name,
        "timeout_min": slurm.timeout_min,
        "nodes": slurm.nodes,
        "tasks_per_node": slurm.tasks_per_node,
        "cpus_per_task": slurm.cpus_per_task,
        "slurm_array_parallelism": slurm.array_parallelism,
    }
    if slurm.gpus_per_node:  # no --gpus-per-node=0 line: GPU-less clusters may reject any gres
        params["gpus_per_node"] = slurm.gpus_per_node
    if slurm.mem_gb is not None:
        params["mem_gb"] = slurm.mem_gb
    for key in ("partition", "account", "qos", "constraint", "exclude"):
        value = getattr(slurm, key)
        if value is not None:
            params[f"slurm_{key}"] = value
    if slurm.setup:
        params["slurm_setup"] = list(slurm.setup)
    if slurm.additional_parameters:
        params["slurm_additional_parameters"] = dict(slurm.additional_parameters)
    return params


def _check_signal(slurm: SlurmConfig) -> None:
    """An explicit ``additional_parameters.signal`` must still reach submitit's handler."""
    value = slurm.additional_parameters.get("signal")
    if value is None:
        return
    ok = re.fullmatch(rf"(SIG)?{PREEMPT_SIGNAL}(@\d+)?", str(value))
    if not ok:
        raise ConfigError(
            f"slurm.additional_parameters.signal: {value!r} would not reach the job's preemption handler; "
            f"use '{PREEMPT_SIGNAL}@SECONDS' (the signal is sent SECONDS before the time limit, "
            "to every task, not 'B:' the batch shell only)"
        )


def native_parameters(params: dict[str, Any]) -> dict[str, Any]:
    """AutoExecutor keywords -> SlurmExecutor parameters (as AutoExecutor translates them)."""
    from submitit.slurm.slurm import SlurmExecutor, _convert_mem

    equivalent = SlurmExecutor._equivalence_dict()
    native = {}
    for key, value in params.items():
        if key.startswith("slurm_"):
            native[key[len("slurm_"):]] = value
        else:
            native[equivalent[key]] = value
    if "mem" in native:
        native["mem"] = _convert_mem(native["mem"])
    return native


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


def sbatch_script(config: ExperimentConfig, run_dir: str | Path, array_size: int | None = None) -> str:
    """The sbatch script a submission of ``config`` would send (submitit's own rendering)."""
    from submitit.slurm.slurm import _make_sbatch_string

    folder = (RunDir if array_size is None else SweepDir)(Path(run_dir).resolve()).submitit
    native = native_parameters(executor_parameters(config.slurm, config.name))
    if array_size is not None and array_size > 1:
        native["map_count"] = array_size
    command = " ".join([shlex.quote(sys.executable), "-u -m submitit.core._submit", shlex.quote(str(folder))])
    return _make_sbatch_string(command=command, folder=folder, **native)


# ---------------------------------------------------------------------------- job

class _Progress:
    """Log lines in the job's stdout: where the run starts (rank 0 only, via the runtime hooks)."""

    def __init__(self, run_dir: str):
        self.run_dir = run_dir

    @hookimpl
    def jepa_run_start(self, run_dir, config, start_step, total_steps):
        where = f"resuming from step {start_step}" if start_step else "starting at step 0"
        print(f"{where} of {total_steps} ({self.run_dir})", flush=True)


class RunJob(submitit.helpers.Checkpointable):
    """The callable a Slurm job runs: train (or resume) the run in ``run_dir``, then evaluate.

    Every task of the job calls it; it returns ``{"rank", "world_size",
    "metrics", "eval", "run_dir"}`` per task (job.results()).
    """

    def __init__(self, run_dir: str | Path):
        self.run_dir = str(Path(run_dir).resolve())

    def checkpoint(self, *args: Any, **kwargs: Any):
        """Called by submitit's signal handler on rank 0: re-submit this same run.

        Nothing is saved here: under the deferred scheme the training loop has
        already written the checkpoint of its last completed step, and when no
        loop was running the last checkpoint on disk is the one to resume from.
        Saving here would risk writing a half-updated state (the handler
        interrupts the main thread anywhere, even inside ``optimizer.step()``).
        """
        print(f"checkpoint(): requeueing {self.run_dir}; it resumes from its latest checkpoint", flush=True)
        return submitit.helpers.DelayedSubmission(self)

    def __call__(self) -> dict[str, Any]:
        from jepa_core import distributed
        from jepa_core.run import execute_dir

        cpus = os.environ.get("SLURM_CPUS_PER_TASK")
        if cpus and cpus.isdigit():  # where tasks are not pinned, torch would take every core of the node
            import torch

            torch.set_num_threads(int(cpus))
        handler = _install_stop_handler()
        dist = distributed.DistInfo()  # this task's rank once it has joined the job's process group

        def started(exp, joined):
            nonlocal dist
            dist = joined
            job = os.environ.get("SLURM_JOB_ID", "?")
            restarts = os.environ.get("SLURM_RESTART_COUNT", "0")
            print(f"rank {dist.rank}/{dist.world_size} on {os.uname().nodename}, Slurm job {job}, "
                  f"restart {restarts}", flush=True)
            if dist.is_main:
                exp.pm.register(_Progress(self.run_dir), name="slurm-progress")

        try:
            result, dist = execute_dir(self.run_dir, started=started)
        except distributed.Preempted as stop:
            _requeue(handler, dist, stop)
            raise  # not reached: _requeue exits or raises
        except Exception:
            if distributed.STOP.requested and not dist.is_main:
                # rank 0 requeued (or is requeueing) the job and left: collectives fail here.
                # Exit without a result file so the requeued job writes this task's result.
                print(f"rank {dist.rank}: stopping after the requeue signal", flush=True)
                raise SystemExit(-1) from None
            raise
        finally:
            distributed.STOP.reset()
        metrics = result["metrics"]
        if dist.is_main and metrics:
            print(f"finished at step {metrics['step']}: loss {metrics['loss']:.4f}", flush=True)
        return {"rank": dist.rank, "world_size": dist.world_size, "run_dir": self.run_dir,
                "metrics": metrics, "eval": result["eval"]}

    def __repr__(self) -> str:
        return f"RunJob({self.run_dir!r})"


def _install_stop_handler():
    """Replace submitit's preemption handler by one that defers to the training loop.

    Returns submitit's handler (called later, at a step boundary), or None when
    this process is not a submitit job (then nothing is installed).
    """
    from jepa_core.distributed import STOP

    STOP.reset()
    if os.environ.get("SUBMITIT_EXECUTOR") != "slurm":
        return None
    signum = getattr(signal, f"SIG{PREEMPT_SIGNAL}")
    submitit_handler = signal.getsignal(signum)
    if not callable(submitit_handler):
        return None

    def deferred(sig, frame):  # no printing here: the main thread may be inside a print
        if not STOP.enabled:  # the run is over (or already requeueing): nothing left to save
            return
        STOP.request(sig)
        if not STOP.polling:  # no training loop will look: let submitit requeue from the last checkpoint now
            submitit_handler(sig, frame)

    STOP.reset(enabled=True)
    signal.signal(signum, deferred)
    return submitit_handler


def _requeue(handler, dist, stop) -> None:
    """After the loop checkpointed and stopped: rank 0 lets submitit requeue, the others follow."""
    from jepa_core.distributed import STOP

    signum = STOP.signum or getattr(signal, f"SIG{PREEMPT_SIGNAL}")
    if dist.is_main:
        print(f"caught {signal.Signals(signum).name}: checkpoint written at step {stop.step}; "
              "asking submitit to requeue", flush=True)
        requeued = False
        try:
            handler(signum, None)  # calls self.checkpoint(), counts timeouts, scontrol requeue, sys.exit
        except SystemExit:
            requeued = True
            raise
        finally:
            # the others wait for this: with KillOnBadExit they must not exit before the requeue
            dist.broadcast_flag(requeued)
    else:
        requeued = dist.broadcast_flag(False)
        if requeued:
            print(f"rank {dist.rank}: job requeued by rank 0 at step {stop.step}; exiting", flush=True)
            raise SystemExit(-1)
        raise submitit.core.utils.UncompletedJobError(
            f"rank 0 did not requeue the job after step {stop.step} (see its log)")


# ---------------------------------------------------------------------- submission

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
    """Submit one run; returns the submitit Job (its logs are in ``run_dir/submitit``)."""
    from submitit.core.utils import FailedJobError

    config = _config(item)
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
    configs = [_config(item) for item, _ in items]
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

