"""Score a prediction CSV against labels: the numbers, the tables and the plots of `voxtrace evaluate`.

Predictions (`track, algorithm[, <class probs>...][, error]`, as `voxtrace predict` writes them) and labels
(`track` plus one of `algorithm`, `label`, `class_id`, `class`, `class_name`: class indices or names) are
joined on `track`. Tracks predicted without a label, or labelled without a prediction, are reported by count
and examples. Rows without a prediction (files that failed) are counted as `n_failed` and left out of the
scores. ROC AUC needs the probability columns (`--probs`); for the detect task the EER is computed from the
bona fide probability. With a metadata CSV that has a `perturbations` column (`+`, `,`, `;` or `|` separated
entries, each starting with its channel family's name; empty for a clean clip) the scores are broken down per
channel family (`clean` for none).

Open-set figures (when the class list has an unknown class): the unknown class' precision, recall and F1; its
recall split by origin (metadata `detect_id`: 0 human, 1 synthetic) and by generator (metadata `engine`); and,
with probability columns, how well a per-clip unknown score separates true unknowns (positives) from known
clips: AUROC and the false-positive rate at 95 % true-positive rate. The score is the unknown class'
probability (`unknown_prob`) or one minus the top known-class probability (`maxprob`). With metadata holding
`split` and `speaker` (or `voice`) for the training clips, the scores are also split into clips whose voice
training saw and clips whose voice it did not.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from voxtrace.config import ATTRIBUTION_CLASSES, DETECTION_CLASSES
from voxtrace.data.datasets.common import CONDITION_COLUMNS
from voxtrace.evaluation.metrics import (
    classification_scores,
    confidence_scores,
    det_curve,
    detection_auroc,
    detection_costs,
    equal_error_rate,
    fpr_at_tpr,
    known_columns,
    label_indices,
    label_scores,
    llr_from_posterior,
    per_class_report,
)
from voxtrace.io import atomic_write_csv, atomic_write_json, atomic_write_text

LABEL_COLUMNS = ("algorithm", "label", "class_id", "class", "class_name")
PRED_META_COLUMNS = ("track", "path", "algorithm", "error", "confidence", "rejected", "class_name", "part")
_EXAMPLES = 5
UNKNOWN_SCORES = ("unknown_prob", "maxprob")  # the unknown score: P(unknown) or 1 - max known-class probability
VOICE_COLUMNS = ("speaker", "voice")  # metadata columns naming a clip's voice, in order of preference
TRAIN_SPLIT = "train"


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
    """Channel families of a metadata `perturbations` entry: `"reverb(rt60=0.3s)+noise(white,10dB)"` ->
    `["noise", "reverb"]`; `"noise:15dB+mp3"` -> `["mp3", "noise"]`; empty / `none` / `clean` -> `["clean"]`."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return ["clean"]
    text = re.sub(r"\([^)]*\)", "", str(value))  # parameters: "noise(white,10.6dB)" -> "noise"
    names = [re.split(r"[:=@]", t.strip(), maxsplit=1)[0].strip() for t in re.split(r"[+,;|]", text)]
    names = [n for n in names if n and n.lower() not in ("none", "clean", "nan", "[]")]
    return sorted(set(names)) or ["clean"]


