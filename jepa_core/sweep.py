"""Sweeps: one YAML with a ``sweep:`` block becomes many runs.

```yaml
base: ../iwm_equi.yaml
sweep:
  grid:                       # cartesian product
    conditioning.name: [none, sequence, feature]
  zip:                        # walked together (lists of one length)
    label: [small, base, deep]        # optional: names the rows (run directories, tables)
    predictor.depth: [6, 12, 18]
    predictor.width: [192, 384, 384]
  seeds: [0, 1]               # each member once per seed (train.seed)
```

Every member is a full config (the file without ``sweep:`` plus the member's
overrides) and is validated and built before anything runs. Members live in
``SWEEP_DIR/<name from overrides>/``; ``SWEEP_DIR/manifest.json`` lists them
with their overrides, state and run directory.
"""

from __future__ import annotations

import itertools
import os
import json
import re
from pathlib import Path
from typing import Any

import attrs
import yaml

from jepa_core.config import SWEEP_KEY, ConfigError, LoadedConfig, load_raw, resolve, sweep_dropped
from jepa_core.rundir import RunDir, SweepDir, write_json
#: a zip entry that names each zipped row (run directories, tables) and sets no config key
LABEL = "label"
ZIPPED = "_zipped"
SWEEP_KEYS = ("grid", "zip", "seeds")


@attrs.define
class Member:
    """One run of a sweep."""

    name: str
    overrides: dict[str, Any]
    loaded: LoadedConfig
    run_dir: Path

    @property
    def state(self) -> str:
        return RunDir(self.run_dir).state()


def is_sweep(path: str | Path, overrides: list[str] = ()) -> bool:
    """Whether ``path`` or a file it inherits has a ``sweep:`` block (a file based on a sweep is one)
    that ``overrides`` do not drop with ``sweep=null``."""
    if sweep_dropped(overrides):
        return False
    try:
        return SWEEP_KEY in load_raw(path, {})
    except ConfigError:
        return False  # load_config reports it properly


def _slug(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value)
    return re.sub(r"[^A-Za-z0-9.+-]+", "_", text).strip("_") or "x"


def member_name(overrides: dict[str, Any]) -> str:
    """A run-directory name from the overrides; a zip ``label`` stands for the zipped keys."""
    zipped = overrides.get(ZIPPED, ())
    parts = [_slug(overrides[LABEL])] if LABEL in overrides else []
    parts += [f"{key.removesuffix('.name')}-{_slug(v)}" for key, v in overrides.items()
              if key not in (LABEL, ZIPPED) and not (LABEL in overrides and key in zipped)]
    return "_".join(parts)


def _expand(block: Any, where: str) -> list[dict[str, Any]]:
    if not isinstance(block, dict) or not block:
        raise ConfigError(f"{where}: sweep: must be a mapping with at least one of {', '.join(SWEEP_KEYS)}")
    for key in block:
        if key not in SWEEP_KEYS:
            from jepa_core.registries import did_you_mean

            raise ConfigError(f"{where}: sweep.{key}: unknown key{did_you_mean(str(key), SWEEP_KEYS)}; "
                              f"valid: {', '.join(SWEEP_KEYS)}")
    grid, zipped, seeds = block.get("grid") or {}, block.get("zip") or {}, block.get("seeds")
    for section, values in (("grid", block.get("grid")), ("zip", block.get("zip"))):
        if values is None:
            continue
        if not isinstance(values, dict) or not values:
            raise ConfigError(f"{where}: sweep.{section}: must map dotted keys to non-empty lists, got {values!r}")
        for key, options in values.items():
            if not isinstance(options, list) or not options:
                raise ConfigError(f"{where}: sweep.{section}.{key}: must be a non-empty list of values, "
                                  f"got {options!r}")
    lengths = {key: len(v) for key, v in zipped.items()}
    if len(set(lengths.values())) > 1:
        shown = ", ".join(f"{k} has {n}" for k, n in lengths.items())
        raise ConfigError(f"{where}: sweep.zip: lists must have one length ({shown})")
    if seeds is not None and (not isinstance(seeds, list) or not seeds
                              or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds)):
        raise ConfigError(f"{where}: sweep.seeds: must be a non-empty list of integers, got {seeds!r}")
    grid_rows = [dict(zip(grid, combo)) for combo in itertools.product(*grid.values())] or [{}]
    zip_rows = [dict(zip(zipped, combo)) for combo in zip(*zipped.values())] or [{}]
    if LABEL in zipped:
        zip_rows = [{LABEL: row.pop(LABEL), **row} for row in zip_rows]
    seed_rows = [{"train.seed": s} for s in seeds] if seeds else [{}]
    return [{**g, **z, **s} for g in grid_rows for z in zip_rows for s in seed_rows]


