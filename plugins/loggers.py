"""Loggers enabled from YAML ``loggers:``; each is a runtime-hook plugin for one run."""

from __future__ import annotations

import csv
import importlib
import io
import numbers
import secrets
import string
from pathlib import Path
from typing import Any

import attrs

from jepa_core.api import SweepDir, dump_yaml, hookimpl, to_dict, write_text


class CSVLogger:
    """Append every logged step's metrics to a CSV file in the run directory."""

    @attrs.frozen
    class Config:
        filename: str = "metrics.csv"

    def __init__(self, config: Config, run_dir: str):
        self.path = Path(run_dir) / config.filename
        self._columns: list[str] = []

    def _rows(self) -> list[dict[str, str]]:
        if not self.path.exists():
            return []
        with open(self.path, newline="") as f:
            return list(csv.DictReader(f))

    def _rewrite(self, rows: list[dict[str, Any]]) -> None:
        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=self._columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
        write_text(self.path, text.getvalue())

    @hookimpl
    def jepa_run_start(self, run_dir, config, start_step, total_steps):
        """Keep the rows up to the checkpoint resumed from; a fresh start keeps none of an earlier attempt's."""
        rows = [row for row in self._rows() if int(row["step"]) <= start_step] if start_step else []
        self._columns = list(rows[0]) if rows else []
        if rows:
            self._rewrite(rows)
        else:
            self.path.unlink(missing_ok=True)

    @hookimpl
    def jepa_after_step(self, step, metrics):
        new = [key for key in metrics if key not in self._columns]
        if new:  # a metric first logged now (health checks run every few steps): widen the header
            self._columns += new
            self._rewrite(self._rows() + [metrics])
            return
        with open(self.path, "a", newline="") as f:
            csv.DictWriter(f, fieldnames=self._columns).writerow(metrics)


# --------------------------------------------------------------------------- experiment trackers
#
# TensorBoard and Weights & Biases are optional extras. Their packages are imported when a
# config names the logger (the Config checks, so a missing package is a config error before
# anything runs) and when the run starts, never when this module is loaded.

#: where W&B keeps its files, under the run directory (``wandb.init(dir=run_dir)``)
WANDB_DIR = "wandb"


def _require(module: str, extra: str) -> None:
    """Raise a one-line ValueError naming the extra when ``module`` cannot be imported.

    The registry prefixes the logger's name; the engine, the YAML location.
    """
    try:
        importlib.import_module(module)
    except ImportError as exc:
        raise ValueError(f"needs the {extra} package, which cannot be imported ({exc}); "
                         f"install it with: pip install 'jepa-core[{extra}]'") from None


def _optional_str(instance, attribute, value):
    if value is not None and not isinstance(value, str):
        raise TypeError(f"{attribute.name!r} must be a string, got {value!r}")


def _tags(value: Any) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, (list, tuple)) or not all(isinstance(t, str) for t in value):
        raise TypeError(f"'tags' must be a list of strings, got {value!r}")
    return tuple(value)


def _scalars(metrics: dict[str, Any]) -> dict[str, float]:
    """Every numeric entry of a step's metrics but the step itself."""
    return {key: float(value) for key, value in metrics.items()
            if key != "step" and isinstance(value, numbers.Real)}


def _pictures(run_dir: Path) -> list[Path]:
    """The PNG files evaluators wrote into the run directory (not W&B's copies of them)."""
    return sorted(path for path in run_dir.rglob("*.png") if not path.is_relative_to(run_dir / WANDB_DIR))


def _tag(run_dir: Path, picture: Path) -> str:
    return "eval/" + picture.relative_to(run_dir).with_suffix("").as_posix()


class TensorBoardLogger:
    """Write metrics, evaluation results, evaluator pictures and the config for TensorBoard."""

    @attrs.frozen
    class Config:
        #: the log directory, relative to the run directory
        logdir: str = attrs.field(default="tensorboard", validator=attrs.validators.instance_of(str))

        def __attrs_post_init__(self):
            _require("tensorboard", "tensorboard")
            _require("torch.utils.tensorboard", "tensorboard")

    def __init__(self, config: Config, run_dir: str):
        self.run_dir = Path(run_dir)
        self.logdir = self.run_dir / config.logdir
        self.writer = None
        self.step = 0

    def _open(self, logdir: Path, purge_step: int | None):
        from torch.utils.tensorboard import SummaryWriter

        return SummaryWriter(log_dir=str(logdir), purge_step=purge_step)

    @hookimpl
    def jepa_run_start(self, run_dir, config, start_step, total_steps):
        self.close()
        self.step = start_step
        if start_step == 0:  # a fresh start: what an attempt without a checkpoint logged is void
            for folder in (self.logdir, self.logdir / "eval"):
                for old in folder.glob("events.out.tfevents.*"):
                    old.unlink()
        # Resuming: readers hide what the interrupted attempt logged after the checkpoint.
        self.writer = self._open(self.logdir, start_step + 1 if start_step else None)
        if start_step == 0:
            self.writer.add_text("config", "```yaml\n" + dump_yaml(config) + "```", global_step=0)
            self.writer.flush()

    @hookimpl
    def jepa_after_step(self, step, metrics):
        self.step = step
        if self.writer is None:
            return
        for key, value in _scalars(metrics).items():
            self.writer.add_scalar(f"train/{key}", value, global_step=step)

    @hookimpl
    def jepa_on_checkpoint(self, step, path):
        if self.writer is not None:  # what a resume keeps is on disk
            self.writer.flush()

    @hookimpl
    def jepa_run_end(self, run_dir, step, metrics):
        self.step = step
        if self.writer is not None:
            self.writer.flush()

    @hookimpl
    def jepa_after_evaluation(self, results, run_dir):
        # Its own log directory (a run named "eval" in TensorBoard), so that evaluating a
        # run again replaces the earlier results instead of adding a second point.
        import numpy as np
        from PIL import Image

        writer = self._open(self.logdir / "eval", self.step)
        try:
            for evaluator, metrics in results.items():
                for key, value in _scalars(metrics).items():
                    writer.add_scalar(f"eval/{evaluator}/{key}", value, global_step=self.step)
            for picture in _pictures(self.run_dir):
                with Image.open(picture) as image:
                    pixels = np.asarray(image.convert("RGB"))
                writer.add_image(_tag(self.run_dir, picture), pixels, global_step=self.step, dataformats="HWC")
        finally:
            writer.close()

    def close(self):
        if self.writer is not None:
            self.writer.close()
            self.writer = None


