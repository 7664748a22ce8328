"""What every data set reader shares: the manifest columns, folders from PATHS.json, protocol tables read
with their line numbers, and the last check of the audio files.

A protocol row that cannot be used (a label spelling the reader does not know, a file listed twice, too few
fields) is reported in a warning naming the protocol file and line, and left out; every other row is read.
"""

from __future__ import annotations

import csv
import os
import warnings
from pathlib import Path

import pandas as pd

from voxtrace.config import load_paths
from voxtrace.data.audio import MIN_DURATION, AudioError, audio_duration

MANIFEST_COLUMNS = ["path", "track", "label", "group", "source"]
# per-clip conditions a layout may give, kept beside the manifest columns for breakdowns at evaluation
CONDITION_COLUMNS = ("attack", "system", "architecture", "language", "codec", "codec_q", "transmission", "corpus",
                     "vocoder")
ORIGIN = "origin"  # "FILE:LINE" of the protocol row a manifest row was read from


def resolve_root(root: str, paths_json: str) -> Path:
    """A PATHS.json key (e.g. DEMO_DATA_DIR) or a path; a missing one raises naming the key."""
    paths = load_paths(paths_json)
    if root in paths:
        resolved = Path(paths[root])
        if not resolved.exists():
            raise FileNotFoundError(f"{root}={resolved} (from {paths_json}) does not exist")
        return resolved
    resolved = Path(root)
    if not resolved.exists():
        hint = f" (nor is it a key of {paths_json}: {sorted(paths)})" if paths else ""
        raise FileNotFoundError(f"data.root={root!r} does not exist{hint}")
    return resolved


def folder_from_paths(paths: dict, key: str, what: str = "that part of SP Cup 2022") -> Path:
    """The folder PATHS.json names under `key`; a missing key or folder raises naming the key."""
    if key not in paths:
        raise FileNotFoundError(f"PATHS.json has no {key}; it must name the folder of {what}")
    folder = Path(paths[key])
    if not folder.is_dir():
        raise FileNotFoundError(f"{key}={folder} (from PATHS.json) does not exist")
    return folder


def existing(path, what: str) -> Path:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{what} not found: {path}")
    return path


def first_existing(candidates, what: str) -> Path:
    """The first of `candidates` that exists; else FileNotFoundError listing every place looked at."""
    candidates = [Path(c) for c in candidates]
    for candidate in candidates:
        if candidate.exists():
            return candidate
    raise FileNotFoundError(f"{what} not found; looked for: {', '.join(str(c) for c in candidates)}")


def read_fields(path, names: list[str], min_fields: int | None = None) -> pd.DataFrame:
    """A whitespace-separated protocol without header (the ASVspoof layouts) as strings named `names`, plus
    `ORIGIN`. Fields past `names` are ignored; a line with fewer than `min_fields` (default: all) is reported
    and skipped; blank lines are skipped."""
    min_fields = len(names) if min_fields is None else min_fields
    rows, origins = [], []
    with open(path, encoding="utf-8") as fh:
        for number, line in enumerate(fh, start=1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) < min_fields:
                warnings.warn(f"{path}:{number}: {len(fields)} fields, expected {min_fields} "
                              f"({' '.join(names[:min_fields])}); line skipped", stacklevel=2)
                continue
            fields = fields[:len(names)]
            rows.append(fields + ["-"] * (len(names) - len(fields)))
            origins.append(f"{path}:{number}")
    table = pd.DataFrame(rows, columns=names, dtype=object)
    table[ORIGIN] = origins
    return table


