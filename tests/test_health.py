"""Training-health monitors: the metrics' definitions, the collapse alarm, and the online probe."""

from __future__ import annotations

import json
import math

import pytest
import torch
import yaml

from conftest import TINY
from helpers import read_metrics
from jepa_core import launch
from jepa_core.health import alarms, feature_std, knn_accuracy, rankme
from jepa_core.schema import HealthConfig

HEALTH_KEYS = {"rankme", "feature_std", "feature_std_ratio", "pred_target_cos"}


def test_rankme_is_one_when_collapsed_and_near_the_dimension_when_isotropic():
    g = torch.Generator().manual_seed(0)
    assert rankme(torch.ones(256, 64)) == pytest.approx(1.0, abs=1e-3)
    assert rankme(torch.randn(256, 1, generator=g) * torch.randn(1, 64, generator=g)) == pytest.approx(1.0, abs=1e-3)
    iso = rankme(torch.randn(4096, 64, generator=g))
    assert 0.95 * 64 < iso <= 64
    assert rankme(torch.randn(4096, 8, generator=g) @ torch.randn(8, 64, generator=g)) < 8.5  # rank 8


def test_feature_std_is_zero_when_collapsed_and_one_over_sqrt_d_when_spread():
    g = torch.Generator().manual_seed(0)
    assert feature_std(torch.ones(128, 32) * 3) == 0.0
    assert feature_std(torch.randn(8192, 32, generator=g)) == pytest.approx(1 / math.sqrt(32), rel=0.02)


def test_knn_accuracy_reads_a_separable_label_and_not_a_random_one():
    g = torch.Generator().manual_seed(0)
    y = torch.arange(200) % 4
    centres = torch.randn(4, 16, generator=g) * 4
    x = centres[y] + torch.randn(200, 16, generator=g)
    assert knn_accuracy(x[:150], y[:150], x[150:], y[150:], k=5) == 1.0
    shuffled = y[torch.randperm(200, generator=g)]
    assert knn_accuracy(x[:150], shuffled[:150], x[150:], shuffled[150:], k=5) < 0.5


def _launch(tmp_path, capsys, **sections) -> tuple[int, list[str]]:
    base = {**TINY, "health": {}}  # every log step, as by default
    config = {**base, **{k: {**base.get(k, {}), **v} if isinstance(v, dict) else v for k, v in sections.items()}}
    path = tmp_path / "health.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    code = launch.main([str(path), "--output", str(tmp_path / "run")])
    return code, capsys.readouterr().err.strip().splitlines()


def test_a_healthy_run_logs_the_monitors_at_every_log_step_and_raises_no_alarm(tmp_path, capsys):
    code, err = _launch(tmp_path, capsys, train={"steps": 12, "log_every": 3})
    assert code == 0, err
    metrics = read_metrics(tmp_path / "run")
    assert [m["step"] for m in metrics] == [3, 6, 9, 12]
    for m in metrics:
        assert HEALTH_KEYS <= m.keys() and all(math.isfinite(m[k]) for k in HEALTH_KEYS)
        assert m["rankme"] > 2 and m["feature_std_ratio"] > 0.2
    assert not any("collapse" in line for line in err)
    assert "collapse" not in json.loads((tmp_path / "run" / "status.json").read_text())


def test_a_clip_run_logs_the_same_monitors(tiny_clip_config, tmp_path, capsys):
    """ac_vit on moving_shapes clips: the monitors read its frame features as an image run's."""
    sets = ["health.every=null", "train.steps=6", "train.log_every=3"]  # null: every log step
    assert launch.main([str(tiny_clip_config), "--output", str(tmp_path / "run"),
                        *[arg for value in sets for arg in ("--set", value)]]) == 0
    metrics = read_metrics(tmp_path / "run")
    assert [m["step"] for m in metrics] == [3, 6]
    for m in metrics:
        assert HEALTH_KEYS <= m.keys() and all(math.isfinite(m[k]) for k in HEALTH_KEYS)
        assert m["rankme"] > 2 and m["feature_std_ratio"] > 0.2
    assert "collapse" not in capsys.readouterr().err


