"""Score a prediction CSV against labels: the numbers, the tables and the plots of `voxtrace evaluate`.

Predictions (`track, algorithm[, <class probs>...][, error]`, as `voxtrace predict` writes them) and labels
(`track` plus one of `algorithm`, `label`, `class_id`, `class`, `class_name`: class indices or names) are
joined on `track`. Tracks predicted without a label, or labelled without a prediction, are reported by count
and examples. Rows without a prediction (files that failed) are counted as `n_failed` and left out of the
scores. ROC AUC needs the probability columns (`--probs`); for the detect task the EER is computed from the
bona fide probability. With a metadata CSV that has a `perturbations` column (`+`, `,`, `;` or `|` separated
names, empty for a clean clip) the scores are broken down per perturbation.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from voxtrace.config import ATTRIBUTION_CLASSES, DETECTION_CLASSES
from voxtrace.evaluation.metrics import (
    classification_scores,
    equal_error_rate,
    label_indices,
    label_scores,
    per_class_report,
)
from voxtrace.io import atomic_write_csv, atomic_write_json

LABEL_COLUMNS = ("algorithm", "label", "class_id", "class", "class_name")
PRED_META_COLUMNS = ("track", "path", "algorithm", "error", "confidence", "rejected", "class_name", "part")
_EXAMPLES = 5


def read_predictions(path) -> pd.DataFrame:
    frame = pd.read_csv(path, keep_default_na=True)
    for column in ("track", "algorithm"):
        if column not in frame.columns:
            raise ValueError(f"prediction CSV {path} has no `{column}` column. Received: {list(frame.columns)}")
    frame["track"] = frame["track"].astype(str)
    return frame


def read_labels(path) -> pd.DataFrame:
    """`DataFrame[track, label]` where `label` holds indices or names as written."""
    frame = pd.read_csv(path)
    column = next((c for c in LABEL_COLUMNS if c in frame.columns), None)
    if "track" not in frame.columns or column is None:
        raise ValueError(
            f"labels CSV {path} needs a `track` column and one of {list(LABEL_COLUMNS)}. "
            f"Received: {list(frame.columns)}"
        )
    return pd.DataFrame({"track": frame["track"].astype(str), "label": frame[column]})


def infer_classes(pred: pd.DataFrame, labels: pd.Series) -> list[str]:
    """Class names from the prediction's probability columns, else from the label names."""
    prob_columns = [c for c in pred.columns if c not in PRED_META_COLUMNS]
    if prob_columns:
        return prob_columns
    names = set(labels.dropna().astype(str))
    if names and names <= set(DETECTION_CLASSES):
        return list(DETECTION_CLASSES)
    if not names or names <= set(ATTRIBUTION_CLASSES) | {str(i) for i in range(len(ATTRIBUTION_CLASSES))}:
        return list(ATTRIBUTION_CLASSES)
    raise ValueError(f"cannot tell the class list from labels {sorted(names)[:8]}; pass --cfg with `classes`")


