"""The SP Cup 2022 reference's external corpora, mixed into training as the unknown class (as Syn-Att did).

PATHS.json names one folder per source; each is searched recursively for audio (wav, flac, ogg, mp3), so the
16 kHz re-encodings the reference used and the original releases both read:

| source | PATHS.json key | speaker (`group`) |
|---|---|---|
| lj | LJ_DATA_DIR | one speaker, `lj:LJ` |
| vctk | VCTK_DATA_DIR | the `p225/` (or `s5/`) folder, else the file name's prefix (`p225_001.wav`) |
| libri | LIBRI_DATA_DIR | LibriSpeech's `SPEAKER-CHAPTER-UTT` file name, else its `SPEAKER/CHAPTER/` folders |
| synthetic | SYNTHETIC_DATA_DIR | the folder holding the file (one generator or voice per folder) |
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from voxtrace.config import ConfigError
from voxtrace.data.audio import find_audio_files
from voxtrace.data.datasets.common import MANIFEST_COLUMNS, finish, folder_from_paths

EXTERNAL_SOURCES = {  # config key (data.external.<key>) -> PATHS.json key
    "lj": "LJ_DATA_DIR",
    "vctk": "VCTK_DATA_DIR",
    "libri": "LIBRI_DATA_DIR",
    "synthetic": "SYNTHETIC_DATA_DIR",
}
_VCTK_SPEAKER = re.compile(r"^[ps]\d+$")
_LIBRI_NAME = re.compile(r"^(\d+)-(\d+)-\d+$")


def external_speaker(source: str, path: Path, root: Path) -> str:
    """The speaker (or generator) a file of `source` belongs to, from the layout of its folder."""
    parts = path.relative_to(root).parts
    if source == "lj":
        return "LJ"
    if source == "vctk":
        folder = next((p for p in reversed(parts[:-1]) if _VCTK_SPEAKER.match(p)), None)
        return folder or path.stem.split("_")[0]
    if source == "libri":
        match = _LIBRI_NAME.match(path.stem)
        if match:
            return match.group(1)
        return parts[-3] if len(parts) >= 3 else path.stem
    if source == "synthetic":
        return "/".join(parts[:-1]) or "synthetic"
    raise ValueError(f"source must be one of {list(EXTERNAL_SOURCES)}. Received: source={source!r}")


def read_external(paths: dict, source: str, label: str) -> pd.DataFrame:
    """Every audio file of one external source, labelled `label`; `group` is `SOURCE:SPEAKER`, `source` the
    source key. Files are not decoded here (see `read_spcup22_external`)."""
    if source not in EXTERNAL_SOURCES:
        raise ValueError(f"source must be one of {list(EXTERNAL_SOURCES)}. Received: source={source!r}")
    key = EXTERNAL_SOURCES[source]
    root = folder_from_paths(paths, key, f"the external {source} data (data.external.{source})")
    files = find_audio_files(root)
    if not files:
        raise FileNotFoundError(f"{key}={root} (data.external.{source}) holds no audio files")
    return pd.DataFrame({
        "path": [str(p.resolve()) for p in files],
        "track": [p.name for p in files],
        "label": label,
        "group": [f"{source}:{external_speaker(source, p, root)}" for p in files],
        "source": source,
    }, columns=MANIFEST_COLUMNS)


def cap_round_robin(frame: pd.DataFrame, cap: int | None, seed: int) -> pd.DataFrame:
    """At most `cap` rows, drawn one per speaker (`group`) in turn after a seeded shuffle, so a capped source
    keeps as many speakers as it can; order of the kept rows as in `frame`."""
    if cap is None or len(frame) <= cap:
        return frame.reset_index(drop=True)
    shuffled = frame.sample(frac=1.0, random_state=seed)
    turn = shuffled.groupby("group", sort=False).cumcount()
    kept = shuffled.assign(_turn=turn.to_numpy()).sort_values("_turn", kind="stable").head(cap)
    return frame.loc[sorted(kept.index)].reset_index(drop=True)


def read_spcup22_external(paths: dict, external, unknown_class: str | None, seed: int = 0,
                          check: bool = True) -> pd.DataFrame:
    """The sources switched on in `external` (a `voxtrace.config.ExternalData`), each capped to
    `external.max_files` files (round-robin over its speakers), labelled `unknown_class`."""
    enabled = [name for name in EXTERNAL_SOURCES if getattr(external, name)]
    if not enabled:
        return pd.DataFrame(columns=MANIFEST_COLUMNS)
    if unknown_class is None:
        raise ConfigError(f"data.external adds {enabled} as the unknown class, but unknown_class is null; "
                          "set unknown_class or switch data.external off")
    frames = []
    for name in enabled:
        frame = cap_round_robin(read_external(paths, name, unknown_class), external.max_files, seed)
        frames.append(finish(frame, check, f"SP Cup 2022 external {name} ({EXTERNAL_SOURCES[name]})"))
    return pd.concat(frames, ignore_index=True)