def test_a_collapsing_run_raises_the_alarm_within_its_first_log_steps(tmp_path, capsys, write):
    seen = tmp_path / "hook.json"
    # The target replaced by a constant: the target encoder maps every image to one point. An
    # absurd learning rate collapses a run too (docs/health.md), but whether the alarm or a
    # non-finite loss comes first depends on the CPU (lr 20 in fp32: alarm at step 6 and 20
    # finite steps on an AMX Xeon; alarm at step 4 and a non-finite loss at step 6 on an AMD
    # EPYC), so that cannot be a test.
    plugin = write("collapse.py", f"""
        import json

        import torch

        from jepa_core.api import gather_tokens, hookimpl
        from plugins.jepa.targets import EMATarget

        class Constant(torch.nn.Module):
            \"\"\"The EMA encoder's features times zero, plus one: no image differs from another.\"\"\"

            def __init__(self, encoder):
                super().__init__()
                self._encoder = [encoder]  # a list: the target's own, not a second registration

            def forward(self, images):
                return self._encoder[0](images) * 0.0 + 1.0

        class ConstantTarget(EMATarget):
            \"\"\"The EMA target whose features (trained on and monitored) are that constant.\"\"\"

            def __init__(self, config, encoder, predictor=None):
                super().__init__(config, encoder, predictor)
                self.constant = Constant(self.encoder)

            @torch.no_grad()
            def forward(self, images, target_idx):
                return gather_tokens(self.constant(images), target_idx)

            def target_encoder(self, online):
                return self.constant

        @hookimpl
        def jepa_register_targets(registry):
            registry.register("constant", ConstantTarget)

        @hookimpl
        def jepa_on_collapse(step, health, reasons):
            with open({str(seen)!r}, "a") as f:
                f.write(json.dumps({{"step": step, "reasons": reasons}}) + "\\n")
        """)
    code, err = _launch(tmp_path, capsys, target={"name": "constant"},
                        train={"steps": 6, "log_every": 2}, plugins=[str(plugin)])
    assert code == 0, err
    alarms = [line for line in err if "collapse alarm" in line]
    assert alarms == ["warning: collapse alarm at step 2: rankme 1.00 < health.rankme_min 2.0; "
                      "feature_std*sqrt(D) 0.000 < health.feature_std_min 0.05 (docs/health.md)"], err
    calls = [json.loads(line) for line in seen.read_text().splitlines()]
    assert [c["step"] for c in calls] == [2] and len(calls[0]["reasons"]) == 2
    status = json.loads((tmp_path / "run" / "status.json").read_text())
    assert status["state"] == "finished" and status["collapse"]["step"] == 2


def test_embeddings_that_are_not_finite_raise_the_alarm_not_an_error():
    """Diverged weights: the SVD would raise; RankMe is NaN and the alarm names the cause."""
    z = torch.randn(64, 16)
    z[3, 2] = math.inf
    assert math.isnan(rankme(z)) and math.isnan(feature_std(z))
    metrics = {"rankme": rankme(z), "feature_std_ratio": feature_std(z) * 4}
    assert alarms(metrics, HealthConfig())[0] == "the held-out embeddings are not finite (the weights diverged)"
    z[3, 2] = 0.0
    assert alarms({"rankme": rankme(z), "feature_std_ratio": feature_std(z) * 4}, HealthConfig()) == []


def test_monitors_off_log_nothing_extra(tmp_path, capsys):
    code, err = _launch(tmp_path, capsys, train={"steps": 4, "log_every": 2}, health={"every": 0})
    assert code == 0, err
    assert not HEALTH_KEYS & read_metrics(tmp_path / "run")[0].keys()


def test_the_online_probe_reads_a_labelled_task(tmp_path, capsys):
    code, err = _launch(tmp_path, capsys, train={"steps": 4, "log_every": 2},
                        health={"probe_every": 4, "probe_task": "colour", "probe_train": 64, "probe_val": 32})
    assert code == 0, err
    metrics = read_metrics(tmp_path / "run")
    assert "probe_knn" not in metrics[0] and 0.0 <= metrics[1]["probe_knn"] <= 1.0


@pytest.mark.parametrize("health, key, says", [
    ({"probe_every": 2, "probe_task": "texture"}, "health.probe_task", "no labelled task 'texture'"),
    ({"probe_every": 2, "every": 0}, "health.probe_every", "health.every is 0"),
])
def test_bad_health_config_is_one_line_before_training(tmp_path, capsys, health, key, says):
    code, err = _launch(tmp_path, capsys, train={"log_every": 2}, health=health)
    assert code == 2 and len(err) == 1 and key in err[0] and says in err[0], err
    assert not (tmp_path / "run").exists()


def test_a_probe_on_a_dataset_without_labels_is_a_config_error(tmp_path, capsys, write):
    plugin = write("unlabelled.py", """
        import torch
        from jepa_core import hookimpl

        class Unlabelled(torch.utils.data.Dataset):
            num_classes = 0

            def __init__(self, config=None, split="train"):
                pass
            def __len__(self):
                return 64
            def __getitem__(self, i):
                return torch.zeros(3, 48, 48, dtype=torch.uint8), 0

        @hookimpl
        def jepa_register_datasets(registry):
            registry.register("unlabelled", Unlabelled)
        """)
    code, err = _launch(tmp_path, capsys, plugins=[str(plugin)], data={"dataset": {"name": "unlabelled"}},
                        train={"log_every": 2}, health={"probe_every": 2})
    assert code == 2 and len(err) == 1 and "no labels for the online probe" in err[0], err
