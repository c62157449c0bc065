"""YAML -> :class:`jepa_core.schema.ExperimentConfig`, strictly.

``base: other.yaml`` (relative to the file) inherits; mappings merge key by
key and lists are replaced whole, except that a component given a new name
starts afresh (:func:`drop_renamed_params`). ``--set a.b.c=value`` overrides
with a YAML-typed value (``views.source.0.p=0.5`` indexes lists). Every error is a
:class:`ConfigError` naming the file the key came from, the dotted key and
what would be valid.

Loading, merging, overriding and structuring stay in one module (about 340
lines) because every step reads and writes the same origins map (dotted key ->
the file or ``--set`` it came from) that each error message needs.
"""

from __future__ import annotations

import copy
import types
import typing
from pathlib import Path
from typing import Any, Callable

import attrs
import yaml

from jepa_core import schema
from jepa_core.errors import UserError
from jepa_core.schema import Component, ExperimentConfig
from jepa_core.registries import did_you_mean

SET_ORIGIN = "--set"
SWEEP_KEY = "sweep"


class ConfigError(UserError, ValueError):
    """A one-line, user-facing config problem (the launcher exits 2 on it)."""


@attrs.define
class LoadedConfig:
    """A validated config plus where each key came from (for error messages)."""

    config: ExperimentConfig
    path: Path
    origins: dict[str, str]

    def origin(self, key: str) -> str:
        return origin_of(self.origins, key, str(self.path))

    def error(self, key: str, message: str) -> ConfigError:
        return ConfigError(f"{self.origin(key)}: {key}: {message}")


def origin_of(origins: dict[str, str], key: str, default: str) -> str:
    parts = key.split(".")
    while parts:
        found = origins.get(".".join(parts))
        if found:
            return found
        parts.pop()
    return default


# --------------------------------------------------------------------------- YAML

def _read_yaml(path: Path, referrer: str | None) -> dict[str, Any]:
    where = f"{referrer}: base" if referrer else str(path)
    if not path.is_file():
        raise ConfigError(f"{where}: file {str(path)!r} not found")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise ConfigError(f"{path}: unreadable YAML{at}: {problem}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys, got {type(data).__name__}")
    return data


def _record(origins: dict[str, str], data: Any, prefix: str, origin: str) -> None:
    if prefix:
        origins[prefix] = origin
    if isinstance(data, dict):
        for key, value in data.items():
            _record(origins, value, f"{prefix}.{key}" if prefix else str(key), origin)


def merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def load_raw(path: str | Path, origins: dict[str, str], _chain: tuple[Path, ...] = ()) -> dict[str, Any]:
    """The merged mapping of ``path`` and its ``base:`` chain, recording origins."""
    path = Path(path)
    referrer = str(_chain[-1]) if _chain else None
    data = _read_yaml(path, referrer)
    resolved = path.resolve()
    if resolved in _chain:
        raise ConfigError(f"{path}: base: inheritance cycle through {path}")
    base = data.pop("base", None)
    merged: dict[str, Any] = {}
    if base is not None:
        if not isinstance(base, str):
            raise ConfigError(f"{path}: base: must be a path to a YAML file, got {base!r}")
        merged = load_raw(path.parent / base, origins, _chain + (resolved,))
    _record(origins, data, "", str(path))
    out = merge(merged, data)
    drop_renamed_params(merged, out, origins, lambda origin: origin == str(path))
    return out


def drop_renamed_params(before: Any, after: Any, origins: dict[str, str], fresh: Callable[[str], bool],
                        tp: Any = ExperimentConfig, key: str = "") -> None:
    """Where ``after`` renames a component of ``before``, keep only the params from ``fresh`` origins.

    Params belong to the component they were written for: merged into another one
    they are errors (``shapes``' ``size`` for ``imagefolder``) or silently change it.
    Components are the schema's :class:`Component` fields, so ``name`` elsewhere
    (the experiment's, the timm encoder's) merges as before.
    """
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        drop_renamed_params(before, after, origins, fresh, _branch(typing.get_args(tp), after), key)
    elif tp is Component:
        old = before.get("name") if isinstance(before, dict) else before
        if isinstance(after, dict) and old is not None and after.get("name") != old:
            for param in [k for k in after if k != "name" and not fresh(origin_of(origins, f"{key}.{k}", ""))]:
                del after[param]
    elif attrs.has(tp) and isinstance(after, dict):
        hints = typing.get_type_hints(tp, vars(schema))
        for name, value in after.items():
            if name in hints:
                old = before.get(name) if isinstance(before, dict) else None
                drop_renamed_params(old, value, origins, fresh, hints[name], f"{key}.{name}" if key else name)
    elif typing.get_origin(tp) is list and isinstance(after, list):
        olds = before if isinstance(before, list) else []
        for i, value in enumerate(after):
            old = olds[i] if i < len(olds) else None
            drop_renamed_params(old, value, origins, fresh, typing.get_args(tp)[0], f"{key}.{i}")


