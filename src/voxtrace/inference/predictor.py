"""Per-model prediction over audio files: streaming decode, overlapping windows, test-time augmentation.

Files are decoded a few at a time on background threads (never all at once), cut into windows of
`cfg.num_samples` samples that overlap by `cfg.audio.window_hop` of a window (`voxtrace.data.pipeline.
frame_windows`: the last window zero-padded, short clips padded with `cfg.audio.pad_mode`), and fed to the
model(s) in fixed-size batches. A file's score is the `cfg.audio.window_agg` (mean or max) of its window
scores, averaged over `tta` passes: pass 0 is deterministic, each further pass shifts the window grid by a
random offset and places short clips at a random position. A file
that cannot be decoded gets a NaN row and an entry in the returned error dict; every other file is still
scored.
"""

from __future__ import annotations

import collections
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

# (min sqrt(H*W), batch size per device) as the reference picked them; bigger inputs get smaller batches
_BATCH_BY_SIZE = ((768, 16), (640, 32), (0, 64))
_HEAVY_BACKBONES = {"convnext": 16, "ECA_NFNet": 16, "EfficientNet": 32, "RegNet": 32, "ResNetRS": 32, "ResNest": 32}
_ACTIVATION_FACTOR = 48  # rough peak activation bytes of a CNN per input-image byte, used to bound RAM


