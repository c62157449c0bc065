"""The vocabulary of jepa-core: one module per component kind with its contract.

Importing this package is cheap (no torch); the contract modules
(``jepa_core.registries.transformations`` and friends) import torch themselves.
"""

from jepa_core.registries._registry import ComponentError, Entry, Registry, build_config, did_you_mean

KINDS = ("transformations", "conditioning", "predictors", "targets", "evaluators", "datasets", "loggers",
         "environments")

__all__ = ["KINDS", "ComponentError", "Entry", "Registry", "build_config", "did_you_mean"]
