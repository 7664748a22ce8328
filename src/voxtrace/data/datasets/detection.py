"""Bona fide vs spoof evaluation sets: In-the-Wild, ASVspoof 2021 LA and DF, ASVspoof 5.

Layouts followed (docs/datasets/ has one page each):

- In-the-Wild (release of 2022): `release_in_the_wild/meta.csv`, header `file,speaker,label`, labels `spoof`
  and `bona-fide`, audio `release_in_the_wild/N.wav`. No official split: every split is the whole set.
- ASVspoof 2021 LA / DF evaluation: audio `ASVspoof2021_{LA,DF}_eval/flac/TRIAL.flac`; keys from the full key
  release, `{LA,DF}-keys-full/keys/{LA,DF}/CM/trial_metadata.txt` (also found as `keys/...`), whitespace-separated
  without header. LA: `speaker trial codec transmission attack label trim subset`; DF: `speaker trial codec
  source attack label trim subset vocoder ...` (four more task / team fields, ignored). Splits `eval`,
  `progress`, `hidden_track` are the rows of that subset (`eval` is the one the challenge ranks on), `all`
  every row; `train` / `dev` are ASVspoof 2019 LA (PATHS.json `ASVSPOOF19_LA_DIR`), the training data of
  both 2021 tracks.
- ASVspoof 5 (track 1): `ASVspoof5_protocols/ASVspoof5.{train,dev.track_1,eval.track_1}.tsv` (or the files at
  the root), whitespace-separated without header: `SPEAKER_ID FLAC_FILE_NAME SPEAKER_GENDER CODEC CODEC_Q
  CODEC_SEED ATTACK_TAG ATTACK_LABEL KEY TMP`; audio `flac_T/`, `flac_D/`, `flac_E_eval/` (or `flac_E/`).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from voxtrace.config import DETECTION_CLASSES, load_paths
from voxtrace.data.datasets.common import (
    CONDITION_COLUMNS,
    drop_duplicates,
    existing,
    finish,
    first_existing,
    folder_from_paths,
    map_labels,
    read_fields,
    read_header_table,
)

ASVSPOOF_KEYS = {c: c for c in DETECTION_CLASSES}
IN_THE_WILD_LABELS = {"bona-fide": "bonafide", "spoof": "spoof"}
ASVSPOOF21_COLUMNS = {
    "LA": ["speaker", "trial", "codec", "transmission", "attack", "key", "trim", "subset"],
    "DF": ["speaker", "trial", "codec", "corpus", "attack", "key", "trim", "subset", "vocoder"],
}
ASVSPOOF21_SUBSETS = ("eval", "progress", "hidden_track")
ASVSPOOF5_COLUMNS = ["speaker", "file", "gender", "codec", "codec_q", "codec_seed", "attack_tag", "attack", "key",
                     "tmp"]
ASVSPOOF5_SPLITS = {  # split -> (protocol file, audio folders in order of preference)
    "train": ("ASVspoof5.train.tsv", ("flac_T",)),
    "dev": ("ASVspoof5.dev.track_1.tsv", ("flac_D",)),
    "eval": ("ASVspoof5.eval.track_1.tsv", ("flac_E_eval", "flac_E")),
}


def _attack(values: pd.Series) -> pd.Series:
    """Attack ids with bona fide rows named `bonafide` (protocols write `-` or `bonafide`)."""
    values = values.astype(str).str.strip()
    return values.where(~values.isin(["-", "bonafide", ""]), "bonafide")


def read_in_the_wild(root, check: bool = True) -> pd.DataFrame:
    """In-the-Wild: `root` is `release_in_the_wild/` or the folder holding it. `group` is the speaker (a public
    figure), `source` `in-the-wild`."""
    root = existing(root, "In-the-Wild root")
    meta = first_existing([root / "meta.csv", root / "release_in_the_wild" / "meta.csv"], "In-the-Wild meta.csv")
    table = read_header_table(meta, ["file", "speaker", "label"])
    table = drop_duplicates(map_labels(table, "label", IN_THE_WILD_LABELS), "file")
    frame = table.assign(
        path=[str((meta.parent / f.strip()).resolve()) for f in table["file"]],
        track=[Path(f.strip()).name for f in table["file"]],
        group=table["speaker"].str.strip(),
        source="in-the-wild",
    )
    return finish(frame, check, "In-the-Wild")


def asvspoof21_keys(root, track: str) -> Path:
    """The `trial_metadata.txt` of the 2021 `track` (LA or DF) under `root`."""
    names = [f"{track}-keys-full", f"{track}-keys-stage-1", "."]
    return first_existing([root / name / "keys" / track / "CM" / "trial_metadata.txt" for name in names],
                          f"ASVspoof 2021 {track} keys (trial_metadata.txt)")


def read_asvspoof21(root, track: str = "LA", split: str = "eval", paths_json: str = "PATHS.json",
                    check: bool = True, conditions: bool = False) -> pd.DataFrame:
    """ASVspoof 2021 `track` (LA or DF). Conditions: `codec`, `attack` and `transmission` (LA) or `corpus` (the
    source database) and `vocoder` (DF); `group` is the speaker, `source` the attack or `bonafide`."""
    if track not in ASVSPOOF21_COLUMNS:
        raise ValueError(f"track must be LA or DF. Received: track={track!r}")
    if split in ("train", "dev"):
        from voxtrace.data.manifest import read_asvspoof19_la

        folder = folder_from_paths(load_paths(paths_json), "ASVSPOOF19_LA_DIR",
                                   f"ASVspoof 2019 LA, the training data of ASVspoof 2021 {track}")
        return read_asvspoof19_la(folder, split, check, conditions)
    if split not in ASVSPOOF21_SUBSETS + ("all",):
        raise ValueError(f"split must be train, dev, all or one of {list(ASVSPOOF21_SUBSETS)}. "
                         f"Received: split={split!r}")
    root = existing(root, f"ASVspoof 2021 {track} root")
    keys = asvspoof21_keys(root, track)
    names = ASVSPOOF21_COLUMNS[track]
    table = read_fields(keys, names, min_fields=8)
    if split != "all":
        table = table[table["subset"] == split]
    table = drop_duplicates(map_labels(table, "key", ASVSPOOF_KEYS), "trial")
    return _asvspoof_frame(table, "trial", root / f"ASVspoof2021_{track}_eval" / "flac", check, conditions,
                           f"ASVspoof 2021 {track} {split}")


def read_asvspoof5(root, split: str = "train", check: bool = True, conditions: bool = False) -> pd.DataFrame:
    """ASVspoof 5 track 1. Conditions: `codec` (C01-C11, `-` uncoded), `codec_q`, `attack` (A01-A32 or
    `bonafide`); `group` is the speaker, `source` the attack."""
    if split not in ASVSPOOF5_SPLITS:
        raise ValueError(f"split must be one of {list(ASVSPOOF5_SPLITS)}. Received: split={split!r}")
    root = existing(root, "ASVspoof 5 root")
    name, folders = ASVSPOOF5_SPLITS[split]
    protocol = first_existing([root / "ASVspoof5_protocols" / name, root / name], f"ASVspoof 5 protocol {name}")
    audio = first_existing([root / f for f in folders], f"ASVspoof 5 {split} audio folder")
    table = read_fields(protocol, ASVSPOOF5_COLUMNS, min_fields=9)
    table = drop_duplicates(map_labels(table, "key", ASVSPOOF_KEYS), "file")
    return _asvspoof_frame(table, "file", audio, check, conditions, f"ASVspoof 5 {split}")


def _asvspoof_frame(table: pd.DataFrame, id_column: str, audio: Path, check: bool, conditions: bool,
                    description: str) -> pd.DataFrame:
    """The manifest of an ASVspoof protocol table: `audio/<id>.flac` per row, the speaker as `group`, the attack
    as `source` (and as a condition column)."""
    frame = table.assign(
        path=[str((audio / f"{name}.flac").resolve()) for name in table[id_column]],
        track=table[id_column] + ".flac",
        group=table["speaker"],
        attack=_attack(table["attack"]),
    )
    frame["source"] = frame["attack"]
    return finish(frame, check, description, extra=CONDITION_COLUMNS if conditions else ())
