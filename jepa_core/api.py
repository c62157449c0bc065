"""The public API for plugin authors: every contract and every engine helper a plugin may use.

``from jepa_core.api import hookimpl, Transformation, validators`` is all a
plugin needs; the built-in plugins import nothing else from jepa_core. Names not
listed here are internal and may change between releases.

Contracts (one module per component kind in ``jepa_core.registries``):

=================  ==========================================  ======================================
kind               base class / protocol                       built as
=================  ==========================================  ======================================
transformations    :class:`Transformation`, :class:`Masking`   ``Cls(config)``; ``Cls(config, grid)``
conditioning       :class:`Conditioner`                        ``Cls(config, action_dim, width)``
predictors         :class:`Predictor`                          ``Cls(config, embed_dim, grid, cond)``
targets            :class:`Target`                             ``Cls(config, encoder, predictor)``
evaluators         :class:`Evaluator` (receives a RunView)     ``Cls(config)``
datasets           :class:`LabelledDataset`, :class:`ClipDataset` ``Cls(config, split)``
loggers            runtime hookimpls                           ``Cls(config, run_dir)``
environments       :class:`Environment`                        ``Cls(config)``
=================  ==========================================  ======================================
"""

from __future__ import annotations

from jepa_core import hookimpl
from jepa_core.rundir import RunDir, SweepDir, atomic_write, write_json, write_text
from jepa_core.config import dump_yaml, to_dict
from jepa_core.data import build_eval_loader, mix_seed, splitmix64
from jepa_core.encoder import gather_tokens, init_vit_weights, sincos, sincos_1d, sincos_2d
from jepa_core.registries import ComponentError, validators
from jepa_core.registries.conditioning import Conditioner
from jepa_core.registries.datasets import (
    SPLITS, ClipDataset, LabelledDataset, MissingDataError, check_split, dataset_tasks, is_clip_dataset,
    task_labels,
)
from jepa_core.registries.environments import Environment
from jepa_core.registries.evaluators import Evaluator, RunView
from jepa_core.registries.predictors import ActionConditionedPredictor, Predictor
from jepa_core.registries.targets import Target
from jepa_core.registries.transformations import ENCODINGS, Masking, Masks, Params, Transformation
from jepa_core.views import normalize

__all__ = [
    # hooks and errors
    "hookimpl", "ComponentError", "MissingDataError", "validators",
    # contracts
    "Transformation", "Params", "ENCODINGS", "Masking", "Masks", "Conditioner", "Predictor",
    "ActionConditionedPredictor", "Target", "Evaluator", "RunView", "Environment", "LabelledDataset", "ClipDataset",
    "is_clip_dataset", "SPLITS", "check_split", "dataset_tasks", "task_labels",
    # helpers
    "gather_tokens", "sincos", "sincos_1d", "sincos_2d", "init_vit_weights", "normalize", "mix_seed", "splitmix64",
    "build_eval_loader",
    "atomic_write", "write_json", "write_text", "RunDir", "SweepDir", "dump_yaml", "to_dict",
]