def evaluate_frames(pred: pd.DataFrame, labels: pd.DataFrame, classes, metadata: pd.DataFrame | None = None,
                    unknown_class: str | None = "unknown", unknown_score: str = "unknown_prob"):
    """`(report, tables, y_true, y_pred)` of joined predictions and labels.

    `unknown_class` (when it is one of `classes`) adds the `open_set` section, its AUROC and FPR@95TPR from
    the `unknown_score` of `UNKNOWN_SCORES`.
    """
    classes = list(classes)
    if unknown_score not in UNKNOWN_SCORES:
        raise ValueError(f"unknown_score must be one of {list(UNKNOWN_SCORES)}. Received: {unknown_score!r}")
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
    probs = joined[classes].to_numpy(dtype=np.float64) if have_probs else None
    if have_probs:
        scores = classification_scores(y_true, probs, classes)
        scores.update(label_scores(y_true, y_pred, classes))  # the written labels (e.g. after open-set rejection)
    else:
        scores = {**label_scores(y_true, y_pred, classes), "auc": float("nan")}
    tables = {}
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
    detection = None  # (is bona fide, bona fide probability, its log-likelihood ratio) for the detect task
    if classes == list(DETECTION_CLASSES) and have_probs:
        bonafide = classes.index("bonafide")
        detection = (y_true == bonafide, probs[:, bonafide], llr_from_posterior(probs[:, bonafide]))
        report["eer"], report["eer_threshold"] = equal_error_rate(detection[0], detection[1])
        report.update({k: v for k, v in detection_costs(*detection).items() if k != "eer"})
        tables["det_curve"] = _det_table("bona fide vs spoof", detection[0], detection[1])
    per_class = per_class_report(y_true, y_pred, classes)
    report["per_class"] = {
        row["class"]: {k: row[k] for k in ("precision", "recall", "f1", "support")}
        for row in per_class.to_dict("records")
    }
    tables["per_class"] = per_class
    meta = _track_metadata(metadata, joined["track"]) if metadata is not None else pd.DataFrame(index=joined.index)
    if "perturbations" in meta.columns:
        tables["per_perturbation"] = _per_perturbation(meta["perturbations"], y_true, y_pred, classes)
        report["per_perturbation"] = tables["per_perturbation"].set_index("perturbation").to_dict("index")
    if metadata is not None:
        per_voice = _per_voice(meta, metadata, y_true, y_pred, classes)
        if per_voice is not None:
            tables["per_voice"] = per_voice
            report["per_voice"] = per_voice.set_index("voice").to_dict("index")
    for column in [c for c in CONDITION_COLUMNS if c in meta.columns]:
        table = per_condition(meta[column], y_true, y_pred, classes, detection)
        tables[f"per_{column}"] = table
        report[f"per_{column}"] = table.set_index(column).to_dict("index")
    if unknown_class is not None and unknown_class in classes:
        report["open_set"] = open_set_report(y_true, y_pred, probs, classes, unknown_class, meta, unknown_score)
        if probs is not None:
            score = unknown_score_values(probs, classes, unknown_class, unknown_score)
            tables["det_curve"] = _det_table(f"unknown vs known ({unknown_score})", y_true == classes.index(
                unknown_class), score)
    return report, tables, y_true, y_pred


def per_condition(values: pd.Series, y_true, y_pred, classes, detection=None) -> pd.DataFrame:
    """Scores per value of one condition column (attack, system, codec, ...): n, accuracy, macro-F1, and for the
    detect task (`detection` = (is bona fide, score, llr)) EER and minDCF.

    A value whose clips are all spoof (an attack) is scored against every bona fide clip, as ASVspoof reports
    per-attack EERs; a value holding both classes (a codec, a channel) is scored on its own clips.
    """
    name = values.name
    values = values.astype(object).where(values.notna(), None).to_numpy()
    rows = []
    for value in sorted({v for v in values if v is not None and str(v).strip() != ""}, key=str):
        mask = values == value
        row = {name: value, "n": int(mask.sum()), **label_scores(y_true[mask], y_pred[mask], classes)}
        if detection is not None:
            is_bona, score, _ = detection
            scored = mask if is_bona[mask].any() else mask | is_bona
            row["eer"] = equal_error_rate(is_bona[scored], score[scored])[0]
            row["min_dcf"] = detection_costs(is_bona[scored], score[scored])["min_dcf"]
        rows.append(row)
    columns = [name, "n", "acc", "precision", "recall", "f1"] + (["eer", "min_dcf"] if detection is not None else [])
    return pd.DataFrame(rows, columns=columns)


def _det_table(name: str, is_positive, scores) -> pd.DataFrame:
    """One DET curve as rows (curve, threshold, miss_rate, false_alarm_rate)."""
    miss, false_alarm, thresholds = det_curve(is_positive, scores)
    return pd.DataFrame({"curve": name, "threshold": thresholds, "miss_rate": miss, "false_alarm_rate": false_alarm})


def _track_metadata(metadata: pd.DataFrame, tracks: pd.Series) -> pd.DataFrame:
    """The metadata rows of `tracks`, in their order (all-NaN rows for tracks the metadata lacks)."""
    meta = metadata.assign(track=metadata["track"].astype(str)).drop_duplicates("track").set_index("track")
    return meta.reindex(tracks.astype(str).to_numpy()).reset_index(drop=True)


