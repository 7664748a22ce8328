"""Prediction CSVs and the SP Cup 2022 submission (`answer.txt` zipped as `answer.zip`).

The prediction CSV has one row per input file, sorted by `track` (the file name): `track`, `algorithm` (the
predicted class index into the ensemble's classes, empty when the file failed), with `--probs` one probability
column per class name, and `error` (empty for files that were scored, else why the file failed). `answer.txt`
holds `track,algorithm` lines without a header, as the SP Cup expected; a file that failed is attributed to
the unknown class there (the SP Cup scored every track), or left out when there is no unknown class.

`PartialPredictions` is the file a prediction run appends its scored rows to as it goes (`OUTPUT.partial`),
so that a crash or a kill keeps them and a resumed run skips them.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
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


class PartialPredictions:
    """`OUTPUT.partial`: the scored rows of an unfinished prediction run, appended a chunk at a time.

    Line 1 is `# voxtrace predict ` and the JSON of the settings the scores depend on, line 2 the header
    `path,<class>...,error`, then one row per file: its path, full-precision probabilities (`nan` where the
    file failed) and the error message. Each chunk is flushed to disk before the run goes on; a write that
    fails is cut back to the last whole row, and a last line cut short by a kill is dropped on reading.
    """

    MAGIC = "# voxtrace predict "

    def __init__(self, output, settings: dict, classes):
        output = Path(output)
        self.path = output.with_name(output.name + ".partial")
        self.settings = json.loads(json.dumps(settings))  # as it reads back: lists, not tuples
        self.classes = list(classes)
        self.rows = 0

    def exists(self) -> bool:
        return self.path.exists()

    def read(self, check_settings: bool = True) -> dict[str, tuple[np.ndarray, str]]:
        """`{path: (probs [C] float32, error)}` of the rows on disk (none when the header was cut short).

        Refuses a file that is not a partial prediction file and, with `check_settings`, rows written with
        other settings.
        """
        data = self.path.read_bytes()
        whole = data[: data.rfind(b"\n") + 1]  # a kill mid-write leaves a cut-off last line
        if len(whole) < len(data):
            os.truncate(self.path, len(whole))
        if not (data.startswith(self.MAGIC.encode()) or self.MAGIC.encode().startswith(data)):
            raise ValueError(f"{self.path} is not a voxtrace predict partial file; move it away or pick "
                             f"another --output")
        lines = whole.decode(errors="replace").split("\n", 2)
        rows = list(csv.reader(io.StringIO(lines[2]))) if len(lines) == 3 else []
        self.rows = len(rows)
        if not rows:
            return {}
        saved = json.loads(lines[0][len(self.MAGIC):])
        changed = {k: (saved.get(k), v) for k, v in self.settings.items() if saved.get(k) != v}
        if changed and check_settings:
            detail = "; ".join(f"{k}: {old!r} there, {new!r} now" for k, (old, new) in changed.items())
            raise ValueError(f"{self.path} was written with other settings ({detail}); rerun with the same "
                             f"settings, or delete it to start over")
        done = {}
        for number, row in enumerate(rows, start=3):
            if len(row) != len(self.classes) + 2:
                raise ValueError(f"{self.path}, line {number}: expected {len(self.classes) + 2} fields, found "
                                 f"{len(row)}; delete the file to start over")
            done[row[0]] = (np.array([float(v) for v in row[1:-1]], dtype=np.float32), row[-1])
        return done

    def create(self) -> None:
        """Start an empty partial file (settings line and header)."""
        header = io.StringIO()
        header.write(self.MAGIC + json.dumps(self.settings) + "\n")
        csv.writer(header, lineterminator="\n").writerow(["path", *self.classes, "error"])
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._write_synced("w", header.getvalue())
        except BaseException:
            self._unlink()
            raise
        self.rows = 0

    def append(self, paths, probs, errors: dict) -> None:
        """Append one row per path and flush them to disk; on failure the file is cut back to its last row."""
        text = io.StringIO()
        writer = csv.writer(text, lineterminator="\n")
        for path, row in zip(paths, np.asarray(probs, dtype=np.float32)):
            writer.writerow([str(path), *(repr(float(v)) for v in row), errors.get(str(path), "")])
        size = self.path.stat().st_size
        try:
            self._write_synced("a", text.getvalue())
        except BaseException:
            os.truncate(self.path, size)
            raise
        self.rows += len(paths)

    def _write_synced(self, mode: str, text: str) -> None:
        """Write `text` (mode "w" or "a") and return only once it is on disk."""
        with open(self.path, mode) as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())

    def discard_if_empty(self) -> None:
        """Remove the file when it holds no scored row (nothing to resume)."""
        if self.rows == 0:
            self._unlink()

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)

    def _unlink(self) -> None:
        """Remove the file if it is there (never masks the error that is being reported)."""
        with contextlib.suppress(OSError):
            self.path.unlink()
