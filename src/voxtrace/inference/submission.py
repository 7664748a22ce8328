"""Prediction CSVs and the SP Cup 2022 submission (`answer.txt` zipped as `answer.zip`).

The prediction CSV has one row per input file, sorted by `track` (the file name): `track`, `algorithm` (the
predicted class index into the ensemble's classes, empty when the file failed), with `--probs` one probability
column per class name, and `error` (empty for files that were scored, else why the file failed). `answer.txt`
holds `track,algorithm` lines without a header, as the SP Cup expected; a file that failed is attributed to
the unknown class there (the SP Cup scored every track), or left out when there is no unknown class.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pandas as pd

from voxtrace.io import atomic_path, atomic_write_csv


def prediction_frame(paths, probs, pred_idx, errors: dict, classes, with_probs: bool = False) -> pd.DataFrame:
    """`track, algorithm[, <class probs>...], error` rows sorted by track (then path, for equal names)."""
    probs = np.asarray(probs, dtype=np.float64)
    frame = pd.DataFrame({"track": [Path(p).name for p in paths], "_path": [str(p) for p in paths]})
    frame["algorithm"] = pd.array(np.where(np.asarray(pred_idx) >= 0, pred_idx, -1), dtype="Int64")
    frame.loc[frame["algorithm"] < 0, "algorithm"] = pd.NA
    if with_probs:
        for i, name in enumerate(classes):
            frame[name] = probs[:, i]
    frame["error"] = [errors.get(str(p), "") for p in paths]
    return frame.sort_values(["track", "_path"], kind="stable").drop(columns="_path").reset_index(drop=True)


def write_predictions(path, frame: pd.DataFrame) -> Path:
    """Write the prediction CSV atomically."""
    atomic_write_csv(path, frame, float_format="%.6f")
    return Path(path)


def write_answer_zip(out_dir, frame: pd.DataFrame, fallback_class: int | None = None) -> Path:
    """Write `answer.txt` (`track,algorithm` lines, no header) and `answer.zip` holding it, atomically."""
    out_dir = Path(out_dir)
    rows = frame[["track", "algorithm"]].copy()
    if fallback_class is not None:
        rows["algorithm"] = rows["algorithm"].fillna(fallback_class)
    rows = rows.dropna(subset=["algorithm"])
    text = "".join(f"{track},{int(algorithm)}\n" for track, algorithm in rows.itertuples(index=False))
    with atomic_path(out_dir / "answer.txt") as tmp:
        tmp.write_text(text)
    with atomic_path(out_dir / "answer.zip") as tmp:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            archive.writestr("answer.txt", text)
    return out_dir / "answer.zip"