def apply_override(data: dict[str, Any], assignment: str, origins: dict[str, str]) -> None:
    """Apply one ``a.b.c=value`` override in place."""
    key, sep, text = assignment.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"{SET_ORIGIN} {assignment!r}: expected KEY=VALUE, e.g. train.steps=30")
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        value = text
    parts = key.split(".")
    node: Any = data
    for i, part in enumerate(parts[:-1]):
        nxt = parts[i + 1]
        if isinstance(node, list):
            node = node[_list_index(node, part, key)]
            continue
        if part not in node or node[part] is None:
            node[part] = [] if nxt.isdigit() else {}
        elif isinstance(node[part], str) and not nxt.isdigit():
            node[part] = {"name": node[part]}  # a component given by name only
        node = node[part]
    last = parts[-1]
    if isinstance(node, list):
        node[_list_index(node, last, key)] = value
    elif isinstance(node, dict):
        node[last] = value
    else:
        raise ConfigError(f"{SET_ORIGIN} {key}: {'.'.join(parts[:-1])} is not a mapping")
    _record(origins, value, key, f"{SET_ORIGIN} {key}")


def _list_index(node: list, part: str, key: str) -> int:
    if not part.isdigit() or int(part) >= len(node):
        raise ConfigError(f"{SET_ORIGIN} {key}: {part!r} is not an index of a list of {len(node)}")
    return int(part)


# --------------------------------------------------------------------- structuring

class _Ctx:
    def __init__(self, origins: dict[str, str], default: str):
        self.origins = origins
        self.default = default

    def error(self, key: str, message: str) -> ConfigError:
        return ConfigError(f"{origin_of(self.origins, key, self.default)}: {key}: {message}")


def _describe(tp: Any) -> str:
    names = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}
    if tp in names:
        return names[tp]
    return getattr(tp, "__name__", str(tp))


def _structure(tp: Any, value: Any, key: str, ctx: _Ctx) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        return _structure(_branch(args, value), value, key, ctx)
    if tp is Component:
        return _component(value, key, ctx)
    if attrs.has(tp):
        return _structure_attrs(tp, value, key, ctx)
    if origin is list:
        if not isinstance(value, list):
            raise ctx.error(key, f"must be a list, got {value!r}")
        return [_structure(args[0], v, f"{key}.{i}", ctx) for i, v in enumerate(value)]
    if origin is tuple:
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            raise ctx.error(key, f"must be a list of {len(args)} values, got {value!r}")
        return tuple(_structure(a, v, f"{key}.{i}", ctx) for i, (a, v) in enumerate(zip(args, value)))
    if origin is dict:
        if not isinstance(value, dict):
            raise ctx.error(key, f"must be a mapping, got {value!r}")
        return dict(value)
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads 1e-3 as a string
            try:
                return float(value)
            except ValueError:
                pass
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif isinstance(value, tp):
        return value
    raise ctx.error(key, f"must be {_describe(tp)}, got {value!r}")


def _branch(args: tuple, value: Any) -> Any:
    """The type of a union that ``value`` is written as: the list one for a list, else the other."""
    inner = [a for a in args if a is not type(None)]
    lists = [a for a in inner if typing.get_origin(a) is list]
    if lists and len(inner) > 1:
        return lists[0] if isinstance(value, list) else next(a for a in inner if a not in lists)
    (only,) = inner
    return only


def _component(value: Any, key: str, ctx: _Ctx) -> Component:
    if isinstance(value, str):
        return Component(value)
    if isinstance(value, dict) and isinstance(value.get("name"), str):
        params = {k: v for k, v in value.items() if k != "name"}
        return Component(value["name"], params)
    raise ctx.error(key, f"must be a component name or a mapping with 'name', got {value!r}")


