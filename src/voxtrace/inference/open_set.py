"""Open-set rejection: clips the ensemble is unsure about are attributed to `cfg.unknown_class`.

A confidence score is computed per clip, either `maxprob` (the top probability) or `energy`. The checkpoints
output probabilities, which fix the logits only up to a constant per clip; taking zero-mean logits
(`log p - mean(log p)`) the energy score `logsumexp(logits)` becomes `-mean(log p)`: high for a peaked
distribution, low for a flat one. The threshold is calibrated on out-of-fold predictions (`RUN/csv/oof.csv`:
`path, track, label, fold, <one probability column per class>`) so that `target_tpr` of the correctly
attributed known clips keep their label; it is saved with the ensemble as `MODEL_DIR/open_set.json` and
reused while the score, target and checkpoints are unchanged.

The scores themselves (`confidence_scores`) live with the metrics (`voxtrace.evaluation.metrics`), which
`voxtrace evaluate` shares; embedding-distance scores compared by `benchmarks/open_set.py` live beside it.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from voxtrace.evaluation.metrics import confidence_scores, label_indices
from voxtrace.io import atomic_write_json

STATE_FILE = "open_set.json"


def threshold_at_tpr(confidence, target_tpr: float) -> float:
    """The confidence threshold that keeps `target_tpr` of `confidence` (NaN left out).

    With the `n` scores sorted ascending, the threshold is the score at position `floor((1 - target_tpr) * n)`:
    at least `target_tpr * n` of them score at or above it.
    """
    if not 0.0 < target_tpr <= 1.0:
        raise ValueError(f"target_tpr must be within (0, 1]. Received: target_tpr={target_tpr}")
    scores = np.sort(np.asarray(confidence, dtype=np.float64)[np.isfinite(confidence)])
    if len(scores) == 0:
        raise ValueError("no finite score to calibrate the open-set threshold on")
    return float(scores[int(np.floor((1.0 - target_tpr) * len(scores) + 1e-9))])


def calibrate_threshold(oof_probs, oof_labels, classes, unknown_class, score="maxprob", target_tpr=0.95) -> float:
    """The score threshold that keeps `target_tpr` of the correctly attributed known out-of-fold clips
    (`threshold_at_tpr`)."""
    classes = list(classes)
    if not 0.0 < target_tpr <= 1.0:
        raise ValueError(f"target_tpr must be within (0, 1]. Received: target_tpr={target_tpr}")
    probs = np.asarray(oof_probs, dtype=np.float64)
    labels = label_indices(oof_labels, classes)
    unknown = classes.index(unknown_class) if unknown_class in classes else -1
    ok = np.isfinite(probs).all(axis=1)
    correct = ok & (labels != unknown) & (np.nan_to_num(probs).argmax(axis=1) == labels)
    if not correct.any():
        raise ValueError(
            f"no correctly attributed known clip among {len(labels)} out-of-fold predictions; cannot calibrate "
            f"the open-set threshold (unknown_class={unknown_class!r})"
        )
    return threshold_at_tpr(confidence_scores(probs[correct], score), target_tpr)


def apply_open_set(probs, threshold: float, classes, unknown_class, score="maxprob"):
    """`(pred_idx, rejected)`: argmax, with clips scoring below `threshold` moved to `unknown_class`.

    Rows that are NaN get index -1 and are never rejected.
    """
    probs = np.asarray(probs, dtype=np.float64)
    classes = list(classes)
    if unknown_class not in classes:
        raise ValueError(f"unknown_class={unknown_class!r} is not one of classes={classes}")
    ok = np.isfinite(probs).all(axis=1)
    pred = np.where(ok, np.nan_to_num(probs).argmax(axis=1), -1)
    rejected = ok & (confidence_scores(np.where(ok[:, None], probs, 1.0), score) < threshold)
    pred[rejected] = classes.index(unknown_class)
    return pred, rejected


def read_oof(runs, classes, agg: str = "mean", weights: dict | None = None):
    """The ensemble's out-of-fold `(probs, labels, sources)`: each run's `csv/oof.csv`, joined on `path`."""
    from voxtrace.inference.ensemble import Aggregator, join_on_path

    sources = [run.files.oof for run in runs]
    missing = [str(p) for p in sources if not p.is_file()]
    if missing:
        raise FileNotFoundError(
            f"open-set calibration needs out-of-fold predictions; missing {missing} (written by `voxtrace train` "
            f"for k-fold runs; disable with infer.open_set.enabled=false)"
        )
    frames = []
    for path in sources:
        frame = pd.read_csv(path)
        absent = [c for c in ["path", "label", *classes] if c not in frame.columns]
        if absent:
            raise ValueError(f"{path} lacks columns {absent}; expected path, label and one column per class {classes}")
        frames.append(frame)
    frames = join_on_path(frames, sources)
    acc = Aggregator(agg)
    for run, frame in zip(runs, frames):
        weight = 1.0 if weights is None or agg == "max" else weights.get(run.name, 1.0)
        if weight > 0:
            acc.add(frame[classes].to_numpy(dtype=np.float64), weight)
    labels = label_indices(frames[0]["label"], classes)
    return acc.result(), labels, [str(p) for p in sources]


def load_or_calibrate(ensemble, score: str, target_tpr: float, recalibrate: bool = False) -> dict:
    """The saved `MODEL_DIR/open_set.json` if it matches the settings and checkpoints, else a new calibration."""
    unknown = ensemble.cfg.unknown_class
    expected = {"score": score, "target_tpr": float(target_tpr), "classes": ensemble.classes,
                "unknown_class": unknown, "agg": ensemble.agg, "weights": ensemble.weights,
                "checkpoints": ensemble.checkpoint_names}
    state_path, saved = ensemble.saved_state(STATE_FILE, expected)
    if saved is not None and not recalibrate:
        return saved
    if unknown is None:
        raise ValueError("open-set rejection needs unknown_class in the checkpoints' config (it is null)")
    probs, labels, sources = read_oof(ensemble.runs, ensemble.classes, ensemble.agg, ensemble.weights)
    threshold = calibrate_threshold(probs, labels, ensemble.classes, unknown, score, target_tpr)
    state = {**expected, "threshold": threshold, "oof_files": sources, "oof_clips": int(len(labels))}
    if state_path is not None:
        atomic_write_json(state_path, state)
    return state
