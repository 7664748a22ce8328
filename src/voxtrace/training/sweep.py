"""Repeated runs and grid sweeps: one training run per setting x seed, then a table of mean +- std scores.

A sweep file maps dotted config keys to lists of values; every combination (the grid product) is trained once
per seed:

    model.name: [cnn4, resnet18]
    augment.mixup_prob: [0.0, 0.5]

Every run's config is built and validated before the first run starts, so a typo fails in seconds, naming the
key and the value. Run `S` of a setting trains into `OUTPUT_DIR/{key=value,...}-seed{S}/` (with seeds only and no
sweep file: `OUTPUT_DIR-seed{S}/`). A run that fails is reported and the others still run. At the end
`OUTPUT_DIR/sweep.csv` and `OUTPUT_DIR/sweep.md` collect the mean and standard deviation over seeds of each
setting's overall out-of-fold scores (`score/overall.json` of each run; with `train.oof_shift` the shifted
view's too, as `shifted acc`, `shifted f1`, `shifted auc`), and `OUTPUT_DIR/sweep_runs.csv` lists every run.
"""

from __future__ import annotations

import itertools
import json
import logging
import re
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
import yaml

from voxtrace.config import Config, ConfigError
from voxtrace.rundir import RunDir

log = logging.getLogger(__name__)

METRICS = ("acc", "f1", "auc")
SHIFTED_METRICS = tuple(f"shifted_{m}" for m in METRICS)  # the shifted view's, from runs with train.oof_shift
RESERVED_KEYS = {"seed": "pass seeds with --seeds", "output_dir": "the sweep names each run's folder itself"}


@dataclass
class PlannedRun:
    """One run of a sweep: its setting (dotted key -> value), seed and validated config."""

    setting: dict[str, Any]
    seed: int
    cfg: Config

    @property
    def label(self) -> str:
        return setting_label(self.setting)

    @property
    def overall_json(self) -> Path:
        return RunDir(Path(self.cfg.output_dir) / self.cfg.run_name).score()


@dataclass
class SweepResult:
    """The per-setting table, the per-run table and the runs that failed (`(run, message)`)."""

    table: pd.DataFrame
    runs: pd.DataFrame
    failed: list[tuple[PlannedRun, str]] = field(default_factory=list)


def read_sweep(path) -> dict[str, list]:
    """Read a sweep file: a mapping of dotted config keys to non-empty lists of values."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"sweep file not found: {path}")
    with open(path) as fh:
        grid = yaml.safe_load(fh)
    if not isinstance(grid, dict) or not grid:
        raise ConfigError(f"sweep file {path} must map dotted config keys to lists of values, e.g. "
                          f"'model.name: [cnn4, resnet18]'. Received: {grid!r}")
    for key, values in grid.items():
        if key in RESERVED_KEYS:
            raise ConfigError(f"sweep file {path}: {key} cannot be swept ({RESERVED_KEYS[key]}). Received: {key}")
        if not isinstance(values, list) or not values:
            raise ConfigError(f"sweep file {path}: {key} must be a non-empty list of values. "
                              f"Received: {key}={values!r}")
    return {str(k): list(v) for k, v in grid.items()}


def _format_value(value) -> str:
    if isinstance(value, (list, tuple)):
        return "x".join(_format_value(v) for v in value)
    return "null" if value is None else str(value)


def setting_label(setting: dict[str, Any]) -> str:
    """A folder-safe name of a setting, e.g. `model.name=cnn4,augment.mixup_prob=0.5`."""
    parts = [f"{key}={_format_value(value)}" for key, value in setting.items()]
    return re.sub(r"[^A-Za-z0-9._+=,-]+", "-", ",".join(parts))


def _describe(setting: dict[str, Any], seed: int) -> str:
    return ", ".join([f"{k}={v!r}" for k, v in setting.items()] + [f"seed={seed}"])


def plan_runs(cfg: Config, grid: dict[str, list], seeds: list[int]) -> list[PlannedRun]:
    """Build and validate the config of every setting x seed; refuses the first invalid one, naming it."""
    from voxtrace.models.raw import backbone_input_shape

    if not seeds:
        raise ConfigError("--seeds needs at least one seed")
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"--seeds must be distinct. Received: seeds={seeds}")
    keys = list(grid)
    planned, folders = [], {}
    for values in itertools.product(*(grid[k] for k in keys)):
        setting = dict(zip(keys, values))
        label = setting_label(setting)
        for seed in seeds:
            base = str(Path(cfg.output_dir) / label) if label else cfg.output_dir
            changes = {key.replace(".", "__"): value for key, value in setting.items()}
            changes.update(seed=seed, output_dir=f"{base}-seed{seed}")
            try:
                run_cfg = cfg.replace(**changes)
                backbone_input_shape(run_cfg)
            except ValueError as err:
                raise ConfigError(f"sweep setting {_describe(setting, seed)} is invalid: {err}") from err
            if run_cfg.output_dir in folders:
                raise ConfigError(f"sweep settings {folders[run_cfg.output_dir]} and {_describe(setting, seed)} "
                                  f"would share the output folder {run_cfg.output_dir}; make their values distinct")
            folders[run_cfg.output_dir] = _describe(setting, seed)
            planned.append(PlannedRun(setting=setting, seed=seed, cfg=run_cfg))
    return planned


def _read_scores(run: PlannedRun) -> dict[str, float]:
    if not run.overall_json.is_file():
        return {}
    scores = json.loads(run.overall_json.read_text())
    shifted = scores.get("shifted", {})
    return {**{m: float(scores[m]) for m in METRICS if m in scores},
            **{f"shifted_{m}": float(shifted[m]) for m in METRICS if m in shifted}}


def _metrics(frame: pd.DataFrame) -> tuple[str, ...]:
    """METRICS, then the shifted view's where any run has them."""
    return METRICS + tuple(m for m in SHIFTED_METRICS if m in frame or f"{m}_mean" in frame)


