"""``python -m jepa_core.ablate SWEEP_DIR``: one table and one plot for a sweep.

Reads every member's overrides, final loss and ``eval.json`` and writes
``ablation.csv`` (one row per member, failed and unfinished ones included),
``ablation.md`` (members that differ only by seed aggregated as mean and
standard error) and ``ablation.png``; when members ran the ``spectrum``
evaluator, also ``spectrum.png``: every member (or group of seeds) placed
between invariant and equivariant.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import statistics
import sys
from pathlib import Path
from typing import Any

from jepa_core.config import ConfigError
from jepa_core.errors import cli
from jepa_core.rundir import RunDir, SweepDir, atomic_write, write_text
from jepa_core.sweep import LABEL, read_manifest

SEED_KEY = "train.seed"
#: the spectrum evaluator's per-op metrics: r2_<op> (encoder) and mrr_<op> (predictor)
SPECTRUM_R2, SPECTRUM_MRR = "spectrum.r2_", "spectrum.mrr_"
#: a member's place on the spectrum: both averaged over the ops that have both numbers
SPECTRUM_X, SPECTRUM_Y = "spectrum: mean r2", "spectrum: mean mrr"


def _final_loss(run: RunDir) -> float | None:
    path = run.metrics
    if not path.is_file():
        return None
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    return json.loads(lines[-1])["loss"] if lines else None


def collect(sweep_dir: str | Path) -> tuple[list[dict[str, Any]], list[str], list[str]]:
    """Rows (one per member), the swept keys and the metric columns."""
    manifest = read_manifest(sweep_dir)
    rows, keys, metrics = [], [], []
    for entry in manifest["members"]:
        run = RunDir(entry["run_dir"])
        row = {"member": entry["name"], "state": entry["state"], **entry["overrides"],
               "final_loss": _final_loss(run)}
        if run.eval.is_file():
            for evaluator, values in json.loads(run.eval.read_text()).items():
                for metric, value in values.items():
                    row[f"{evaluator}.{metric}"] = value
        for key in entry["overrides"]:
            if key not in keys:
                keys.append(key)
        for key in row:
            if "." in key and key not in keys and key not in metrics:
                metrics.append(key)
        rows.append(row)
    return rows, keys, ["final_loss", *metrics]


def aggregate(rows: list[dict], keys: list[str], metrics: list[str]) -> list[dict[str, Any]]:
    """Group members that differ only by seed: mean, standard error of the mean and count per metric."""
    group_keys = [k for k in keys if k != SEED_KEY]
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault(tuple(json.dumps(row.get(k)) for k in group_keys), []).append(row)
    out = []
    for members in groups.values():
        agg: dict[str, Any] = {k: members[0].get(k) for k in group_keys}
        done = [m for m in members if m["state"] == "finished"]
        agg["runs"] = f"{len(done)}/{len(members)} finished"
        agg["not finished"] = ", ".join(f"{m['member']} ({m['state']})" for m in members if m["state"] != "finished")
        for metric in metrics:
            values = [m[metric] for m in done if m.get(metric) is not None]
            n = len(values)
            agg[metric] = (statistics.fmean(values), statistics.stdev(values) / math.sqrt(n) if n > 1 else 0.0,
                           n) if values else None
        out.append(agg)
    return out


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, tuple):
        mean, stderr, n = value
        return f"{mean:.3f} ± {stderr:.3f}" if n > 1 else f"{mean:.3f}"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def markdown(groups: list[dict], keys: list[str], metrics: list[str]) -> str:
    columns = [k for k in keys if k != SEED_KEY] + metrics + ["runs", "not finished"]
    lines = ["| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns)]
    lines += ["| " + " | ".join(_fmt(g.get(c)) or "-" for c in columns) + " |" for g in groups]
    return "\n".join(lines) + "\n"


def scatter_axes(rows: list[dict], metrics: list[str]) -> tuple[str, str] | None:
    """The invariance-equivariance plane (IWM Figure 4) when the members report one: (x, y) metric names.

    x is the first probe accuracy (``<evaluator>.top1``) and y the first ranking
    metric (``<evaluator>.mrr``) that finished members report; None otherwise.
    """
    done = [r for r in rows if r["state"] == "finished"]
    reported = [m for m in metrics if any(r.get(m) is not None for r in done)]
    x = next((m for m in reported if m.endswith(".top1")), None)
    y = next((m for m in reported if m.endswith(".mrr")), None)
    return (x, y) if x and y else None


def plot(rows: list[dict], keys: list[str], metrics: list[str], path: Path,
         scatter: tuple[str, str] | None = None) -> Path:
    """``scatter``'s y against its x per member (when given) and each metric per group of seeds (mean ± s.e.)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = [r for r in rows if r["state"] == "finished"]
    panelled = [m for m in metrics if not m.endswith((".chance", "_stderr"))]
    shown = [m for m in panelled if any(r.get(m) is not None for r in done)][:4]
    shown = shown or ["final_loss"]
    panels = len(shown) + int(scatter is not None)
    fig, axes = plt.subplots(1, panels, figsize=(4.5 * panels, 4), squeeze=False)
    axes = list(axes[0])
    if scatter is not None:
        x_metric, y_metric = scatter
        ax = axes.pop(0)
        colour_key = next((k for k in keys if k.startswith("conditioning")), None)
        marker_key = next((k for k in keys if k.endswith("depth")), None)
        colours = {v: f"C{i}" for i, v in enumerate(dict.fromkeys(str(r.get(colour_key)) for r in done))}
        markers = dict(zip(dict.fromkeys(str(r.get(marker_key)) for r in done), "osD^vP*X"))
        for r in done:
            ax.scatter(r.get(x_metric), r.get(y_metric), c=colours[str(r.get(colour_key))],
                       marker=markers[str(r.get(marker_key))], s=60)
        for value, colour in colours.items() if colour_key else ():
            ax.scatter([], [], c=colour, label=f"{colour_key}={value}")
        if marker_key:
            for value, marker in markers.items():
                ax.scatter([], [], c="grey", marker=marker, label=f"{marker_key}={value}")
        ax.set_xlabel(x_metric)
        ax.set_ylabel(y_metric)
        ax.legend(fontsize=7)
    groups = labelled_groups(rows, keys, shown)
    seeds = max((g[m][2] for _, g in groups for m in shown if g[m] is not None), default=1)
    for ax, metric in zip(axes, shown):
        stats = [group[metric] or (0.0, 0.0, 0) for _, group in groups]
        ax.bar(range(len(groups)), [mean for mean, _, _ in stats], color="C0", capsize=3,
               yerr=[stderr if n > 1 else 0.0 for _, stderr, n in stats] if seeds > 1 else None)
        ax.set_xticks(range(len(groups)), [label for label, _ in groups], rotation=60, ha="right", fontsize=6)
        ax.set_title(metric + (" (mean ± s.e. over seeds)" if seeds > 1 else ""), fontsize=9)
        # an evaluator that reports its own chance level gets it drawn under its metrics
        chance = next((r.get(metric.rsplit(".", 1)[0] + ".chance") for r in done), None)
        if chance is not None:
            ax.axhline(chance, color="C3", linestyle="--", label="chance")
            ax.legend(fontsize=7)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120)
    plt.close(fig)
    return atomic_write(path, lambda f: f.write(buffer.getvalue()))


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def spectrum_of(row: dict) -> tuple[float, float] | None:
    """(encoder R^2, predictor MRR) of a member, each averaged over its ops; None without spectrum results."""
    ops = [key[len(SPECTRUM_R2):] for key in row if key.startswith(SPECTRUM_R2)]
    pairs = [(row[SPECTRUM_R2 + op], row.get(SPECTRUM_MRR + op)) for op in ops]
    pairs = [(r2, mrr) for r2, mrr in pairs if _number(r2) and _number(mrr)]
    if not pairs:
        return None
    return statistics.fmean(p[0] for p in pairs), statistics.fmean(p[1] for p in pairs)


