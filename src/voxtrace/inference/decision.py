"""Detection decisions: a clip is the positive class (spoof) when its positive-class probability reaches a
threshold fitted on out-of-fold scores, not when it is the larger of two probabilities.

The threshold comes from the ensemble's leave-voice-out out-of-fold scores (every run's `csv/oof.csv`, mixed
with the ensemble's weights and aggregation; `voxtrace.inference.open_set.read_oof`): `rule: eer` takes the
equal-error point (`evaluation.metrics.equal_error_rate`), `rule: far` the highest threshold that lets at most
`target_far` of the positive clips through as the other class (a false acceptance: a spoof accepted as bona
fide). It is saved with the ensemble as `MODEL_DIR/decision.json` (with the out-of-fold figures behind it) and
reused while the rule, classes, weights, aggregation and checkpoints are unchanged. `predict` writes its label
column with it, `serve` answers with it and `evaluate --decision` scores it (`evaluate_scores`).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from voxtrace.evaluation.metrics import equal_error_rate
from voxtrace.io import atomic_write_json
from voxtrace.vocabulary import DECISION_RULES as RULES

STATE_FILE = "decision.json"


def fit_threshold(is_positive, scores, rule: str = "eer", target_far: float = 0.01) -> float:
    """The score threshold (positive when `score >= threshold`) of `rule` on labelled scores.

    `eer`: the equal-error point, where the share of positives below the threshold equals the share of negatives
    at or above it. `far`: with the `n` positive scores sorted ascending, the one at position
    `floor(target_far * n)`: at most `target_far * n` positives score below it.
    """
    is_positive = np.asarray(is_positive, bool)
    scores = np.asarray(scores, np.float64)
    ok = np.isfinite(scores)
    is_positive, scores = is_positive[ok], scores[ok]
    if is_positive.all() or not is_positive.any():
        raise ValueError(f"fitting a decision threshold needs scores of both classes; got {int(is_positive.sum())} "
                         f"positive and {int((~is_positive).sum())} negative finite scores")
    if rule == "eer":
        return equal_error_rate(is_positive, scores)[1]
    if rule == "far":
        if not 0.0 <= target_far < 1.0:
            raise ValueError(f"target_far must be within [0, 1). Received: target_far={target_far}")
        positives = np.sort(scores[is_positive])
        return float(positives[int(np.floor(target_far * len(positives) + 1e-9))])
    raise ValueError(f"decision rule must be eer or far to fit a threshold. Received: rule={rule!r}")


def decide(probs, decision: dict, classes) -> np.ndarray:
    """Class indices of `[n, 2]` probabilities under a fitted `decision`: the positive class where its
    probability reaches the threshold, the other class elsewhere; -1 for NaN rows (files that failed)."""
    classes = list(classes)
    positive = classes.index(decision["positive"])
    probs = np.asarray(probs, np.float64)
    ok = np.isfinite(probs).all(axis=1)
    pred = np.where(probs[:, positive] >= decision["threshold"], positive, 1 - positive)
    return np.where(ok, pred, -1)


def decision_settings(runs_cfg, cfg_path=None):
    """The `infer.decision` section of `cfg_path` when given, else of the checkpoints' config."""
    from voxtrace.config import Config

    return Config.load(cfg_path).infer.decision if cfg_path else runs_cfg.infer.decision


