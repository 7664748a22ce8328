"""Data set readers: a layout on disk -> one manifest DataFrame.

Every reader returns the columns of `MANIFEST_COLUMNS`:

- `path`: absolute path of the audio file
- `track`: its file name
- `label`: class NAME (a `cfg.classes` entry), or NA for unlabelled audio
- `group`: speaker / voice / text group, for group-disjoint fold splits
- `source`: the data set part or generator the file comes from

Integer labels (the SP Cup's `algorithm` column) are mapped to names through `classes`. Files that are
missing or cannot be decoded are reported with one warning naming each file and left out; every good
file is kept.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import pandas as pd

from voxtrace.config import ATTRIBUTION_CLASSES, DETECTION_CLASSES, ConfigError, load_paths
from voxtrace.data.audio import MIN_DURATION, AudioError, audio_duration, find_audio_files

MANIFEST_COLUMNS = ["path", "track", "label", "group", "source"]

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
    folder = _folder_from_paths(paths, key)
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
    return _finish(frame, check, f"SP Cup 2022 {part} ({key})")


def read_asvspoof19_la(root: str | os.PathLike, partition: str = "train", check: bool = True) -> pd.DataFrame:
    """ASVspoof 2019 LA: protocol lines `SPEAKER FILE - ATTACK KEY`; labels bonafide / spoof.

    Expects `root/ASVspoof2019_LA_cm_protocols/ASVspoof2019.LA.cm.{train.trn,dev.trl,eval.trl}.txt` and
    `root/ASVspoof2019_LA_{partition}/flac/FILE.flac`. `group` is the speaker, `source` the attack id
    (A01-A19) or "bonafide".
    """
    if partition not in ASVSPOOF19_PROTOCOLS:
        raise ValueError(f"partition must be one of {list(ASVSPOOF19_PROTOCOLS)}. Received: partition={partition!r}")
    root = _existing(root, "ASVspoof 2019 LA root")
    protocol = root / "ASVspoof2019_LA_cm_protocols" / ASVSPOOF19_PROTOCOLS[partition]
    if not protocol.is_file():
        raise FileNotFoundError(f"ASVspoof 2019 LA protocol not found: {protocol}")
    table = pd.read_csv(protocol, sep=r"\s+", header=None, names=["speaker", "file", "env", "attack", "key"],
                        dtype=str)
    bad = sorted(set(table["key"]) - set(DETECTION_CLASSES))
    if bad:
        raise ValueError(f"{protocol}: the last column must be bonafide or spoof. Received: {bad[:5]}")
    audio_dir = root / f"ASVspoof2019_LA_{partition}" / "flac"
    frame = pd.DataFrame({
        "path": [str((audio_dir / f"{name}.flac").resolve()) for name in table["file"]],
        "track": table["file"] + ".flac",
        "label": table["key"],
        "group": table["speaker"],
        "source": table["attack"].where(table["attack"] != "-", "bonafide"),
    })
    return _finish(frame, check, f"ASVspoof 2019 LA {partition}")


def read_folder_per_class(root: str | os.PathLike, class_map: dict | None = None, check: bool = True) -> pd.DataFrame:
    """One subfolder per class (FoR, Deep-Voice, WaveFake style: `root/real/`, `root/melgan/` ...).

    The subfolder name is the class, or `class_map[name]` when a map is given (subfolders it does not name
    are skipped with a warning). `group` is the folder holding the file relative to `root` (a speaker
    folder where there is one), `source` the class subfolder.
    """
    root = _existing(root, "folder-per-class root")
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
    return _finish(pd.DataFrame(rows, columns=MANIFEST_COLUMNS), check, str(root))


def read_csv_manifest(path: str | os.PathLike, classes=None, check: bool = True) -> pd.DataFrame:
    """A CSV with columns path,label[,group,source]; relative paths are relative to the CSV's folder.

    An empty label means unlabelled. Integer labels are class ids into `classes` (needed then).
    """
    path = _existing(path, "CSV manifest")
    table = pd.read_csv(path, dtype={"path": str})
    missing = {"path", "label"} - set(table.columns)
    if missing:
        raise ValueError(f"{path} lacks the column(s) {sorted(missing)}; it must have path,label[,group,source]")
    files = [Path(p) if os.path.isabs(p) else path.parent / p for p in table["path"].astype(str)]
    frame = pd.DataFrame({
        "path": [str(p.resolve()) for p in files],
        "track": [p.name for p in files],
        "label": _label_names(table["label"], classes, path),
    })
    frame["group"] = table["group"].astype(str).values if "group" in table else frame["track"]
    frame["source"] = table["source"].astype(str).values if "source" in table else path.stem
    return _finish(frame, check, str(path))


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
    root = _existing(root, "demo corpus")
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
    return _finish(frame, check, f"demo corpus {split} ({root})")


def read_manifest(cfg, split: str = "train") -> pd.DataFrame:
    """The manifest of `cfg.data.dataset` for `split`, with labels checked against `cfg.classes`.

    `cfg.data.root` is a folder or CSV file, or a key of PATHS.json (`cfg.data.paths_json`). Splits:
    demo: train | eval_part1 .. eval_part5; spcup22: train (training part 1, plus the unseen part when
    cfg.classes has its 6th class, unknown) | unseen | eval_part1 | eval_part2; asvspoof19: train | dev | eval
    (valid and test are accepted for dev and eval); folder / csv: train only.
    """
    data = cfg.data
    dataset = data.dataset
    if dataset == "spcup22":
        paths = load_paths(data.paths_json)
        if split == "train":
            parts = [read_spcup22(paths, "train", cfg.classes)]
            if len(cfg.classes) > len(ATTRIBUTION_CLASSES) - 1:  # the unseen part is class 5, unknown
                parts.append(read_spcup22(paths, "unseen", cfg.classes))
            frame = pd.concat(parts, ignore_index=True)
        else:
            frame = read_spcup22(paths, split, cfg.classes)
    else:
        root = _resolve_root(data.root, data.paths_json)
        if dataset == "demo":
            frame = read_demo(root, split, task=cfg.task)
        elif dataset == "asvspoof19":
            frame = read_asvspoof19_la(root, {"valid": "dev", "test": "eval"}.get(split, split))
        elif dataset in ("folder", "csv"):
            if split != "train":
                raise ValueError(f"data.dataset={dataset!r} has one split, train. Received: split={split!r}")
            frame = read_folder_per_class(root) if dataset == "folder" else read_csv_manifest(root, cfg.classes)
        else:
            raise ConfigError(f"data.dataset must be demo, spcup22, asvspoof19, folder or csv. Received: {dataset!r}")
    if data.max_files is not None:
        frame = cap_per_class(frame, data.max_files, cfg.seed)
    return _check_classes(frame, cfg.classes, f"data.dataset={dataset!r}")


# ---- helpers ------------------------------------------------------------------------------------------------
def _resolve_root(root: str, paths_json: str) -> Path:
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


def _folder_from_paths(paths: dict, key: str) -> Path:
    if key not in paths:
        raise FileNotFoundError(f"PATHS.json has no {key}; it must name the folder of that part of SP Cup 2022")
    folder = Path(paths[key])
    if not folder.is_dir():
        raise FileNotFoundError(f"{key}={folder} (from PATHS.json) does not exist")
    return folder


def _existing(path, what: str) -> Path:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{what} not found: {path}")
    return path


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
        "label": _label_names(table["algorithm"], classes, labels_csv),
    })


def _label_names(values: pd.Series, classes, source) -> pd.Series:
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


def _finish(frame: pd.DataFrame, check: bool, what: str) -> pd.DataFrame:
    """Drop (and report, one warning per file) files that are missing, cannot be decoded or are too short."""
    frame = frame[MANIFEST_COLUMNS].reset_index(drop=True)
    if not check or frame.empty:
        return frame
    good = []
    for path in frame["path"]:
        try:
            seconds = audio_duration(path)
            if seconds < MIN_DURATION:
                raise AudioError(path, f"too short: {seconds:.3f} s < {MIN_DURATION} s")
            good.append(True)
        except (AudioError, FileNotFoundError) as err:
            warnings.warn(f"{what}: skipping unreadable audio: {err}", stacklevel=3)
            good.append(False)
    return frame[good].reset_index(drop=True)


def cap_per_class(frame: pd.DataFrame, cap: int, seed: int) -> pd.DataFrame:
    """At most `cap` files per label (unlabelled files count as one label), picked at random, order kept."""
    shuffled = frame.sample(frac=1.0, random_state=seed)
    rank = shuffled.groupby(shuffled["label"].fillna("<unlabelled>").to_numpy(), sort=False).cumcount()
    return shuffled[rank < cap].sort_index().reset_index(drop=True)


def balance_classes(frame: pd.DataFrame, seed: int) -> pd.DataFrame:
    """As many files of every label as the rarest label has (random undersampling, as seeds/001 balanced
    bona fide and spoof)."""
    return cap_per_class(frame, int(frame["label"].value_counts().min()), seed)


def _check_classes(frame: pd.DataFrame, classes, what: str) -> pd.DataFrame:
    """Labels outside `classes` are a config error naming them."""
    labels = set(frame["label"].dropna())
    unknown = sorted(labels - set(classes))
    if unknown:
        raise ConfigError(
            f"{what}: labels {unknown[:10]} are not in classes={list(classes)}; set `classes` (and `task`) to match"
        )
    return frame
