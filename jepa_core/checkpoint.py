"""Checkpoints and other run files, written so that a crash never leaves half a file.

Every write goes to a temporary name in the same directory, is fsynced and
then renamed over the old file, so ``checkpoints/latest.pt`` is always a
complete checkpoint (the previous one if the crash or a full disk came
mid-write). Checkpoints hold only tensors and plain containers and are read
with ``weights_only=True``: opening a run directory someone else wrote never
runs their code.
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import os
import pickle
import tempfile
from pathlib import Path
from typing import Any, Callable

import torch

from jepa_core.errors import RunError

LATEST = "latest.pt"
FORMAT = 1


class CheckpointError(RunError):
    """A checkpoint is missing, cut short, unsafe or of another architecture; one line says which."""


class WriteError(RunError):
    """A run file could not be written (disk full, permissions); the previous file is intact."""


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


def checkpoint_dir(run_dir: str | Path) -> Path:
    return Path(run_dir) / "checkpoints"


def latest(run_dir: str | Path) -> Path | None:
    path = checkpoint_dir(run_dir) / LATEST
    return path if path.is_file() else None


_PLAIN = (torch.Tensor, int, float, bool, str, bytes, type(None))


def _check_plain(value: Any, key: str) -> None:
    """Refuse at save time what ``weights_only=True`` would refuse at load time."""
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, (str, int)):
                raise TypeError(f"checkpoint key {key}.{k!r} is a {type(k).__name__}; use str or int keys")
            _check_plain(v, f"{key}.{k}")
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            _check_plain(v, f"{key}[{i}]")
    elif not isinstance(value, _PLAIN):
        raise TypeError(f"checkpoint value {key} is a {type(value).__name__}; "
                        "checkpoints hold only tensors, numbers, strings and lists/dicts of them")


def save(run_dir: str | Path, state: dict[str, Any]) -> Path:
    """Write ``state`` (tensors and plain containers only) as the run's latest checkpoint."""
    state = {"format": FORMAT, **state}
    _check_plain(state, "state")
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return atomic_write(checkpoint_dir(run_dir) / LATEST, lambda f: f.write(buffer.getbuffer()))


def load(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint on the CPU without unpickling code, with a one-line error when it is unusable."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:  # what weights_only raises for anything but tensors and containers
        lines = [line.strip() for line in str(exc).splitlines()]
        what = next((line for line in lines if "GLOBAL" in line or "Unsupported" in line), "")
        raise CheckpointError(
            f"checkpoint {path} holds objects other than tensors and plain containers and was refused "
            f"without unpickling them, as they could run code{': ' + what if what else ''}"
        ) from None
    except Exception as exc:  # torch raises several types for a cut-short zip
        raise CheckpointError(f"checkpoint {path} is cut short or corrupt ({type(exc).__name__}); "
                              "delete it to restart, or restore a copy") from None


def load_modules(modules: dict[str, torch.nn.Module], state: dict[str, Any], source: str) -> None:
    """Load each module's state dict, refusing a checkpoint of another architecture."""
    for name, module in modules.items():
        if name not in state:
            raise CheckpointError(f"checkpoint {source} has no {name!r} weights")
        try:
            module.load_state_dict(state[name])
        except RuntimeError as exc:
            first = str(exc).strip().splitlines()
            detail = first[1].strip() if len(first) > 1 else first[0]
            raise CheckpointError(
                f"checkpoint {source} does not fit this config's {name} (another architecture?): {detail}"
            ) from None