def _per_perturbation(perturbations: pd.Series, y_true, y_pred, classes) -> pd.DataFrame:
    """Scores per channel family; a clip counts towards each family applied to it."""
    names = perturbations.map(perturbation_names)
    rows = []
    for name in sorted({n for group in names for n in group}):
        mask = names.map(lambda group: name in group).to_numpy(dtype=bool)
        rows.append({"perturbation": name, "n": int(mask.sum()), **label_scores(y_true[mask], y_pred[mask], classes)})
    return pd.DataFrame(rows, columns=["perturbation", "n", "acc", "precision", "recall", "f1"])


def _per_voice(meta: pd.DataFrame, metadata: pd.DataFrame, y_true, y_pred, classes) -> pd.DataFrame | None:
    """Scores of clips whose voice (metadata `speaker`, else `voice`) is among the training clips' voices
    (`seen`) and of those whose voice is not (`held_out`); None when the metadata cannot tell."""
    column = next((c for c in VOICE_COLUMNS if c in metadata.columns), None)
    if column is None or "split" not in metadata.columns:
        return None
    seen = set(metadata.loc[metadata["split"].astype(str) == TRAIN_SPLIT, column].dropna().astype(str))
    if not seen:
        return None
    voice = meta[column]
    known = voice.notna().to_numpy()
    in_train = voice.astype(str).isin(seen).to_numpy()
    rows = []
    for name, mask in (("seen", known & in_train), ("held_out", known & ~in_train)):
        rows.append({"voice": name, "n": int(mask.sum()), **label_scores(y_true[mask], y_pred[mask], classes)})
    return pd.DataFrame(rows, columns=["voice", "n", "acc", "precision", "recall", "f1"])


def unknown_score_values(probs, classes, unknown_class: str, unknown_score: str = "unknown_prob") -> np.ndarray:
    """Per-clip unknown score (higher = more likely unknown): `unknown_prob` is the unknown class' probability,
    `maxprob` is one minus the top probability of the known classes."""
    probs = np.asarray(probs, dtype=np.float64)
    u = list(classes).index(unknown_class)
    if unknown_score == "unknown_prob":
        return probs[:, u]
    if unknown_score == "maxprob":
        return 1.0 - confidence_scores(probs, "maxprob", known_columns(classes, unknown_class))
    raise ValueError(f"unknown_score must be one of {list(UNKNOWN_SCORES)}. Received: {unknown_score!r}")


def open_set_report(y_true, y_pred, probs, classes, unknown_class: str, meta: pd.DataFrame | None = None,
                    unknown_score: str = "unknown_prob") -> dict:
    """How the unknown class fares: its precision / recall / F1, its recall by origin and by engine, and the
    AUROC and FPR@95TPR of the unknown score (true unknowns are the positives).

    `probs` may be None (then the score figures are left out, with a note); `meta` holds the metadata row of
    each clip (columns `detect_id` and `engine` used when present).
    """
    classes = list(classes)
    u = classes.index(unknown_class)
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    is_unknown, caught = y_true == u, y_pred == u
    row = per_class_report(y_true, y_pred, classes).iloc[u]
    out = {"unknown_class": unknown_class, "n_unknown": int(is_unknown.sum()), "n_known": int((~is_unknown).sum()),
           "unknown_precision": float(row["precision"]), "unknown_recall": float(row["recall"]),
           "unknown_f1": float(row["f1"])}
    notes = []
    meta = pd.DataFrame(index=range(len(y_true))) if meta is None else meta
    if "detect_id" in meta.columns:
        detect = pd.to_numeric(meta["detect_id"], errors="coerce").to_numpy()
        origins = (("human", 0), ("synthetic", 1))
        out["unknown_recall_by_origin"] = {name: _recall(caught, is_unknown & (detect == v)) for name, v in origins}
    else:
        notes.append("unknown recall by origin needs a `detect_id` metadata column (0 human, 1 synthetic)")
    if "engine" in meta.columns:
        engines = meta["engine"].to_numpy()
        names = sorted({str(e) for e in engines[is_unknown] if pd.notna(e)})
        out["unknown_recall_by_engine"] = {name: _recall(caught, is_unknown & (engines == name)) for name in names}
    else:
        notes.append("unknown recall by engine needs an `engine` metadata column")
    if probs is None:
        notes.append("AUROC and FPR@95TPR need the probability columns (voxtrace predict --probs)")
    else:
        score = unknown_score_values(probs, classes, unknown_class, unknown_score)
        out.update(score=unknown_score, auroc=detection_auroc(is_unknown, score),
                   fpr_at_95_tpr=fpr_at_tpr(is_unknown, score, 0.95), eer=equal_error_rate(is_unknown, score)[0])
    out.update(_known_scores(y_true, y_pred, probs, classes, u))
    out["notes"] = notes
    return out


