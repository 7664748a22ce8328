"""Open-set scores compared by `benchmarks/open_set.py`: a clip's confidence of being one of the known classes
(every class but the unknown one) from its probabilities (`maxprob`, `energy`) or from its penultimate
embedding (`checkpoint_features`): `knn`, minus the cosine distance to the k-th nearest known-class training
embedding, and `mahalanobis`, minus the smallest squared Mahalanobis distance to a known class mean under one
covariance shared by the classes (`fit_embedding_reference`). `energy` then uses the real logits. Rejection
thresholds are calibrated on the known clips of a held-out calibration set (`calibrate_rejection`): unknown
generators are by nature not available to calibrate on. Research code: `voxtrace predict` uses
`voxtrace.inference.open_set` alone.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.special import logsumexp

from voxtrace.evaluation.metrics import (
    confidence_scores,
    detection_auroc,
    fpr_at_tpr,
    known_columns,
    label_indices,
    per_class_report,
)
from voxtrace.inference.open_set import threshold_at_tpr

_EPS = 1e-7


@dataclass
class EmbeddingReference:
    """Known-class training embeddings, as the embedding-distance scores need them."""

    bank: np.ndarray  # [m, d] L2-normalised embeddings (kNN cosine distance)
    means: np.ndarray  # [k, d] one mean per known class
    precision: np.ndarray  # [d, d] inverse of the covariance shared by the known classes


def fit_embedding_reference(embeddings, labels, classes, unknown_class: str | None,
                            shrinkage: float = 1e-3) -> EmbeddingReference:
    """Fit the kNN bank and the shared-covariance Gaussian model on the known-class rows of `embeddings`.

    `labels` are class indices or names; rows of `unknown_class` and non-finite rows are left out. The shared
    covariance (pooled over the classes, around each class mean) is shrunk towards `shrinkage` times its mean
    variance on the diagonal so that it stays invertible with few clips per dimension.
    """
    classes = list(classes)
    x = np.asarray(embeddings, dtype=np.float64)
    y = label_indices(labels, classes)
    keep = np.isfinite(x).all(axis=1) & np.isin(y, known_columns(classes, unknown_class))
    x, y = x[keep], y[keep]
    present = sorted(set(y.tolist()))
    if len(x) <= len(present):
        raise ValueError(f"need more known-class embeddings than classes to fit the reference; got {len(x)} "
                         f"rows of classes {[classes[i] for i in present]}")
    means = np.stack([x[y == c].mean(axis=0) for c in present])
    centred = x - means[np.searchsorted(present, y)]
    cov = centred.T @ centred / (len(x) - len(present))
    cov += shrinkage * max(np.trace(cov) / len(cov), _EPS) * np.eye(len(cov))
    bank = x / np.clip(np.linalg.norm(x, axis=1, keepdims=True), _EPS, None)
    return EmbeddingReference(bank=bank, means=means, precision=np.linalg.inv(cov))


def knn_confidence(embeddings, reference: EmbeddingReference, k: int = 10) -> np.ndarray:
    """Minus the cosine distance of each row to its k-th nearest reference embedding (NaN rows stay NaN)."""
    x = np.asarray(embeddings, dtype=np.float64)
    k = min(int(k), len(reference.bank))
    if k < 1:
        raise ValueError(f"k must be >= 1. Received: k={k}")
    x = x / np.clip(np.linalg.norm(x, axis=1, keepdims=True), _EPS, None)
    similarity = x @ reference.bank.T
    kth = -np.partition(-similarity, k - 1, axis=1)[:, k - 1]  # the k-th largest similarity
    return kth - 1.0


def mahalanobis_confidence(embeddings, reference: EmbeddingReference) -> np.ndarray:
    """Minus the smallest squared Mahalanobis distance of each row to a known class mean."""
    x = np.asarray(embeddings, dtype=np.float64)
    diff = x[:, None, :] - reference.means[None, :, :]  # [n, k, d]
    distance = np.einsum("nkd,de,nke->nk", diff, reference.precision, diff)
    return -distance.min(axis=1)


def open_set_confidences(features: dict, classes, unknown_class: str | None,
                         reference: EmbeddingReference | None = None, k: int = 10) -> dict[str, np.ndarray]:
    """Every score the features allow: `{maxprob, energy[, knn, mahalanobis]: confidence [n]}`.

    `features` holds `probs` `[n, C]` and optionally `logits` `[n, C]` (then `energy` is their known-class
    logsumexp, else that of the zero-mean log-probabilities) and `embeddings` `[n, d]` (with a `reference`:
    the embedding-distance scores).
    """
    known = known_columns(classes, unknown_class)
    out = {"maxprob": confidence_scores(features["probs"], "maxprob", known)}
    logits = features.get("logits")
    out["energy"] = (logsumexp(np.asarray(logits, dtype=np.float64)[:, known], axis=1) if logits is not None
                     else confidence_scores(features["probs"], "energy", known))
    if reference is not None and features.get("embeddings") is not None:
        out["knn"] = knn_confidence(features["embeddings"], reference, k)
        out["mahalanobis"] = mahalanobis_confidence(features["embeddings"], reference)
    return out


def calibrate_rejection(confidence, labels, classes, unknown_class: str, target_tpr: float = 0.95) -> float:
    """The threshold that keeps `target_tpr` of the known-class clips of a calibration set (`threshold_at_tpr`)."""
    is_known = np.isin(label_indices(labels, list(classes)), known_columns(classes, unknown_class))
    if not is_known.any():
        raise ValueError(f"the calibration set has no clip of a known class (unknown_class={unknown_class!r})")
    return threshold_at_tpr(np.asarray(confidence, dtype=np.float64)[is_known], target_tpr)


def compare_open_set_scores(test: dict, calibration: dict, classes, unknown_class: str,
                            reference: EmbeddingReference | None = None, target_tpr: float = 0.95,
                            k: int = 10) -> pd.DataFrame:
    """One row per score: `score, auroc, fpr_at_95_tpr, threshold, unknown_f1, unknown_recall, known_kept`.

    `test` and `calibration` are feature dicts (see `open_set_confidences`) with `labels` (indices or names).
    AUROC and FPR@95TPR take the true unknowns of `test` as positives and minus the confidence as their score.
    The threshold comes from `calibration` (`calibrate_rejection`); on `test`, clips below it are attributed to
    `unknown_class`, the others keep their argmax, and `unknown_f1` / `unknown_recall` / `known_kept` (share of
    known clips not rejected) are measured on the result.
    """
    classes = list(classes)
    u = classes.index(unknown_class)
    y_true = label_indices(test["labels"], classes)
    probs = np.asarray(test["probs"], dtype=np.float64)
    ok = np.isfinite(probs).all(axis=1)
    argmax = np.nan_to_num(probs).argmax(axis=1)
    is_unknown = y_true == u
    test_scores = open_set_confidences(test, classes, unknown_class, reference, k)
    calib_scores = open_set_confidences(calibration, classes, unknown_class, reference, k)
    rows = []
    for name, confidence in test_scores.items():
        threshold = calibrate_rejection(calib_scores[name], calibration["labels"], classes, unknown_class, target_tpr)
        rejected = confidence < threshold
        pred = np.where(rejected, u, argmax)
        report = per_class_report(y_true[ok], pred[ok], classes).iloc[u]
        rows.append({"score": name, "auroc": detection_auroc(is_unknown, -confidence),
                     "fpr_at_95_tpr": fpr_at_tpr(is_unknown, -confidence, 0.95), "threshold": threshold,
                     "unknown_f1": float(report["f1"]), "unknown_recall": float(report["recall"]),
                     "known_kept": float(np.mean(~rejected[ok & ~is_unknown])) if (ok & ~is_unknown).any()
                     else float("nan")})
    return pd.DataFrame(rows)


# ---- penultimate embeddings of a checkpoint ----------------------------------------------------------------
def classifier_layer(model):
    """The output Dense (softmax) layer of a classifier: `build_classifier`'s head, else the last layer."""
    import keras

    from voxtrace.models.classifier import CLASSIFIER_LAYER

    names = [layer.name for layer in model.layers]
    layer = model.get_layer(CLASSIFIER_LAYER) if CLASSIFIER_LAYER in names else model.layers[-1]
    activation = getattr(getattr(layer, "activation", None), "__name__", None)
    if not isinstance(layer, keras.layers.Dense) or activation != "softmax":
        raise ValueError(f"model {model.name!r} does not end in a Dense softmax layer (found {layer.name!r}); "
                         f"cannot take its penultimate embedding")
    return layer


