"""The competition pipeline end to end, as the reference's README runs it, on one config.

corpus (if absent) -> supervised training of each backbone -> pseudo-labels on the eval parts -> semi-supervised
training with them -> ensemble prediction of both eval parts -> evaluation against the held-back labels, with
the classical baseline beside it. Every stage runs the same command a user would type (`voxtrace train ...`),
records its completion in `OUT/stages/`, and is skipped when already done, so a rerun after an interruption
finishes only the rest (training itself resumes from its last epoch).
"""

from __future__ import annotations

import functools
import json
import shlex
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from voxtrace.config import Config
from voxtrace.io import atomic_savefig, atomic_write_csv, atomic_write_json, atomic_write_text

EVAL_PARTS = ("eval_part1", "eval_part2")


@dataclass
class DemoPlan:
    """What the pipeline runs: a config, the backbones of the ensemble, and where everything goes."""

    cfg_path: Path
    models: list[str]
    out: Path
    per_class: int | None = None

    @functools.cached_property
    def cfg(self) -> Config:
        return Config.load(self.cfg_path)

    @property
    def data_dir(self) -> Path:
        return Path(self.cfg.data.root)


class Stages:
    """Completion markers: a stage that finished leaves `OUT/stages/<name>.done` with its command line."""

    def __init__(self, out: Path):
        self.root = out / "stages"

    def done(self, name: str) -> bool:
        return (self.root / f"{name}.done").is_file()

    def run(self, name: str, argv: list[str]) -> None:
        """Run `voxtrace ARGV` unless stage `name` is done; raise if it fails."""
        from voxtrace.cli import main

        if self.done(name):
            print(f"[skip] {name}: done before ({self.root / (name + '.done')})")
            return
        line = "voxtrace " + shlex.join(argv)
        print(f"\n[run] {name}: {line}", flush=True)
        start = time.time()
        code = main(argv)
        if code != 0:
            raise RuntimeError(f"stage {name} failed with exit code {code}: {line}")
        atomic_write_text(self.root / f"{name}.done", f"{line}\n{time.time() - start:.0f} s\n")


def run_demo(plan: DemoPlan) -> dict:
    """Run every stage of the plan and return the results table (also saved under `plan.out`)."""
    cfg = plan.cfg
    stages = Stages(plan.out)
    if not (plan.data_dir / "metadata.csv").is_file():
        corpus_argv = ["corpus", "--out", str(plan.data_dir), "--seed", str(cfg.seed)]
        if plan.per_class:
            corpus_argv += ["--per-class", str(plan.per_class)]
        stages.run("corpus", corpus_argv)
    eval_dirs = [str(plan.data_dir / part) for part in EVAL_PARTS]
    infer_args = [arg for d in eval_dirs for arg in ("--infer-path", d)]
    base = ["train", "--cfg", str(plan.cfg_path), "--resume"]

    for model in plan.models:
        stages.run(f"supervised-{model}", base + ["--model-name", model, "--output-dir", str(plan.out / "supervised")])
    pseudo_csv = plan.out / "pseudo.csv"
    stages.run("pseudo", ["pseudo", "--model-dir", str(plan.out / "supervised"), *infer_args, "--output", str(pseudo_csv)])
    for model in plan.models:
        stages.run(
            f"semi-{model}",
            base + ["--model-name", model, "--output-dir", str(plan.out / "semi"), "--pseudo-csv", str(pseudo_csv)],
        )

    rows = []
    for stage in ("supervised", "semi"):
        model_dirs = {"ensemble": plan.out / stage}
        model_dirs.update({d.name: d for d in sorted((plan.out / stage).iterdir()) if (d / "ckpt").is_dir()})
        for name, model_dir in model_dirs.items():
            row = {"model": name, "stage": stage}
            for part in EVAL_PARTS:
                pred = plan.out / "predictions" / stage / name / f"{part}.csv"
                stages.run(
                    f"predict-{stage}-{name}-{part}",
                    ["predict", "--model-dir", str(model_dir), "--infer-path", str(plan.data_dir / part),
                     "--output", str(pred), "--probs"],
                )
                row.update(_score(pred, plan.data_dir, part, prefix=part))
            rows.append(row)
    rows.append(_classical_baseline(plan, stages))
    return _save_results(plan, rows)


