"""What pip sees of jepa-core: dependency bounds and the pinned install the README and CI use."""

from __future__ import annotations

import re
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
