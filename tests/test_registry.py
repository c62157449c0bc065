"""Registries: listing, creation with validated params, and helpful errors."""

import attrs
import pytest

from jepa_core.manager import get_registries
from jepa_core.registries import ComponentError, Registry, build_config
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
    reg = Registry("widgets")
    reg.current_plugin = "plugin_a"
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
    registry.current_plugin = "plugin_b"
    with pytest.raises(ComponentError, match="by plugin 'plugin_a' and by plugin 'plugin_b'"):
        registry.register("widget", Widget)


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
