"""attrs validators for component configs, with messages that name the key."""

from __future__ import annotations

import math
from typing import Any


def _number(attribute: Any, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"'{attribute.name}' must be a number, got {value!r}", attribute)
    if math.isnan(value):
        raise ValueError(f"'{attribute.name}' must be a number, got nan", attribute)
    return float(value)


def probability(instance: Any, attribute: Any, value: Any) -> None:
    if not 0.0 <= _number(attribute, value) <= 1.0:
        raise ValueError(f"'{attribute.name}' is a probability and must be in [0, 1], got {value!r}", attribute)


def non_negative(instance: Any, attribute: Any, value: Any) -> None:
    if _number(attribute, value) < 0:
        raise ValueError(f"'{attribute.name}' must be >= 0, got {value!r}", attribute)


def positive(instance: Any, attribute: Any, value: Any) -> None:
    if _number(attribute, value) <= 0:
        raise ValueError(f"'{attribute.name}' must be > 0, got {value!r}", attribute)


def positive_int(instance: Any, attribute: Any, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"'{attribute.name}' must be an integer >= 1, got {value!r}", attribute)


def in_range(low: float, high: float):
    """Closed interval [low, high]."""

    def check(instance: Any, attribute: Any, value: Any) -> None:
        if not low <= _number(attribute, value) <= high:
            raise ValueError(f"'{attribute.name}' must be in [{low}, {high}], got {value!r}", attribute)

    return check


def interval(low: float, high: float):
    """A pair (a, b) with low <= a <= b <= high, given as a list in YAML."""

    def check(instance: Any, attribute: Any, value: Any) -> None:
        if not isinstance(value, (list, tuple)) or len(value) != 2:
            raise ValueError(f"'{attribute.name}' must be a pair [min, max], got {value!r}", attribute)
        a, b = (_number(attribute, v) for v in value)
        if not low <= a <= b <= high:
            raise ValueError(
                f"'{attribute.name}' must be [min, max] with {low} <= min <= max <= {high}, got {list(value)!r}",
                attribute,
            )

    return check


def positive_interval(high: float):
    """A pair (a, b) with 0 < a <= b <= high: a zero scale or aspect makes an empty mask block."""
    pair = interval(0.0, high)

    def check(instance: Any, attribute: Any, value: Any) -> None:
        pair(instance, attribute, value)
        if value[0] <= 0:
            raise ValueError(f"'{attribute.name}' must be [min, max] with 0 < min, got {list(value)!r}", attribute)

    return check


def one_of(*choices: str):
    def check(instance: Any, attribute: Any, value: Any) -> None:
        if value not in choices:
            raise ValueError(
                f"'{attribute.name}' must be one of {', '.join(map(repr, choices))}, got {value!r}", attribute
            )

    return check


def as_pair(value: Any) -> Any:
    """Converter: YAML lists become tuples so configs stay hashable."""
    return tuple(value) if isinstance(value, list) else value


def non_negative_int(instance: Any, attribute: Any, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"'{attribute.name}' must be an integer >= 0, got {value!r}", attribute)


def positive_int_list(instance: Any, attribute: Any, value: Any) -> None:
    """A non-empty list of integers >= 1 (for example probe widths or k values)."""
    if not isinstance(value, (list, tuple)) or not value or any(
            isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in value):
        raise ValueError(f"'{attribute.name}' must be a non-empty list of integers >= 1, got {value!r}", attribute)
