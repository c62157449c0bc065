"""The ``slurm:`` block as submitit parameters, and the sbatch script they render.

:func:`sbatch_script` is the one place that calls submitit's private
functions: ``--dry-run --slurm`` prints exactly the script a submission
sends only by rendering it the way submitit does. A submitit upgrade that
changes them fails the dry-run tests (tests/test_slurm.py) rather than
printing a script that is not the one submitted.
"""

from __future__ import annotations

import os
import re
import shlex
import sys
from pathlib import Path
from typing import Any

from jepa_core.config import ConfigError
from jepa_core.schema import ExperimentConfig, SlurmConfig

#: submitit's preemption signal (it honours SUBMITIT_PREEMPT_SIGNAL, default USR2)
PREEMPT_SIGNAL = os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2")


def executor_parameters(slurm: SlurmConfig, name: str) -> dict[str, Any]:
    """``AutoExecutor.update_parameters`` keywords for a ``slurm:`` block."""
    _check_signal(slurm)
    params: dict[str, Any] = {
        "name": name,
        "timeout_min": slurm.timeout_min,
        "nodes": slurm.nodes,
        "tasks_per_node": slurm.tasks_per_node,
        "cpus_per_task": slurm.cpus_per_task,
        "slurm_array_parallelism": slurm.array_parallelism,
    }
    if slurm.gpus_per_node:  # no --gpus-per-node=0 line: GPU-less clusters may reject any gres
        params["gpus_per_node"] = slurm.gpus_per_node
    if slurm.mem_gb is not None:
        params["mem_gb"] = slurm.mem_gb
    for key in ("partition", "account", "qos", "constraint", "exclude"):
        value = getattr(slurm, key)
        if value is not None:
            params[f"slurm_{key}"] = value
    if slurm.setup:
        params["slurm_setup"] = list(slurm.setup)
    if slurm.additional_parameters:
        params["slurm_additional_parameters"] = dict(slurm.additional_parameters)
    return params


def _check_signal(slurm: SlurmConfig) -> None:
    """An explicit ``additional_parameters.signal`` must still reach submitit's handler."""
    value = slurm.additional_parameters.get("signal")
    if value is None:
        return
    ok = re.fullmatch(rf"(SIG)?{PREEMPT_SIGNAL}(@\d+)?", str(value))
    if not ok:
        raise ConfigError(
            f"slurm.additional_parameters.signal: {value!r} would not reach the job's preemption handler; "
            f"use '{PREEMPT_SIGNAL}@SECONDS' (the signal is sent SECONDS before the time limit, "
            "to every task, not 'B:' the batch shell only)"
        )


def sbatch_script(config: ExperimentConfig, folder: str | Path, array_size: int | None = None) -> str:
    """The sbatch script submitting ``config`` sends, submitit's folder being ``folder`` (an array of ``array_size``).

    Translates the AutoExecutor keywords to SlurmExecutor parameters as
    AutoExecutor does, then renders them with submitit's own template.
    """
    from submitit.slurm.slurm import SlurmExecutor, _convert_mem, _make_sbatch_string

    equivalent = SlurmExecutor._equivalence_dict()
    native = {key.removeprefix("slurm_") if key.startswith("slurm_") else equivalent[key]: value
              for key, value in executor_parameters(config.slurm, config.name).items()}
    if "mem" in native:
        native["mem"] = _convert_mem(native["mem"])
    if array_size is not None and array_size > 1:
        native["map_count"] = array_size
    command = " ".join([shlex.quote(sys.executable), "-u -m submitit.core._submit", shlex.quote(str(folder))])
    return _make_sbatch_string(command=command, folder=Path(folder), **native)
