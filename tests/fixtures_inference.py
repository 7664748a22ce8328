"""Tiny saved runs and audio folders for the inference, evaluation and predict CLI tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf

from voxtrace.config import Config

SR = 16000
DURATION = 0.25  # seconds per model window


def tiny_cfg(classes=("a", "b", "c"), duration=DURATION, **overrides) -> Config:
    raw = {
        "classes": list(classes),
        "unknown_class": list(classes)[-1],
        "audio": {"duration": duration, "window_hop": 0.5},
        "features": {"img_size": [32, 64]},
        "model": {"name": "tiny"},
        "infer": {"batch_size": 4},
    }
    for key, value in overrides.items():
        section, _, leaf = key.partition("__")
        raw.setdefault(section, {})[leaf] = value
    return Config.from_dict(raw)


def tiny_model(cfg: Config, seed: int = 0):
    """Waveform [B, N] -> softmax [B, C] from the mean absolute amplitude of 16 chunks (standard layers only)."""
    import keras

    keras.utils.set_random_seed(seed)
    n = cfg.num_samples
    inputs = keras.Input((n,))
    x = keras.layers.Reshape((16, n // 16))(inputs)
    x = keras.layers.Dense(4, activation="tanh")(x)
    x = keras.layers.Flatten()(x)
    outputs = keras.layers.Dense(cfg.num_classes, activation="softmax")(x)
    return keras.Model(inputs, outputs, name=f"tiny{seed}")


def save_run(run_dir: Path, cfg: Config, folds=(0,), seed: int = 0) -> list:
    """`run_dir/ckpt/fold-K.keras` + `run_dir/cfg/config.yaml`; returns the models."""
    run_dir = Path(run_dir)
    (run_dir / "ckpt").mkdir(parents=True, exist_ok=True)
    cfg.save(run_dir / "cfg" / "config.yaml")
    models = []
    for k in folds:
        model = tiny_model(cfg, seed=seed * 100 + k)
        name = "model.keras" if k is None else f"fold-{k}.keras"
        model.save(run_dir / "ckpt" / name)
        models.append(model)
    return models


def write_clips(folder: Path, n: int = 4, seconds=(0.3, 0.7), seed: int = 0) -> list[Path]:
    """`n` noisy tone WAVs of random length in `seconds`."""
    rng = np.random.default_rng(seed)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        length = int(rng.uniform(*seconds) * SR)
        t = np.arange(length) / SR
        x = 0.3 * np.sin(2 * np.pi * rng.uniform(100, 2000) * t) + 0.05 * rng.standard_normal(length)
        path = folder / f"clip_{i:03d}.wav"
        sf.write(path, x.astype(np.float32), SR)
        paths.append(path)
    return paths


def write_bad_files(folder: Path) -> dict[str, Path]:
    """An empty WAV, a text file named .wav, and a truncated FLAC header."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    bad = {"empty": folder / "empty.wav", "text": folder / "notes.wav", "corrupt": folder / "broken.flac"}
    bad["empty"].write_bytes(b"")
    bad["text"].write_text("this is not audio\n" * 20)
    bad["corrupt"].write_bytes(b"fLaC\x00\x00\x00\x22" + b"\x13" * 40)
    return bad
