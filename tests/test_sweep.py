"""Sweeps and ablation tables: expansion, bad sweep blocks, aggregation over seeds."""

import json
import math

import pytest

from jepa_core.ablate import ablate, aggregate, collect, labelled_groups, scatter_axes
from jepa_core.config import ConfigError, load_config
from jepa_core.launch import main as launch
from jepa_core.rundir import RunDir, write_json
from jepa_core.sweep import expand, is_sweep, prepare, read_manifest


def _sweep(write, tiny_config, block: str):
    return write("sweep.yaml", f"base: {tiny_config}\nname: sw\n{block}")


def test_grid_zip_and_seeds_expand_to_named_members(write, tiny_config, tmp_path):
    path = _sweep(write, tiny_config, """
sweep:
  grid:
    conditioning.name: [none, feature]
  zip:
    predictor.depth: [1, 2]
    predictor.width: [32, 64]
  seeds: [0, 1]
""")
    members = expand(path, tmp_path / "out", ["views.source=[{name: grayscale}]"])
    assert len(members) == 2 * 2 * 2
    first = members[0]
    assert first.overrides == {"conditioning.name": "none", "predictor.depth": 1, "predictor.width": 32,
                               "train.seed": 0}
    assert first.name == "conditioning-none_predictor.depth-1_predictor.width-32_train.seed-0"
    assert first.loaded.config.predictor.params["width"] == 32
    assert first.loaded.config.views.source[0].name == "grayscale"  # --set applies to every member
    assert len({m.run_dir for m in members}) == 8


@pytest.mark.parametrize("block, expected", [
    ("sweep:\n  grid:\n    train.stpes: [1, 2]\n", "train.stpes: unknown key (did you mean 'steps'?)"),
    ("sweep:\n  grid: {}\n", "sweep.grid: must map dotted keys to non-empty lists"),
    ("sweep:\n  grid:\n    train.steps: []\n", "sweep.grid.train.steps: must be a non-empty list"),
    ("sweep:\n  zip:\n    predictor.depth: [1, 2]\n    predictor.width: [32]\n",
     "sweep.zip: lists must have one length (predictor.depth has 2, predictor.width has 1)"),
    ("sweep:\n  gird:\n    train.steps: [1]\n", "sweep.gird: unknown key (did you mean 'grid'?)"),
    ("sweep: {}\n", "sweep: must be a mapping with at least one of grid, zip, seeds"),
])
def test_bad_sweep_blocks_are_config_errors(write, tiny_config, tmp_path, block, expected):
    with pytest.raises(ConfigError, match=None) as info:
        expand(_sweep(write, tiny_config, block), tmp_path / "out")
    assert expected in str(info.value) and "\n" not in str(info.value)


def test_a_sweep_file_is_not_a_plain_config(write, tiny_config):
    with pytest.raises(ConfigError, match="this file is a sweep.*--set sweep=null"):
        load_config(_sweep(write, tiny_config, "sweep:\n  seeds: [0]\n"))


def test_set_sweep_null_launches_a_sweep_files_config_once(write, tiny_config, tmp_path):
    path = _sweep(write, tiny_config, "sweep:\n  grid:\n    conditioning.name: [none, feature]\n")
    assert is_sweep(path) and not is_sweep(path, ["sweep=null"]) and not is_sweep(path, ["sweep=~"])
    loaded = load_config(path, ["sweep=null", "conditioning.name=feature"])
    assert loaded.config.conditioning.name == "feature"
    assert launch([str(path), "--set", "sweep=null", "--set", "train.steps=1", "--output", str(tmp_path / "one")]) == 0
    assert RunDir(tmp_path / "one").state() == "finished" and not (tmp_path / "one" / "manifest.json").exists()


def _fake_finished(member, loss, metrics):
    member.run_dir.mkdir(parents=True, exist_ok=True)
    run = RunDir(member.run_dir)
    run.metrics.write_text(json.dumps({"step": 3, "loss": loss}) + "\n")
    write_json(run.eval, metrics)
    write_json(run.status, {"state": "finished", "step": 3})