def expand(path: str | Path, sweep_dir: str | Path | None, overrides: list[str] = ()) -> list[Member]:
    """Every member of the sweep in ``path``, validated; raises ConfigError on bad input.

    ``sweep_dir`` defaults to ``runs/<name>``.
    """
    origins: dict[str, str] = {}
    data = load_raw(path, origins)
    block = data.pop(SWEEP_KEY, None)
    members = []
    for assignment in _expand(block, str(path)):
        sets = [f"{key}={yaml.safe_dump(value, default_flow_style=True).strip().removesuffix('...').strip()}"
                for key, value in assignment.items() if key != LABEL]
        try:
            loaded = resolve(data, origins, path, [*overrides, *sets])
        except ConfigError as exc:
            raise ConfigError(f"{exc} (sweep member {assignment})") from None
        name = member_name({**assignment, ZIPPED: tuple(block.get("zip") or ())}) or "base"
        root = SweepDir(sweep_dir if sweep_dir else Path("runs") / loaded.config.name)
        members.append(Member(name, assignment, loaded, root.member(name).path))
    names = [m.name for m in members]
    if len(set(names)) != len(names):
        raise ConfigError(f"{path}: sweep: members with the same overrides: {names}")
    return members


def write_manifest(sweep_dir: str | Path, members: list[Member], source: str | Path) -> Path:
    entries = [{"name": m.name, "overrides": m.overrides, "run_dir": str(m.run_dir), "state": m.state}
               for m in members]
    return write_json(SweepDir(sweep_dir).manifest, {"sweep": str(source), "members": entries})


def read_manifest(sweep_dir: str | Path) -> dict[str, Any]:
    path = SweepDir(sweep_dir).manifest
    if not path.is_file():
        raise ConfigError(f"{sweep_dir}: not a sweep directory (no {path.name})")
    manifest = json.loads(path.read_text())
    for entry in manifest["members"]:
        entry["state"] = RunDir(entry["run_dir"]).state()
    return manifest


def prepare(members: list[Member], sweep_dir: str | Path, source: str | Path) -> None:
    """Refuse run directories holding other configs, then write each member's config and the manifest."""
    from jepa_core.run import check_run_dir, write_config

    for member in members:
        check_run_dir(member.run_dir, member.loaded)
    for member in members:
        write_config(member.loaded.config, member.run_dir)
    write_manifest(sweep_dir, members, source)


def run_local(members: list[Member], sweep_dir: str | Path, source: str | Path, parallel: int = 1) -> list[str]:
    """Run unfinished members here, ``parallel`` at a time; returns the final states."""
    import subprocess
    import sys

    todo = [m for m in members if m.state != "finished"]
    env = dict(os.environ)
    if parallel > 1:  # share the cores instead of each member taking them all
        env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // parallel)))
    for member in members:
        if member.state == "finished":
            print(f"[sweep] {member.name}: finished already, skipped")
    running: list[tuple[Member, subprocess.Popen]] = []
    for member in todo:
        while len(running) >= parallel:
            running = _reap(running)
        print(f"[sweep] {member.name}: starting in {member.run_dir}")
        run = RunDir(member.run_dir)
        cmd = [sys.executable, "-m", "jepa_core.run", str(run.path)]  # execute_dir, in a process of its own
        with open(run.launch_log, "a") as log:  # the child keeps its own descriptor
            running.append((member, subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)))
        write_manifest(sweep_dir, members, source)
    while running:
        running = _reap(running)
    write_manifest(sweep_dir, members, source)
    return [m.state for m in members]


def _reap(running):
    import time

    still = []
    for member, proc in running:
        if proc.poll() is None:
            still.append((member, proc))
        else:
            print(f"[sweep] {member.name}: {member.state} (exit {proc.returncode})")
    if len(still) == len(running):
        time.sleep(0.5)
    return still
