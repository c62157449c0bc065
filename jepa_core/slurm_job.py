"""Inside a Slurm job: :class:`RunJob` runs the run, and preemption waits for a step boundary.

Every task of the job calls :class:`RunJob`, which executes the run
directory (:func:`jepa_core.run.execute_dir`), resuming from its checkpoint
when there is one.

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

import os
import signal
from pathlib import Path
from typing import Any

import submitit
import submitit.helpers

from jepa_core import hookimpl
from jepa_core.slurm_params import PREEMPT_SIGNAL


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