def _score(pred_csv: Path, data_dir: Path, part: str, prefix: str) -> dict:
    """Accuracy and macro-F1 of a prediction CSV against the part's held-back labels (via `voxtrace evaluate`)."""
    from voxtrace.evaluation.reports import evaluate_files

    report = evaluate_files(
        pred_csv, data_dir / f"labels_{part}.csv", metadata=data_dir / "metadata.csv", out_dir=pred_csv.parent / part
    )
    return {f"{prefix}_acc": report["acc"], f"{prefix}_f1": report["f1"], **_unknown_f1(report, prefix)}


def _unknown_f1(report: dict, prefix: str) -> dict:
    per_class = report.get("per_class", {})
    return {f"{prefix}_unknown_f1": per_class["unknown"]["f1"]} if "unknown" in per_class else {}


def _classical_baseline(plan: DemoPlan, stages: Stages) -> dict:
    """MFCC/LFCC statistics + SVM trained on the same split, predicted and scored like the CNNs."""
    from voxtrace.baselines import classical
    from voxtrace.data.audio import find_audio_files
    from voxtrace.data.manifest import read_manifest
    from voxtrace.inference.submission import prediction_frame, write_predictions

    cfg = plan.cfg
    row = {"model": "MFCC/LFCC + SVM (classical)", "stage": "supervised"}
    preds = {part: plan.out / "predictions" / "baseline" / f"{part}.csv" for part in EVAL_PARTS}
    if not stages.done("baseline"):
        train = read_manifest(cfg, "train")
        model = classical.fit(train["path"].tolist(), train["label"].map(cfg.classes.index).to_numpy(), seed=cfg.seed)
        for part, pred in preds.items():
            paths = find_audio_files(plan.data_dir / part)
            probs, errors = classical.predict_proba(model, paths, cfg.num_classes)
            pred_idx = np.where(np.isnan(probs).any(1), -1, np.nan_to_num(probs).argmax(1))
            write_predictions(pred, prediction_frame(paths, probs, pred_idx, errors, cfg.classes, with_probs=True))
        atomic_write_text(stages.root / "baseline.done", "classical baseline\n")
    for part, pred in preds.items():
        row.update(_score(pred, plan.data_dir, part, prefix=part))
    return row


def _save_results(plan: DemoPlan, rows: list[dict]) -> dict:
    table = pd.DataFrame(rows)
    atomic_write_csv(plan.out / "results.csv", table)
    results = {"config": str(plan.cfg_path), "models": plan.models, "rows": rows}
    atomic_write_json(plan.out / "results.json", results)
    text = format_table(table)
    atomic_write_text(plan.out / "results.md", text + "\n")
    _plot_results(table, plan.out / "results.png")
    print("\n" + text)
    return results


def format_table(table: pd.DataFrame) -> str:
    """A Markdown results table like the reference's: accuracy and macro-F1 on each eval part."""
    cols = [c for c in table.columns if c not in ("model", "stage")]
    head = "| model | stage | " + " | ".join(c.replace("eval_", "").replace("_", " ") for c in cols) + " |"
    lines = [head, "|" + "---|" * (len(cols) + 2)]
    for _, r in table.iterrows():
        vals = ["" if pd.isna(r[c]) else f"{r[c]:.3f}" for c in cols]
        lines.append(f"| {r['model']} | {r['stage']} | " + " | ".join(vals) + " |")
    return "\n".join(lines)


def _plot_results(table: pd.DataFrame, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [f"{m}\n({s})" for m, s in zip(table["model"], table["stage"])]
    x = np.arange(len(table))
    fig, ax = plt.subplots(figsize=(max(6, 1.3 * len(table)), 4))
    for offset, part in ((-0.2, "eval_part1"), (0.2, "eval_part2")):
        ax.bar(x + offset, table[f"{part}_f1"], width=0.4, label=f"{part} macro-F1")
    ax.set_xticks(x, labels, fontsize=7, rotation=30, ha="right")
    ax.set_ylim(0, 1)
    ax.set_ylabel("macro-F1")
    ax.legend(loc="lower left")
    ax.set_title("voxtrace demo: supervised vs semi-supervised, clean vs perturbed")
    atomic_savefig(fig, path)


def load_results(out: Path) -> dict:
    return json.loads((out / "results.json").read_text())
