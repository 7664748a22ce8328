"""Tiny corpora (espeak-ng speech vs tone / noise "unknown" clips; pure tones vs white noise) and fast training
configs for them."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf

VOICES = ["en-us", "en-gb", "en-us+f3"]
SENTENCES = ["the cat sat", "a red boat", "seven green trees", "open the door"]


def make_corpus(root: Path) -> Path:
    """24 clips: 3 espeak-ng voices x 4 sentences and 3 kinds of tone / noise x 4; returns a CSV manifest
    (path, label, group) where `group` is the voice or the kind."""
    root = Path(root)
    rows = []
    for voice in VOICES:
        folder = root / "espeak" / voice.replace("+", "_")
        folder.mkdir(parents=True, exist_ok=True)
        for i, text in enumerate(SENTENCES):
            path = folder / f"{i}.wav"
            subprocess.run(["espeak-ng", "-v", voice, "-s", "220", "-w", str(path), text], check=True)
            rows.append((str(path), "espeak", voice))
    rng = np.random.default_rng(0)
    sr = 16000
    for kind in ("tone", "noise", "chirp"):
        folder = root / "unknown" / kind
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(4):
            t = np.arange(int(sr * rng.uniform(0.4, 0.9))) / sr
            if kind == "tone":
                x = 0.3 * np.sin(2 * np.pi * rng.uniform(200, 800) * t)
            elif kind == "noise":
                x = 0.1 * rng.normal(size=t.size)
            else:
                x = 0.3 * np.sin(2 * np.pi * (200 + 1500 * t) * t)
            path = folder / f"{i}.wav"
            sf.write(path, x.astype("float32"), sr)
            rows.append((str(path), "unknown", kind))
    csv = root / "manifest.csv"
    pd.DataFrame(rows, columns=["path", "label", "group"]).to_csv(csv, index=False)
    return csv


def train_flags(corpus_csv: Path, output_dir: Path, epochs: int = 2, steps: int | None = None) -> list[str]:
    """CLI flags for a fast run: cnn4 at 32x64 on 0.5 s windows, 3 voice-disjoint folds, no augmentation."""
    flags = [
        "--model-name", "cnn4", "--img-size", "32x64", "--batch-size", "4", "--epochs", str(epochs),
        "--output-dir", str(output_dir), "--verbose", "2", "--seed", "3",
        "--set", "classes=[espeak, unknown]", "--set", "unknown_class=unknown",
        "--set", "data.dataset=csv", "--set", f"data.root={corpus_csv}", "--set", "data.folds=3",
        "--set", "audio.duration=0.5", "--set", "features.n_fft=256", "--set", "features.win_length=256",
        "--set", "augment.enabled=false", "--set", "augment.freq_mask=4", "--set", "augment.time_mask=8",
        "--set", "train.lr_max=0.0001", "--set", "train.lr_ramp_ep=0",
    ]
    if steps:
        flags += ["--set", f"train.steps_per_epoch={steps}"]
    return flags


def make_tone_noise_corpus(root: Path, clips_per_class: int = 12, seed: int = 0) -> Path:
    """An easily separable corpus: pure tones (300-3000 Hz) and white noise clips of 0.4-0.9 s at 16 kHz, each clip
    its own group; returns the CSV manifest (path, label)."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    sr = 16000
    rows = []
    for label in ("tone", "noise"):
        (root / label).mkdir(parents=True, exist_ok=True)
        for i in range(clips_per_class):
            t = np.arange(int(sr * rng.uniform(0.4, 0.9))) / sr
            amplitude = rng.uniform(0.05, 0.5)
            if label == "tone":
                x = amplitude * np.sin(2 * np.pi * rng.uniform(300, 3000) * t + rng.uniform(0, 2 * np.pi))
            else:
                x = amplitude * rng.uniform(-1, 1, size=t.size)
            path = root / label / f"{i}.wav"
            sf.write(path, x.astype("float32"), sr)
            rows.append((str(path), label))
    csv = root / "manifest.csv"
    pd.DataFrame(rows, columns=["path", "label"]).to_csv(csv, index=False)
    return csv


def tone_noise_overrides(corpus_csv: Path, output_dir: Path, epochs: int = 2) -> list[str]:
    """Config overrides (`key=value`) for cnn4 at 32x64 on 0.5 s windows of the tone / noise corpus, 3 folds."""
    return [
        "model.name=cnn4", "features.img_size=[32, 64]", "train.batch_size=4", f"train.epochs={epochs}",
        f"output_dir={output_dir}", "train.verbose=0", "seed=5", "classes=[tone, noise]", "unknown_class=null",
        "data.dataset=csv", f"data.root={corpus_csv}", "data.folds=3", "audio.duration=0.5", "features.n_fft=256",
        "features.win_length=256", "augment.freq_mask=4", "augment.time_mask=8", "train.lr_max=0.0005",
        "train.lr_min=0.0001", "train.lr_ramp_ep=0", "train.scheduler=constant",
    ]