def summarize(planned: list[PlannedRun], run_rows: pd.DataFrame) -> pd.DataFrame:
    """One row per setting: its values, seeds, runs that finished / failed, mean and std of each metric."""
    rows = []
    for label, group in run_rows.groupby("setting", sort=False):
        setting = next(r.setting for r in planned if r.label == label)
        scored = group[group["status"] == "ok"]
        row = {"setting": label or "(base config)", **{k: _format_value(v) for k, v in setting.items()},
               "seeds": " ".join(str(s) for s in group["seed"]), "runs": len(scored),
               "failed": int((group["status"] == "failed").sum())}
        for metric in _metrics(run_rows):
            values = scored[metric].dropna().to_numpy(float) if metric in scored else np.array([])
            row[f"{metric}_mean"] = float(values.mean()) if len(values) else np.nan
            row[f"{metric}_std"] = float(values.std(ddof=1)) if len(values) > 1 else np.nan
        rows.append(row)
    return pd.DataFrame(rows)


def markdown_table(table: pd.DataFrame) -> str:
    """The summary as a Markdown table with `mean ± std` cells."""

    def cell(row, metric):
        mean, std = row[f"{metric}_mean"], row[f"{metric}_std"]
        if np.isnan(mean):
            return "–"
        return f"{mean:.4f}" if np.isnan(std) else f"{mean:.4f} ± {std:.4f}"

    metrics = _metrics(table)
    lines = ["| setting | seeds | runs | failed | " + " | ".join(m.replace("_", " ") for m in metrics) + " |",
             "|---|---|---:|---:|" + "---:|" * len(metrics)]
    for _, row in table.iterrows():
        lines.append(f"| {row['setting']} | {row['seeds']} | {row['runs']} | {row['failed']} | "
                     + " | ".join(cell(row, m) for m in metrics) + " |")
    return "\n".join(lines) + "\n"


def run_sweep(cfg: Config, grid: dict[str, list] | None = None, seeds: list[int] | None = None,
              train_fn: Callable | None = None, **train_kwargs) -> SweepResult:
    """Train every setting of `grid` (dotted key -> values) once per seed and write the summary tables.

    `train_fn(cfg, **train_kwargs)` trains one run (default `voxtrace.training.trainer.train`). Everything is
    validated first; a run that raises is reported and the sweep goes on.
    """
    from voxtrace.io import atomic_write_csv, atomic_write_text

    grid = grid or {}
    planned = plan_runs(cfg, grid, list(seeds) if seeds else [cfg.seed])
    if train_fn is None:
        from voxtrace.training.trainer import train as train_fn
    sweep_dir = Path(cfg.output_dir)
    log.info(f"> sweep: {len(planned)} runs ({len(planned) // max(1, len({r.seed for r in planned}))} settings x "
             f"{len({r.seed for r in planned})} seeds) -> {sweep_dir}")
    rows, failed = [], []
    for i, run in enumerate(planned, 1):
        log.info(f"\n> sweep run {i}/{len(planned)}: {_describe(run.setting, run.seed)} -> {run.cfg.output_dir}")
        row = {"setting": run.label, "seed": run.seed, "output_dir": run.cfg.output_dir, "status": "ok", "error": ""}
        try:
            train_fn(run.cfg, **train_kwargs)
        except Exception as err:  # one failed run must not stop the sweep
            message = f"{type(err).__name__}: {err}"
            traceback.print_exc()
            log.info(f"! sweep run {i}/{len(planned)} failed ({_describe(run.setting, run.seed)}): {message}")
            row.update(status="failed", error=message)
            failed.append((run, message))
        else:
            row.update(_read_scores(run))
        rows.append(row)
    run_rows = pd.DataFrame(rows)
    table = summarize(planned, run_rows)
    sweep_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_csv(sweep_dir / "sweep_runs.csv", run_rows, index=False)
    atomic_write_csv(sweep_dir / "sweep.csv", table, index=False)
    atomic_write_text(sweep_dir / "sweep.md", markdown_table(table))
    log.info("\n" + markdown_table(table))
    log.info(f"> sweep tables: {sweep_dir / 'sweep.csv'}, {sweep_dir / 'sweep.md'}")
    for run, message in failed:
        log.info(f"! failed: {_describe(run.setting, run.seed)}: {message}")
    return SweepResult(table=table, runs=run_rows, failed=failed)