def test_ablate_aggregates_seeds_and_lists_unfinished_members(write, tiny_config, tmp_path):
    path = _sweep(write, tiny_config, "sweep:\n  grid:\n    conditioning.name: [none, feature]\n  seeds: [0, 1]\n")
    sweep_dir = tmp_path / "sweep"
    members = expand(path, sweep_dir, ["views.source=[{name: grayscale}]"])
    prepare(members, sweep_dir, path)
    by_name = {m.name: m for m in members}
    _fake_finished(by_name["conditioning-none_train.seed-0"], 0.5, {"equivariance_mrr": {"mrr": 0.02},
                                                                     "linear_probe": {"top1": 0.6}})
    _fake_finished(by_name["conditioning-none_train.seed-1"], 0.7, {"equivariance_mrr": {"mrr": 0.04},
                                                                     "linear_probe": {"top1": 0.5}})
    _fake_finished(by_name["conditioning-feature_train.seed-0"], 0.4, {"equivariance_mrr": {"mrr": 0.8},
                                                                        "linear_probe": {"top1": 0.55}})
    paths = ablate(sweep_dir)
    rows = paths["csv"].read_text().splitlines()
    assert len(rows) == 1 + 4  # header + every member, the unfinished one included
    assert any("conditioning-feature_train.seed-1,pending" in r for r in rows)
    table = paths["md"].read_text()
    assert "| none | 0.600 ± 0.100 | 0.030 ± 0.010 | 0.550 ± 0.050 | 2/2 finished |" in table
    assert "conditioning-feature_train.seed-1 (pending)" in table
    assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [e["state"] for e in read_manifest(sweep_dir)["members"]].count("finished") == 3


def test_ablate_reports_the_standard_error_of_the_mean_over_seeds():
    rows = [{"member": f"m{s}", "state": "finished", "train.seed": s, "x": 1, "m": v}
            for s, v in enumerate((0.1, 0.2, 0.6))]
    (group,) = aggregate(rows, ["x", "train.seed"], ["m"])
    mean, stderr, n = group["m"]
    assert (mean, n) == (pytest.approx(0.3), 3) and stderr == pytest.approx(math.sqrt(0.07 / 3))  # not the spread


def test_ablate_names_groups_by_the_zip_label_and_the_grid_keys_beside_it():
    keys = ["label", "views.source.1.p", "predictor.depth", "train.seed"]
    rows = [{"member": f"{label}-{depth}-{seed}", "state": "finished", "label": label, "views.source.1.p": p,
             "predictor.depth": depth, "train.seed": seed, "m": 1.0}
            for label, p in (("jitter", 0.0), ("destructive", 0.2)) for depth in (1, 4) for seed in (0, 1)]
    assert [name for name, _ in labelled_groups(rows, keys, ["m"])] == [
        "jitter, predictor.depth=1", "jitter, predictor.depth=4",
        "destructive, predictor.depth=1", "destructive, predictor.depth=4"]
    one_depth = [r for r in rows if r["predictor.depth"] == 1]
    assert [name for name, _ in labelled_groups(one_depth, keys, ["m"])] == ["jitter", "destructive"]


def test_ablate_scatters_the_metrics_the_members_report(write, tiny_config, tmp_path):
    """No evaluator name is built into ablate: the scatter's axes come from the data or from --scatter."""
    path = _sweep(write, tiny_config, "sweep:\n  grid:\n    conditioning.name: [none, feature]\n")
    sweep_dir = tmp_path / "sweep"
    members = expand(path, sweep_dir, ["views.source=[{name: grayscale}]"])
    prepare(members, sweep_dir, path)
    for member, mrr in zip(members, (0.1, 0.7)):
        _fake_finished(member, 0.5, {"my_ranking": {"mrr": mrr, "chance": 0.05}, "my_probe": {"top1": 0.4}})
    rows, _, metrics = collect(sweep_dir)
    assert scatter_axes(rows, metrics) == ("my_probe.top1", "my_ranking.mrr")
    assert scatter_axes(rows, ["final_loss", "my_probe.top1"]) is None
    assert ablate(sweep_dir, ("final_loss", "my_ranking.mrr"))["png"].is_file()
    with pytest.raises(ConfigError, match="no member of .* reports 'linear_probe.top1'; metrics: final_loss, "):
        ablate(sweep_dir, ("linear_probe.top1", "my_ranking.mrr"))