def read_header_table(path, required, sep: str = ",", quoted: bool = True) -> pd.DataFrame:
    """A CSV (or `sep`-separated) file with a header row, as strings, plus `ORIGIN` (header = line 1).
    `quoted=False` reads `"` as an ordinary character (free text such as transcripts).

    Raises ValueError naming the file when a `required` column is missing."""
    table = pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False, skip_blank_lines=False,
                        quoting=csv.QUOTE_MINIMAL if quoted else csv.QUOTE_NONE)
    table.columns = [str(c).strip() for c in table.columns]
    missing = [c for c in required if c not in table.columns]
    if missing:
        raise ValueError(f"{path}: no column(s) {missing}; the header must have {list(required)}. "
                         f"Received: {list(table.columns)}")
    table[ORIGIN] = [f"{path}:{i + 2}" for i in range(len(table))]
    blank = table[list(required)].apply(lambda col: col.str.strip() == "").all(axis=1)
    return table[~blank].reset_index(drop=True)


def map_labels(table: pd.DataFrame, column: str, spellings: dict) -> pd.DataFrame:
    """`table` with `label` = `spellings[table[column]]`; rows whose value is not a known spelling are reported
    (file and line) and left out."""
    values = table[column].astype(str).str.strip()
    known = values.isin(spellings)
    for origin, value in zip(table.loc[~known, ORIGIN], values[~known]):
        warnings.warn(f"{origin}: label {value!r} is not one of {sorted(spellings)}; row skipped", stacklevel=2)
    table = table[known].copy()
    table["label"] = values[known].map(spellings)
    return table.reset_index(drop=True)


def drop_duplicates(table: pd.DataFrame, column: str) -> pd.DataFrame:
    """Rows whose `column` repeats an earlier row's are reported (both lines) and left out; the first stays."""
    first = dict(zip(table[column].iloc[::-1], table[ORIGIN].iloc[::-1]))
    repeated = table[column].duplicated(keep="first")
    for origin, value in zip(table.loc[repeated, ORIGIN], table.loc[repeated, column]):
        warnings.warn(f"{origin}: {value} is listed again (first at {first[value]}); row skipped", stacklevel=2)
    return table[~repeated].reset_index(drop=True)


def finish(frame: pd.DataFrame, check: bool, what: str, extra=()) -> pd.DataFrame:
    """The manifest columns plus `extra` ones; files that are missing, cannot be decoded or are too short are
    reported (one warning each, with the protocol line when the frame has `ORIGIN`) and left out."""
    columns = MANIFEST_COLUMNS + [c for c in extra if c in frame.columns]
    origins = frame[ORIGIN] if ORIGIN in frame.columns else pd.Series([None] * len(frame), index=frame.index)
    frame = frame[columns].reset_index(drop=True)
    origins = origins.reset_index(drop=True)
    if not check or frame.empty:
        return frame
    good = []
    for path, origin in zip(frame["path"], origins):
        try:
            seconds = audio_duration(path)
            if seconds < MIN_DURATION:
                raise AudioError(path, f"too short: {seconds:.3f} s < {MIN_DURATION} s")
            good.append(True)
        except (AudioError, FileNotFoundError) as err:
            where = f"{what}: {origin}" if origin else what
            warnings.warn(f"{where}: skipping unreadable audio: {err}", stacklevel=3)
            good.append(False)
    return frame[good].reset_index(drop=True)


def label_names(values: pd.Series, classes, source) -> pd.Series:
    """Class ids -> names (through `classes`); names pass through; empty stays NA."""
    out = []
    for value in values:
        if pd.isna(value) or (isinstance(value, str) and not value.strip()):
            out.append(pd.NA)
            continue
        text = str(value).strip()
        if text.lstrip("-").isdigit() or isinstance(value, (int, float)):
            index = int(float(text))
            if classes is None or not 0 <= index < len(classes):
                raise ValueError(f"{source}: label {value!r} is not a class id of classes={classes}")
            out.append(classes[index])
        else:
            out.append(text)
    return pd.Series(out, index=values.index, dtype=object)


def relative_path(text: str) -> str:
    """A protocol path as written, normalised for joining: `./fake/x.wav` and `fake/x.wav` are one path."""
    return os.path.normpath(str(text).strip()).replace(os.sep, "/")
