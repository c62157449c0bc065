"""One live owner per run directory: an advisory ``flock`` on ``run_dir/.lock``.

The kernel drops an ``flock`` when its holder dies, however it dies (SIGKILL,
OOM killer, reboot), so a lock left by a dead process is simply taken over:
there is no stale-pid guessing. The file also records who holds it (pid,
host, Slurm job), which a refused launch prints. A requeued Slurm job starts
after the old process has exited and so finds the lock free, like any
relaunch. Shared filesystems need working ``flock`` (local disks, NFSv4,
Lustre mounted with ``flock``, GPFS); where it is unsupported the run goes on
unguarded with a warning rather than refusing to train.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import sys
import time
from pathlib import Path

from jepa_core.errors import UserError
from jepa_core.rundir import RunDir


class RunDirBusy(UserError):
    """Another live process owns the run directory."""


def _holder(path: Path) -> str:
    try:
        info = json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        info = {}
    who = f"pid {info.get('pid', '?')} on host {info.get('host', '?')}"
    if info.get("slurm_job"):
        who += f" (Slurm job {info['slurm_job']})"
    return who


class RunLock:
    """Hold ``run_dir``'s lock for the life of this object's ``with`` block (or until :meth:`release`)."""

    def __init__(self, run_dir: str | Path):
        self.path = RunDir(run_dir).lock
        self._fd: int | None = None

    def acquire(self) -> "RunLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise RunDirBusy(
                    f"{self.path.parent}: run directory in use by {_holder(self.path)}; "
                    "wait for it to finish, stop it, or pass another --output"
                ) from None
            print(f"warning: {self.path}: cannot lock ({exc.strerror}); "
                  "nothing stops a second launch into this run directory", file=sys.stderr)
            return self
        job = os.environ.get("SLURM_JOB_ID")
        if job and os.environ.get("SLURM_ARRAY_TASK_ID"):
            job = f"{os.environ.get('SLURM_ARRAY_JOB_ID', job)}_{os.environ['SLURM_ARRAY_TASK_ID']}"
        record = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.time(), "slurm_job": job}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(record) + "\n").encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the flock; the file stays as a record
            self._fd = None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def check_free(run_dir: str | Path) -> None:
    """Raise :class:`RunDirBusy` when a live process owns ``run_dir`` (probing, holding nothing)."""
    if RunDir(run_dir).lock.exists():
        RunLock(run_dir).acquire().release()
