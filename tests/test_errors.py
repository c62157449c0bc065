"""User errors: one ``error:`` line and a documented exit status from every command-line tool, bugs untouched."""

import pytest

from jepa_core.ablate import main as ablate
from jepa_core.checkpoint import CheckpointError
from jepa_core.components import main as components
from jepa_core.config import ConfigError
from jepa_core.errors import RunError, cli
from jepa_core.evaluate import main as evaluate
from jepa_core.interop import main as interop
from jepa_core.manager import PluginLoadError
from jepa_core.runlock import RunDirBusy
from jepa_core.rundir import WriteError
from jepa_core.slurm import SlurmUnavailable, SubmissionError
from jepa_core.train import NonFiniteLoss


@pytest.mark.parametrize("error, status", [
    (ConfigError, 2), (PluginLoadError, 2), (RunDirBusy, 2), (SlurmUnavailable, 2), (SubmissionError, 2),
    (RunError, 1), (WriteError, 1), (CheckpointError, 1), (NonFiniteLoss, 1),
])
def test_a_user_error_is_one_line_and_its_exit_status(error, status, capsys):
    @cli
    def main():
        raise error("what went wrong; what to do")

    assert main() == status
    captured = capsys.readouterr()
    assert captured.err == "error: what went wrong; what to do\n" and captured.out == ""


def test_a_bug_keeps_its_traceback():
    @cli
    def main():
        raise KeyError("a bug")

    with pytest.raises(KeyError, match="a bug"):
        main()


@pytest.mark.parametrize("tool, argv, expected", [
    (ablate, ["{tmp}"], "not a sweep directory"),
    (evaluate, ["{tmp}"], "not a run directory"),
    (interop, ["export-timm", "{tmp}", "{tmp}/out.pth"], "not a run directory"),
    (components, ["--plugin", "no_such_plugin_module"], "cannot be imported"),
])
def test_every_tool_refuses_bad_input_with_one_line_and_status_2(tool, argv, expected, tmp_path, capsys):
    assert tool([arg.format(tmp=tmp_path) for arg in argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and expected in err and err.count("\n") == 1
