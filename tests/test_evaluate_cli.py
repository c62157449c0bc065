"""python -m jepa_core.evaluate: a run directory in, eval.json out; bad input is one line."""

import json

import pytest

from jepa_core.evaluate import main as evaluate
from jepa_core.launch import main as launch
from jepa_core.rundir import RunDir

FAST = "eval=[{name: knn, max_train: 64, max_val: 32, k: [1, 3]}]"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A 4-step tiny run with a kNN evaluator (I-JEPA views: no actions)."""
    from conftest import TINY
    import yaml

    root = tmp_path_factory.mktemp("evalrun")
    config = root / "tiny.yaml"
    config.write_text(yaml.safe_dump(TINY))
    run_dir = root / "run"
    assert launch([str(config), "--output", str(run_dir), "--set", "train.steps=4", "--set", FAST]) == 0
    return run_dir


def test_training_writes_eval_json_and_evaluate_reproduces_it(trained, capsys):
    first = json.loads(RunDir(trained).eval.read_text())
    assert set(first["knn"]) == {"top1_k1", "top1_k3"}
    assert evaluate([str(trained)]) == 0
    assert json.loads(RunDir(trained).eval.read_text()) == first  # same run, same seed, same metrics
    assert "knn" in capsys.readouterr().out


@pytest.mark.parametrize("case, expected", [
    ("no_config", "not a run directory (no config.yaml)"),
    ("no_checkpoint", "no checkpoint in"),
    ("needs_actions", "evaluator 'equivariance_mrr' needs actions and target_ops, which this run does not have; "
                      "add photometric ops to views.target"),
    ("other_architecture", "does not fit this config's encoder (another architecture?)"),
    ("cut_short", "is cut short or corrupt"),
    ("too_many_components", "eval: knn: 'drop_components' (64) must be under the 64 principal components"),
])
def test_bad_runs_are_one_line_errors_and_eval_json_is_untouched(trained, tmp_path, capsys, case, expected):
    run_dir = tmp_path / "copy"
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text((trained / "config.yaml").read_text())
    RunDir(run_dir).eval.write_text('{"previous": {"top1": 0.5}}\n')
    latest = RunDir(run_dir).checkpoint
    latest.parent.mkdir()
    latest.write_bytes(RunDir(trained).checkpoint.read_bytes())
    argv = [str(run_dir)]
    if case == "no_config":
        (run_dir / "config.yaml").unlink()
    elif case == "no_checkpoint":
        latest.unlink()
    elif case == "needs_actions":
        argv += ["--evaluator", "equivariance_mrr"]
    elif case == "other_architecture":
        argv += ["--set", "encoder.depth=3"]
    elif case == "cut_short":
        latest.write_bytes(latest.read_bytes()[:1000])
    elif case == "too_many_components":  # known only with the run's data and width: refused before extraction
        argv += ["--set", "eval=[{name: knn, max_train: 64, max_val: 32, drop_components: 64}]"]
    assert evaluate(argv) == 2
    err = capsys.readouterr().err.strip()
    assert expected in err and "\n" not in err and "Traceback" not in err, err
    assert RunDir(run_dir).eval.read_text() == '{"previous": {"top1": 0.5}}\n'


def test_eval_random_init_prints_the_untrained_baseline_beside_the_trained_figures(tmp_path, capsys):
    from conftest import TINY
    import yaml

    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump({**TINY, "eval_random_init": True}))
    run_dir = tmp_path / "run"
    assert launch([str(config), "--output", str(run_dir), "--set", "train.steps=4", "--set", FAST]) == 0
    out = capsys.readouterr().out
    header = next(line for line in out.splitlines() if line.startswith("evaluator"))
    assert header.split() == ["evaluator", "metric", "trained", "random", "init"]
    trained = json.loads(RunDir(run_dir).eval.read_text())
    untrained = json.loads(RunDir(run_dir).eval_random_init.read_text())
    assert set(untrained["knn"]) == set(trained["knn"])
    assert evaluate([str(run_dir), "--random-init"]) == 0  # the same baseline as the CLI's
    assert json.loads(RunDir(run_dir).eval_random_init.read_text()) == untrained
    row = next(line for line in out.splitlines() if line.startswith("knn") and "top1_k1" in line).split()
    assert float(row[2]) == pytest.approx(trained["knn"]["top1_k1"], abs=1e-4)
    assert float(row[3]) == pytest.approx(untrained["knn"]["top1_k1"], abs=1e-4)


def test_launch_refuses_an_evaluator_the_run_cannot_feed_before_training(tmp_path, capsys):
    from conftest import TINY
    import yaml

    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump({**TINY, "eval": [{"name": "equivariance_mrr"}]}))  # I-JEPA: no actions
    assert launch([str(config), "--output", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "eval.0.name" in err[0] and "needs actions" in err[0], err
    assert not (tmp_path / "run").exists()
