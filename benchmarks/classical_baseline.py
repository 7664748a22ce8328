#!/usr/bin/env python
"""The classical baseline (MFCC/LFCC statistics + SVM or gradient boosting, as Bird et al.) on the demo corpus,
side by side with the CNN ensemble of `make demo`.

Trains on `data/demo/train`, predicts every held-out eval part (voices, channels, generators), scores them with
the same `voxtrace evaluate` code, and reads the ensemble's scores from `runs/demo/results.json` (run `make demo`
first for the comparison), then checks the demo's targets against both.
Last line: `ensemble_minus_baseline_f1: part1=X part2=Y part3=Z` (macro-F1 of the semi-supervised ensemble minus
the best classical model; positive means the CNN ensemble wins).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np

import pandas as pd

from voxtrace.baselines import classical
from voxtrace.config import Config
from voxtrace.data.corpus.build import EVAL_PARTS
from voxtrace.data.audio import find_audio_files
from voxtrace.data.manifest import read_manifest
from voxtrace.evaluation.reports import evaluate_files
from voxtrace.inference.submission import prediction_frame, write_predictions
from voxtrace.recipes.demo import BASELINE, check_targets, format_targets

PARTS = EVAL_PARTS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cfg", default="configs/demo.yaml")
    parser.add_argument("--results", default="runs/demo/results.json", help="the demo's results (for the ensemble)")
    args = parser.parse_args()
    cfg = Config.load(args.cfg)
    data = Path(cfg.data.root)
    train = read_manifest(cfg, "train")
    labels = train["label"].map(cfg.classes.index).to_numpy()
    scores = {}
    with tempfile.TemporaryDirectory() as tmp:
        for kind in ("svm", "gbm"):
            model = classical.fit(train["path"].tolist(), labels, kind=kind, seed=cfg.seed)
            for part in PARTS:
                paths = find_audio_files(data / part)
                probs, errors = classical.predict_proba(model, paths, cfg.num_classes)
                pred_idx = np.where(np.isnan(probs).any(1), -1, np.nan_to_num(probs).argmax(1))
                frame = prediction_frame(paths, probs, pred_idx, errors, cfg.classes, with_probs=True)
                pred = write_predictions(Path(tmp) / f"{kind}_{part}.csv", frame)
                report = evaluate_files(pred, data / f"labels_{part}.csv", classes=cfg.classes)
                scores[(kind, part)] = report["f1"]
                print(f"{kind:4s} {part}: acc {report['acc']:.3f}  macro-F1 {report['f1']:.3f}", flush=True)
    baseline = {part: max(scores[(k, part)] for k in ("svm", "gbm")) for part in PARTS}
    results = Path(args.results)
    short = {part: part.replace("eval_", "") for part in PARTS}
    if not results.is_file():
        print(f"no {results}: run `make demo` for the ensemble side of the comparison")
        print("baseline_f1: " + " ".join(f"{short[p]}={baseline[p]:.3f}" for p in PARTS))
        return
    rows = json.loads(results.read_text())["rows"]
    final = next(r for r in rows if r["model"] == "ensemble" and r["stage"] == "semi")
    ensemble = {part: final[f"{part}_f1"] for part in PARTS}
    for part in PARTS:
        print(f"{part}: CNN ensemble macro-F1 {ensemble[part]:.3f} vs classical {baseline[part]:.3f}")
    best_baseline = {"model": BASELINE, "stage": "supervised", **{f"{p}_f1": baseline[p] for p in PARTS}}
    print(format_targets(check_targets(pd.DataFrame([final, best_baseline]))))
    print("ensemble_minus_baseline_f1: " + " ".join(f"{short[p]}={ensemble[p] - baseline[p]:+.3f}" for p in PARTS))


if __name__ == "__main__":
    main()
