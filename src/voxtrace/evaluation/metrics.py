"""Classification and detection metrics, with scikit-learn as the reference formulas.

Conventions: `y_true_idx` / `y_pred_idx` are integer class indices into `classes`; `probs` is `[n, C]` in the
same order. Rows whose probabilities are NaN (files that failed to decode) are left out of every score.
Macro averages run over the classes present in the labels or the predictions; ROC AUC is the one-vs-one
macro average over the classes present in the labels (NaN when fewer than two are present).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.special import logsumexp
from sklearn import metrics as skm

from voxtrace.vocabulary import OPEN_SET_SCORES

_PROB_FLOOR = 1e-7  # probabilities are clipped here before a logarithm


def _as_index(y, name: str) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array of class indices. Received shape: {y.shape}")
    return y.astype(np.int64)


def label_indices(labels, classes, source: str = "labels") -> np.ndarray:
    """Class indices of `labels` given as indices or class names; refuses values outside `classes`, naming `source`."""
    values = pd.Series(list(labels))
    numeric = pd.to_numeric(values, errors="coerce")
    if numeric.notna().all():
        idx = numeric.to_numpy(dtype=np.int64)
        bad = sorted(set(idx[(idx < 0) | (idx >= len(classes))].tolist()))
    else:
        lookup = {name: i for i, name in enumerate(classes)}
        text = values.astype(str)
        bad = sorted(set(text[~text.isin(lookup)]))
        idx = text.map(lookup).fillna(-1).to_numpy(dtype=np.int64)
    if bad:
        raise ValueError(f"{source}: {bad[:5]} are not classes of {list(classes)}")
    return idx


def label_scores(y_true_idx, y_pred_idx, classes) -> dict:
    """Accuracy and macro precision / recall / F1 of hard predictions."""
    y_true = _as_index(y_true_idx, "y_true_idx")
    y_pred = _as_index(y_pred_idx, "y_pred_idx")
    if len(y_true) != len(y_pred):
        raise ValueError(f"y_true_idx has {len(y_true)} entries but y_pred_idx has {len(y_pred)}")
    if len(y_true) == 0:
        return {"acc": float("nan"), "precision": float("nan"), "recall": float("nan"), "f1": float("nan")}
    labels = sorted(set(y_true.tolist()) | set(y_pred.tolist()))
    p, r, f, _ = skm.precision_recall_fscore_support(
        y_true, y_pred, labels=labels, average="macro", zero_division=0
    )
    return {"acc": float(skm.accuracy_score(y_true, y_pred)), "precision": float(p), "recall": float(r), "f1": float(f)}


def roc_auc(y_true_idx, probs, classes) -> float:
    """ROC AUC: binary for two classes, else one-vs-one macro over the classes present in `y_true_idx`."""
    y_true = _as_index(y_true_idx, "y_true_idx")
    probs = np.asarray(probs, dtype=np.float64)
    present = sorted(set(y_true.tolist()))
    if len(present) < 2:
        return float("nan")
    if len(classes) == 2:
        return float(skm.roc_auc_score(y_true, probs[:, 1]))
    sub = probs[:, present]
    sub = sub / np.clip(sub.sum(axis=1, keepdims=True), 1e-12, None)
    if len(present) == 2:
        return float(skm.roc_auc_score(y_true == present[1], sub[:, 1]))
    return float(skm.roc_auc_score(y_true, sub, multi_class="ovo", average="macro", labels=present))


def classification_scores(y_true_idx, probs, classes) -> dict:
    """`dict(acc, precision, recall, f1, auc)` of class probabilities `[n, C]` against true indices."""
    y_true = _as_index(y_true_idx, "y_true_idx")
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 2 or probs.shape[1] != len(classes) or len(probs) != len(y_true):
        raise ValueError(
            f"probs must be [n={len(y_true)}, C={len(classes)}] for classes={list(classes)}. "
            f"Received shape: {probs.shape}"
        )
    ok = np.isfinite(probs).all(axis=1)
    y_true, probs = y_true[ok], probs[ok]
    scores = label_scores(y_true, probs.argmax(axis=1) if len(probs) else np.zeros(0, np.int64), classes)
    scores["auc"] = roc_auc(y_true, probs, classes) if len(probs) else float("nan")
    return scores


def per_class_report(y_true_idx, y_pred_idx, classes) -> pd.DataFrame:
    """One row per class (precision, recall, f1, support, predicted) plus a `macro avg` row."""
    y_true = _as_index(y_true_idx, "y_true_idx")
    y_pred = _as_index(y_pred_idx, "y_pred_idx")
    labels = list(range(len(classes)))
    p, r, f, support = skm.precision_recall_fscore_support(
        y_true, y_pred, labels=labels, average=None, zero_division=0
    )
    predicted = np.bincount(y_pred[(y_pred >= 0) & (y_pred < len(classes))], minlength=len(classes))
    frame = pd.DataFrame(
        {"class": list(classes), "precision": p, "recall": r, "f1": f, "support": support, "predicted": predicted}
    )
    present = (support > 0) | (predicted > 0)
    macro = {
        "class": "macro avg",
        "precision": p[present].mean() if present.any() else np.nan,
        "recall": r[present].mean() if present.any() else np.nan,
        "f1": f[present].mean() if present.any() else np.nan,
        "support": int(support.sum()),
        "predicted": int(predicted.sum()),
    }
    return pd.concat([frame, pd.DataFrame([macro])], ignore_index=True)


def equal_error_rate(is_positive, scores) -> tuple[float, float]:
    """EER and its threshold for `scores` where higher means positive (e.g. bona fide).

    The EER is where the miss rate (positives scored below the threshold) equals the false-alarm rate
    (negatives scored at or above it), linearly interpolated between the two ROC points around the crossing.
    """
    is_positive = np.asarray(is_positive).astype(bool)
    scores = np.asarray(scores, dtype=np.float64)
    ok = np.isfinite(scores)
    is_positive, scores = is_positive[ok], scores[ok]
    if is_positive.all() or not is_positive.any():
        return float("nan"), float("nan")
    fpr, tpr, thresholds = skm.roc_curve(is_positive, scores, drop_intermediate=False)
    fnr = 1.0 - tpr
    diff = fnr - fpr  # decreasing from 1 to -1 along the curve
    i = int(np.argmax(diff <= 0))
    if i == 0 or diff[i] == 0:
        return float(fpr[i]), float(thresholds[i])
    w = diff[i - 1] / (diff[i - 1] - diff[i])
    eer = fpr[i - 1] + w * (fpr[i] - fpr[i - 1])
    if np.isfinite(thresholds[i - 1]):
        threshold = thresholds[i - 1] + w * (thresholds[i] - thresholds[i - 1])
    else:
        threshold = thresholds[i]
    return float(eer), float(threshold)


def _binary_scores(is_positive, scores) -> tuple[np.ndarray, np.ndarray]:
    """Boolean positives and float scores of equal length, rows with a non-finite score left out."""
    is_positive = np.asarray(is_positive).astype(bool)
    scores = np.asarray(scores, dtype=np.float64)
    if is_positive.shape != scores.shape or scores.ndim != 1:
        raise ValueError(f"is_positive and scores must be 1-D of one length. Received: {is_positive.shape}, "
                         f"{scores.shape}")
    ok = np.isfinite(scores)
    return is_positive[ok], scores[ok]


def detection_auroc(is_positive, scores) -> float:
    """Area under the ROC curve of `scores` (higher = positive), as the Mann-Whitney statistic: the chance that
    a random positive outscores a random negative, ties counting one half. NaN without both sides."""
    from scipy.stats import rankdata

    is_positive, scores = _binary_scores(is_positive, scores)
    n_pos, n_neg = int(is_positive.sum()), int((~is_positive).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(scores)  # ties get their average rank
    return float((ranks[is_positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def fpr_at_tpr(is_positive, scores, tpr: float = 0.95) -> float:
    """False-positive rate at the highest threshold that flags at least `tpr` of the positives.

    With the positives' scores sorted high to low, the threshold is the `ceil(tpr * n_pos)`-th of them; the
    result is the share of negatives scoring at or above it. NaN without both sides.
    """
    if not 0.0 < tpr <= 1.0:
        raise ValueError(f"tpr must be within (0, 1]. Received: tpr={tpr}")
    is_positive, scores = _binary_scores(is_positive, scores)
    positives, negatives = np.sort(scores[is_positive])[::-1], scores[~is_positive]
    if len(positives) == 0 or len(negatives) == 0:
        return float("nan")
    threshold = positives[int(np.ceil(tpr * len(positives) - 1e-9)) - 1]
    return float(np.mean(negatives >= threshold))


# ---- detection costs (ASVspoof 5 conventions) ---------------------------------------------------------------
# ASVspoof 5's parameters: a prior of 0.05 for spoof (so p_target = 0.95 for bona fide, the positive class),
# a missed bona fide costs 1, a spoof accepted costs 10.
DCF_P_TARGET = 0.95
DCF_C_MISS = 1.0
DCF_C_FA = 10.0


def det_curve(is_positive, scores) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`(miss_rates, false_alarm_rates, thresholds)` of `scores` (higher = positive), thresholds ascending.

    At threshold t a clip is accepted as positive when its score is >= t: the miss rate is the share of
    positives scored below t, the false-alarm rate the share of negatives at or above it. The thresholds are
    every distinct score and +inf (nothing accepted), so the curve runs from (0, 1) to (1, 0). Rows with a
    non-finite score are left out; empty arrays without both sides.
    """
    is_positive, scores = _binary_scores(is_positive, scores)
    n_pos, n_neg = int(is_positive.sum()), int((~is_positive).sum())
    if n_pos == 0 or n_neg == 0:
        return np.zeros(0), np.zeros(0), np.zeros(0)
    thresholds = np.append(np.unique(scores), np.inf)
    pos, neg = np.sort(scores[is_positive]), np.sort(scores[~is_positive])
    miss = np.searchsorted(pos, thresholds, side="left") / n_pos
    false_alarm = 1.0 - np.searchsorted(neg, thresholds, side="left") / n_neg
    return miss, false_alarm, thresholds


