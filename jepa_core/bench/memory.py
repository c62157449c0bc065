"""Peak memory of one train step, I-JEPA against IWM, each in a fresh process.

CPU: the peak resident set size of a process that builds the recipe and runs
two steps (so one process's allocations never hide another's); CUDA: the
peak allocated memory of those two steps. The CPU peak is Linux's ``VmHWM``:
``ru_maxrss`` of a spawned process also counts its parent's resident memory at
the fork (the bench process, 3 GB after the train-step suite), which made both
recipes read the parent's figure.
"""

from __future__ import annotations

import json
import subprocess
import sys

from jepa_core.bench.train_step import RECIPES

CHILD = """
import json, sys, torch
from jepa_core.bench.memory import peak_rss_bytes
from jepa_core.bench.train_step import _images, trainer as make_trainer
recipe, device = sys.argv[1], sys.argv[2]
trainer = make_trainer(recipe, device)
images = _images(device)
if device == "cuda":
    torch.cuda.reset_peak_memory_stats()
for step in range(2):
    trainer.train_step(images, step, 1000, 1e-4, 0.04).item()
peak = torch.cuda.max_memory_allocated() if device == "cuda" else peak_rss_bytes()
print(json.dumps(peak))
"""


def peak_rss_bytes() -> int:
    """This process's own peak resident set size (Linux ``VmHWM``), not its parent's."""
    with open("/proc/self/status") as status:
        fields = dict(line.split(":", 1) for line in status)
    return int(fields["VmHWM"].split()[0]) * 1024


def child_json(code: str, *args: str):
    """Run ``code`` in a fresh Python process with ``args``; the JSON its last line of output holds."""
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"a benchmark child process ({' '.join(args)}) failed:\n{done.stderr.strip()}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def peak_bytes(recipe: str, device: str) -> int:
    return child_json(CHILD, recipe, device)


def run(device: str) -> list[dict]:
    peaks = {recipe: peak_bytes(recipe, device) for recipe in RECIPES}
    what = "max allocated" if device == "cuda" else "peak RSS"
    return [
        {"suite": "memory", "name": f"ijepa train step, {what}", "value": peaks["ijepa"] / 2**20, "unit": "MiB"},
        {"suite": "memory", "name": f"iwm train step, {what}", "value": peaks["iwm"] / 2**20, "unit": "MiB",
         "reference": peaks["ijepa"] / 2**20, "ratio": peaks["iwm"] / peaks["ijepa"], "target": "<= 1.2x ijepa"},
    ]
