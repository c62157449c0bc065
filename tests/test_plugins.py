"""Plugins: the documented example, an installed distribution, the autoload switch, wrong hookimpls."""

import json
import os
import re
import runpy
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import pytest
import yaml

from helpers import read_metrics, saved_files
from jepa_core.components import main as components
from jepa_core.config import load_config
from jepa_core.experiment import build_experiment
from jepa_core.launch import main as launch
from jepa_core.manager import AUTOLOAD_ENV

ROOT = Path(__file__).resolve().parents[1]


def _doc_example(tmp_path: Path, base: Path) -> tuple[Path, dict]:
    """docs/writing-a-plugin.md's plugin and the YAML naming it, saved side by side as the page says.

    The YAML's ``base:`` (a path from the repository root, where the page's
    my.yaml sits) is checked to exist, then swapped for ``base`` to train in seconds.
    """
    page = ROOT / "docs" / "writing-a-plugin.md"
    saved = saved_files(page)
    assert saved, "docs/writing-a-plugin.md has no code block after 'Save as `FILE`'"
    filename, code = next(iter(saved.items()))  # the plugin comes first
    experiment = next((doc for doc in map(yaml.safe_load, re.findall(r"```yaml\n(.*?)```", page.read_text(), re.S))
                       if filename in doc.get("plugins", [])), None)
    assert experiment, f"docs/writing-a-plugin.md has no YAML block naming {filename} in plugins:"
    (tmp_path / filename).write_text(code)
    assert (ROOT / experiment["base"]).is_file(), f"the page's base: {experiment['base']} does not exist"
    config = tmp_path / "my.yaml"
    config.write_text(yaml.safe_dump({**experiment, "base": base.name}, sort_keys=False))
    return config, experiment


@pytest.mark.parametrize("conditioning", ["sequence", "feature"])
def test_the_documented_plugin_adds_an_action_and_trains(tiny_config, tmp_path, conditioning):
    config, experiment = _doc_example(tmp_path, tiny_config)
    without = [op for op in experiment["views"]["source"] if op["name"] != "invert"]
    dims = [build_experiment(load_config(config, overrides)).views.action_dim
            for overrides in ([], [f"views.source={json.dumps(without)}"])]
    assert dims[0] == dims[1] + 1  # --dry-run reports an action dimension one larger
    run_dir = tmp_path / "run"
    assert launch([str(config), "--output", str(run_dir), "--set", f"conditioning.name={conditioning}",
                   "--set", "train.steps=4"]) == 0
    assert len(read_metrics(run_dir)) == 4


def _make_distribution(root: Path) -> None:
    """A minimal installed distribution with an entry point in the jepa_core group."""
    (root / "jepa_extra_plugin.py").write_text(textwrap.dedent('''
        import attrs
        from jepa_core import hookimpl
        from jepa_core.registries.conditioning import Conditioner

        class Constant(Conditioner):
            """Conditioning from an installed distribution (ignores the action)."""

        @hookimpl
        def jepa_register_conditioning(registry):
            registry.register("constant_from_dist", Constant)
    '''))
    dist_info = root / "jepa_extra-0.1.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: jepa-extra\nVersion: 0.1\n")
    (dist_info / "entry_points.txt").write_text("[jepa_core]\nextra = jepa_extra_plugin\n")
    (dist_info / "RECORD").write_text("")


def _list_plugins(path: Path, disable: bool) -> str:
    env = {**os.environ, "PYTHONPATH": str(path)}
    env.pop(AUTOLOAD_ENV, None)
    if disable:
        env[AUTOLOAD_ENV] = "1"
    done = subprocess.run([sys.executable, "-m", "jepa_core.components"], env=env, capture_output=True,
                          text=True, check=True)
    return done.stdout


def test_installed_distribution_is_found_and_autoload_switch_turns_it_off(tmp_path):
    _make_distribution(tmp_path)
    listed = _list_plugins(tmp_path, disable=False)
    assert "constant_from_dist" in listed and " extra " in listed
    disabled = _list_plugins(tmp_path, disable=True)
    assert "constant_from_dist" not in disabled
    assert "multiblock" in disabled  # built-ins still load


@pytest.mark.parametrize("module", ["jepa_core.components", "jepa_core.plugins"])
def test_listing_shows_kind_name_plugin_and_description(module, capsys, monkeypatch):
    monkeypatch.setattr(sys, "argv", [module])
    with warnings.catch_warnings(), pytest.raises(SystemExit) as done:  # ``python -m module``, in this process
        warnings.simplefilter("ignore", RuntimeWarning)  # runpy: the module was imported before
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    assert done.value.code in (0, None)
    lines = capsys.readouterr().out.splitlines()
    row = next(line for line in lines if " multiblock " in line)
    assert row.split()[:3] == ["transformations", "multiblock", "masking"]
    assert "I-JEPA" in row
    assert any(line.split()[:3] == ["environments", "moving_shapes", "video"] for line in lines)


def test_two_plugins_registering_one_name_is_an_error_naming_both(tiny_config, write, capsys):
    dup = write("dup.py", '''
        from jepa_core import hookimpl
        from jepa_core.registries.predictors import Predictor

        @hookimpl
        def jepa_register_predictors(registry):
            registry.register("vit", Predictor)
    ''')
    assert launch([str(tiny_config), "--dry-run", "--set", f"plugins=[{dup}]"]) == 2
    err = capsys.readouterr().err
    assert "'vit' is registered twice" in err and "'predictors'" in err and "dup.py" in err


MISSPELT_HOOK = """
    from jepa_core import hookimpl

    @hookimpl
    def jepa_register_transformation(registry):  # no s: a hook that does not exist
        pass
"""
WRONG_ARGUMENT = """
    from jepa_core import hookimpl

    @hookimpl
    def jepa_after_step(step, metric):  # the hookspec says metrics
        pass
"""


@pytest.mark.parametrize("cli", ["launch", "components"])
@pytest.mark.parametrize("source, expected", [
    (MISSPELT_HOOK, ["unknown hook 'jepa_register_transformation'",
                     "did you mean 'jepa_register_transformations'", "jepa_run_end"]),
    (WRONG_ARGUMENT, ["'jepa_after_step'", "{'metric'}"]),
], ids=["misspelt-hook", "wrong-argument"])
def test_a_wrong_hookimpl_is_a_one_line_error_at_start_up(tiny_config, write, capsys, cli, source, expected):
    bad = write("bad.py", source)
    if cli == "launch":
        config = write("exp.yaml", f"base: {tiny_config.name}\nplugins: [bad.py]\n")
        status = launch([str(config), "--dry-run"])
    else:
        status = components(["--plugin", str(bad)])
    err = capsys.readouterr().err
    assert status == 2 and err.count("\n") == 1 and err.startswith("error: ")
    assert str(bad) in err and all(part in err for part in expected), err