def _known_scores(y_true, y_pred, probs, classes, u: int) -> dict:
    """Closed-set accuracy and macro-F1 on the clips of known classes: the top known class when the
    probabilities are there (what a source-tracing protocol scores on in-distribution systems), else the
    written prediction."""
    known = y_true != u
    if probs is not None:
        columns = [i for i in range(len(classes)) if i != u]
        y_pred = np.asarray(columns)[np.asarray(probs)[:, columns].argmax(axis=1)] if len(probs) else y_pred
    scores = label_scores(y_true[known], np.asarray(y_pred)[known], classes)
    return {"known_acc": scores["acc"], "known_f1": scores["f1"]}


def _recall(caught: np.ndarray, mask: np.ndarray) -> dict:
    n = int(mask.sum())
    return {"n": n, "recall": float(caught[mask].mean()) if n else float("nan")}


def format_report(report: dict) -> str:
    """The report as Markdown: headline numbers, per-class table, open-set figures and breakdowns."""
    keys = [k for k in ("acc", "precision", "recall", "f1", "auc", "eer", "min_dcf", "act_dcf", "cllr") if k in report]
    lines = [
        _md_table(keys, [[report[k] for k in keys]]),
        "",
        f"scored {report['n_scored']} of {report['n_predictions']} predictions; failed {report['n_failed']}; "
        f"without label {report['missing_labels']['count']}; labels without prediction "
        f"{report['missing_predictions']['count']}",
    ]
    for side, title in (("missing_labels", "predicted, no label"), ("missing_predictions", "labelled, not predicted")):
        if report[side]["count"]:
            more = " ..." if report[side]["count"] > _EXAMPLES else ""
            lines.append(f"- {title}: {', '.join(report[side]['examples'])}{more}")
    rows = [[name, r["precision"], r["recall"], r["f1"], int(r["support"])] for name, r in report["per_class"].items()]
    lines += ["", _md_table(["class", "precision", "recall", "f1", "support"], rows)]
    if "open_set" in report:
        lines += ["", *_format_open_set(report["open_set"])]
    for key, title in (("per_perturbation", "channel family"), ("per_voice", "voice")):
        if key in report:
            rows = [[name, int(r["n"]), r["acc"], r["f1"]] for name, r in report[key].items()]
            lines += ["", _md_table([title, "n", "acc", "macro-F1"], rows)]
    for column in CONDITION_COLUMNS:
        if f"per_{column}" in report:
            section = report[f"per_{column}"]
            extra = [k for k in ("eer", "min_dcf") if any(k in r for r in section.values())]
            rows = [[name, int(r["n"]), r["acc"], r["f1"], *(r[k] for k in extra)] for name, r in section.items()]
            lines += ["", _md_table([column, "n", "acc", "macro-F1", *extra], rows)]
    if "min_dcf" in report:
        lines += ["", "minDCF / actDCF at ASVspoof 5's parameters (pi_spoof 0.05, C_miss 1, C_fa 10); actDCF and "
                  "CLLR of the log-odds of the bona fide probability (a log-likelihood ratio for class-balanced "
                  "training). Per-attack EERs score the attack's clips against every bona fide clip."]
    return "\n".join(lines)


def _format_open_set(section: dict) -> list[str]:
    lines = [f"open set ({section['unknown_class']}: {section['n_unknown']} clips, known: {section['n_known']})", ""]
    titles = {"known_acc": "known acc", "known_f1": "known macro-F1", "unknown_precision": "unknown precision",
              "unknown_recall": "unknown recall", "unknown_f1": "unknown F1", "auroc": "AUROC",
              "fpr_at_95_tpr": "FPR@95TPR", "eer": "EER"}
    keys = [k for k in titles if k in section]
    lines.append(_md_table([titles[k] for k in keys], [[section[k] for k in keys]]))
    if "auroc" in section:
        lines += ["", f"AUROC, FPR@95TPR and EER of the {section['score']} score; true unknowns are the positives. "
                  "Known acc / macro-F1: the top known class on the clips of known classes (closed set)."]
    groups = [("origin", section.get("unknown_recall_by_origin", {})),
              ("engine", section.get("unknown_recall_by_engine", {}))]
    rows = [[f"{kind}: {name}", r["n"], r["recall"]] for kind, group in groups for name, r in group.items()]
    if rows:
        lines += ["", _md_table(["unknown clips", "n", "recall"], rows)]
    lines += [f"- {note}" for note in section["notes"]]
    return lines


