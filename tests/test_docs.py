"""Docs stay in step with the code: every hook and every experiment is documented."""

import inspect
from pathlib import Path

from jepa_core import hookspecs

ROOT = Path(__file__).resolve().parents[1]


def _hook_names():
    return [name for name, fn in inspect.getmembers(hookspecs, inspect.isfunction) if name.startswith("jepa_")]


def test_every_hookspec_is_documented_with_its_signature():
    text = (ROOT / "docs" / "hooks.md").read_text()
    missing = [name for name in _hook_names() if f"`{name}(" not in text]
    assert not missing, f"docs/hooks.md does not document: {missing}"
    for name in _hook_names():
        params = list(inspect.signature(getattr(hookspecs, name)).parameters)
        assert f"`{name}({', '.join(params)})`" in text, f"docs/hooks.md has a stale signature for {name}"


def test_readme_commands_exist():
    readme = (ROOT / "README.md").read_text()
    assert "python -m jepa_core.launch experiments/quickstart.yaml" in readme
    assert "python -m pytest" in readme