def load_or_fit_decision(ensemble, settings, refit: bool = False) -> dict | None:
    """The saved `MODEL_DIR/decision.json` if it matches `settings` (an `infer.decision` section) and the
    ensemble, else a threshold fitted on the ensemble's out-of-fold scores and saved; None for `argmax`."""
    from voxtrace.inference.open_set import read_oof

    if settings.rule == "argmax":
        return None
    classes = list(ensemble.classes)
    if len(classes) != 2 or settings.positive not in classes:
        raise ValueError(f"infer.decision.rule={settings.rule!r} needs two classes, one of them "
                         f"infer.decision.positive={settings.positive!r}. Received: classes={classes}")
    expected = {"rule": settings.rule, "target_far": float(settings.target_far), "positive": settings.positive,
                "classes": classes, "agg": ensemble.agg, "weights": ensemble.weights,
                "checkpoints": ensemble.checkpoint_names}
    state_path, saved = ensemble.saved_state(STATE_FILE, expected)
    if saved is not None and not refit:
        return saved
    probs, labels, sources = read_oof(ensemble.runs, classes, ensemble.agg, ensemble.weights)
    positive = classes.index(settings.positive)
    is_positive, scores = labels == positive, probs[:, positive]
    threshold = fit_threshold(is_positive, scores, settings.rule, settings.target_far)
    state = {**expected, "threshold": threshold, "oof": detection_figures(is_positive, scores, threshold),
             "oof_files": sources, "oof_clips": int(len(labels))}
    if state_path is not None:
        atomic_write_json(state_path, state)
    return state


def read_decision(path) -> dict:
    """A saved decision: `path` is a `decision.json` or the model dir that holds one."""
    path = Path(path)
    file = path / STATE_FILE if path.is_dir() else path
    if not file.is_file():
        raise FileNotFoundError(f"no saved decision at {file} (written by `voxtrace predict` with "
                                f"infer.decision.rule eer or far)")
    state = json.loads(file.read_text())
    missing = [k for k in ("threshold", "positive", "classes") if k not in state]
    if missing:
        raise ValueError(f"{file}: not a decision file, it lacks {missing}")
    return state


def detection_figures(is_positive, scores, threshold: float | None = None) -> dict:
    """EER (and its threshold), minDCF (ASVspoof 5's costs, bona fide the target class), and accuracy at the EER threshold and at `threshold` with its
    false-acceptance rate (positives scored below it) and false-rejection rate (negatives at or above it).

    `is_positive` marks the positive (spoof) clips, `scores` their positive-class scores; NaN scores left out.
    """
    from voxtrace.evaluation.metrics import min_dcf

    is_positive = np.asarray(is_positive, bool)
    scores = np.asarray(scores, np.float64)
    ok = np.isfinite(scores)
    is_positive, scores = is_positive[ok], scores[ok]
    eer, eer_threshold = equal_error_rate(is_positive, scores)
    out = {"n": int(len(scores)), "n_positive": int(is_positive.sum()), "eer": eer, "eer_threshold": eer_threshold,
           "min_dcf": min_dcf(~is_positive, -scores),
           "acc_at_eer_threshold": float(np.mean((scores >= eer_threshold) == is_positive))}
    if threshold is not None:
        flagged = scores >= threshold
        out.update(threshold=float(threshold), acc=float(np.mean(flagged == is_positive)),
                   false_acceptance=float(np.mean(~flagged[is_positive])) if is_positive.any() else float("nan"),
                   false_rejection=float(np.mean(flagged[~is_positive])) if (~is_positive).any() else float("nan"))
    return out


def evaluate_scores(pred_csv, labels_csv, classes, positive: str, threshold: float | None = None) -> dict:
    """`detection_figures` of a prediction CSV with probability columns (`predict --probs`) against a label CSV
    (class indices into `classes`, or names), at `threshold` when given."""
    from voxtrace.evaluation.metrics import label_indices
    from voxtrace.evaluation.reports import read_labels, read_predictions

    classes = list(classes)
    pred = read_predictions(pred_csv).drop_duplicates("track")
    if positive not in pred.columns:
        raise ValueError(f"{pred_csv} has no `{positive}` probability column (run `voxtrace predict --probs`)")
    joined = pred.merge(read_labels(labels_csv).drop_duplicates("track"), on="track", how="inner")
    if joined.empty:
        raise ValueError(f"{pred_csv} and {labels_csv} share no track")
    is_positive = label_indices(joined["label"], classes, str(labels_csv)) == classes.index(positive)
    scores = pd.to_numeric(joined[positive], errors="coerce").to_numpy(np.float64)
    return {"pred": str(pred_csv), "labels": str(labels_csv), "positive": positive,
            **detection_figures(is_positive, scores, threshold)}