def test_a_zip_label_names_members_and_sets_no_key(write, tiny_config, tmp_path):
    path = _sweep(write, tiny_config, """
sweep:
  zip:
    label: [small, wide]
    predictor.depth: [1, 2]
    predictor.width: [32, 64]
  seeds: [3]
""")
    members = expand(path, tmp_path / "out")
    assert [m.name for m in members] == ["small_train.seed-3", "wide_train.seed-3"]
    assert members[1].loaded.config.predictor.params["width"] == 64
    assert members[1].overrides["label"] == "wide"


def test_launch_refuses_a_bad_sweep_with_exit_2_before_running_anything(write, tiny_config, tmp_path, capsys):

    path = _sweep(write, tiny_config, "sweep:\n  grid:\n    predictor.dpth: [1, 2]\n")
    out = tmp_path / "never"
    assert launch([str(path), "--output", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert "predictor.dpth: predictors 'vit' has no parameter 'dpth'" in err and "\n" not in err
    assert not out.exists()


def test_a_file_based_on_a_sweep_is_a_sweep_with_its_settings(write, tiny_config, tmp_path, capsys):

    _sweep(write, tiny_config, "sweep:\n  grid:\n    predictor.depth: [1]\n")
    derived = write("mine.yaml", "base: sweep.yaml\nname: mine\ntrain: {steps: 2}\n")
    out = tmp_path / "out"
    assert launch([str(derived), "--output", str(out)]) == 0, capsys.readouterr()
    (member,) = read_manifest(out)["members"]
    assert member["state"] == "finished"
    assert load_config(f"{member['run_dir']}/config.yaml").config.train.steps == 2


def test_a_member_runs_the_config_its_run_directory_holds(tiny_config, tmp_path, capsys):
    """What a sweep runs for each member, ``python -m jepa_core.run RUN_DIR``: config.yaml, not the YAML file."""
    from jepa_core.run import main as run_member, write_config
    from helpers import read_metrics

    run_dir = tmp_path / "member"
    write_config(load_config(tiny_config, ["train.steps=3"]).config, run_dir)
    tiny_config.write_text("name: edited after the launch\n")
    assert run_member([str(run_dir)]) == 0
    assert [m["step"] for m in read_metrics(run_dir)] == [1, 2, 3]
    assert RunDir(run_dir).state() == "finished"
    assert "finished at step 3" in capsys.readouterr().out
    assert run_member([str(tmp_path / "not_a_run")]) == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_relaunch_skips_finished_members_and_finishes_unfinished_ones(write, tiny_config, tmp_path, capsys):

    path = _sweep(write, tiny_config, "train: {steps: 2, checkpoint_every: 2}\nsweep:\n  seeds: [0, 1]\n")
    out = tmp_path / "sweep"
    assert launch([str(path), "--parallel", "2", "--output", str(out)]) == 0
    members = {m["name"]: m for m in read_manifest(out)["members"]}
    assert {m["state"] for m in members.values()} == {"finished"} and len(members) == 2
    (out / "train.seed-0" / "status.json").unlink()  # as if the run had stopped after its last checkpoint
    finished = RunDir(out / "train.seed-1").checkpoint
    before = finished.stat().st_mtime_ns
    capsys.readouterr()
    assert launch([str(path), "--output", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "train.seed-1: finished already, skipped" in printed and "train.seed-0: starting" in printed
    assert finished.stat().st_mtime_ns == before
    assert {m["state"] for m in read_manifest(out)["members"]} == {"finished"}