def _dcf_norm(p_target: float, c_miss: float, c_fa: float) -> float:
    if not 0.0 < p_target < 1.0 or c_miss <= 0 or c_fa <= 0:
        raise ValueError(f"p_target must be within (0, 1) and the costs positive. Received: p_target={p_target}, "
                         f"c_miss={c_miss}, c_fa={c_fa}")
    return min(c_miss * p_target, c_fa * (1.0 - p_target))


def min_dcf(is_positive, scores, p_target: float = DCF_P_TARGET, c_miss: float = DCF_C_MISS,
            c_fa: float = DCF_C_FA) -> float:
    """Normalised minimum detection cost of `scores` (higher = positive, e.g. bona fide), as ASVspoof 5:
    min over thresholds of `c_miss * p_target * P_miss + c_fa * (1 - p_target) * P_fa`, divided by the cost of
    the better trivial system `min(c_miss * p_target, c_fa * (1 - p_target))`. Any monotonic score works (no
    calibration needed). The defaults are ASVspoof 5's (pi_spoof = 0.05, C_miss = 1, C_fa = 10). NaN without
    both sides."""
    norm = _dcf_norm(p_target, c_miss, c_fa)
    miss, false_alarm, _ = det_curve(is_positive, scores)
    if len(miss) == 0:
        return float("nan")
    return float(np.min(c_miss * p_target * miss + c_fa * (1.0 - p_target) * false_alarm) / norm)