def labelled_groups(rows: list[dict], keys: list[str], metrics: list[str]) -> list[tuple[str, dict[str, Any]]]:
    """:func:`aggregate` of the finished ``rows``, each with a label: the swept values that tell the groups apart.

    A sweep's own ``label`` names its rows when it varies; otherwise the varying
    ``key=value`` pairs do, or the member's name when nothing varies.
    """
    done = [r for r in rows if r["state"] == "finished"]
    group_keys = [k for k in keys if k != SEED_KEY]
    varying = [k for k in group_keys if len({json.dumps(r.get(k)) for r in done}) > 1]
    if LABEL in varying:  # the zip keys walk with the label: name only the grid keys beside it
        by_label: dict[str, list[dict]] = {}
        for r in done:
            by_label.setdefault(json.dumps(r.get(LABEL)), []).append(r)
        varying = [LABEL] + [k for k in varying if k != LABEL and any(
            len({json.dumps(r.get(k)) for r in same}) > 1 for same in by_label.values())]
    out = []
    for group in aggregate(done, keys, metrics):
        first = next(r for r in done if all(r.get(k) == group.get(k) for k in group_keys))
        label = ", ".join(str(group[k]) if k == LABEL else f"{k}={group.get(k)}" for k in varying)
        out.append((label or first["member"], group))
    return out


