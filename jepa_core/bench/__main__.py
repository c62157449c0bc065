"""``python -m jepa_core.bench [--device cpu|cuda] [--json] [--suite NAME ...] [--experiment PATH ...] [--batch N]``.

Each suite measures our implementation and, where there is one, its
reference in the same process, and prints the figures side by side with the
ratio. Targets live here, never in timed tests.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys

import torch

from jepa_core.errors import UserError, cli

# The pipeline micro-benchmarks run first: run after the train step (3 GB peak) in the same
# process, the photometric pipeline measured 2.0x its reference instead of 3.8-4.8x.
SUITES = ("masking", "photometric", "train_step", "precision", "peer", "data_loading", "memory", "health", "recipes")
ON_CPU = tuple(s for s in SUITES if s != "recipes")  # a ViT-H/14 step at batch 128 takes minutes on 2 cores


def format_rows(rows: list[dict]) -> str:
    table = [("suite", "measurement", "value", "reference", "ratio", "target")]
    for r in rows:
        ref = f"{r['reference']:.4g} {r['unit']}" if r.get("reference") is not None else "-"
        ratio = f"{r['ratio']:.2f}x" if r.get("ratio") is not None else "-"
        table.append((r["suite"], r["name"], f"{r['value']:.4g} {r['unit']}", ref, ratio, r.get("target", "")))
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in table)


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return int(text)


@cli
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jepa_core.bench", description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--json", action="store_true", help="print one JSON list instead of a table")
    parser.add_argument("--suite", action="append", choices=SUITES, help="run only these suites (repeatable)")
    parser.add_argument("--experiment", action="append", metavar="PATH",
                        help="recipes suite: time this experiment YAML (repeatable; default: the papers' recipes)")
    parser.add_argument("--batch", type=_positive, metavar="N", help="recipes suite: images per step (default: the file's)")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda but no CUDA device is available")
    suites = args.suite or (SUITES if args.device == "cuda" else ON_CPU)
    if (args.experiment or args.batch) and "recipes" not in suites:
        raise UserError("--experiment and --batch set the recipes suite: add --suite recipes")
    rows: list[dict] = []
    try:
        for name in suites:
            suite = importlib.import_module(f"jepa_core.bench.{name}")
            rows += suite.run(args.device, args.experiment, args.batch) if name == "recipes" else suite.run(args.device)
            if not args.json:
                print(f"# {name} done", file=sys.stderr)
    finally:  # a suite that fails (a GPU out of memory, say) leaves the finished suites' figures printed
        if rows:
            print(json.dumps(rows, indent=2) if args.json else format_rows(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
