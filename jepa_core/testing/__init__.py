"""The contract checks the suite runs on every registered component, for a plugin's own tests.

One call per kind; each builds the component as the engine builds it from
YAML (``{name: ..., **params}``, validated by its ``Config``), uses it the way
the engine does and raises :class:`ContractError` (an AssertionError) naming
the component, the contract and the failing case::

    from jepa_core.testing import check_transformation

    def test_invert_keeps_the_contract():
        check_transformation("invert", Invert, p=0.5)

Evaluators and loggers are checked on a run, through the commands a user
types: :func:`tiny_run` trains one in seconds, :func:`resumed_run` crashes
and relaunches one. docs/writing-a-plugin.md shows them; tests/test_contracts.py
runs them on everything the registries hold.
"""

from jepa_core.testing._core import ContractError
from jepa_core.testing.data import check_dataset
from jepa_core.testing.environments import check_environment
from jepa_core.testing.modules import check_conditioner, check_predictor
from jepa_core.testing.runs import check_evaluator, check_logger, resumed_run, tiny_run
from jepa_core.testing.targets import check_target
from jepa_core.testing.transformations import check_masking, check_transformation

__all__ = [
    "ContractError", "check_transformation", "check_masking", "check_conditioner", "check_predictor",
    "check_target", "check_dataset", "check_environment", "check_evaluator", "check_logger", "tiny_run", "resumed_run",
]
