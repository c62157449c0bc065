"""Docs stay in step with the code: every hook and every config key is documented.

One test per hook and per key (datasette's style), so a failure names what is missing.
"""

import re
from pathlib import Path

import attrs
import pytest

from jepa_core.manager import get_plugin_manager, hook_names
from jepa_core.schema import Component, ExperimentConfig

ROOT = Path(__file__).resolve().parents[1]
PM = get_plugin_manager()


def _config_keys(cls: type, prefix: str = "") -> list[str]:
    """Dotted keys of the schema: sections are walked into, components and values are leaves."""
    keys = []
    for field in attrs.fields(attrs.resolve_types(cls)):
        key = prefix + field.name
        nested = attrs.has(field.type) and field.type is not Component
        keys += _config_keys(field.type, key + ".") if nested else [key]
    return keys


def _documented_keys() -> set[str]:
    """Every `code` span in the first column of a table in docs/configs.md."""
    first_cells = (line.split("|")[1] for line in (ROOT / "docs" / "configs.md").read_text().splitlines()
                   if line.startswith("|"))
    return {key for cell in first_cells for key in re.findall(r"`([^`]+)`", cell)}


@pytest.mark.parametrize("hook", hook_names(PM))
def test_hook_is_documented_with_its_signature(hook):
    args = ", ".join(getattr(PM.hook, hook).spec.argnames)
    assert f"`{hook}({args})`" in (ROOT / "docs" / "hooks.md").read_text(), \
        f"docs/hooks.md does not document `{hook}({args})`"


@pytest.mark.parametrize("key", _config_keys(ExperimentConfig))
def test_config_key_is_documented(key):
    assert key in _documented_keys(), f"docs/configs.md has no table row for `{key}`"


def test_readme_commands_exist():
    readme = (ROOT / "README.md").read_text()
    assert "python -m jepa_core.launch experiments/quickstart.yaml" in readme
    assert "python -m pytest" in readme