def bayes_threshold(p_target: float = DCF_P_TARGET, c_miss: float = DCF_C_MISS, c_fa: float = DCF_C_FA) -> float:
    """The log-likelihood-ratio threshold of the Bayes decision: `log(c_fa (1 - p_target) / (c_miss p_target))`
    (ASVspoof 5's `-log(beta)`; -0.642 with its parameters)."""
    _dcf_norm(p_target, c_miss, c_fa)
    return float(np.log(c_fa * (1.0 - p_target) / (c_miss * p_target)))


def act_dcf(is_positive, llrs, p_target: float = DCF_P_TARGET, c_miss: float = DCF_C_MISS,
            c_fa: float = DCF_C_FA) -> float:
    """Normalised actual detection cost of log-likelihood-ratio scores (positive class over negative): the
    cost of deciding at the Bayes threshold (`bayes_threshold`; accept when llr >= it), normalised as
    `min_dcf`. It counts miscalibration that `min_dcf` does not. NaN without both sides."""
    norm = _dcf_norm(p_target, c_miss, c_fa)
    is_positive, llrs = _binary_scores(is_positive, llrs)
    if is_positive.all() or not is_positive.any():
        return float("nan")
    threshold = bayes_threshold(p_target, c_miss, c_fa)
    p_miss = np.mean(llrs[is_positive] < threshold)
    p_fa = np.mean(llrs[~is_positive] >= threshold)
    return float((c_miss * p_target * p_miss + c_fa * (1.0 - p_target) * p_fa) / norm)


