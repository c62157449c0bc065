"""What every check shares: the error it raises, building a component as the engine does, seeded draws."""

from __future__ import annotations

import contextlib
import random
from typing import Any, Callable, Iterator

import numpy
import torch

from jepa_core.registries import Registry


class ContractError(AssertionError):
    """A component breaks a contract; the message names the component, the contract and the failing case.

    An AssertionError, so pytest shows it as a failed check, not as a crash.
    """


class Subject:
    """The component under check, so every failure names it the same way: ``kind 'name': what``."""

    def __init__(self, kind: str, name: str):
        self.kind, self.name = kind, name

    def fail(self, what: str) -> None:
        raise ContractError(f"{self.kind} {self.name!r}: {what}")

    def expect(self, ok: bool, what: str) -> None:
        if not ok:
            self.fail(what)


def create(kind: str, name: str, factory: Callable[..., Any], *context: Any, **params: Any) -> Any:
    """``factory`` built as YAML ``{name: ..., **params}`` builds it: params validated by its Config."""
    registry = Registry(kind)
    registry.register(name, factory)
    return registry.create(name, *context, **params)


@contextlib.contextmanager
def isolated_rngs() -> Iterator[None]:
    """Reseed the global RNGs inside the block and give the caller's states back after it."""
    states = random.getstate(), numpy.random.get_state()
    with torch.random.fork_rng(devices=[]):
        try:
            yield
        finally:
            random.setstate(states[0])
            numpy.random.set_state(states[1])


def draw_twice(draw: Callable[[torch.Generator], Any]) -> tuple[Any, Any, bool]:
    """``draw`` twice from a generator seeded 0, under two different global seeds (torch, random, numpy).

    Returns both results and whether a draw moved the global torch RNG. A draw
    that reads only its generator gives equal results and moves nothing: what
    makes a run a pure function of ``(seed, step)``.
    """
    results, moved = [], False
    with isolated_rngs():
        for global_seed in (1, 2):
            torch.manual_seed(global_seed)
            random.seed(global_seed)
            numpy.random.seed(global_seed)
            before = torch.get_rng_state()
            results.append(draw(torch.Generator().manual_seed(0)))
            moved = moved or not torch.equal(before, torch.get_rng_state())
    return results[0], results[1], moved


def max_abs_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    """Largest |a - b| (nan counts as infinite), compared on the CPU in float64."""
    diff = (a.detach().cpu().double() - b.detach().cpu().double()).abs().nan_to_num(nan=float("inf"))
    return diff.max().item() if diff.numel() else 0.0


def first_difference(actual: torch.Tensor, expected: torch.Tensor, atol: float) -> tuple[int, float] | None:
    """(first batch index whose max |difference| exceeds ``atol``, that difference), or None."""
    for i in range(expected.shape[0]):
        diff = max_abs_diff(actual[i], expected[i])
        if not diff <= atol:
            return i, diff
    return None


def unreached(named: Iterator[tuple[str, torch.nn.Parameter]]) -> list[str]:
    """Names of trainable parameters without a finite gradient after a backward pass."""
    return [name for name, p in named
            if p.requires_grad and (p.grad is None or not bool(torch.isfinite(p.grad).all()))]
