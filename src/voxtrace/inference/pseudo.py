"""Soft pseudo-labels from a supervised ensemble, and their validated reading for semi-supervised training.

A pseudo CSV has the columns `path`, `track`, one probability column per class name (in `cfg.classes` order),
`confidence` (the top probability) and `part` (1-based index of the `--infer-path` a file came from). Only
rows whose confidence reaches the threshold are kept (default `infer.pseudo_threshold` = 0.6), optionally at
most `infer.pseudo_cap_per_class` rows per predicted class of each part, the most confident first: capping each
part separately keeps the classes balanced within every recording condition, so a condition that mostly yields
confident clips of one class (heavily degraded audio taken for human speech) does not teach the retrained
models that the condition itself means that class. Files that failed to decode are left out. The reference's column names (`audio_path`, `filename`) are read as `path`, `track`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

META_COLUMNS = ("path", "track", "confidence", "part", "pred", "class_name", "error")
_REFERENCE_NAMES = {"audio_path": "path", "filename": "track"}


def select_pseudo_labels(
    paths, probs, classes, threshold: float = 0.6, cap_per_class: int | None = None, parts=None
) -> pd.DataFrame:
    """Soft labels of the confident rows of `probs` `[n, C]`, sorted by class then confidence (highest first)."""
    probs = np.asarray(probs, dtype=np.float64)
    classes = list(classes)
    if probs.ndim != 2 or probs.shape != (len(paths), len(classes)):
        raise ValueError(f"probs must be [{len(paths)}, {len(classes)}]. Received shape: {probs.shape}")
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be within [0, 1]. Received: threshold={threshold}")
    if cap_per_class is not None and cap_per_class < 1:
        raise ValueError(f"cap_per_class must be >= 1 or None. Received: cap_per_class={cap_per_class}")
    frame = pd.DataFrame({"path": [str(p) for p in paths]})
    frame["track"] = [str(p).replace("\\", "/").rsplit("/", 1)[-1] for p in frame["path"]]
    for i, name in enumerate(classes):
        frame[name] = probs[:, i]
    frame["confidence"] = probs.max(axis=1)
    if parts is not None:
        frame["part"] = list(parts)
    frame = frame[np.isfinite(probs).all(axis=1) & (frame["confidence"] >= threshold)]
    frame = frame.assign(_cls=probs[frame.index].argmax(axis=1) if len(frame) else [])
    frame = frame.sort_values(["_cls", "confidence", "track"], ascending=[True, False, True], kind="stable")
    if cap_per_class is not None:
        frame = frame.groupby(["part", "_cls"] if parts is not None else "_cls", sort=False).head(cap_per_class)
    return frame.drop(columns="_cls").reset_index(drop=True)


def read_pseudo_csv(path, classes, parts=None) -> pd.DataFrame:
    """`DataFrame[path, track, <one probability column per class>]` of a pseudo CSV, validated.

    With `parts`, only rows whose `part` is one of them. Raises ValueError naming the file, its class columns
    and the config's classes when they differ, when probabilities are missing, negative or not finite, or when
    `parts` is asked of a file without a `part` column. Rows are renormalized to sum to 1.
    """
    classes = list(classes)
    frame = pd.read_csv(path).rename(columns=_REFERENCE_NAMES)
    if "path" not in frame.columns:
        raise ValueError(f"pseudo CSV {path} has no `path` column. Received columns: {list(frame.columns)}")
    if parts is not None:
        if "part" not in frame.columns:
            raise ValueError(f"pseudo CSV {path} has no `part` column to select parts {list(parts)} from "
                             "(data.pseudo_parts); write it with `voxtrace pseudo`")
        frame = frame[frame["part"].isin(list(parts))]
    if "track" not in frame.columns:
        frame["track"] = frame["path"].astype(str).str.replace("\\", "/").str.rsplit("/", n=1).str[-1]
    file_classes = [c for c in frame.columns if c not in META_COLUMNS]
    if sorted(file_classes) != sorted(classes):
        missing = [c for c in classes if c not in file_classes]
        extra = [c for c in file_classes if c not in classes]
        raise ValueError(
            f"pseudo CSV {path} has class columns {file_classes} but the config's classes are {classes} "
            f"(missing: {missing}, unexpected: {extra})"
        )
    values = frame[classes].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=np.float64)
    bad = ~np.isfinite(values).all(axis=1) | (values < 0).any(axis=1) | (values.sum(axis=1) <= 0)
    if bad.any():
        rows = np.flatnonzero(bad)[:5].tolist()
        raise ValueError(
            f"pseudo CSV {path}: {int(bad.sum())} rows have missing, negative or non-finite probabilities "
            f"(first data rows: {rows})"
        )
    out = frame[["path", "track"]].copy()
    out[classes] = values / values.sum(axis=1, keepdims=True)
    return out.reset_index(drop=True)