class WandbLogger:
    """Log metrics, evaluation results, evaluator pictures and the config to Weights & Biases."""

    #: the W&B run id, kept so that a resumed or requeued job continues the same W&B run
    ID_FILE = "wandb_id.txt"

    @attrs.frozen
    class Config:
        project: str = attrs.field(default="jepa-core", validator=attrs.validators.instance_of(str))
        entity: str | None = attrs.field(default=None, validator=_optional_str)
        #: the W&B run name; default: the run directory's name
        name: str | None = attrs.field(default=None, validator=_optional_str)
        #: default: the sweep directory's name for a sweep member, else none
        group: str | None = attrs.field(default=None, validator=_optional_str)
        tags: tuple[str, ...] = attrs.field(default=(), converter=_tags)
        #: online, offline or disabled; default: $WANDB_MODE, else online
        mode: str | None = attrs.field(default=None, validator=attrs.validators.optional(
            attrs.validators.in_(("online", "offline", "disabled"))))

        def __attrs_post_init__(self):
            _require("wandb", "wandb")

    def __init__(self, config: Config, run_dir: str):
        self.config = config
        self.run_dir = Path(run_dir)
        self.run = None
        self.ended = False
        self.step = 0

    def run_id(self) -> str:
        """The run directory's W&B id, made (and stored atomically) on its first start."""
        path = self.run_dir / self.ID_FILE
        if path.is_file() and path.read_text().strip():
            return path.read_text().strip()
        run_id = "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(8))  # W&B's form
        write_text(path, run_id + "\n")
        return run_id

    def group(self) -> str | None:
        if self.config.group is not None:
            return self.config.group
        parent = self.run_dir.resolve().parent
        return parent.name if SweepDir(parent).manifest.is_file() else None

    @hookimpl
    def jepa_run_start(self, run_dir, config, start_step, total_steps):
        import wandb

        self.close()
        self.ended, self.step = False, start_step
        c = self.config
        self.run = wandb.init(
            project=c.project, entity=c.entity, name=c.name or self.run_dir.resolve().name,
            group=self.group(), tags=list(c.tags), mode=c.mode, dir=str(self.run_dir),
            id=self.run_id(), resume="allow", config=to_dict(config),  # W&B's files: RUN_DIR/wandb/
        )

    def _log(self, data: dict[str, Any], step: int) -> None:
        # W&B keeps one row a step and its steps only increase: the steps a resume redoes were
        # logged by the interrupted attempt and are skipped here (W&B would warn and drop them).
        if data and step >= self.run.step:
            self.run.log(data, step=step)

    @hookimpl
    def jepa_after_step(self, step, metrics):
        self.step = step
        if self.run is not None:
            self._log({f"train/{key}": value for key, value in _scalars(metrics).items()}, step)

    @hookimpl
    def jepa_run_end(self, run_dir, step, metrics):
        self.ended, self.step = True, step

    @hookimpl
    def jepa_after_evaluation(self, results, run_dir):
        import wandb

        if self.run is None:
            return
        data: dict[str, Any] = {f"eval/{evaluator}/{key}": value
                                for evaluator, metrics in results.items() for key, value in _scalars(metrics).items()}
        self.run.summary.update(data)
        for picture in _pictures(self.run_dir):
            data[_tag(self.run_dir, picture)] = wandb.Image(str(picture))
        self._log(data, self.step)

    def close(self):
        """Finish the W&B run: failed unless training reached its last step (a resume continues it)."""
        if self.run is not None:
            self.run.finish(exit_code=0 if self.ended else 1)
            self.run = None


@hookimpl
def jepa_register_loggers(registry):
    registry.register("csv", CSVLogger)
    registry.register("tensorboard", TensorBoardLogger)
    registry.register("wandb", WandbLogger)
