#!/usr/bin/env python
"""Open-set scores side by side on held-out generators: maxprob, energy, kNN and Mahalanobis distance.

For every checkpoint under `--model-dir` (default `runs/demo/semi`, from `make demo`), the penultimate embeddings
(`voxtrace.inference.open_set.checkpoint_features`) of three sets of the corpus (`--data`, default `data/demo`,
clips listed by its metadata.csv: `track, split, class_id`):
- the reference: known-class clips of `--reference-split` (train), the kNN bank and the class means;
- the calibration set: `--calib-split` (eval_part1, held-out voices); each score's rejection threshold keeps
  `--target-tpr` of its known-class clips;
- the test set: `--test-split` (eval_part3, generators and speakers training never saw). When it holds no
  known-class clip, every other known clip of the calibration split (sorted by track) moves to the test set
  as the known side.
Prints per checkpoint, then averaged over checkpoints, each score's AUROC and FPR@95TPR (true unknowns are the
positives) and the unknown F1 after rejection at the calibrated threshold. Last line:
`headline: fpr95_ratio=R (BEST X / maxprob Y), auroc BEST A vs maxprob B` where BEST is the score with the
lowest FPR@95TPR; R below 1 means BEST flags fewer known clips than maxprob while catching 95 % of unknowns.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from voxtrace.inference.checkpoints import discover_runs

sys.path.insert(0, str(Path(__file__).resolve().parent))
from open_set_scores import checkpoint_features, compare_open_set_scores, fit_embedding_reference  # noqa: E402

COLUMNS = ["score", "auroc", "fpr_at_95_tpr", "unknown_f1", "unknown_recall", "known_kept"]


def corpus_sets(data: Path, reference: str, calib: str, test: str, unknown_id: int, max_reference: int | None,
                seed: int = 0) -> dict[str, pd.DataFrame]:
    """`{reference, calibration, test: DataFrame[path, label]}` from `data/metadata.csv`."""
    meta_path = data / "metadata.csv"
    if not meta_path.is_file():
        raise FileNotFoundError(f"no corpus metadata {meta_path}; build the corpus with `voxtrace corpus --out {data}`")
    meta = pd.read_csv(meta_path)
    missing = [c for c in ("track", "split", "class_id") if c not in meta.columns]
    if missing:
        raise ValueError(f"{meta_path} lacks columns {missing}")
    meta = meta.assign(path=[str(data / s / t) for s, t in zip(meta["split"], meta["track"])],
                       label=meta["class_id"].astype(int)).sort_values("track")
    sets = {}
    for name, split in (("reference", reference), ("calibration", calib), ("test", test)):
        part = meta[meta["split"] == split]
        if part.empty:
            raise ValueError(f"{meta_path} has no clip of split {split!r} (splits: {sorted(meta['split'].unique())})")
        sets[name] = part[["path", "label"]].reset_index(drop=True)
    known_ref = sets["reference"][sets["reference"]["label"] != unknown_id]
    if max_reference and len(known_ref) > max_reference:
        known_ref = known_ref.sample(max_reference, random_state=seed)
    sets["reference"] = known_ref.reset_index(drop=True)
    if (sets["test"]["label"] != unknown_id).any():
        return sets
    calib_frame = sets["calibration"]
    known = calib_frame.index[calib_frame["label"] != unknown_id]
    moved = known[1::2]
    print(f"{test} has no known-class clip: {len(moved)} known clips of {calib} join it as the known side")
    sets["test"] = pd.concat([sets["test"], calib_frame.loc[moved]], ignore_index=True)
    sets["calibration"] = calib_frame.drop(index=moved).reset_index(drop=True)
    return sets


def score_checkpoint(checkpoint: Path, cfg, sets: dict, target_tpr: float, k: int, batch_size: int | None):
    """The comparison table of one checkpoint."""
    features = {}
    for name, frame in sets.items():
        features[name] = checkpoint_features(checkpoint, cfg, frame["path"].tolist(), batch_size=batch_size)
        features[name]["labels"] = frame["label"].to_numpy()
        if features[name]["errors"]:
            print(f"  {name}: {len(features[name]['errors'])} files failed, left out "
                  f"(first: {next(iter(features[name]['errors'].items()))})")
    ref = features["reference"]
    reference = fit_embedding_reference(ref["embeddings"], ref["labels"], cfg.classes, cfg.unknown_class)
    return compare_open_set_scores(features["test"], features["calibration"], cfg.classes, cfg.unknown_class,
                                   reference, target_tpr=target_tpr, k=k)


def headline(table: pd.DataFrame) -> str:
    rows = table.set_index("score")
    best = rows["fpr_at_95_tpr"].idxmin()
    base, top = rows.loc["maxprob", "fpr_at_95_tpr"], rows.loc[best, "fpr_at_95_tpr"]
    ratio = f"{top / base:.3f}" if base > 0 else "n/a"
    return (f"headline: fpr95_ratio={ratio} ({best} {top:.3f} / maxprob {base:.3f}), "
            f"auroc {best} {rows.loc[best, 'auroc']:.3f} vs maxprob {rows.loc['maxprob', 'auroc']:.3f}")


def main(argv: list[str] | None = None) -> pd.DataFrame:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", default="runs/demo/semi", help="trained checkpoints (any depth)")
    parser.add_argument("--data", default="data/demo", help="corpus folder with metadata.csv")
    parser.add_argument("--reference-split", default="train")
    parser.add_argument("--calib-split", default="eval_part1")
    parser.add_argument("--test-split", default="eval_part3")
    parser.add_argument("--target-tpr", type=float, default=0.95, help="share of calibration known clips kept")
    parser.add_argument("--k", type=int, default=10, help="neighbour of the kNN distance")
    parser.add_argument("--max-reference", type=int, default=1000, help="known training clips in the kNN bank")
    parser.add_argument("--batch-size", type=int, default=None)
    args = parser.parse_args(argv)
    runs = discover_runs(args.model_dir)
    cfg = runs[0].cfg
    if cfg.unknown_class is None:
        raise ValueError(f"the checkpoints under {args.model_dir} have no unknown_class; nothing to reject to")
    sets = corpus_sets(Path(args.data), args.reference_split, args.calib_split, args.test_split,
                       cfg.classes.index(cfg.unknown_class), args.max_reference, cfg.seed)
    print(", ".join(f"{name}: {len(frame)} clips" for name, frame in sets.items()))
    tables = []
    pd.set_option("display.float_format", "{:.3f}".format)
    for run in runs:
        for checkpoint in run.checkpoints:
            print(f"\n{run.name}/{checkpoint.name}", flush=True)
            table = score_checkpoint(checkpoint, run.cfg, sets, args.target_tpr, args.k, args.batch_size)
            print(table[COLUMNS + ["threshold"]].to_string(index=False))
            tables.append(table[COLUMNS])
    mean = pd.concat(tables).groupby("score", sort=False).mean().reset_index()
    print(f"\nmean over {len(tables)} checkpoint(s), {args.test_split}:")
    print(mean.to_string(index=False))
    print(headline(mean))
    return mean


if __name__ == "__main__":
    main()
