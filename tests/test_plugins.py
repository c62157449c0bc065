"""Plugins: a .py file named in YAML, an installed distribution, the autoload switch."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from helpers import read_metrics
from jepa_core.components import main as components
from jepa_core.config import load_config
from jepa_core.experiment import build_experiment
from jepa_core.launch import main as launch
from jepa_core.manager import AUTOLOAD_ENV

# The docs/writing-a-plugin.md example, verbatim in spirit: a new photometric action.
INVERT_PLUGIN = '''
"""Invert colours with probability p: a photometric action the project does not ship."""
import json, os
import attrs
import torch
from jepa_core import hookimpl
from jepa_core.registries.transformations import Transformation
from jepa_core.registries.validators import probability


class Invert(Transformation):
    """Invert the colours of an image (x -> 1 - x)."""

    action_dim = 1          # one entry in the action vector...
    encoding = "flag"       # ...+1 when the source is inverted and the target is not

    @attrs.frozen
    class Config:
        p: float = attrs.field(default=0.5, validator=probability)

    def identity(self, batch_size):
        return {}

    def sample_applied(self, batch_size, generator):
        return {}

    def apply(self, images, params):
        flip = params["applied"].to(images.device).view(-1, 1, 1, 1)
        return torch.where(flip, 1.0 - images, images)


@hookimpl
def jepa_register_transformations(registry):
    registry.register("invert", Invert)


@hookimpl
def jepa_after_step(step, metrics):
    with open(os.environ["SEEN_STEPS"], "a") as f:
        f.write(json.dumps(step) + "\\n")
'''


def _iwm_overrides(plugin: Path, conditioning: str) -> list[str]:
    return ["--set", f"plugins=[{plugin}]",
            "--set", "views.source=[{name: grayscale, p: 0.5}, {name: invert, p: 0.5}]",
            "--set", f"conditioning.name={conditioning}", "--set", "train.steps=4"]


@pytest.mark.parametrize("conditioning", ["sequence", "feature"])
def test_yaml_named_plugin_adds_an_action_and_a_runtime_hook(tiny_config, tmp_path, write, monkeypatch,
                                                             conditioning):
    plugin = write("invert_plugin.py", INVERT_PLUGIN)
    seen = tmp_path / "seen.txt"
    monkeypatch.setenv("SEEN_STEPS", str(seen))
    without = load_config(tiny_config, ["views.source=[{name: grayscale, p: 0.5}]"])
    args = _iwm_overrides(plugin, conditioning)
    with_invert = load_config(tiny_config, [a for a in args if a != "--set"])
    assert build_experiment(with_invert).views.action_dim == build_experiment(without).views.action_dim + 1
    run_dir = tmp_path / "run"
    assert launch([str(tiny_config), "--output", str(run_dir)] + args) == 0
    assert seen.read_text().split() == ["1", "2", "3", "4"]  # the runtime hook ran every step
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


def test_listing_shows_kind_name_plugin_and_description():
    done = subprocess.run([sys.executable, "-m", "jepa_core.components"], capture_output=True, text=True, check=True)
    row = next(line for line in done.stdout.splitlines() if " multiblock " in line)
    assert row.split()[:3] == ["transformations", "multiblock", "masking"]
    assert "I-JEPA" in row


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
