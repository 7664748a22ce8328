"""Per-model prediction over audio files: streaming decode, overlapping windows, test-time augmentation.

Files are decoded a few at a time on background threads (never all at once), cut into windows of
`cfg.num_samples` samples that overlap by `cfg.audio.window_hop` of a window (`voxtrace.inference.windows`:
the last window zero-padded, short clips padded with `cfg.audio.pad_mode`), and fed to the model(s) in
fixed-size batches. A clip already in memory (`AudioClip`, e.g. a web upload) goes the same way without a
file. A file's score is the `cfg.audio.window_agg` (mean, geometric or max) of its window
scores, averaged over `tta` passes: pass 0 is deterministic, each further pass shifts the window grid by a
random offset and places short clips at a random position. The offsets are drawn from the config seed and
the file name, so a file scores the same whatever else is in the run. A file that cannot be decoded gets a
NaN row and an entry in the returned error dict; every other file is still scored.

Each file's duration is read from its header first. A file longer than `max_duration` seconds is never
decoded whole: it is read in spans of about `max_duration` seconds (`load_audio` offset / duration) that
overlap by one window, and yields exactly the windows of the whole decoded file (up to resampling at span
edges when the file's rate differs from the model's), so memory stays bounded however long the recording.
"""

from __future__ import annotations

import collections
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.special import softmax

from voxtrace.inference.windows import file_rng, frame_windows, tta_windows, window_hop

# (min sqrt(H*W), batch size per device) as the reference picked them; bigger inputs get smaller batches
_BATCH_BY_SIZE = ((768, 16), (640, 32), (0, 64))
_ACTIVATION_FACTOR = 48  # rough peak activation bytes of a CNN per input-image byte, used to bound RAM
MAX_DECODE_S = 600.0  # seconds of audio decoded at once; longer files are read span by span
_EPS = 1e-12  # probability floor of the geometric window aggregate
_DECODE_RAM_SHARE = 0.1  # at most this share of free RAM holds decoded windows waiting for the model


@dataclass(frozen=True)
class AudioClip:
    """A clip already decoded at the model's sample rate; `name` seeds its test-time passes as a file name does."""

    name: str
    samples: np.ndarray


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
    """Batch size that fits memory: the reference's choice by input size and the backbone's `batch_hint`,
    clamped by free RAM."""
    from voxtrace.models import get_entry

    h, w = cfg.features.img_size
    side = float(np.sqrt(h * w))
    per_device = next(size for min_side, size in _BATCH_BY_SIZE if side >= min_side)
    per_device = min(per_device, get_entry(cfg.model.name).batch_hint or per_device)
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