def _md_table(header: list[str], rows: list[list]) -> str:
    def cell(value):
        if isinstance(value, (float, np.floating)):
            return "n/a" if not np.isfinite(value) else f"{value:.4f}"
        return str(value)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def evaluate_files(pred_csv, labels_csv, metadata=None, out_dir=None, classes=None, title=None,
                   unknown_class: str | None = "unknown", unknown_score: str = "unknown_prob") -> dict:
    """Evaluate `pred_csv` against `labels_csv` (a CSV path, or a `DataFrame[track, label]`); writes
    report.json, report.md, per_class.csv, [per_perturbation.csv, per_voice.csv, per_<condition>.csv,
    det_curve.csv + det_curve.png] and confusion_matrix.png into `out_dir` (default: beside the prediction
    CSV) and returns the report (see `evaluate_frames`). `metadata` is a CSV path or a DataFrame with `track`."""
    from voxtrace.evaluation.plots import plot_confusion_matrix, plot_det_curves

    pred = read_predictions(pred_csv)
    from_frame = isinstance(labels_csv, pd.DataFrame)
    labels = labels_csv.assign(track=labels_csv["track"].astype(str)) if from_frame else read_labels(labels_csv)
    labels_name = labels_csv.attrs.get("name", "labels") if from_frame else Path(labels_csv).name
    classes = list(classes) if classes else infer_classes(pred, labels["label"])
    meta = metadata if isinstance(metadata, pd.DataFrame) or metadata is None else pd.read_csv(metadata)
    if meta is not None and "track" not in meta.columns:
        raise ValueError(f"metadata CSV {metadata} has no `track` column. Received: {list(meta.columns)}")
    report, tables, y_true, y_pred = evaluate_frames(pred, labels, classes, meta, unknown_class, unknown_score)
    report = {"pred": str(pred_csv), "labels": str(labels_csv) if not from_frame else labels_name, **report}
    out_dir = Path(out_dir) if out_dir else Path(pred_csv).parent
    for name, table in tables.items():
        atomic_write_csv(out_dir / f"{name}.csv", table)
    plot_confusion_matrix(y_true, y_pred, classes, out_dir / "confusion_matrix.png",
                          title=title or f"{Path(pred_csv).name} (n={len(y_true)})")
    plots = ["confusion_matrix.png"]
    if "det_curve" in tables and len(tables["det_curve"]):
        plot_det_curves(tables["det_curve"], out_dir / "det_curve.png", title=f"{Path(pred_csv).name}: DET")
        plots.append("det_curve.png")
    outputs = [*(f"{n}.csv" for n in tables), *plots, "report.json", "report.md"]
    report["outputs"] = sorted(str(out_dir / f) for f in outputs)
    atomic_write_text(out_dir / "report.md", f"# {Path(pred_csv).name} against {labels_name}\n\n"
                      + format_report(report) + "\n")
    atomic_write_json(out_dir / "report.json", _json_safe(report))
    return report


def evaluate_split(pred_csv, cfg, split: str = "eval", out_dir=None, unknown_score: str = "unknown_prob") -> dict:
    """Evaluate `pred_csv` against the labels of `cfg`'s data set for `split`, read by its reader: the
    protocol's conditions (attack, system, codec, ...) give the per-condition tables."""
    from voxtrace.data.manifest import read_manifest

    frame = read_manifest(cfg, split, conditions=True)
    frame = frame[frame["label"].notna()].reset_index(drop=True)
    if frame.empty:
        raise ValueError(f"data.dataset={cfg.data.dataset!r} split {split!r} has no labelled files")
    labels = frame[["track", "label"]].copy()
    labels.attrs["name"] = f"{cfg.data.dataset} {split}"
    return evaluate_files(pred_csv, labels, metadata=frame.drop(columns=["path", "label"]), out_dir=out_dir,
                          classes=cfg.classes, unknown_class=cfg.unknown_class, unknown_score=unknown_score)


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