def embedding_model(model):
    """`waveforms [B, N] -> [B, d + C]`: the input of the output layer (the pooled, projected penultimate
    embedding, `d` wide) beside the class probabilities."""
    import keras

    layer = classifier_layer(model)
    return keras.Model(model.inputs, keras.layers.Concatenate(dtype="float32")([layer.input, model.output]),
                       name=f"{model.name}_embedding")


def checkpoint_features(checkpoint: str | os.PathLike, cfg, paths, batch_size: int | None = None,
                        progress: bool = False) -> dict:
    """`{embeddings [n, d], logits [n, C], probs [n, C], errors}` of `paths` under one checkpoint.

    Files are read as `voxtrace predict` reads them (`predict_models`), with window scores averaged; the
    logits are the averaged embedding through the output layer's kernel and bias, i.e. the average of the
    window logits. Files that fail get NaN rows and an entry in `errors`.
    """
    from voxtrace.inference.checkpoints import load_checkpoint
    from voxtrace.inference.predictor import predict_models

    model = load_checkpoint(checkpoint)
    layer = classifier_layer(model)
    features = embedding_model(model)
    width = int(features.output.shape[-1])
    dim = width - len(cfg.classes)
    feature_cfg = cfg.replace(classes=[f"feature_{i}" for i in range(width)], unknown_class=None,
                              infer__open_set__enabled=False, audio__window_agg="mean")
    out, errors = predict_models([features], feature_cfg, paths, batch_size=batch_size, progress=progress)
    embeddings, probs = out[0][:, :dim].astype(np.float64), out[0][:, dim:].astype(np.float64)
    kernel = np.asarray(layer.kernel, dtype=np.float64)
    bias = np.asarray(layer.bias, dtype=np.float64) if layer.use_bias else 0.0
    return {"embeddings": embeddings, "logits": embeddings @ kernel + bias, "probs": probs, "errors": errors}
