"""The generic name -> component registry every component kind uses.

Modelled on timm's ``create_model`` / ``list_models``: ``names()`` lists,
``create(name, *context, **params)`` builds, and a wrong name or parameter
answers with close matches instead of a KeyError.  Parameters a user can set
in YAML are validated by the component's attrs ``Config`` class; values the
engine supplies (sizes, modules) are passed positionally as ``context``.
"""

from __future__ import annotations

import copy
import difflib
import functools
from typing import Any, Callable, Iterator

import attrs


class ComponentError(ValueError):
    """A component name or parameter is wrong.

    ``key`` is the offending parameter (None when the name itself is wrong) so
    callers can prefix the YAML location.
    """

    def __init__(self, message: str, key: str | None = None):
        super().__init__(message)
        self.key = key


def did_you_mean(word: str, choices: list[str] | tuple[str, ...]) -> str:
    """' (did you mean X?)' for the closest choice, or '' when none is close."""
    close = difflib.get_close_matches(str(word), list(choices), n=3, cutoff=0.6)
    return f" (did you mean {' or '.join(repr(c) for c in close)}?)" if close else ""


@attrs.frozen
class Entry:
    """One registered component: how to build it and where it came from."""

    name: str
    factory: Callable[..., Any]
    config: type | None
    plugin: str
    description: str

    @property
    def component(self) -> Callable[..., Any]:
        """The class (or function) built: the factory, or the callable a ``functools.partial`` factory wraps."""
        return _component(self.factory)


def _component(factory: Callable[..., Any]) -> Callable[..., Any]:
    return factory.func if isinstance(factory, functools.partial) else factory


def _first_line(obj: Any) -> str:
    doc = (getattr(obj, "__doc__", None) or "").strip()
    return doc.splitlines()[0] if doc else ""


class Registry:
    """Name -> component factory for one kind (transformations, predictors, ...).

    ``plugin`` is whom entries registered through this object are attributed to:
    ``"<runtime>"`` for code that registers after start-up, a plugin's name in the
    view (:meth:`as_plugin`) its registration hook receives.
    """

    def __init__(self, kind: str, plugin: str = "<runtime>"):
        self.kind = kind
        self.plugin = plugin
        self._entries: dict[str, Entry] = {}

    def as_plugin(self, plugin: str) -> Registry:
        """A view sharing these entries that attributes what it registers to ``plugin``."""
        view = copy.copy(self)
        view.plugin = plugin
        return view

    def register(
        self,
        name: str,
        factory: Callable[..., Any],
        config: type | None = None,
        description: str | None = None,
    ) -> Callable[..., Any]:
        """Register ``factory`` under ``name``; a name taken by another plugin is an error.

        ``config`` defaults to ``factory.Config`` when the factory defines one,
        and the description to the first line of the factory's docstring. A
        ``functools.partial`` factory binds context known at registration (for
        example another registry); both defaults then come from the class it wraps.
        """
        component = _component(factory)
        if config is None:
            config = getattr(component, "Config", None)
        if name in self._entries:
            other = self._entries[name].plugin
            raise ComponentError(
                f"{self.kind} {name!r} is registered twice: by plugin {other!r} and by plugin {self.plugin!r}"
            )
        self._entries[name] = Entry(
            name, factory, config, self.plugin, description or _first_line(component)
        )
        return factory

    def names(self) -> list[str]:
        return sorted(self._entries)

    def entries(self) -> Iterator[Entry]:
        return (self._entries[n] for n in self.names())

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, name: str) -> Entry:
        try:
            return self._entries[name]
        except KeyError:
            raise ComponentError(
                f"unknown {self.kind} {name!r}{did_you_mean(name, self.names())}; "
                f"registered: {', '.join(self.names()) or '(none)'}"
            ) from None

    def config(self, name: str, **params: Any) -> Any:
        """Validate ``params`` against the component's attrs config and return it."""
        entry = self.get(name)
        if entry.config is None:
            if params:
                raise ComponentError(
                    f"{self.kind} {name!r} takes no parameters, got {', '.join(sorted(params))}",
                    key=sorted(params)[0],
                )
            return None
        return build_config(entry.config, params, f"{self.kind} {name!r}")

    def create(self, name: str, *context: Any, **params: Any) -> Any:
        """``factory(config, *context)``: the config is None for components without one."""
        return self.get(name).factory(self.config(name, **params), *context)


def build_config(cls: type, params: dict[str, Any], what: str) -> Any:
    """``cls(**params)`` with one-line errors that name the offending key."""
    fields = {f.name: f for f in attrs.fields(cls) if f.init}
    for key in params:
        if key not in fields:
            raise ComponentError(
                f"{what} has no parameter {key!r}{did_you_mean(key, list(fields))}; "
                f"valid: {', '.join(fields) or '(none)'}",
                key=key,
            )
    missing = [n for n, f in fields.items() if f.default is attrs.NOTHING and n not in params]
    if missing:
        raise ComponentError(f"{what} needs parameter {missing[0]!r}", key=missing[0])
    try:
        return cls(**params)
    except (TypeError, ValueError) as exc:
        key = _offending_key(exc, fields)
        raise ComponentError(f"{what}: {_one_line(exc)}", key=key) from None


def _offending_key(exc: Exception, fields: dict[str, Any]) -> str | None:
    # attrs validators pass the Attribute as the second arg; ours put the name in the text.
    for arg in getattr(exc, "args", ())[1:2]:
        name = getattr(arg, "name", None)
        if name in fields:
            return name
    text = str(exc)
    for name in fields:
        if f"'{name}'" in text:
            return name
    return None


def _one_line(exc: Exception) -> str:
    args = getattr(exc, "args", ())
    text = args[0] if args and isinstance(args[0], str) else str(exc)
    return " ".join(text.split())
