"""A trained world model plans: the CI-sized version of docs/planning.md's measurement.

experiments/tiny/plan.yaml trains ``ac_vit`` on ``moving_shapes`` clips for a minute or so,
then plans to goal images with CEM. The assertion compares it, on the same episodes, with
random actions, zero actions and the same predictor untrained (eval_random_init): a
predictor that had not learnt what the actions do fails it.
"""

from __future__ import annotations

import json

import pytest

from jepa_core.launch import main as launch

RECIPE = "experiments/tiny/plan.yaml"

pytestmark = pytest.mark.slow


def test_a_trained_action_conditioned_predictor_plans_to_goals_that_random_actions_miss(tmp_path):
    run_dir = tmp_path / "run"
    assert launch([RECIPE, "--output", str(run_dir)]) == 0
    trained = json.loads((run_dir / "eval.json").read_text())["plan"]
    untrained = json.loads((run_dir / "eval_random_init.json").read_text())["plan"]
    assert trained["success"] >= 0.6, trained
    assert trained["success"] >= trained["random_success"] + 0.4, trained
    assert trained["success"] >= untrained["success"] + 0.4, (trained, untrained)
    assert trained["final_distance"] < min(trained["random_final_distance"], trained["zero_final_distance"]), trained
