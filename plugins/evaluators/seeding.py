"""Seeds of the evaluators' random choices: a pure function of the run's seed and a tag.

Every random choice comes from a ``torch.Generator`` seeded with
``mix_seed(run.seed, tag, ...)``; module initialisations run under a forked RNG
seeded the same way, so an evaluator's metrics are a pure function of the run
and its seed.
"""

from __future__ import annotations

import contextlib
import zlib
from typing import Iterator

import torch

from jepa_core.api import mix_seed


def tag(name: str) -> int:
    """A stable integer for a string, to separate the random streams of evaluators."""
    return zlib.crc32(name.encode())


def generator(run, *parts: int | str) -> torch.Generator:
    """A CPU generator seeded from the run's seed and ``parts``."""
    ints = [tag(p) if isinstance(p, str) else int(p) for p in parts]
    return torch.Generator().manual_seed(mix_seed(int(run.seed), *ints))


@contextlib.contextmanager
def seeded(run, *parts: int | str) -> Iterator[None]:
    """Run the block (module initialisation) with the global RNGs seeded, then restore them."""
    ints = [tag(p) if isinstance(p, str) else int(p) for p in parts]
    devices = [run.device] if run.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(mix_seed(int(run.seed), *ints))
        yield
