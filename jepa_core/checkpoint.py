"""Checkpoints and other run files, written so that a crash never leaves half a file.

Every write goes to a temporary name in the same directory, is fsynced and
then renamed over the old file, so ``checkpoints/latest.pt`` is always a
complete checkpoint (the previous one if the crash came mid-write).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

import torch

LATEST = "latest.pt"
FORMAT = 1


class CheckpointError(RuntimeError):
    """A checkpoint is missing, cut short or of another architecture; one line says which."""


def atomic_write(path: str | Path, write: Callable[[Any], None], mode: str = "wb") -> Path:
    """Write ``path`` through ``write(file)`` atomically (temp file, fsync, rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
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


def save(run_dir: str | Path, state: dict[str, Any]) -> Path:
    """Write ``state`` as the run's latest checkpoint."""
    state = {"format": FORMAT, **state}
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return atomic_write(checkpoint_dir(run_dir) / LATEST, lambda f: f.write(buffer.getbuffer()))


def load(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint on the CPU, with a one-line error when it is unusable."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
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
