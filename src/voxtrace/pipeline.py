"""The competition pipeline end to end, as the reference's README runs it, on one config.

corpus (if absent) -> supervised training of each backbone -> pseudo-labels on the eval parts -> semi-supervised
training with them -> ensemble prediction of the eval parts -> evaluation against the held-back labels, with
the classical baseline beside it. Each eval part holds one axis out of training (voices, channels, generators:
`voxtrace.data.corpus.build.HELD_OUT_AXES`); the results table reports each, and the targets the demo is held
to are checked and printed last. Every stage runs the same command a user would type (`voxtrace train ...`),
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

from voxtrace.data.corpus.build import EVAL_PARTS, HELD_OUT_AXES

# What the final (semi-supervised) ensemble is held to on the held-out parts; printed by every run.
TARGETS = {"eval_part1_f1": 0.95, "eval_part2_f1": 0.80, "eval_part3_unknown_f1": 0.85,
           "eval_part3_unknown_recall_human": 0.80, "eval_part3_unknown_recall_synthetic": 0.80}
BASELINE_MARGIN = 0.10  # the ensemble's macro-F1 over the classical baseline's, on every part
BASELINE = "MFCC/LFCC + SVM (classical)"


@dataclass
class DemoPlan:
    """What the pipeline runs: a config, the backbones of the ensemble, and where everything goes.

    A model is `NAME` (trained with `cfg_path`) or `NAME=CONFIG` (trained with its own config, e.g. a waveform
    backbone beside log-mel CNNs); every checkpoint carries its config, so the ensemble mixes them freely.
    """

    cfg_path: Path
    models: list[str]
    out: Path
    per_class: int | None = None

    @functools.cached_property
    def cfg(self) -> Config:
        return Config.load(self.cfg_path)

    @property
    def model_configs(self) -> list[tuple[str, Path]]:
        """(backbone name, config path) of each model of the ensemble; a missing config is named up front."""
        pairs = []
        for item in self.models:
            name, _, cfg_path = item.partition("=")
            path = Path(cfg_path) if cfg_path else self.cfg_path
            if not name or not path.is_file():
                raise FileNotFoundError(f"--models {item}: expected NAME or NAME=CONFIG with an existing config file")
            pairs.append((name, path))
        return pairs

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
    models = plan.model_configs

    for model, cfg_path in models:
        stages.run(f"supervised-{model}", ["train", "--cfg", str(cfg_path), "--resume", "--model-name", model,
                                           "--output-dir", str(plan.out / "supervised")])
    pseudo_csv = plan.out / "pseudo.csv"
    stages.run("pseudo", ["pseudo", "--model-dir", str(plan.out / "supervised"), *infer_args, "--output", str(pseudo_csv)])
    for model, cfg_path in models:
        stages.run(f"semi-{model}", ["train", "--cfg", str(cfg_path), "--resume", "--model-name", model,
                                     "--output-dir", str(plan.out / "semi"), "--pseudo-csv", str(pseudo_csv)])

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
    """Accuracy, macro-F1 and the open-set figures of a prediction CSV against the part's held-back labels (via
    `voxtrace evaluate`, whose full report lands beside the CSV)."""
    from voxtrace.evaluation.reports import evaluate_files

    report = evaluate_files(
        pred_csv, data_dir / f"labels_{part}.csv", metadata=data_dir / "metadata.csv", out_dir=pred_csv.parent / part
    )
    scores = {f"{prefix}_acc": report["acc"], f"{prefix}_f1": report["f1"]}
    open_set = report.get("open_set")
    if open_set:
        origin = open_set.get("unknown_recall_by_origin", {})
        scores.update({
            f"{prefix}_unknown_f1": open_set["unknown_f1"],
            f"{prefix}_unknown_recall_human": origin.get("human", {}).get("recall", float("nan")),
            f"{prefix}_unknown_recall_synthetic": origin.get("synthetic", {}).get("recall", float("nan")),
            f"{prefix}_auroc": open_set.get("auroc", float("nan")),
            f"{prefix}_fpr95": open_set.get("fpr_at_95_tpr", float("nan")),
        })
    return scores


def _classical_baseline(plan: DemoPlan, stages: Stages) -> dict:
    """MFCC/LFCC statistics + SVM trained on the same split, predicted and scored like the CNNs."""
    from voxtrace.baselines import classical
    from voxtrace.data.audio import find_audio_files
    from voxtrace.data.manifest import read_manifest
    from voxtrace.inference.submission import prediction_frame, write_predictions

    cfg = plan.cfg
    row = {"model": BASELINE, "stage": "supervised"}
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
    targets = check_targets(table)
    results = {"config": str(plan.cfg_path), "models": plan.models, "held_out_axes": HELD_OUT_AXES, "rows": rows,
               "targets": targets}
    atomic_write_json(plan.out / "results.json", results)
    text = "\n\n".join([format_table(table), format_open_set(table), format_targets(targets)])
    atomic_write_text(plan.out / "results.md", text + "\n")
    _plot_results(table, plan.out / "results.png")
    print("\n" + text)
    return results


def _cell(value) -> str:
    return "" if pd.isna(value) else f"{value:.3f}"


def format_table(table: pd.DataFrame) -> str:
    """Macro-F1 and accuracy per held-out part (voices, channels, generators), then `unknown` F1 per part."""
    parts = [p for p in EVAL_PARTS if f"{p}_f1" in table]
    axis = {p: f"{p.replace('eval_', '')} {HELD_OUT_AXES[p].split(':')[0]}" for p in parts}
    cols = [(f"{p}_f1", f"{axis[p]} f1") for p in parts] + [(f"{p}_acc", f"{axis[p]} acc") for p in parts]
    cols += [(f"{p}_unknown_f1", f"{axis[p]} unknown f1") for p in parts if f"{p}_unknown_f1" in table]
    head = "| model | stage | " + " | ".join(title for _, title in cols) + " |"
    lines = [head, "|" + "---|" * (len(cols) + 2)]
    for _, r in table.iterrows():
        lines.append(f"| {r['model']} | {r['stage']} | " + " | ".join(_cell(r[c]) for c, _ in cols) + " |")
    return "\n".join(lines)


def format_open_set(table: pd.DataFrame, part: str = "eval_part3") -> str:
    """Known vs unknown on the held-out generators part: recall on human and on unseen synthetic unknowns,
    AUROC and FPR at 95 % TPR of the `unknown` probability."""
    keys = [("unknown_recall_human", "unknown recall, human"), ("unknown_recall_synthetic",
            "unknown recall, unseen generators"), ("auroc", "AUROC known vs unknown"), ("fpr95", "FPR@95TPR")]
    keys = [(f"{part}_{k}", title) for k, title in keys if f"{part}_{k}" in table]
    if not keys:
        return ""
    lines = [f"Held-out generators ({part}):", "", "| model | stage | " + " | ".join(t for _, t in keys) + " |",
             "|" + "---|" * (len(keys) + 2)]
    for _, r in table.iterrows():
        lines.append(f"| {r['model']} | {r['stage']} | " + " | ".join(_cell(r[k]) for k, _ in keys) + " |")
    return "\n".join(lines)


def check_targets(table: pd.DataFrame) -> list[dict]:
    """The final ensemble (semi-supervised) against TARGETS, and against the classical baseline on every part."""
    final = table[(table["model"] == "ensemble") & (table["stage"] == "semi")]
    baseline = table[table["model"] == BASELINE]
    if final.empty:
        return []
    final = final.iloc[0]
    checks = [{"target": f"{key} >= {bound}", "value": float(final[key]), "met": bool(final[key] >= bound)}
              for key, bound in TARGETS.items() if key in final and pd.notna(final[key])]
    if not baseline.empty:
        for part in EVAL_PARTS:
            key = f"{part}_f1"
            if key in final and key in baseline:
                margin = float(final[key] - baseline.iloc[0][key])
                checks.append({"target": f"{key} - baseline >= {BASELINE_MARGIN}", "value": margin,
                               "met": bool(margin >= BASELINE_MARGIN)})
    return checks


def format_targets(checks: list[dict]) -> str:
    lines = ["Targets (semi-supervised ensemble):", ""]
    lines += [f"- [{'x' if c['met'] else ' '}] {c['target']}: {c['value']:.3f}" for c in checks]
    return "\n".join(lines)


def _plot_results(table: pd.DataFrame, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [f"{m}\n({s})" for m, s in zip(table["model"], table["stage"])]
    x = np.arange(len(table))
    fig, ax = plt.subplots(figsize=(max(6, 1.3 * len(table)), 4))
    parts = [p for p in EVAL_PARTS if f"{p}_f1" in table]
    width = 0.8 / len(parts)
    for k, part in enumerate(parts):
        label = f"{part} ({HELD_OUT_AXES[part].split(':')[0]}) macro-F1"
        ax.bar(x + (k - (len(parts) - 1) / 2) * width, table[f"{part}_f1"], width=width, label=label)
    ax.set_xticks(x, labels, fontsize=7, rotation=30, ha="right")
    ax.set_ylim(0, 1)
    ax.set_ylabel("macro-F1")
    ax.legend(loc="lower left")
    ax.set_title("voxtrace demo: macro-F1 on held-out voices, channels and generators")
    atomic_savefig(fig, path)


def load_results(out: Path) -> dict:
    return json.loads((out / "results.json").read_text())
