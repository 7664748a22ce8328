"""Tiny audio files and data set layouts for the data tests."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import soundfile as sf


def tone(seconds: float = 0.5, sample_rate: int = 16000, freq: float = 440.0, channels: int = 1, seed: int = 0):
    """A tone plus a little noise, float32, shape [N] (mono) or [N, C]."""
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    rng = np.random.default_rng(seed)
    x = 0.4 * np.sin(2 * np.pi * freq * t) + 0.02 * rng.standard_normal(t.size)
    x = x.astype(np.float32)
    if channels > 1:
        x = np.stack([x * (0.5 + 0.5 * c / channels) for c in range(channels)], axis=1)
    return x


def write_audio(path: Path, seconds: float = 0.5, sample_rate: int = 16000, subtype: str | None = None,
                seed: int = 0, **kwargs) -> Path:
    """Write a tone; the format follows the suffix (wav, flac, ogg, mp3)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), tone(seconds, sample_rate, seed=seed, **kwargs), sample_rate, subtype=subtype)
    return path


def write_spcup22(root: Path, n: int = 3) -> Path:
    """SP Cup 2022 layout as the reference's PATHS.json names it; returns the PATHS.json path."""
    entries = {
        "TRAIN_DATA_DIR": "./data/spcup_2022_training_part1/spcup_2022_training_part1/",
        "UNSEEN_DATA_DIR": "./data/spcup_2022_unseen/spcup_2022_unseen/",
        "TEST1_DATA_DIR": "./data/spcup_2022_eval_part1/spcup_2022_eval_part1/",
        "TEST2_DATA_DIR": "./data/spcup_2022_eval_part2/spcup_2022_eval_part2/",
    }
    train = root / entries["TRAIN_DATA_DIR"]
    rows = []
    for i in range(n * 5):
        write_audio(train / f"{i:04x}aa.wav", seed=i)
        rows.append(f"{i:04x}aa.wav,{i % 5}")
    (train / "labels.csv").write_text("track,algorithm\n" + "\n".join(rows) + "\n")
    unseen = root / entries["UNSEEN_DATA_DIR"]
    for i in range(n):
        write_audio(unseen / f"u{i}.wav", seed=100 + i)
    (unseen / "labels.csv").write_text("track,algorithm\n" + "".join(f"u{i}.wav,5\n" for i in range(n)))
    for key in ("TEST1_DATA_DIR", "TEST2_DATA_DIR"):
        for i in range(n):
            write_audio(root / entries[key] / f"t{i}.wav", seed=200 + i)
    paths_json = root / "PATHS.json"
    paths_json.write_text(json.dumps(entries))
    return paths_json


def write_asvspoof19_la(root: Path, partition: str = "train") -> Path:
    """ASVspoof 2019 LA layout with four utterances (two speakers, one bona fide each)."""
    names = {"train": ("train.trn", "T"), "dev": ("dev.trl", "D"), "eval": ("eval.trl", "E")}
    suffix, letter = names[partition]
    lines = [
        f"LA_0079 LA_{letter}_1000001 - - bonafide",
        f"LA_0079 LA_{letter}_1000002 - A01 spoof",
        f"LA_0080 LA_{letter}_1000003 - - bonafide",
        f"LA_0080 LA_{letter}_1000004 - A04 spoof",
    ]
    protocols = root / "ASVspoof2019_LA_cm_protocols"
    protocols.mkdir(parents=True, exist_ok=True)
    (protocols / f"ASVspoof2019.LA.cm.{suffix}.txt").write_text("\n".join(lines) + "\n")
    for i, line in enumerate(lines):
        write_audio(root / f"ASVspoof2019_LA_{partition}" / "flac" / f"{line.split()[1]}.flac", seed=i)
    return root
