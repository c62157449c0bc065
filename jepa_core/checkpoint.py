"""Checkpoints: written atomically, holding only what loads without running code.

They are written through :func:`jepa_core.rundir.atomic_write`, so the run's
checkpoint is always a complete one (the previous one if a crash or a full
disk came mid-write). They hold only tensors and plain containers and are read
with ``weights_only=True``: opening a run directory someone else wrote never
runs their code.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any

import torch

from jepa_core import rundir
from jepa_core.errors import RunError

FORMAT = 1


class CheckpointError(RunError):
    """A checkpoint is missing, cut short, unsafe or of another architecture; one line says which."""


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
    return rundir.atomic_write(rundir.RunDir(run_dir).checkpoint, lambda f: f.write(buffer.getbuffer()))


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