class _SpanReader:
    """The TTA windows of a file too long to decode whole, one span of `stride` samples at a time.

    Span j reads samples [j * stride, j * stride + stride + num_samples) and contributes the windows of each
    pass that start inside [j * stride, (j + 1) * stride) (pass p's grid starts at its shift), the last one
    zero-padded past the end of the file, exactly as `tta_windows` frames the whole file.
    """

    def __init__(self, path: Path, cfg, tta: int, max_duration: float):
        self.path, self.cfg, self.tta = path, cfg, tta
        self.n = cfg.num_samples
        self.hop = window_hop(self.n, cfg.audio.window_hop)
        self.per_span = max(2, int(max_duration * cfg.audio.sample_rate) // self.hop)  # windows per span and pass
        self.stride = self.per_span * self.hop
        self.length = self.stride + self.n - self.hop  # samples behind one span's windows of one pass
        rng = file_rng(cfg.seed, path)
        self.shifts = [0] + [int(rng.integers(0, self.hop)) for _ in range(1, tta)]  # as tta_windows draws them
        self.done = [False] * tta
        self.span = 0

    @property
    def finished(self) -> bool:
        return all(self.done)

    def read(self) -> list[np.ndarray]:
        """Windows `[k, num_samples]` of each pass from the next span (empty for passes already complete)."""
        from voxtrace.data.audio import EndOfAudio, load_audio

        rate, j = self.cfg.audio.sample_rate, self.span
        self.span += 1
        empty = np.zeros((0, self.n), np.float32)
        try:
            x = load_audio(self.path, rate, offset=j * self.stride / rate, duration=(self.stride + self.n) / rate)
        except EndOfAudio:
            if j == 0:
                raise
            self.done = [True] * self.tta
            return [empty] * self.tta
        if j == 0 and len(x) < self.length - 1:  # shorter than its header said: this is the whole file
            self.done = [True] * self.tta
            return tta_windows(x, self.cfg, self.tta, file_rng(self.cfg.seed, self.path))
        passes = []
        for p, shift in enumerate(self.shifts):
            if self.done[p]:
                passes.append(empty)
                continue
            y = x[shift:]
            if len(y) >= self.length - 1:  # a full span (one sample short when resampling rounds down)
                count = self.per_span
            else:
                self.done[p] = True
                count = max(0, 1 + -(-(len(y) - self.n) // self.hop))
                if count == 0:
                    passes.append(empty)
                    continue
            total = (count - 1) * self.hop + self.n
            y = np.pad(y[:total], (0, max(0, total - len(y))))
            passes.append(frame_windows(y, self.n, self.cfg.audio.window_hop))
        return passes


def _decoded(paths, cfg, tta: int, lookahead: int, max_duration: float):
    """Yield `(index, passes or None, error or None, last)` in file order, at most `lookahead` pieces ahead.

    A file up to `max_duration` seconds long is one piece; a longer one is a piece per span, `last` on its
    final piece (or on its error).
    """
    from voxtrace.data.audio import audio_duration, load_audio

    def first(index: int):
        path = paths[index]
        try:
            if isinstance(path, AudioClip):
                return index, tta_windows(path.samples, cfg, tta, file_rng(cfg.seed, path.name)), None, None
            if audio_duration(path) <= max_duration:
                x = load_audio(path, sample_rate=cfg.audio.sample_rate)
                return index, tta_windows(x, cfg, tta, file_rng(cfg.seed, path)), None, None
            return following(index, _SpanReader(path, cfg, tta, max_duration))
        except Exception as err:  # any unreadable file becomes an error row, the others go on
            return index, None, _error_message(err), None

    def following(index: int, reader: _SpanReader):
        try:
            passes = reader.read()
            return index, passes, None, None if reader.finished else reader
        except Exception as err:
            return index, None, _error_message(err), None

    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        queue = collections.deque()
        index = 0
        while index < len(paths) or queue:
            while index < len(paths) and len(queue) < lookahead:
                queue.append(pool.submit(first, index))
                index += 1
            done, passes, error, reader = queue.popleft().result()
            if reader is not None:  # the next span of this file comes next
                queue.appendleft(pool.submit(following, done, reader))
            yield done, passes, error, reader is None


class _FileScores:
    """Running window aggregate of one file: `[tta, models, C]`, merged once its last window is scored."""

    def __init__(self, tta: int, num_models: int, num_classes: int, agg: str):
        self.remaining = 0
        self.last_seen = False
        self.counts = np.zeros(tta, dtype=np.float64)
        fill = -np.inf if agg == "max" else 0.0
        self.values = np.full((tta, num_models, num_classes), fill, dtype=np.float64)
        self.agg = agg

    def expect(self, passes, last: bool) -> None:
        """Count the windows of a newly decoded piece (`last`: the file has no more)."""
        self.counts += [len(p) for p in passes]
        self.remaining += sum(len(p) for p in passes)
        self.last_seen = last

    @property
    def complete(self) -> bool:
        return self.last_seen and self.remaining == 0

    def add(self, tta_pass: int, scores: np.ndarray) -> bool:
        """Add `[models, C]` scores of one window; True when the file is complete."""
        if self.agg == "max":
            np.maximum(self.values[tta_pass], scores, out=self.values[tta_pass])
        elif self.agg == "geometric":
            self.values[tta_pass] += np.log(np.clip(scores, _EPS, None))
        else:
            self.values[tta_pass] += scores
        self.remaining -= 1
        return self.complete

    def result(self) -> np.ndarray:
        per_pass = self.values if self.agg == "max" else self.values / self.counts[:, None, None]
        if self.agg == "geometric":  # the normalised geometric mean: for a softmax model, softmax(mean logits)
            per_pass = softmax(per_pass, axis=-1)
        return per_pass.mean(axis=0)


def merge_window_scores(scores: np.ndarray, counts, agg: str) -> np.ndarray:
    """Clip scores `[n, C]` from window scores `[sum(counts), C]` (each clip's windows in a row), merged by
    `agg` (`audio.window_agg`) as `predict_models` merges a clip's windows."""
    out, start = [], 0
    for count in counts:
        clip = _FileScores(1, 1, scores.shape[1], agg)
        clip.expect([scores[start: start + count]], last=True)
        for row in scores[start: start + count]:
            clip.add(0, row[None])
        out.append(clip.result()[0])
        start += count
    return np.asarray(out, np.float32)


def _lookahead(cfg, batch_size: int, tta: int, max_duration: float) -> int:
    """Decoded pieces kept ahead of the model: enough to keep it busy, few enough for free RAM."""
    piece_bytes = max_duration * cfg.audio.sample_rate * 4 * tta / cfg.audio.window_hop
    return int(max(2, min(max(8, batch_size), _DECODE_RAM_SHARE * available_memory_bytes() // piece_bytes)))


def predict_models(models, cfg, paths, batch_size=None, tta: int = 1, desc: str | None = None, progress=True,
                   max_duration: float | None = None):
    """Score `paths` (files, or `AudioClip`s) with several models sharing `cfg` (the folds of one run) in one
    decoding pass.

    Files longer than `max_duration` seconds (default `MAX_DECODE_S`) are read span by span. Returns
    `(probs, errors)`: a list with one `[n, C]` float32 array per model (NaN rows for files that failed) and
    `{str(path): message}`.
    """
    from tqdm.auto import tqdm

    paths = [p if isinstance(p, AudioClip) else Path(p) for p in paths]
    num_classes = len(cfg.classes)
    batch_size = int(batch_size or cfg.infer.batch_size or getattr(models[0], "batch_size", None)
                     or auto_batch_size(cfg))
    max_duration = float(MAX_DECODE_S if max_duration is None else max_duration)
    if tta < 1 or max_duration <= 0:
        raise ValueError(f"tta must be >= 1 and max_duration > 0. Received: tta={tta}, max_duration={max_duration}")
    out = np.full((len(models), len(paths), num_classes), np.nan, dtype=np.float32)
    errors: dict[str, str] = {}
    buffer = np.zeros((batch_size, cfg.num_samples), dtype=np.float32)
    owners: list[tuple[int, int]] = []  # (file index, tta pass) of each buffered window
    pending: dict[int, _FileScores] = {}
    bar = tqdm(total=len(paths), desc=desc, unit="file", disable=not progress, leave=True)

    def finish(index: int):
        out[:, index] = pending.pop(index).result()
        bar.update(1)

    def flush():
        if not owners:
            return
        scores = np.stack([_run(model, buffer, cfg, num_classes)[: len(owners)] for model in models], axis=1)
        for row, (index, tta_pass) in enumerate(owners):
            if index in pending and pending[index].add(tta_pass, scores[row]):  # not in pending: failed later
                finish(index)
        owners.clear()

    lookahead = _lookahead(cfg, batch_size, tta, max_duration)
    for index, passes, error, last in _decoded(paths, cfg, tta, lookahead, max_duration):
        if error is not None:
            pending.pop(index, None)
            errors[paths[index].name if isinstance(paths[index], AudioClip) else str(paths[index])] = error
            bar.update(1)
            continue
        scores = pending.setdefault(index, _FileScores(tta, len(models), num_classes, cfg.audio.window_agg))
        scores.expect(passes, last)
        if scores.complete:
            finish(index)
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


def predict_files(model, cfg, paths, batch_size=None, tta: int = 1, desc: str | None = None, progress=True,
                  max_duration: float | None = None):
    """`(probs [n, C] with NaN rows for files that failed, {str(path): message})` of one model."""
    probs, errors = predict_models([model], cfg, paths, batch_size=batch_size, tta=tta, desc=desc, progress=progress,
                                   max_duration=max_duration)
    return probs[0], errors
