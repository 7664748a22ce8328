#!/usr/bin/env python
"""Recipes for the frozen-encoder member, compared on leave-voice-out validation and on every evaluation part.

Every recipe is a head (`model.head`) over the cached features of `--cfg` (default configs/demo-whisper.yaml,
`states: all`: mean and standard deviation over frames of each of Whisper tiny.en's 5 hidden states). A
recipe using fewer states takes their columns of the same features (equal to extracting with those `states`:
each state is pooled on its own). For each recipe:
- `lvo`: macro-F1 of leave-voice-out out-of-fold predictions on train (`data.folds` folds grouped by voice and
  speaker) — the figure recipes are chosen by;
- the macro-F1 on every evaluation part of the corpus (the head fitted on all of train), reported, never used
  to choose;
- for the `unknown` strategies: (a) the trained `unknown` class, (b) a head on the five known classes only with
  a rejection threshold, (c) both. Thresholds keep `--target-tpr` of the correctly attributed known clips of the
  leave-voice-out predictions (held-out voices), never an evaluation part. For each: the share of known-
  generator clips called `unknown` (all / voices that also speak in train / other voices) and the `unknown`
  recall on human, vocoded and other-engine speech of the cross-corpus part.

Features are cached with the demo's (`--cache`, default runs/demo/feature_cache), so after `make demo` only the
augmented draws are new. Writes `--out` (default docs/frozen_recipes.md) and prints the table; the last line
names the recipe with the best leave-voice-out macro-F1.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd

from voxtrace.config import Config
from voxtrace.data.corpus.build import EVAL_PARTS
from voxtrace.data.manifest import read_manifest
from voxtrace.evaluation.metrics import label_indices, label_scores
from voxtrace.inference.open_set import apply_open_set, calibrate_threshold
from voxtrace.io import atomic_write_text
from voxtrace.recipes.demo import unknown_shares
from voxtrace.inference import features as clip_features
from voxtrace.training import frozen
from voxtrace.training.folds import assign_folds

STATE_WIDTH = 768  # mean + std of one 384-wide Whisper tiny state
# name -> (model.head overrides, hidden states used, augmented draws)
RECIPES = {
    "logistic C=1, all states (the probe)": ({"kind": "logistic", "c": 1.0}, "all", 0),
    "logistic C=1, last state": ({"kind": "logistic", "c": 1.0}, [4], 0),
    "logistic C=1, blocks 2-4": ({"kind": "logistic", "c": 1.0}, [2, 3, 4], 0),
    "logistic C=0.1, all states": ({"kind": "logistic", "c": 0.1}, "all", 0),
    "logistic C=10, all states": ({"kind": "logistic", "c": 10.0}, "all", 0),
    "logistic C=1, all states, +1 augmented draw": ({"kind": "logistic", "c": 1.0}, "all", 1),
    "MLP 256, all states": ({"kind": "mlp", "hidden": 256, "epochs": 60}, "all", 0),
    "kNN k=10, all states": ({"kind": "knn", "k": 10}, "all", 0),
}


def columns(states) -> np.ndarray | slice:
    if states == "all":
        return slice(None)
    return np.concatenate([np.arange(i * STATE_WIDTH, (i + 1) * STATE_WIDTH) for i in states])


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cfg", default="configs/demo-whisper.yaml")
    parser.add_argument("--data", default="data/demo")
    parser.add_argument("--cache", default="runs/demo/feature_cache")
    parser.add_argument("--target-tpr", type=float, default=0.97)
    parser.add_argument("--out", default="docs/frozen_recipes.md")
    parser.add_argument("--recipes", nargs="*", default=list(RECIPES), help="names of RECIPES to run")
    args = parser.parse_args(argv)

    base = Config.load(args.cfg, [f"data.root={args.data}"])
    data = Path(args.data)
    extractor = clip_features.feature_extractor(base)
    cache = clip_features.FeatureCache(args.cache, clip_features.fingerprint(base, extractor))
    train = read_manifest(base, "train")
    train = train[train["label"].notna()].reset_index(drop=True)
    draws = max(RECIPES[name][2] for name in args.recipes)
    started = time.time()
    features, _ = clip_features.extract_features(base, extractor, list(train["path"]), draws, cache)
    meta = pd.read_csv(data / "metadata.csv")
    parts = {part: sorted(str(data / part / t) for t in meta.loc[meta["split"] == part, "track"])
             for part in EVAL_PARTS if (data / part).is_dir()}
    part_features = {}
    for part, paths in parts.items():
        part_features[part], _ = clip_features.extract_features(base, extractor, paths, 0, cache)
    print(f"features in {time.time() - started:.0f} s", flush=True)
    folds = assign_folds(train, base.data.folds, base.seed)
    targets = np.eye(base.num_classes, dtype="float32")[label_indices(train["label"], base.classes)]
    labels = label_indices(train["label"], base.classes)

    rows = []
    for name in args.recipes:
        head, states, recipe_draws = RECIPES[name]
        cols = columns(states)
        for strategy in ("a", "b", "c"):
            if strategy != "a" and not name.startswith("logistic C=1, all states"):
                continue  # the unknown strategies are compared on the probe's recipe
            overrides = {f"model__head__{k}": v for k, v in head.items()}
            cfg = base.replace(model__head__augment_draws=recipe_draws, model__head__known_only=strategy == "b",
                               **overrides)
            view = {key: value[:, cols] for key, value in features.items()}
            clips = frozen.ClipFeatures(cfg, train, targets, view)
            oof = clips.out_of_fold(folds)
            threshold = None
            if strategy != "a":
                threshold = calibrate_threshold(oof, labels, cfg.classes, cfg.unknown_class, "maxprob", args.target_tpr)
            row = {"recipe": name, "unknown": {"a": "trained class", "b": "known-only + threshold",
                                               "c": "trained class + threshold"}[strategy],
                   "lvo": _f1(oof, labels, cfg, threshold)}
            fitted = frozen.fit_head(cfg, *clips.design(np.ones(len(train), bool)))
            for part, paths in parts.items():
                probs = frozen.head_probs(cfg, fitted, [part_features[part][(p, 0)][:, cols] for p in paths])
                truth = meta.set_index("track").loc[[Path(p).name for p in paths], "class_id"].to_numpy()
                pred = _decide(probs, cfg, threshold)
                row[part] = label_scores(truth, pred, cfg.classes)["f1"]
                if part == "eval_part4":
                    frame = pd.DataFrame({"track": [Path(p).name for p in paths], "algorithm": pred})
                    row.update(unknown_shares(frame, meta, part))
            rows.append(row)
            print(", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items()), flush=True)
    table = pd.DataFrame(rows)
    text = _markdown(table, args)
    atomic_write_text(args.out, text + "\n")
    print(text)
    best = table.sort_values("lvo", ascending=False).iloc[0]
    print(f"best by leave-voice-out macro-F1: {best['recipe']} ({best['unknown']}): {best['lvo']:.3f}")


def _decide(probs, cfg, threshold):
    if threshold is None:
        return probs.argmax(axis=1)
    return apply_open_set(probs, threshold, cfg.classes, cfg.unknown_class, "maxprob")[0]


def _f1(probs, labels, cfg, threshold) -> float:
    return float(label_scores(labels, _decide(probs, cfg, threshold), cfg.classes)["f1"])


def _markdown(table: pd.DataFrame, args) -> str:
    head = ["recipe", "unknown", "lvo"] + [c for c in table.columns if c.startswith("eval_part")] + \
        [c for c in table.columns if c.startswith(("known_as", "unknown_recall"))]
    lines = [f"Frozen Whisper tiny.en recipes (`python benchmarks/frozen_recipes.py --cfg {args.cfg}`): macro-F1 "
             "on leave-voice-out validation (`lvo`, what recipes are chosen by) and on each evaluation part; "
             "known-generator clips called `unknown` and `unknown` recall on the cross-corpus part (eval_part4).",
             "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for _, r in table.iterrows():
        lines.append("| " + " | ".join(f"{r[c]:.3f}" if isinstance(r[c], float) else str(r[c]) for c in head) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