def _structure_attrs(cls: type, value: Any, key: str, ctx: _Ctx) -> Any:
    if value is None:
        value = {}
    if not isinstance(value, dict):
        raise ctx.error(key, f"must be a mapping, got {value!r}")
    hints = typing.get_type_hints(cls, vars(schema))
    fields = {f.name: f for f in attrs.fields(cls)}
    kwargs = {}
    for name, item in value.items():
        sub = f"{key}.{name}" if key else str(name)
        if name not in fields:
            valid = ", ".join(fields)
            raise ctx.error(sub, f"unknown key{did_you_mean(str(name), list(fields))}; valid keys here: {valid}")
        kwargs[name] = _structure(hints[name], item, sub, ctx)
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        field = next((a.name for a in exc.args[1:2] if hasattr(a, "name")), None)
        sub = f"{key}.{field}" if key and field else (field or key or "<top>")
        message = exc.args[0] if exc.args and isinstance(exc.args[0], str) else str(exc)
        raise ctx.error(sub, " ".join(message.split())) from None


# ------------------------------------------------------------------------- public

def _drops_sweep(assignment: str) -> bool:
    key, _, value = assignment.partition("=")
    return key.strip() == SWEEP_KEY and yaml.safe_load(value) is None


def sweep_dropped(overrides: list[str]) -> bool:
    """Whether ``--set sweep=null`` asks to run a sweep file's config once, without its sweep."""
    return any(_drops_sweep(a) for a in overrides)


def load_config(path: str | Path, overrides: list[str] = ()) -> LoadedConfig:
    """Load, merge, override and validate ``path``; raises :class:`ConfigError`."""
    origins: dict[str, str] = {}
    data = load_raw(path, origins)
    if SWEEP_KEY in data and not sweep_dropped(overrides):
        raise ConfigError(f"{path}: sweep: this file is a sweep; launch it with python -m jepa_core.launch "
                          "(or add --set sweep=null to run its config once)")
    data.pop(SWEEP_KEY, None)
    return resolve(data, origins, path, [a for a in overrides if not _drops_sweep(a)])


def resolve(data: dict[str, Any], origins: dict[str, str], path: str | Path,
            overrides: list[str] = ()) -> LoadedConfig:
    """Apply ``overrides`` to merged YAML ``data`` and validate it."""
    path = Path(path)
    merged = copy.deepcopy(data)
    origins = dict(origins)
    for assignment in overrides:
        apply_override(merged, assignment, origins)
    # all --sets are one layer: a param set beside a new name is kept in either order
    drop_renamed_params(data, merged, origins, lambda origin: origin.startswith(SET_ORIGIN))
    config = _structure_attrs(ExperimentConfig, merged, "", _Ctx(origins, str(path)))
    config.plugins = [_absolute_plugin(spec, origin_of(origins, f"plugins.{i}", str(path)))
                      for i, spec in enumerate(config.plugins)]
    loaded = LoadedConfig(config, path, origins)
    _check_patch_grid(loaded)
    return loaded


def _check_patch_grid(loaded: LoadedConfig) -> None:
    """The patch embedding would silently crop an image side its patches do not tile."""
    size, encoder = loaded.config.data.image_size, loaded.config.encoder
    patch = encoder.patch
    if patch and size % patch:
        below = size // patch * patch
        valid = f"{below} or {below + patch}" if below else str(patch)
        source = "encoder.patch_size" if encoder.patch_size else f"encoder.name {encoder.name}"
        raise loaded.error("data.image_size", f"{size} is not a multiple of the encoder's patch size {patch} "
                                              f"({source}); use a multiple such as {valid}")


def _absolute_plugin(spec: str, origin: str) -> str:
    """Plugin files are relative to the YAML naming them; keep them valid from anywhere."""
    if not (spec.endswith(".py") or "/" in spec) or Path(spec).is_absolute():
        return spec
    base = Path(origin).parent if not origin.startswith(SET_ORIGIN) else Path.cwd()
    return str((base / spec).resolve())


def to_dict(config: Any) -> Any:
    """Plain YAML-ready data for a config (components as ``{name, **params}``)."""
    if isinstance(config, Component):
        return config.to_yaml()
    if attrs.has(type(config)):
        return {f.name: to_dict(getattr(config, f.name)) for f in attrs.fields(type(config))}
    if isinstance(config, (list, tuple)):
        return [to_dict(v) for v in config]
    if isinstance(config, dict):
        return {k: to_dict(v) for k, v in config.items()}
    return config


def dump_yaml(config: ExperimentConfig) -> str:
    return yaml.safe_dump(to_dict(config), sort_keys=False)