def cllr(is_positive, llrs) -> float:
    """Log-likelihood-ratio cost in bits: `(mean log2(1 + e^-llr) over positives + mean log2(1 + e^llr) over
    negatives) / 2`. 0 for perfect calibrated scores, 1 for a system that always says llr = 0. NaN without
    both sides."""
    is_positive, llrs = _binary_scores(is_positive, llrs)
    if is_positive.all() or not is_positive.any():
        return float("nan")
    positive = np.mean(np.logaddexp(0.0, -llrs[is_positive]))
    negative = np.mean(np.logaddexp(0.0, llrs[~is_positive]))
    return float((positive + negative) / (2.0 * np.log(2.0)))


def llr_from_posterior(p_positive, prior: float = 0.5, eps: float = 1e-7) -> np.ndarray:
    """Log-likelihood ratios from posteriors of the positive class: `logit(p) - logit(prior)`, where `prior` is
    the positive share the model was trained with (0.5 for class-balanced training); `p` is clipped to
    [eps, 1 - eps] so a posterior of exactly 0 or 1 gives a finite ratio."""
    p = np.clip(np.asarray(p_positive, dtype=np.float64), eps, 1.0 - eps)
    return np.log(p) - np.log1p(-p) - (np.log(prior) - np.log1p(-prior))


def detection_costs(is_positive, scores, llrs=None) -> dict:
    """The ASVspoof 5 figures of one score set: `eer`, `min_dcf` (of `scores`), and with `llrs` `act_dcf` and
    `cllr`, at the challenge's parameters."""
    out = {"eer": equal_error_rate(is_positive, scores)[0], "min_dcf": min_dcf(is_positive, scores)}
    if llrs is not None:
        out.update(act_dcf=act_dcf(is_positive, llrs), cllr=cllr(is_positive, llrs))
    return out


# ---- open-set confidence ----------------------------------------------------------------------------------
def confidence_scores(probs, score: str = "maxprob", known=None) -> np.ndarray:
    """Per-row confidence of `[n, C]` probabilities (higher = more confident; NaN rows stay NaN).

    `known` (column indices, default all) restricts the score to those classes: `maxprob` is their top
    probability, `energy` the logsumexp of their zero-mean logits `log p - mean(log p)` (over all columns).
    """
    probs = np.asarray(probs, dtype=np.float64)
    known = slice(None) if known is None else list(known)
    if score == "maxprob":
        return probs[:, known].max(axis=1)
    if score == "energy":
        log_p = np.log(np.clip(probs, _PROB_FLOOR, 1.0))
        return logsumexp(log_p[:, known], axis=1) - log_p.mean(axis=1)
    raise ValueError(f"open-set score must be one of {list(OPEN_SET_SCORES)}. Received: score={score!r}")


def known_columns(classes, unknown_class: str | None) -> list[int]:
    """Indices of the known classes: every class but `unknown_class`."""
    return [i for i, name in enumerate(classes) if name != unknown_class]
