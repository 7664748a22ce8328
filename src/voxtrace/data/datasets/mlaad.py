"""MLAAD source tracing (Interspeech 2025 special session "Source tracing: the origins of synthetic or
manipulated speech").

Layout followed (MLAAD v5 and the session's protocol release `mlaad4sourcetracing`):

- protocols: `train.csv`, `dev.csv`, `eval.csv`, comma-separated with a header; each row's `path` is relative
  to the MLAAD root and `model_name` names the system. The systems of `train.csv` are the known ones; a dev or
  eval system absent from it is out-of-distribution (OOD).
- MLAAD's own `meta.csv` files (one per system folder, `fake/<language>/<system>/meta.csv`, found anywhere
  under the root), `|`-separated with the header
  `path|original_file|language|is_original_language|duration|training_data|model_name|architecture|transcript`.
  They give each clip's architecture (when the protocol has no `architecture` column), language and source
  utterance (`original_file`).

A clip's class is its `model_name` or its `architecture` (`data.attribute_by`); an OOD clip's label is the
config's unknown class, its system kept in the `system` column.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import pandas as pd

from voxtrace.config import ConfigError
from voxtrace.data.datasets.common import (
    CONDITION_COLUMNS,
    ORIGIN,
    drop_duplicates,
    existing,
    finish,
    read_header_table,
    relative_path,
)
from voxtrace.vocabulary import ATTRIBUTE_BY

MLAAD_PROTOCOLS = {"train": "train.csv", "dev": "dev.csv", "eval": "eval.csv"}
MLAAD_META_COLUMNS = ["path", "original_file", "language", "is_original_language", "duration", "training_data",
                      "model_name", "architecture", "transcript"]


def read_mlaad_meta(root) -> pd.DataFrame:
    """Every `meta.csv` under the MLAAD root, one row per clip: `key` (the normalised relative path),
    `architecture`, `language`, `original_file`."""
    rows = []
    for meta in sorted(Path(root).rglob("meta.csv")):
        table = read_header_table(meta, ["path", "model_name", "architecture"], sep="|", quoted=False)
        table["key"] = table["path"].map(relative_path)
        rows.append(table.reindex(columns=["key", "architecture", "language", "original_file"]))
    if not rows:
        return pd.DataFrame(columns=["key", "architecture", "language", "original_file"])
    return pd.concat(rows, ignore_index=True).drop_duplicates("key")


def _protocol(protocols: Path, split: str, meta: pd.DataFrame, attribute_by: str) -> pd.DataFrame:
    """One protocol file with its rows' `system` (model_name), `architecture`, `language`, `original_file` and
    `class_name` (by `attribute_by`); rows without the class are reported and left out."""
    path = existing(protocols / MLAAD_PROTOCOLS[split], f"MLAAD source-tracing protocol ({split})")
    table = read_header_table(path, ["path", "model_name"])
    table["key"] = table["path"].map(relative_path)
    table = drop_duplicates(table, "key")
    table["system"] = table["model_name"].str.strip()
    joined = table.merge(meta.add_prefix("meta_").rename(columns={"meta_key": "key"}), on="key", how="left")
    for column in ("architecture", "language", "original_file"):
        given = joined[column].fillna("") if column in joined.columns else pd.Series("", index=joined.index)
        joined[column] = given.where(given.str.strip() != "", joined[f"meta_{column}"])
    joined["class_name"] = joined["system"] if attribute_by == "model_name" else joined["architecture"]
    missing = joined["class_name"].isna() | (joined["class_name"].astype(str).str.strip() == "")
    for origin, key in zip(joined.loc[missing, ORIGIN], joined.loc[missing, "key"]):
        warnings.warn(f"{origin}: no {attribute_by} for {key} (not in the protocol nor in any meta.csv); "
                      "row skipped", stacklevel=3)
    return joined[~missing].reset_index(drop=True)


def mlaad_known_classes(root, protocols, attribute_by: str = "model_name") -> list[str]:
    """The known classes: the sorted `attribute_by` values of the train protocol."""
    table = _protocol(Path(protocols), "train", read_mlaad_meta(root), attribute_by)
    return sorted(table["class_name"].astype(str).unique())


def read_mlaad(root, protocols, split: str = "train", attribute_by: str = "model_name",
               unknown_class: str | None = "unknown", check: bool = True, conditions: bool = False) -> pd.DataFrame:
    """MLAAD clips of the source-tracing `split` (train, dev or eval).

    `label` is the clip's class (`attribute_by`), or `unknown_class` for a system the train protocol does not
    have; `group` is the source utterance (`original_file`, so one sentence rendered by several systems stays
    in one fold; the clip itself when meta.csv does not say), `source` and `system` the model_name, plus
    `architecture` and `language` where known.
    """
    if split not in MLAAD_PROTOCOLS:
        raise ValueError(f"split must be one of {list(MLAAD_PROTOCOLS)}. Received: split={split!r}")
    if attribute_by not in ATTRIBUTE_BY:
        raise ConfigError(f"data.attribute_by must be one of {list(ATTRIBUTE_BY)}. Received: {attribute_by!r}")
    root = existing(root, "MLAAD root")
    protocols = existing(protocols, "MLAAD source-tracing protocol folder")
    meta = read_mlaad_meta(root)
    table = _protocol(protocols, split, meta, attribute_by)
    known = set(_protocol(protocols, "train", meta, attribute_by)["class_name"]) if split != "train" \
        else set(table["class_name"])
    ood = ~table["class_name"].isin(known)
    if ood.any() and unknown_class is None:
        raise ConfigError(f"{protocols / MLAAD_PROTOCOLS[split]} has systems absent from train.csv "
                          f"({sorted(table.loc[ood, 'system'].unique())[:5]}); set unknown_class to score them")
    original = table["original_file"].fillna("").astype(str)
    frame = table.assign(
        path=[str((root / key).resolve()) for key in table["key"]],
        track=[Path(key).name for key in table["key"]],
        label=table["class_name"].where(~ood, unknown_class),
        group=original.where(original.str.strip() != "", table["key"]),
        source=table["system"],
    )
    return finish(frame, check, f"MLAAD {split}", extra=CONDITION_COLUMNS if conditions else ())


def main(argv=None) -> int:
    """`python -m voxtrace.data.datasets.mlaad MLAAD_ROOT PROTOCOLS [model_name|architecture]`: the `classes:`
    line of a config for this protocol release (the train systems, then `unknown`)."""
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) not in (2, 3):
        print(main.__doc__)
        return 2
    classes = mlaad_known_classes(argv[0], argv[1], argv[2] if len(argv) == 3 else "model_name")
    print("classes: [" + ", ".join(f'"{c}"' for c in classes + ["unknown"]) + "]")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
