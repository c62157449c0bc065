"""Loggers enabled from YAML ``loggers:``; each is a runtime-hook plugin for one run."""

from __future__ import annotations

import csv
from pathlib import Path

import attrs

from jepa_core import hookimpl


class CSVLogger:
    """Append every logged step's metrics to a CSV file in the run directory."""

    @attrs.frozen
    class Config:
        filename: str = "metrics.csv"

    def __init__(self, config: Config, run_dir: str):
        self.path = Path(run_dir) / config.filename
        self._columns: list[str] | None = None

    @hookimpl
    def jepa_run_start(self, run_dir, config, start_step, total_steps):
        if start_step and self.path.exists():  # resuming: drop rows past the checkpoint
            with open(self.path, newline="") as f:
                rows = [row for row in csv.DictReader(f) if int(row["step"]) <= start_step]
            self._columns = list(rows[0]) if rows else None
            with open(self.path, "w", newline="") as f:
                if rows:
                    writer = csv.DictWriter(f, fieldnames=self._columns)
                    writer.writeheader()
                    writer.writerows(rows)

    @hookimpl
    def jepa_after_step(self, step, metrics):
        new_file = not self.path.exists() or self.path.stat().st_size == 0
        if self._columns is None:
            self._columns = list(metrics)
        with open(self.path, "a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=self._columns, extrasaction="ignore")
            if new_file:
                writer.writeheader()
            writer.writerow(metrics)


@hookimpl
def jepa_register_loggers(registry):
    registry.register("csv", CSVLogger)
