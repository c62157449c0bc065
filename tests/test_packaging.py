"""What pip sees of jepa-core: dependency bounds and the pinned install the README and CI use."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import zipfile
from importlib.metadata import requires

from conftest import ROOT


def test_torch_and_torchvision_have_lower_bounds_only():
    """An upper cap would make ``pip install jepa-core`` downgrade a newer torch (gigabytes, maybe the wrong CUDA)."""
    reqs = {re.match(r"[A-Za-z0-9_.-]+", r).group(0).lower(): r for r in requires("jepa-core") if "extra ==" not in r}
    for name in ("torch", "torchvision"):
        assert ">=" in reqs[name] and "<" not in reqs[name].replace(">=", ""), reqs[name]


def test_the_readme_and_ci_install_through_the_same_constraints_file():
    pins = (ROOT / ".ci" / "constraints.txt").read_text()
    assert re.search(r"^torch==\d", pins, re.M) and re.search(r"^torchvision==\d", pins, re.M)
    for text in ((ROOT / "README.md").read_text(), (ROOT / ".ci" / "run").read_text()):
        installs = [line for line in text.splitlines() if "pip install" in line and "-e" in line]
        assert installs and all("-c .ci/constraints.txt" in line for line in installs), installs


def test_the_wheel_installs_only_names_the_project_owns(tmp_path):
    """plugins/ and registries/ ship as jepa_core.plugins and jepa_core.registries, never top level."""
    source = tmp_path / "src"
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    for name in tracked.split():
        if name.startswith(("jepa_core/", "plugins/", "registries/")) or name in ("pyproject.toml", "README.md"):
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(ROOT / name, source / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                    "-w", str(tmp_path / "dist"), str(source)], check=True, capture_output=True)
    (wheel,) = (tmp_path / "dist").glob("jepa_core-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        (top_level,) = [n for n in names if n.endswith(".dist-info/top_level.txt")]
        assert archive.read(top_level).decode().split() == ["jepa_core"]
        entry_points = archive.read(top_level.replace("top_level.txt", "entry_points.txt")).decode()
    assert {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")} == {"jepa_core"}
    shipped = {n if n.startswith("jepa_core/") else f"jepa_core/{n}" for n in tracked.split()
               if n.startswith(("jepa_core/", "plugins/", "registries/")) and n.endswith(".py")}
    assert shipped and shipped <= set(names), sorted(shipped - set(names))  # every subpackage listed
    assert "masking = jepa_core.plugins.transformations.masking" in entry_points


def test_launch_works_beside_a_users_own_plugins_folder_and_registries_module(tmp_path):
    """``python -m`` puts the working directory first on sys.path; the user's names must not shadow ours."""
    (tmp_path / "plugins").mkdir()
    (tmp_path / "plugins" / "__init__.py").write_text("raise ImportError('the user folder was imported')\n")
    (tmp_path / "registries.py").write_text("raise ImportError('the user module was imported')\n")
    done = subprocess.run([sys.executable, "-m", "jepa_core.launch", str(ROOT / "experiments" / "quickstart.yaml"),
                           "--dry-run"], cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "token grid: 8x8" in done.stdout
