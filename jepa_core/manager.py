"""The plugin manager: finds plugins and fills the registries from them.

Built-in plugins are entry points of the group ``jepa_core`` declared by the
jepa-core distribution itself; third-party distributions declare the same
group. ``JEPA_CORE_DISABLE_PLUGIN_AUTOLOAD=1`` keeps third-party entry points
out (as PYTEST_DISABLE_PLUGIN_AUTOLOAD does) while built-ins still load.
Extra plugins are named in YAML ``plugins:`` by module path or .py file path.
Once every plugin is registered, ``pm.check_pending()`` refuses a hookimpl
whose name no hookspec declares (a misspelt hook would never be called).
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
import importlib.util
import os
import sys
from pathlib import Path
from typing import Iterable

import pluggy

from jepa_core import PROJECT, hookspecs
from jepa_core.errors import UserError
from jepa_core.registries import KINDS, Registry, did_you_mean

ENTRY_POINT_GROUP = PROJECT
AUTOLOAD_ENV = "JEPA_CORE_DISABLE_PLUGIN_AUTOLOAD"
BUILTIN_DISTRIBUTION = "jepa-core"


class PluginLoadError(UserError, ImportError):
    """A plugin cannot be used: it fails to import or implements a hook wrongly; the message says which."""


class Registries:
    """One :class:`Registry` per component kind, filled by the registration hooks.

    Each plugin's ``jepa_register_<kind>`` is called through pluggy on its own
    (a subset hook caller without the other plugins), with a view of the
    registry that attributes what it registers to that plugin: the ``plugin``
    column of ``python -m jepa_core.components`` and both names in a
    duplicate-name error. Hook wrappers, tracing and monitoring see every call.
    """

    def __init__(self, pm: pluggy.PluginManager):
        self.pm = pm
        check_hooks(pm)
        for kind in KINDS:
            registry = Registry(kind)
            caller = getattr(pm.hook, f"jepa_register_{kind}")
            # plugin -> name, in pluggy's calling order; wrappers stay in every call
            plugins = {
                impl.plugin: impl.plugin_name
                for impl in reversed(caller.get_hookimpls())
                if not (impl.wrapper or impl.hookwrapper)
            }
            for plugin, name in plugins.items():
                others = [other for other in plugins if other is not plugin]
                pm.subset_hook_caller(caller.name, others)(registry=registry.as_plugin(name))
            setattr(self, kind, registry)

    def __iter__(self):
        return ((kind, getattr(self, kind)) for kind in KINDS)


def hook_names(pm: pluggy.PluginManager) -> list[str]:
    """Every hook a plugin may implement: the hook callers that have a hookspec."""
    return sorted(name for name, caller in vars(pm.hook).items() if caller.has_spec())


def check_hooks(pm: pluggy.PluginManager) -> None:
    """``pm.check_pending()`` as a one-line error naming the plugin, its unknown hook and the real ones."""
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        unknown = next(caller.name for caller in pm.get_hookcallers(exc.plugin) if not caller.has_spec())
        hooks = hook_names(pm)
        raise PluginLoadError(
            f"plugin {pm.get_name(exc.plugin)!r} implements unknown hook {unknown!r}"
            f"{did_you_mean(unknown, hooks)}; hooks: {', '.join(hooks)}"
        ) from None


def _register(pm: pluggy.PluginManager, plugin: object, name: str) -> None:
    """``pm.register`` with pluggy's multi-line validation error (it names the plugin
    and hook: a hookimpl argument the hookspec lacks, say) as one line."""
    try:
        pm.register(plugin, name=name)
    except pluggy.PluginValidationError as exc:
        raise PluginLoadError("; ".join(line.strip() for line in str(exc).splitlines())) from None


def _autoload_disabled() -> bool:
    return os.environ.get(AUTOLOAD_ENV, "").strip().lower() not in ("", "0", "false", "no")


def _load_entry_points(pm: pluggy.PluginManager) -> None:
    third_party_off = _autoload_disabled()
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        dist = getattr(ep, "dist", None)
        dist_name = (dist.metadata["Name"] if dist is not None else "") or ""
        builtin = dist_name.replace("_", "-").lower() == BUILTIN_DISTRIBUTION
        if third_party_off and not builtin:
            continue
        if pm.get_plugin(ep.name) is not None or pm.is_blocked(ep.name):
            continue
        try:
            plugin = ep.load()
        except Exception as exc:
            raise PluginLoadError(
                f"plugin {ep.name!r} (entry point {ep.value!r} of {dist_name or 'an unknown distribution'}) "
                f"failed to import: {type(exc).__name__}: {exc}"
            ) from exc
        _register(pm, plugin, ep.name)


def load_plugin(pm: pluggy.PluginManager, spec: str, base_dir: str | Path | None = None) -> str:
    """Register the plugin ``spec`` (a module path or a .py file) and return its name."""
    if spec.endswith(".py") or os.sep in spec or "/" in spec:
        path = Path(spec)
        if not path.is_absolute() and base_dir is not None:
            path = Path(base_dir) / path
        path = path.resolve()
        if not path.is_file():
            raise PluginLoadError(f"plugin file {spec!r} not found (looked at {path})")
        digest = hashlib.sha1(str(path).encode()).hexdigest()[:8]
        mod_name = f"jepa_plugin_{path.stem}_{digest}"
        module = sys.modules.get(mod_name)
        if module is None:
            module_spec = importlib.util.spec_from_file_location(mod_name, path)
            module = importlib.util.module_from_spec(module_spec)
            sys.modules[mod_name] = module
            try:
                module_spec.loader.exec_module(module)
            except Exception as exc:
                del sys.modules[mod_name]
                raise PluginLoadError(f"plugin file {spec!r} failed to import: {type(exc).__name__}: {exc}") from exc
        name = str(path)
    else:
        try:
            module = importlib.import_module(spec)
        except ImportError as exc:
            raise PluginLoadError(f"plugin module {spec!r} cannot be imported: {exc}") from exc
        name = spec
    if pm.get_plugin(name) is None and not pm.is_registered(module):
        _register(pm, module, name)
    return name


def get_plugin_manager(extra: Iterable[str] = (), base_dir: str | Path | None = None) -> pluggy.PluginManager:
    """A plugin manager with the hookspecs, entry-point plugins and ``extra`` plugins."""
    pm = pluggy.PluginManager(PROJECT)
    pm.add_hookspecs(hookspecs)
    _load_entry_points(pm)
    for spec in extra:
        load_plugin(pm, spec, base_dir)
    return pm


def get_registries(extra: Iterable[str] = (), base_dir: str | Path | None = None) -> Registries:
    """Registries filled from every plugin (entry points plus ``extra``)."""
    return Registries(get_plugin_manager(extra, base_dir))
