"""The one windowing of inference: a clip cut into overlapping model windows, and its test-time passes.

Everything that scores a whole clip uses it: `predict`, `pseudo`, `serve`, frozen-encoder features, the
saliency of the loudest window. Pure NumPy, so an exported model runs without TensorFlow.
"""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np

from voxtrace.vocabulary import PAD_MODES


def pad_window(x: np.ndarray, num_samples: int, pad_mode: str = "constant") -> np.ndarray:
    """A clip shorter than one window, padded to `num_samples` as outside training: silence after it
    (`constant`, and `random`, which draws only in training) or the clip mirrored back and forth (`reflect`)."""
    if pad_mode not in PAD_MODES:
        raise ValueError(f"pad_mode must be one of {list(PAD_MODES)}. Received: pad_mode={pad_mode!r}")
    x = np.asarray(x, np.float32)[:num_samples]
    if pad_mode == "reflect" and len(x):
        period = np.concatenate([x, x[::-1]])
        return np.tile(period, -(-num_samples // len(period)))[:num_samples]
    return np.pad(x, (0, num_samples - len(x)))


def frame_windows(x, num_samples: int, hop_fraction: float = 0.5, pad_mode: str = "constant") -> np.ndarray:
    """Cut a clip `[n]` into overlapping windows `[k, num_samples]` that cover it whole.

    Windows start every `round(hop_fraction * num_samples)` samples; the last one is zero-padded past the end,
    k = 1 + ceil(max(n - num_samples, 0) / hop). A clip no longer than one window gives one window
    (`pad_window` with `pad_mode`).
    """
    if not 0 < hop_fraction <= 1:
        raise ValueError(f"hop_fraction must be within (0, 1]. Received: hop_fraction={hop_fraction!r}")
    x = np.asarray(x, np.float32).reshape(-1)
    n = len(x)
    if n <= num_samples:
        return pad_window(x, num_samples, pad_mode)[None]
    hop = window_hop(num_samples, hop_fraction)
    count = 1 + -(-(n - num_samples) // hop)
    padded = np.pad(x, (0, (count - 1) * hop + num_samples - n))
    return np.lib.stride_tricks.sliding_window_view(padded, num_samples)[::hop].copy()


def window_hop(num_samples: int, hop_fraction: float) -> int:
    """Samples between the starts of two windows."""
    return max(1, int(round(num_samples * hop_fraction)))


def file_rng(seed: int, name) -> np.random.Generator:
    """The test-time-augmentation generator of one clip: from the config seed and the clip's file name only,
    so a clip scores the same whatever else is in the run."""
    return np.random.default_rng([seed, zlib.crc32(Path(name).name.encode())])


def tta_windows(x: np.ndarray, cfg, tta: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Windows `[k, num_samples]` of each test-time pass: pass 0 as is, later passes with the window grid
    shifted by a random offset below one hop (long clips) or the clip placed at a random position of its
    window (short clips)."""
    n = cfg.num_samples
    hop = window_hop(n, cfg.audio.window_hop)
    passes = []
    for p in range(tta):
        shift = int(rng.integers(0, hop)) if p and len(x) > n else 0
        windows = frame_windows(x[shift:], n, cfg.audio.window_hop, cfg.audio.pad_mode)
        if p and len(x) < n:
            windows = np.roll(windows, int(rng.integers(0, n - len(x) + 1)), axis=1)
        passes.append(windows)
    return passes