def tta_windows(x: np.ndarray, cfg, tta: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Windows `[k, num_samples]` of each TTA pass (`voxtrace.data.pipeline.frame_windows`): pass 0 as is,
    later passes with the window grid shifted by a random offset below one hop (long files) or the clip placed
    at a random position of its window (short clips)."""
    from voxtrace.data.pipeline import frame_windows

    n = cfg.num_samples
    hop = max(1, int(round(n * cfg.audio.window_hop)))
    passes = []
    for p in range(tta):
        shift = int(rng.integers(0, hop)) if p and len(x) > n else 0
        windows = frame_windows(x[shift:], n, cfg.audio.window_hop, cfg.audio.pad_mode).numpy()
        if p and len(x) < n:
            windows = np.roll(windows, int(rng.integers(0, n - len(x) + 1)), axis=1)
        passes.append(windows)
    return passes


def available_memory_bytes() -> int:
    """MemAvailable from /proc/meminfo, else physical memory; the RAM bound of the automatic batch size."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def auto_batch_size(cfg, replicas: int | None = None) -> int:
    """Batch size that fits memory: the reference's choice by input size and backbone, clamped by free RAM."""
    h, w = cfg.features.img_size
    side = float(np.sqrt(h * w))
    per_device = next(size for min_side, size in _BATCH_BY_SIZE if side >= min_side)
    for key, size in _HEAVY_BACKBONES.items():
        if key.lower() in cfg.model.name.lower():
            per_device = min(per_device, size)
    if replicas is None:
        import tensorflow as tf

        replicas = max(1, len(tf.config.list_logical_devices("GPU")))
    per_window = cfg.num_samples * 4 + h * w * 3 * 4 * _ACTIVATION_FACTOR
    ram_cap = max(1, int(0.25 * available_memory_bytes() // per_window))
    return int(max(1, min(per_device * replicas, ram_cap)))


def _error_message(err: BaseException) -> str:
    """The reason a file failed (an `AudioError` carries it; other errors are prefixed with their type)."""
    reason = getattr(err, "reason", None)
    return str(reason) if reason else f"{type(err).__name__}: {err}"


def _decoded(paths, cfg, tta: int, lookahead: int):
    """Yield `(index, passes or None, error or None)` in order, decoding at most `lookahead` files ahead."""
    from voxtrace.data.audio import load_audio

    def decode(index: int):
        try:
            x = load_audio(paths[index], sample_rate=cfg.audio.sample_rate)
            rng = np.random.default_rng([cfg.seed, index])
            return index, tta_windows(x, cfg, tta, rng), None
        except Exception as err:  # any unreadable file becomes an error row, the others go on
            return index, None, _error_message(err)

    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        queue = collections.deque()
        for index in range(len(paths)):
            queue.append(pool.submit(decode, index))
            if len(queue) >= lookahead:
                yield queue.popleft().result()
        while queue:
            yield queue.popleft().result()


class _FileScores:
    """Running window aggregate of one file: `[tta, models, C]`, merged when its last window is scored."""

    def __init__(self, passes, num_models: int, num_classes: int, agg: str):
        self.remaining = sum(len(p) for p in passes)
        self.counts = np.array([len(p) for p in passes], dtype=np.float64)
        fill = -np.inf if agg == "max" else 0.0
        self.values = np.full((len(passes), num_models, num_classes), fill, dtype=np.float64)
        self.agg = agg

    def add(self, tta_pass: int, scores: np.ndarray) -> bool:
        """Add `[models, C]` scores of one window; True when the file is complete."""
        if self.agg == "max":
            np.maximum(self.values[tta_pass], scores, out=self.values[tta_pass])
        else:
            self.values[tta_pass] += scores
        self.remaining -= 1
        return self.remaining == 0

    def result(self) -> np.ndarray:
        per_pass = self.values if self.agg == "max" else self.values / self.counts[:, None, None]
        return per_pass.mean(axis=0)


def predict_models(models, cfg, paths, batch_size=None, tta: int = 1, desc: str | None = None, progress=True):
    """Score `paths` with several models sharing `cfg` (the folds of one run) in one decoding pass.

    Returns `(probs, errors)`: a list with one `[n, C]` float32 array per model (NaN rows for files that
    failed) and `{str(path): message}`.
    """
    from tqdm.auto import tqdm

    paths = [Path(p) for p in paths]
    num_classes = len(cfg.classes)
    batch_size = int(batch_size or cfg.infer.batch_size or auto_batch_size(cfg))
    if tta < 1:
        raise ValueError(f"tta must be >= 1. Received: tta={tta}")
    out = np.full((len(models), len(paths), num_classes), np.nan, dtype=np.float32)
    errors: dict[str, str] = {}
    buffer = np.zeros((batch_size, cfg.num_samples), dtype=np.float32)
    owners: list[tuple[int, int]] = []  # (file index, tta pass) of each buffered window
    pending: dict[int, _FileScores] = {}
    bar = tqdm(total=len(paths), desc=desc, unit="file", disable=not progress, leave=True)

    def flush():
        if not owners:
            return
        scores = np.stack([_run(model, buffer, cfg, num_classes)[: len(owners)] for model in models], axis=1)
        for row, (index, tta_pass) in enumerate(owners):
            if pending[index].add(tta_pass, scores[row]):
                out[:, index] = pending.pop(index).result()
                bar.update(1)
        owners.clear()

    for index, passes, error in _decoded(paths, cfg, tta, lookahead=max(8, batch_size)):
        if error is not None:
            errors[str(paths[index])] = error
            bar.update(1)
            continue
        pending[index] = _FileScores(passes, len(models), num_classes, cfg.audio.window_agg)
        for tta_pass, windows in enumerate(passes):
            for window in windows:
                buffer[len(owners)] = window
                owners.append((index, tta_pass))
                if len(owners) == batch_size:
                    flush()
    flush()
    bar.close()
    return list(out), errors


def _run(model, batch: np.ndarray, cfg, num_classes: int) -> np.ndarray:
    """Model probabilities of a full batch (the batch shape never changes, so the graph is traced once)."""
    probs = np.asarray(model.predict_on_batch(batch), dtype=np.float64)
    if probs.ndim != 2 or probs.shape[1] != num_classes:
        raise ValueError(
            f"model {model.name!r} returned shape {probs.shape}; expected [batch, {num_classes}] for "
            f"classes={cfg.classes}"
        )
    return probs


def predict_files(model, cfg, paths, batch_size=None, tta: int = 1, desc: str | None = None, progress=True):
    """`(probs [n, C] with NaN rows for files that failed, {str(path): message})` of one model."""
    probs, errors = predict_models([model], cfg, paths, batch_size=batch_size, tta=tta, desc=desc, progress=progress)
    return probs[0], errors