def spectrum_points(rows: list[dict], keys: list[str]) -> list[dict[str, Any]]:
    """One point per group of finished members that differ only by seed (as in ablation.md).

    Each: ``label`` (the swept values, or the member's name), ``x`` and ``y``
    as (mean, standard error over seeds, count) of :func:`spectrum_of`.
    """
    placed = []
    for row in rows:
        point = spectrum_of(row) if row["state"] == "finished" else None
        if point is not None:
            placed.append({**row, SPECTRUM_X: point[0], SPECTRUM_Y: point[1]})
    return [{"label": label, "x": group[SPECTRUM_X], "y": group[SPECTRUM_Y]}
            for label, group in labelled_groups(placed, keys, [SPECTRUM_X, SPECTRUM_Y])]


def spectrum_plot(rows: list[dict], keys: list[str], path: Path) -> Path | None:
    """Predictor MRR against encoder R^2 (both averaged over ops), one point per group of seeds; None if no data."""
    points = spectrum_points(rows, keys)
    if not points:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    for i, point in enumerate(points):
        (x, sx, n), (y, sy, _) = point["x"], point["y"]
        ax.errorbar(x, y, xerr=sx if n > 1 else None, yerr=sy if n > 1 else None, fmt="o", color=f"C{i % 10}",
                    capsize=3, markersize=7)
        right = x > 0.6  # labels of points on the right go to their left, inside the axes
        ax.annotate(point["label"] + (f" ({n} seeds)" if n > 1 else ""), (x, y), textcoords="offset points",
                    xytext=(-6 if right else 6, 5), ha="right" if right else "left", fontsize=7)
    chances = [r["spectrum.chance"] for r in rows if r["state"] == "finished" and _number(r.get("spectrum.chance"))]
    if chances:
        ax.axhline(statistics.fmean(chances), color="C3", linestyle="--", linewidth=1, label="chance MRR")
        ax.legend(fontsize=7, loc="upper left")
    xs = [p["x"][0] for p in points]
    ax.set_xlim(min(-0.05, min(xs) - 0.05), max(1.05, max(xs) + 0.05))
    ax.set_ylim(0.0, 1.05)
    ax.set_xlabel("encoder R² of the ops' parameters (mean over ops)\n← invariant      carries the parameters →",
                  fontsize=8)
    ax.set_ylabel("predictor MRR (mean over ops): equivariance →", fontsize=8)
    ax.set_title("invariance-equivariance spectrum", fontsize=9)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120)
    plt.close(fig)
    return atomic_write(path, lambda f: f.write(buffer.getvalue()))


def ablate(sweep_dir: str | Path, scatter: tuple[str, str] | None = None) -> dict[str, Path]:
    """Write the table, the plots and the csv; ``scatter``: (x, y) metrics, by default :func:`scatter_axes`'s."""
    sweep = SweepDir(sweep_dir)
    rows, keys, metrics = collect(sweep_dir)
    if scatter is None:
        scatter = scatter_axes(rows, metrics)
    else:
        for name in scatter:
            if name not in metrics:
                raise ConfigError(f"--scatter: no member of {sweep_dir} reports {name!r}; "
                                  f"metrics: {', '.join(metrics)}")
    columns = ["member", "state", *keys, *metrics]
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=columns, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    groups = aggregate(rows, keys, metrics)
    paths = {
        "csv": write_text(sweep.ablation_csv, text.getvalue()),
        "md": write_text(sweep.ablation_md, markdown(groups, keys, metrics)),
        "png": plot(rows, keys, metrics, sweep.ablation_png, scatter),
    }
    spectrum = spectrum_plot(rows, keys, sweep.spectrum_png)
    if spectrum is not None:
        paths["spectrum"] = spectrum
    return paths


@cli
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jepa_core.ablate", description=__doc__.splitlines()[0])
    parser.add_argument("sweep_dir")
    parser.add_argument("--scatter", nargs=2, metavar=("X", "Y"),
                        help="metrics of the scatter panel (default: the first *.top1 and the first *.mrr reported)")
    args = parser.parse_args(argv)
    paths = ablate(args.sweep_dir, tuple(args.scatter) if args.scatter else None)
    print(paths["md"].read_text())
    print("\n".join(f"wrote {p}" for p in paths.values()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
