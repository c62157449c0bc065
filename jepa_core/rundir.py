"""Run and sweep directories: the one place that names their files, and the writers that keep files whole.

The launcher, the training loop, evaluation, Slurm jobs, sweeps, the ablation
table and the loggers all read and write the same directories; naming each
file here keeps them agreeing on where things are.

Every write goes to a temporary name in the same directory, is fsynced and
then renamed over the old file, so a crash or a full disk mid-write leaves the
previous file whole (``checkpoints/latest.pt`` is always a complete
checkpoint). Plugins write their own artefacts (plots) through the same writers.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

import attrs

from jepa_core.errors import RunError


class WriteError(RunError):
    """A file could not be written (disk full, permissions); the previous file is intact."""


def atomic_write(path: str | Path, write: Callable[[Any], None], mode: str = "wb") -> Path:
    """Write ``path`` through ``write(file)`` atomically (temp file, fsync, rename).

    On any failure the temporary file is removed and ``path`` keeps its old
    content; an ``OSError`` (ENOSPC, EACCES, ...) becomes a one-line :class:`WriteError`.
    """
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, mode) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        if isinstance(exc, OSError):
            reason = errno.errorcode.get(exc.errno, "error") if exc.errno else type(exc).__name__
            raise WriteError(f"could not write {path}: {exc.strerror or exc} ({reason}); "
                             "the previous file, if any, is intact") from None
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return path


def write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda f: f.write(text), mode="w")


def write_json(path: str | Path, data: Any) -> Path:
    return write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


@attrs.frozen
class RunDir:
    """One run's directory (``runs/<name>/`` or ``--output``): where each of its files lives."""

    path: Path = attrs.field(converter=Path)

    @property
    def config(self) -> Path:
        """The resolved config; every later launch, worker and Slurm job re-loads it."""
        return self.path / "config.yaml"

    @property
    def status(self) -> Path:
        """``{"state": running | finished | failed, ...}`` and the first collapse alarm."""
        return self.path / "status.json"

    @property
    def metrics(self) -> Path:
        """One JSON line per log step, each appended with one ``write``."""
        return self.path / "metrics.jsonl"

    @property
    def precision(self) -> Path:
        """What ``train.precision`` resolved to, and the measurement behind it."""
        return self.path / "precision.json"

    @property
    def eval(self) -> Path:
        return self.path / "eval.json"

    @property
    def eval_random_init(self) -> Path:
        """The evaluators on the untrained architecture: the baseline ``eval.json`` must beat."""
        return self.path / "eval_random_init.json"

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def checkpoint(self) -> Path:
        """The checkpoint a relaunch resumes from (it may not be written yet)."""
        return self.checkpoints / "latest.pt"

    @property
    def lock(self) -> Path:
        """The ``flock`` of the run's live owner (:mod:`jepa_core.runlock`)."""
        return self.path / ".lock"

    @property
    def launch_log(self) -> Path:
        """The output of a sweep member run here."""
        return self.path / "launch.log"

    @property
    def submitit(self) -> Path:
        """submitit's pickles and logs of the run's Slurm job."""
        return self.path / "submitit"

    def latest_checkpoint(self) -> Path | None:
        return self.checkpoint if self.checkpoint.is_file() else None

    def state(self) -> str:
        """pending (nothing yet), started (checkpoint or metrics), finished or failed."""
        if self.status.is_file():
            return json.loads(self.status.read_text()).get("state", "unknown")
        if self.latest_checkpoint() or self.metrics.is_file():
            return "started"
        return "pending"


@attrs.frozen
class SweepDir:
    """A sweep's directory: a run directory per member, the manifest, and the ablation table and plots."""

    path: Path = attrs.field(converter=Path)

    @property
    def manifest(self) -> Path:
        """The members with their overrides, run directories and states."""
        return self.path / "manifest.json"

    @property
    def ablation_csv(self) -> Path:
        return self.path / "ablation.csv"

    @property
    def ablation_md(self) -> Path:
        return self.path / "ablation.md"

    @property
    def ablation_png(self) -> Path:
        return self.path / "ablation.png"

    @property
    def spectrum_png(self) -> Path:
        return self.path / "spectrum.png"

    @property
    def submitit(self) -> Path:
        """submitit's pickles and logs of the job array that runs the members."""
        return self.path / "submitit"

    def member(self, name: str) -> RunDir:
        return RunDir(self.path / name)