def perturbation_names(value) -> list[str]:
    """`"reverb(rt60=0.3s)+noise(white,10dB)"` -> `["noise", "reverb"]`; `"noise:15dB+mp3"` -> `["mp3", "noise"]`;
    empty / `none` / `clean` -> `["none"]`."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return ["none"]
    text = re.sub(r"\([^)]*\)", "", str(value))  # parameters: "noise(white,10.6dB)" -> "noise"
    names = [re.split(r"[:=@]", t.strip(), maxsplit=1)[0].strip() for t in re.split(r"[+,;|]", text)]
    names = [n for n in names if n and n.lower() not in ("none", "clean", "nan", "[]")]
    return sorted(set(names)) or ["none"]


def evaluate_frames(pred: pd.DataFrame, labels: pd.DataFrame, classes, metadata: pd.DataFrame | None = None):
    """`(report, tables, y_true, y_pred)` of joined predictions and labels."""
    classes = list(classes)
    duplicates = int(pred["track"].duplicated().sum())
    pred = pred.drop_duplicates("track")
    labels = labels.drop_duplicates("track")
    joined = pred.merge(labels, on="track", how="inner")
    no_label = sorted(set(pred["track"]) - set(labels["track"]))
    no_pred = sorted(set(labels["track"]) - set(pred["track"]))
    algorithm = pd.to_numeric(joined["algorithm"], errors="coerce")
    scored = algorithm.notna() & (algorithm >= 0)
    failed = joined[~scored]
    joined = joined[scored].reset_index(drop=True)
    y_true = label_indices(joined["label"], classes, "labels")
    y_pred = label_indices(joined["algorithm"].astype(float).astype(int), classes, "predictions")
    have_probs = all(c in joined.columns for c in classes)
    if have_probs:
        probs = joined[classes].to_numpy(dtype=np.float64)
        scores = classification_scores(y_true, probs, classes)
        scores.update(label_scores(y_true, y_pred, classes))  # the written labels (e.g. after open-set rejection)
    else:
        scores = {**label_scores(y_true, y_pred, classes), "auc": float("nan")}
    report = {
        "classes": classes,
        "n_predictions": int(len(pred)),
        "n_labels": int(len(labels)),
        "n_scored": int(len(joined)),
        "n_failed": int(len(failed)),
        "duplicate_tracks": duplicates,  # predicted twice (same file name in two folders): first row kept
        "failed_examples": failed["track"].head(_EXAMPLES).tolist(),
        "missing_labels": {"count": len(no_label), "examples": no_label[:_EXAMPLES]},
        "missing_predictions": {"count": len(no_pred), "examples": no_pred[:_EXAMPLES]},
        **scores,
    }
    if classes == list(DETECTION_CLASSES) and have_probs:
        bonafide = classes.index("bonafide")
        report["eer"], report["eer_threshold"] = equal_error_rate(y_true == bonafide, probs[:, bonafide])
    per_class = per_class_report(y_true, y_pred, classes)
    report["per_class"] = {
        row["class"]: {k: row[k] for k in ("precision", "recall", "f1", "support")}
        for row in per_class.to_dict("records")
    }
    tables = {"per_class": per_class}
    if metadata is not None and "perturbations" in metadata.columns:
        tables["per_perturbation"] = _per_perturbation(joined, y_true, y_pred, metadata, classes)
        report["per_perturbation"] = tables["per_perturbation"].set_index("perturbation").to_dict("index")
    return report, tables, y_true, y_pred


def _per_perturbation(joined, y_true, y_pred, metadata, classes) -> pd.DataFrame:
    meta = metadata.assign(track=metadata["track"].astype(str)).drop_duplicates("track").set_index("track")
    names = joined["track"].map(meta["perturbations"]).map(perturbation_names)
    rows = []
    for name in sorted({n for group in names for n in group}):
        mask = names.map(lambda group: name in group).to_numpy(dtype=bool)
        rows.append({"perturbation": name, "n": int(mask.sum()), **label_scores(y_true[mask], y_pred[mask], classes)})
    return pd.DataFrame(rows, columns=["perturbation", "n", "acc", "precision", "recall", "f1"])


def format_report(report: dict) -> str:
    """A compact text table of the headline numbers and the per-class F1."""
    keys = [k for k in ("acc", "precision", "recall", "f1", "auc", "eer") if k in report]
    lines = [
        "  ".join(f"{k:>9}" for k in keys),
        "  ".join(f"{report[k]:9.4f}" for k in keys),
        f"scored {report['n_scored']} of {report['n_predictions']} predictions; failed {report['n_failed']}; "
        f"without label {report['missing_labels']['count']}; labels without prediction "
        f"{report['missing_predictions']['count']}",
    ]
    for side, title in (("missing_labels", "predicted, no label"), ("missing_predictions", "labelled, not predicted")):
        if report[side]["count"]:
            more = " ..." if report[side]["count"] > _EXAMPLES else ""
            lines.append(f"  {title}: {', '.join(report[side]['examples'])}{more}")
    width = max(len(c) for c in report["per_class"])
    lines.append(f"{'class':<{width}}  precision  recall      f1  support")
    for name, row in report["per_class"].items():
        lines.append(
            f"{name:<{width}}  {row['precision']:9.4f}  {row['recall']:6.4f}  {row['f1']:6.4f}  "
            f"{int(row['support']):7d}"
        )
    for name, row in report.get("per_perturbation", {}).items():
        lines.append(f"perturbation {name}: n={row['n']} acc={row['acc']:.4f} f1={row['f1']:.4f}")
    return "\n".join(lines)


def evaluate_files(pred_csv, labels_csv, metadata=None, out_dir=None, classes=None, title=None) -> dict:
    """Evaluate `pred_csv` against `labels_csv`; writes report.json, per_class.csv, [per_perturbation.csv] and
    confusion_matrix.png into `out_dir` (default: beside the prediction CSV) and returns the report."""
    from voxtrace.evaluation.plots import plot_confusion_matrix

    pred = read_predictions(pred_csv)
    labels = read_labels(labels_csv)
    classes = list(classes) if classes else infer_classes(pred, labels["label"])
    meta = pd.read_csv(metadata) if metadata else None
    if meta is not None and "track" not in meta.columns:
        raise ValueError(f"metadata CSV {metadata} has no `track` column. Received: {list(meta.columns)}")
    report, tables, y_true, y_pred = evaluate_frames(pred, labels, classes, meta)
    report = {"pred": str(pred_csv), "labels": str(labels_csv), **report}
    out_dir = Path(out_dir) if out_dir else Path(pred_csv).parent
    for name, table in tables.items():
        atomic_write_csv(out_dir / f"{name}.csv", table)
    plot_confusion_matrix(y_true, y_pred, classes, out_dir / "confusion_matrix.png",
                          title=title or f"{Path(pred_csv).name} (n={len(y_true)})")
    outputs = [*(f"{n}.csv" for n in tables), "confusion_matrix.png", "report.json"]
    report["outputs"] = sorted(str(out_dir / f) for f in outputs)
    atomic_write_json(out_dir / "report.json", _json_safe(report))
    return report


def _json_safe(obj):
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, (float, np.floating)):
        return None if not np.isfinite(obj) else float(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    return obj
