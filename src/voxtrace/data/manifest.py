"""Data set readers: a layout on disk -> one manifest DataFrame.

Every reader returns the columns of `MANIFEST_COLUMNS`:

- `path`: absolute path of the audio file
- `track`: its file name
- `label`: class NAME (a `cfg.classes` entry), or NA for unlabelled audio
- `group`: speaker / voice / text group, for group-disjoint fold splits
- `source`: the data set part or generator the file comes from

Integer labels (the SP Cup's `algorithm` column) are mapped to names through `classes`. Files that are
missing or cannot be decoded are reported with one warning naming each file and left out; every good
file is kept; a protocol row that cannot be used is reported by file and line (`datasets.common`).

`voxtrace.vocabulary.DATASETS` names every `data.dataset`; the readers of the field's other sets live in `voxtrace.data.datasets`
(SP Cup external data, MLAAD, In-the-Wild, ASVspoof 2021 and 5). With `conditions=True` a reader also keeps
the per-clip conditions its layout gives (`CONDITION_COLUMNS`: attack, system, codec, ...).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import pandas as pd

from voxtrace.config import ATTRIBUTION_CLASSES, DETECTION_CLASSES, ConfigError, load_paths
from voxtrace.data.audio import find_audio_files
from voxtrace.data.datasets.common import (
    CONDITION_COLUMNS,
    MANIFEST_COLUMNS,
    drop_duplicates,
    existing,
    finish,
    folder_from_paths,
    label_names,
    map_labels,
    read_fields,
    resolve_root,
)
from voxtrace.data.datasets.detection import read_asvspoof5, read_asvspoof21, read_in_the_wild
from voxtrace.data.datasets.external import read_spcup22_external
from voxtrace.data.datasets.mlaad import read_mlaad
from voxtrace.vocabulary import DATASETS

# SP Cup 2022, as the reference's PATHS.json names its folders
SPCUP22_PARTS = {
    "train": "TRAIN_DATA_DIR",
    "unseen": "UNSEEN_DATA_DIR",
    "eval_part1": "TEST1_DATA_DIR",
    "eval_part2": "TEST2_DATA_DIR",
}
ASVSPOOF19_PROTOCOLS = {
    "train": "ASVspoof2019.LA.cm.train.trn.txt",
    "dev": "ASVspoof2019.LA.cm.dev.trl.txt",
    "eval": "ASVspoof2019.LA.cm.eval.trl.txt",
}
SPLIT_ALIASES = {"valid": "dev", "test": "eval"}
DEMO_SPLITS = {
    "train": ("train", "train/labels.csv"),
    "eval_part1": ("eval_part1", "labels_eval_part1.csv"),
    "eval_part2": ("eval_part2", "labels_eval_part2.csv"),
    "eval_part3": ("eval_part3", "labels_eval_part3.csv"),
    "eval_part4": ("eval_part4", "labels_eval_part4.csv"),
    "eval_part5": ("eval_part5", "labels_eval_part5.csv"),
}


# ---- readers ------------------------------------------------------------------------------------------------
def read_spcup22(paths: dict, part: str = "train", classes=ATTRIBUTION_CLASSES, check: bool = True) -> pd.DataFrame:
    """SP Cup 2022: `part` is train (training part 1), unseen, eval_part1 or eval_part2.

    `paths` maps the PATHS.json keys (TRAIN_DATA_DIR, UNSEEN_DATA_DIR, TEST1_DATA_DIR, TEST2_DATA_DIR) to
    folders. Training folders hold `labels.csv` (track,algorithm); an evaluation folder is unlabelled
    unless `labels_eval_partK.csv` lies in it or beside it. No speaker is known, so `group` is the track.
    """
    if part not in SPCUP22_PARTS:
        raise ValueError(f"part must be one of {list(SPCUP22_PARTS)}. Received: part={part!r}")
    key = SPCUP22_PARTS[part]
    folder = folder_from_paths(paths, key)
    if part in ("train", "unseen"):
        labels_csv = folder / "labels.csv"
        if not labels_csv.is_file():
            raise FileNotFoundError(f"{labels_csv} not found ({key}={folder} must hold labels.csv)")
    else:
        name = f"labels_{part}.csv"
        labels_csv = next((p for p in (folder / name, folder.parent / name) if p.is_file()), None)
    if labels_csv is not None:
        frame = read_track_labels(labels_csv, folder, classes)
    else:
        files = find_audio_files(folder)
        frame = pd.DataFrame({"path": [str(p.resolve()) for p in files], "track": [p.name for p in files]})
        frame["label"] = pd.NA
    frame["group"] = frame["track"].str.rsplit(".", n=1).str[0]
    frame["source"] = f"spcup22-{part}"
    return finish(frame, check, f"SP Cup 2022 {part} ({key})")


def read_asvspoof19_la(root: str | os.PathLike, partition: str = "train", check: bool = True,
                       conditions: bool = False) -> pd.DataFrame:
    """ASVspoof 2019 LA: protocol lines `SPEAKER FILE - ATTACK KEY`; labels bonafide / spoof.

    Expects `root/ASVspoof2019_LA_cm_protocols/ASVspoof2019.LA.cm.{train.trn,dev.trl,eval.trl}.txt` and
    `root/ASVspoof2019_LA_{partition}/flac/FILE.flac`. `group` is the speaker, `source` (and the `attack`
    condition) the attack id (A01-A19) or "bonafide".
    """
    if partition not in ASVSPOOF19_PROTOCOLS:
        raise ValueError(f"partition must be one of {list(ASVSPOOF19_PROTOCOLS)}. Received: partition={partition!r}")
    root = existing(root, "ASVspoof 2019 LA root")
    protocol = root / "ASVspoof2019_LA_cm_protocols" / ASVSPOOF19_PROTOCOLS[partition]
    if not protocol.is_file():
        raise FileNotFoundError(f"ASVspoof 2019 LA protocol not found: {protocol}")
    table = read_fields(protocol, ["speaker", "file", "env", "attack", "key"])
    table = drop_duplicates(map_labels(table, "key", {c: c for c in DETECTION_CLASSES}), "file")
    audio_dir = root / f"ASVspoof2019_LA_{partition}" / "flac"
    frame = table.assign(
        path=[str((audio_dir / f"{name}.flac").resolve()) for name in table["file"]],
        track=table["file"] + ".flac",
        group=table["speaker"],
        source=table["attack"].where(table["attack"] != "-", "bonafide"),
    )
    frame["attack"] = frame["source"]
    return finish(frame, check, f"ASVspoof 2019 LA {partition}", extra=CONDITION_COLUMNS if conditions else ())


def read_folder_per_class(root: str | os.PathLike, class_map: dict | None = None, check: bool = True) -> pd.DataFrame:
    """One subfolder per class (FoR, Deep-Voice, WaveFake style: `root/real/`, `root/melgan/` ...).

    The subfolder name is the class, or `class_map[name]` when a map is given (subfolders it does not name
    are skipped with a warning). `group` is the folder holding the file relative to `root` (a speaker
    folder where there is one), `source` the class subfolder.
    """
    root = existing(root, "folder-per-class root")
    subfolders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not subfolders:
        raise ValueError(f"{root} has no class subfolders (expected e.g. {root}/real/, {root}/fake/)")
    rows, skipped = [], []
    for folder in subfolders:
        if class_map is not None and folder.name not in class_map:
            skipped.append(folder.name)
            continue
        label = class_map[folder.name] if class_map is not None else folder.name
        for path in find_audio_files(folder):
            rows.append({
                "path": str(path.resolve()), "track": path.name, "label": label,
                "group": str(path.parent.relative_to(root)), "source": folder.name,
            })
    if skipped:
        warnings.warn(f"{root}: subfolders not in class_map, skipped: {skipped}", stacklevel=2)
    return finish(pd.DataFrame(rows, columns=MANIFEST_COLUMNS), check, str(root))


def read_csv_manifest(path: str | os.PathLike, classes=None, check: bool = True) -> pd.DataFrame:
    """A CSV with columns path,label[,group,source]; relative paths are relative to the CSV's folder.

    An empty label means unlabelled. Integer labels are class ids into `classes` (needed then).
    """
    path = existing(path, "CSV manifest")
    table = pd.read_csv(path, dtype={"path": str})
    missing = {"path", "label"} - set(table.columns)
    if missing:
        raise ValueError(f"{path} lacks the column(s) {sorted(missing)}; it must have path,label[,group,source]")
    files = [Path(p) if os.path.isabs(p) else path.parent / p for p in table["path"].astype(str)]
    frame = pd.DataFrame({
        "path": [str(p.resolve()) for p in files],
        "track": [p.name for p in files],
        "label": label_names(table["label"], classes, path),
    })
    frame["group"] = table["group"].astype(str).values if "group" in table else frame["track"]
    frame["source"] = table["source"].astype(str).values if "source" in table else path.stem
    return finish(frame, check, str(path))


def read_demo(root: str | os.PathLike, split: str = "train", task: str = "attribute",
              check: bool = True) -> pd.DataFrame:
    """The demo corpus of `voxtrace corpus`: `split` is train or eval_part1..5 (held-out voices, channels,
    generators, cross-corpus, cross-corpus through held-out channels).

    Labels come from the corpus's metadata.csv, so one corpus serves both tasks: `attribute` gives the
    generator class, `detect` gives bonafide (human speech) / spoof. `group` is the voice or speaker,
    `source` the engine.
    """
    if split not in DEMO_SPLITS:
        raise ValueError(f"split must be one of {list(DEMO_SPLITS)}. Received: split={split!r}")
    if task not in ("attribute", "detect"):
        raise ValueError(f"task must be attribute or detect. Received: task={task!r}")
    root = existing(root, "demo corpus")
    metadata = root / "metadata.csv"
    if not metadata.is_file():
        raise FileNotFoundError(f"{metadata} not found: build the corpus with `voxtrace corpus --out {root}`")
    table = pd.read_csv(metadata, dtype={"track": str, "speaker": str, "engine": str})
    table = table[table["split"] == split]
    folder = root / DEMO_SPLITS[split][0]
    frame = pd.DataFrame({
        "path": [str((folder / t).resolve()) for t in table["track"]],
        "track": table["track"].values,
        "label": table["class_name" if task == "attribute" else "detect_name"].values,
        "group": table["speaker"].values,
        "source": table["engine"].values,
    })
    return finish(frame, check, f"demo corpus {split} ({root})")


def read_manifest(cfg, split: str = "train", conditions: bool = False) -> pd.DataFrame:
    """The manifest of `cfg.data.dataset` for `split`, with labels checked against `cfg.classes`.

    `cfg.data.root` is a folder or CSV file, or a key of PATHS.json (`cfg.data.paths_json`). Splits:
    demo: train | eval_part1 .. eval_part5; spcup22: train (training part 1, plus the unseen part when
    cfg.classes has its 6th class, unknown, plus the `data.external` corpora as unknown) | unseen | eval_part1 |
    eval_part2; asvspoof19, mlaad, asvspoof5: train | dev | eval (valid and test are accepted for dev and eval);
    asvspoof21la / asvspoof21df: train | dev (ASVspoof 2019 LA) | eval | progress | hidden_track | all;
    inthewild: any split, the whole set; folder / csv: train only. `conditions=True` keeps the columns of
    `CONDITION_COLUMNS` the layout gives (attack, system, codec, ...) after the manifest columns.
    """
    data = cfg.data
    dataset = data.dataset
    if dataset not in DATASETS:
        raise ConfigError(f"data.dataset must be one of {list(DATASETS)}. Received: {dataset!r}")
    split = SPLIT_ALIASES.get(split, split) if dataset in ("asvspoof19", "mlaad", "asvspoof5") else split
    if dataset == "spcup22":
        paths = load_paths(data.paths_json)
        if split == "train":
            parts = [read_spcup22(paths, "train", cfg.classes)]
            if len(cfg.classes) > len(ATTRIBUTION_CLASSES) - 1:  # the unseen part is class 5, unknown
                parts.append(read_spcup22(paths, "unseen", cfg.classes))
            parts.append(read_spcup22_external(paths, data.external, cfg.unknown_class, cfg.seed))
            frame = pd.concat(parts, ignore_index=True)
        else:
            frame = read_spcup22(paths, split, cfg.classes)
    else:
        root = resolve_root(data.root, data.paths_json)
        if dataset == "demo":
            frame = read_demo(root, split, task=cfg.task)
        elif dataset == "asvspoof19":
            frame = read_asvspoof19_la(root, split, conditions=conditions)
        elif dataset == "mlaad":
            if not data.protocols:
                raise ConfigError("data.dataset=mlaad needs data.protocols: the folder of the source-tracing "
                                  "train.csv / dev.csv / eval.csv (or a PATHS.json key)")
            frame = read_mlaad(root, resolve_root(data.protocols, data.paths_json), split, data.attribute_by,
                               cfg.unknown_class, conditions=conditions)
        elif dataset == "inthewild":
            frame = read_in_the_wild(root)
        elif dataset in ("asvspoof21la", "asvspoof21df"):
            frame = read_asvspoof21(root, dataset[-2:].upper(), split, data.paths_json, conditions=conditions)
        elif dataset == "asvspoof5":
            frame = read_asvspoof5(root, split, conditions=conditions)
        else:  # folder, csv
            if split != "train":
                raise ValueError(f"data.dataset={dataset!r} has one split, train. Received: split={split!r}")
            frame = read_folder_per_class(root) if dataset == "folder" else read_csv_manifest(root, cfg.classes)
    frame = frame.reindex(columns=MANIFEST_COLUMNS + [c for c in CONDITION_COLUMNS if c in frame.columns])
    if not conditions:
        frame = frame[MANIFEST_COLUMNS]
    if data.max_files is not None:
        frame = cap_per_class(frame, data.max_files, cfg.seed)
    return _check_classes(frame, cfg.classes, f"data.dataset={dataset!r}")


# ---- helpers ------------------------------------------------------------------------------------------------
def read_track_labels(labels_csv, folder, classes) -> pd.DataFrame:
    """A `track,algorithm` labels CSV (the SP Cup layout) as `DataFrame[path, track, label]`: `track` is a file
    in `folder`, `algorithm` a class id into `classes` or a class name."""
    table = pd.read_csv(labels_csv, dtype={"track": str})
    table = table.drop(columns=[c for c in table.columns if c.startswith("Unnamed")])
    if not {"track", "algorithm"} <= set(table.columns):
        raise ValueError(f"{labels_csv} must have the columns track,algorithm. Received: {list(table.columns)}")
    folder = Path(folder)
    return pd.DataFrame({
        "path": [str((folder / t).resolve()) for t in table["track"]],
        "track": table["track"].astype(str),
        "label": label_names(table["algorithm"], classes, labels_csv),
    })


def cap_per_class(frame: pd.DataFrame, cap: int, seed: int) -> pd.DataFrame:
    """At most `cap` files per label (unlabelled files count as one label), picked at random, order kept."""
    shuffled = frame.sample(frac=1.0, random_state=seed)
    rank = shuffled.groupby(shuffled["label"].fillna("<unlabelled>").to_numpy(), sort=False).cumcount()
    return shuffled[rank < cap].sort_index().reset_index(drop=True)


def balance_classes(frame: pd.DataFrame, seed: int, mode: str = "undersample") -> pd.DataFrame:
    """As many files of every label as the rarest label has (`undersample`: a random subset, as seeds/001
    balanced bona fide and spoof), or as the commonest has (`resample`: every file kept, each label's files
    repeated whole and then a random subset of them added for the remainder, so every file is seen)."""
    counts = frame["label"].value_counts()
    if mode == "undersample":
        return cap_per_class(frame, int(counts.min()), seed)
    if mode != "resample":
        raise ValueError(f"balance mode must be undersample or resample. Received: mode={mode!r}")
    parts = []
    for label, count in counts.items():
        rows = frame[frame["label"] == label]
        repeats, remainder = divmod(int(counts.max()), int(count))
        parts += [rows] * repeats + [rows.sample(n=remainder, random_state=seed)]
    return pd.concat(parts).reset_index(drop=True)


def _check_classes(frame: pd.DataFrame, classes, what: str) -> pd.DataFrame:
    """Labels outside `classes` are a config error naming them."""
    labels = set(frame["label"].dropna())
    unknown = sorted(labels - set(classes))
    if unknown:
        raise ConfigError(
            f"{what}: labels {unknown[:10]} are not in classes={list(classes)}; set `classes` (and `task`) to match"
            + (" (for MLAAD: python -m voxtrace.data.datasets.mlaad ROOT PROTOCOLS prints the line)"
               if "mlaad" in what else "")
        )
    return frame
