"""Registries: listing, creation with validated params, and helpful errors."""

import attrs
import pytest

from jepa_core import hookimpl
from jepa_core.manager import Registries, get_plugin_manager, get_registries, hook_names
from jepa_core.registries import KINDS, ComponentError, Registry, build_config
from jepa_core.registries.validators import positive_int


class Widget:
    """A widget for tests."""

    @attrs.frozen
    class Config:
        size: int = attrs.field(default=3, validator=positive_int)

    def __init__(self, config, extra=None):
        self.config, self.extra = config, extra


@pytest.fixture
def registry():
    reg = Registry("widgets", plugin="plugin_a")
    reg.register("widget", Widget)
    reg.register("gadget", Widget, description="A gadget.")
    return reg


def test_names_and_create_pass_params_and_context(registry):
    assert registry.names() == ["gadget", "widget"]
    built = registry.create("widget", "ctx", size=5)
    assert built.config.size == 5 and built.extra == "ctx"
    assert [e.description for e in registry.entries()] == ["A gadget.", "A widget for tests."]


def test_unknown_name_lists_close_matches_and_everything(registry):
    with pytest.raises(ComponentError) as info:
        registry.create("widgte")
    message = str(info.value)
    assert "did you mean 'widget'" in message and "registered: gadget, widget" in message


def test_unknown_and_invalid_params_name_the_key(registry):
    with pytest.raises(ComponentError) as info:
        registry.create("widget", sise=4)
    assert info.value.key == "sise" and "did you mean 'size'" in str(info.value)
    with pytest.raises(ComponentError) as info:
        registry.create("widget", size=0)
    assert info.value.key == "size" and ">= 1" in str(info.value)


def test_duplicate_name_names_both_plugins(registry):
    with pytest.raises(ComponentError, match="by plugin 'plugin_a' and by plugin 'plugin_b'"):
        registry.as_plugin("plugin_b").register("widget", Widget)


def test_a_plugin_view_shares_the_entries_and_attributes_to_its_plugin(registry):
    registry.as_plugin("plugin_b").register("gizmo", Widget)
    assert "gizmo" in registry and registry.get("gizmo").plugin == "plugin_b"
    assert registry.get("widget").plugin == "plugin_a"


def test_build_config_requires_missing_fields():
    @attrs.frozen
    class Needs:
        root: str

    with pytest.raises(ComponentError) as info:
        build_config(Needs, {}, "dataset 'x'")
    assert info.value.key == "root"


def test_builtins_are_loaded_as_entry_point_plugins():
    registries = get_registries()
    assert {"multiblock", "color_jitter"} <= set(registries.transformations.names())
    assert {"none", "sequence", "feature"} <= set(registries.conditioning.names())
    assert registries.predictors.get("vit").plugin == "predictors"
    assert "shapes" in registries.datasets.names()


def test_every_kind_has_a_registration_hook_and_every_registration_hook_a_kind():
    registration = {name for name in hook_names(get_plugin_manager()) if name.startswith("jepa_register_")}
    assert registration == {f"jepa_register_{kind}" for kind in KINDS}


def test_registration_hooks_are_called_through_pluggy_one_plugin_per_call():
    """A wrapper sees each plugin's call with that plugin's view: tracing and wrappers work on registration."""
    pm = get_plugin_manager()
    calls = []

    class Watcher:
        @hookimpl(wrapper=True)
        def jepa_register_predictors(self, registry):
            before = set(registry.names())
            result = yield
            calls.append((registry.plugin, set(registry.names()) - before))
            return result

    pm.register(Watcher(), name="watcher")
    traced = []
    pm.add_hookcall_monitoring(lambda name, impls, kwargs: traced.append(name), lambda *args: None)
    predictors = Registries(pm).predictors
    assert {f"jepa_register_{kind}" for kind in KINDS} <= set(traced)
    assert "watcher" not in {plugin for plugin, _ in calls}  # a wrapper wraps the plugins, it is not one of them
    assert {name: plugin for plugin, names in calls for name in names} == {e.name: e.plugin for e in predictors.entries()}
    assert ("predictors", {"vit"}) in calls
