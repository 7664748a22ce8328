"""tf.data input pipelines: decode, crop/pad, augment, batch.

`build_dataset(paths, labels, cfg, mode)`:

* ``train``: an endless stream of passes over the files, each pass in its own shuffled order, augmented
  (`voxtrace.data.augment`), batches of exactly `batch_size` (drop remainder), mixup / cutmix; yields
  ``(waveforms [B, N], targets [B, C], weights [B])``. A file that cannot be decoded is skipped with a warning
  naming it. The stream is a pure function of the seed: pass `p` is ordered by a permutation drawn from
  (seed, p), and the element at stream position `i` is cropped and augmented with a seed drawn from (seed, i).
  `skip_batches` starts it further on, so a resumed run sees exactly what an uninterrupted one would have.
* ``valid``: file order, every file exactly once, no augmentation; yields ``(waveforms, targets, weights)``.
  An unreadable file is warned about and yields silence with weight 0, so outputs stay aligned with `paths`.
* ``infer``: file order, every readable file exactly once; yields ``(waveforms, index)`` where `index` is the
  file's position in `paths` (unreadable files are warned about and skipped, so their index never appears).
  With ``windows=True`` each file is cut into overlapping windows (`frame_windows`) that share its index;
  merge their scores with `aggregate_windows`.

Sharding: ``auto_shard_policy = DATA``: every worker lists all files and keeps its share of the elements,
so `tf.distribute` strategies (one or many workers) see each element exactly once per epoch.
"""

from __future__ import annotations

import logging

import numpy as np
import tensorflow as tf

from voxtrace.data.audio import AudioError, load_audio
from voxtrace.data.augment import RandomStream, augment_waveform, batch_augment

log = logging.getLogger("voxtrace.data")
MODES = ("train", "valid", "infer")
AUTOTUNE = tf.data.AUTOTUNE


# ---- crop / pad ----------------------------------------------------------------------------------------------
def reflect_pad(x, num_samples):
    """Extend a clip to `num_samples` by mirroring it back and forth (x, reversed x, x, ...)."""
    x = tf.convert_to_tensor(x, tf.float32)
    n = tf.shape(x)[0]
    period = tf.concat([x, tf.reverse(x, axis=[0])], axis=0)
    reps = tf.math.floordiv(num_samples + 2 * n - 1, tf.maximum(2 * n, 1))
    return tf.tile(period, [reps])[:num_samples]


def crop_or_pad(x, num_samples: int, pad_mode: str = "constant", crop_mode: str = "random", training: bool = False,
                seed=None):
    """Crop a clip [n] to `num_samples` or pad it up to that length.

    crop_mode: ``random`` (a random span in training, the centre otherwise), ``center`` or ``start``.
    pad_mode: ``constant`` (silence around the clip, at a random offset in training, after it otherwise),
    ``reflect`` (the clip mirrored back and forth) or ``random`` (constant or reflect, per clip, in training;
    constant otherwise).
    seed: [2] integers for the random choices of training (`voxtrace.data.augment.RandomStream`).
    """
    if pad_mode not in ("constant", "reflect", "random"):
        raise ValueError(f"pad_mode must be constant, reflect or random. Received: pad_mode={pad_mode!r}")
    if crop_mode not in ("random", "center", "start"):
        raise ValueError(f"crop_mode must be random, center or start. Received: crop_mode={crop_mode!r}")
    x = tf.convert_to_tensor(x, tf.float32)
    rng = RandomStream(seed) if training else None
    n = tf.shape(x)[0]
    excess = tf.maximum(n - num_samples, 0)
    if crop_mode == "random" and training:
        start = rng.uniform([], 0, excess + 1, dtype=tf.int32)
    elif crop_mode == "start":
        start = tf.constant(0)
    else:
        start = excess // 2
    x = x[start : start + num_samples]
    n = tf.shape(x)[0]
    missing = num_samples - n

    def constant():
        left = rng.uniform([], 0, missing + 1, dtype=tf.int32) if training else 0
        return tf.pad(x, [[left, missing - left]])

    def reflect():
        return tf.cond(n > 0, lambda: reflect_pad(x, num_samples), constant)

    if pad_mode == "random" and training:
        out = tf.cond(rng.uniform() < 0.5, constant, reflect)
    elif pad_mode == "reflect":
        out = reflect()
    else:
        out = constant()
    return tf.ensure_shape(tf.reshape(out, [num_samples]), [num_samples])


# ---- windows for long files -------------------------------------------------------------------------------------
def frame_windows(x, num_samples: int, hop_fraction: float = 0.5, pad_mode: str = "constant") -> tf.Tensor:
    """Cut a clip [n] into overlapping windows [k, num_samples] that cover it whole.

    Windows start every `round(hop_fraction * num_samples)` samples; the last one is zero-padded past the end.
    A clip shorter than one window gives one window padded with `pad_mode` (as `crop_or_pad` outside training).
    k = 1 + ceil(max(n - num_samples, 0) / hop).
    """
    if not 0 < hop_fraction <= 1:
        raise ValueError(f"hop_fraction must be within (0, 1]. Received: hop_fraction={hop_fraction!r}")
    x = tf.convert_to_tensor(x, tf.float32)
    hop = max(1, int(round(num_samples * hop_fraction)))
    n = tf.shape(x)[0]
    count = 1 + (tf.maximum(n - num_samples, 0) + hop - 1) // hop
    total = (count - 1) * hop + num_samples

    def windows():
        return tf.signal.frame(tf.pad(x, [[0, total - n]]), num_samples, hop, axis=0)

    def single():
        return crop_or_pad(x, num_samples, pad_mode, "start", training=False)[tf.newaxis]

    out = tf.cond(n > num_samples, windows, single)
    out.set_shape([None, num_samples])
    return out


def aggregate_windows(scores, index, num_files: int | None = None, agg: str = "mean") -> np.ndarray:
    """Merge window scores [M, C] into file scores [num_files, C] by file `index` [M] (`mean` or `max`).

    Files without any window (unreadable) get NaN rows.
    """
    if agg not in ("mean", "max"):
        raise ValueError(f"agg must be mean or max. Received: agg={agg!r}")
    scores = np.asarray(scores, dtype=np.float64)
    index = np.asarray(index, dtype=np.int64).reshape(-1)
    if scores.ndim != 2 or len(scores) != len(index):
        raise ValueError(f"scores must be [M, C] with one index per row. Received {scores.shape} and {index.shape}")
    num_files = int(num_files if num_files is not None else (index.max() + 1 if index.size else 0))
    out = np.full((num_files, scores.shape[1]), np.nan)
    if agg == "mean":
        sums = np.zeros_like(out)
        np.add.at(sums, index, scores)
        counts = np.bincount(index, minlength=num_files)[:, None]
        np.divide(sums, counts, out=out, where=counts > 0)
    else:
        np.fmax.at(out, index, scores)
    return out.astype(np.float32)


# ---- decoding ---------------------------------------------------------------------------------------------------
def _decoder(sample_rate: int, cache: bool = False, fail_after: int | None = None):
    """A numpy function path -> (waveform, ok) that warns once per unreadable file instead of raising.

    `cache` keeps every decoded waveform in memory. `fail_after` (the number of files of an endless training
    stream) raises once that many distinct files have failed: the stream would otherwise wait forever.
    """
    warned: set[str] = set()
    decoded: dict[str, tuple[np.ndarray, bool]] = {}

    def load(path):
        try:
            return load_audio(path, sample_rate=sample_rate), True
        except (AudioError, OSError) as err:
            if path not in warned:
                warned.add(path)
                log.warning("skipping unreadable audio file %s: %s", path, err)
                if len(warned) == fail_after:
                    raise ValueError(f"none of the {fail_after} audio files can be decoded (the last: {path})") from err
            return np.zeros([0], np.float32), False

    def decode(path):
        path = path.decode() if isinstance(path, bytes) else str(path)
        if not cache:
            return load(path)
        if path not in decoded:
            decoded[path] = load(path)
        return decoded[path]

    def decode_tf(path):
        x, ok = tf.numpy_function(decode, [path], [tf.float32, tf.bool], stateful=False)
        x.set_shape([None])
        ok.set_shape([])
        return x, ok

    return decode_tf


def _as_labels(labels, n: int, num_classes: int) -> np.ndarray:
    labels = np.asarray(labels, dtype=np.float32)
    if labels.ndim != 2 or labels.shape != (n, num_classes):
        raise ValueError(
            f"labels must be a float array [n_files={n}, num_classes={num_classes}] (one-hot or soft). "
            f"Received: labels.shape={labels.shape}"
        )
    return labels


def _options(deterministic: bool) -> tf.data.Options:
    options = tf.data.Options()
    options.deterministic = deterministic
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return options


# ---- datasets -----------------------------------------------------------------------------------------------------
def _stream_seed(seed, purpose: int, index) -> tf.Tensor:
    """The [2] seed of one pass (`purpose` 0), element (1) or batch (2) of the training stream."""
    return tf.random.experimental.stateless_fold_in(tf.stack([tf.cast(seed, tf.int64), purpose]), index)


def _training_order(num_files: int, seed: int, start: int) -> tf.data.Dataset:
    """(file index, stream position) of the training stream from position `start` on."""
    first_pass, offset = divmod(int(start), num_files)

    def one_pass(p):
        order = tf.random.experimental.stateless_shuffle(tf.range(num_files, dtype=tf.int64), _stream_seed(seed, 0, p))
        return tf.data.Dataset.from_tensor_slices((order, p * num_files + tf.range(num_files, dtype=tf.int64)))

    return tf.data.Dataset.counter(first_pass).flat_map(one_pass).skip(offset)


def build_dataset(paths, labels=None, cfg=None, mode: str = "train", batch_size: int | None = None,
                  sample_weights=None, shuffle_seed: int | None = None, cache: bool = False,
                  windows: bool = False, skip_batches: int = 0) -> tf.data.Dataset:
    """A tf.data pipeline over audio files (see the module docstring for what each `mode` yields).

    Args:
        paths: audio file paths.
        labels: [n, C] float targets (one-hot or soft); required for train and valid.
        cfg: the `voxtrace.config.Config` (audio, augment, train/infer batch sizes).
        mode: ``train``, ``valid`` or ``infer``.
        batch_size: global batch size; default `cfg.train.batch_size` (infer: `cfg.infer.batch_size` if set).
        sample_weights: [n] per-file loss weights (default 1).
        shuffle_seed: seed of the training stream's order and augmentation (default `cfg.seed`).
        cache: keep decoded waveforms in memory (before cropping and augmentation), for small corpora.
        windows: infer only: cut every file into overlapping windows sharing its index (`frame_windows`).
        skip_batches: train only: start the stream after this many batches (the steps a resumed run has done);
            exact as long as every file decodes.
    """
    if cfg is None:
        raise ValueError("build_dataset needs cfg (a voxtrace.config.Config)")
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}. Received: mode={mode!r}")
    if windows and mode != "infer":
        raise ValueError(f"windows=True is for mode='infer'. Received: mode={mode!r}")
    paths = np.asarray([str(p) for p in paths], dtype=object)
    n = len(paths)
    if n == 0:
        raise ValueError(f"build_dataset got no audio files (mode={mode!r})")
    if batch_size is None:
        batch_size = (cfg.infer.batch_size if mode == "infer" else None) or cfg.train.batch_size
    batch_size = int(batch_size)
    num_samples, sample_rate, audio = cfg.num_samples, cfg.audio.sample_rate, cfg.audio
    decode = _decoder(sample_rate, cache, fail_after=n if mode == "train" else None)

    if mode == "infer":
        ds = tf.data.Dataset.from_tensor_slices((paths.astype(str), np.arange(n, dtype=np.int64)))
        ds = ds.map(lambda p, i: (*decode(p), i), num_parallel_calls=AUTOTUNE, deterministic=True)
        ds = ds.filter(lambda x, ok, i: ok)
        if windows:
            ds = ds.map(lambda x, ok, i: _windows_with_index(x, i, num_samples, audio), num_parallel_calls=AUTOTUNE,
                        deterministic=True).unbatch()
        else:
            ds = ds.map(lambda x, ok, i: (_eval_crop(x, num_samples, audio), i), num_parallel_calls=AUTOTUNE,
                        deterministic=True)
        return ds.batch(batch_size).prefetch(AUTOTUNE).with_options(_options(True))

    if labels is None:
        raise ValueError(f"mode={mode!r} needs labels ([n, C] one-hot or soft)")
    labels = _as_labels(labels, n, cfg.num_classes)
    weights = np.ones(n, np.float32) if sample_weights is None else np.asarray(sample_weights, np.float32)
    if weights.shape != (n,):
        raise ValueError(f"sample_weights must have one weight per file ({n}). Received shape {weights.shape}")
    ds = tf.data.Dataset.from_tensor_slices((paths.astype(str), labels, weights))

    if mode == "valid":
        def decode_valid(p, y, w):
            x, ok = decode(p)
            return x, y, tf.where(ok, w, 0.0)

        ds = ds.map(decode_valid, num_parallel_calls=AUTOTUNE, deterministic=True)
        ds = ds.map(lambda x, y, w: (_eval_crop(x, num_samples, audio), y, w), num_parallel_calls=AUTOTUNE,
                    deterministic=True)
        return ds.batch(batch_size).prefetch(AUTOTUNE).with_options(_options(True))

    # train
    seed = cfg.seed if shuffle_seed is None else shuffle_seed
    files = (tf.constant(paths.astype(str)), tf.constant(labels), tf.constant(weights))

    def decode_element(index, position):
        x, ok = decode(files[0][index])
        return x, ok, files[1][index], files[2][index], position

    def clip_augment(x, ok, y, w, position):
        rng = RandomStream(_stream_seed(seed, 1, position))
        x = crop_or_pad(x, num_samples, audio.pad_mode, audio.crop_mode, training=True, seed=rng.next_seed())
        x = tf.ensure_shape(augment_waveform(x, cfg.augment, sample_rate, rng.next_seed()), [num_samples])
        return x, y, w, position

    def mix_batch(x, y, w, position):
        return batch_augment(x, y, w, cfg.augment, _stream_seed(seed, 2, position[0]))

    ds = _training_order(n, seed, int(skip_batches) * batch_size)
    ds = ds.map(decode_element, num_parallel_calls=AUTOTUNE).filter(lambda x, ok, y, w, position: ok)
    ds = ds.map(clip_augment, num_parallel_calls=AUTOTUNE)
    ds = ds.batch(batch_size, drop_remainder=True).map(mix_batch, num_parallel_calls=AUTOTUNE)
    return ds.prefetch(AUTOTUNE).with_options(_options(cfg.train.deterministic))


def _eval_crop(x, num_samples, audio):
    return crop_or_pad(x, num_samples, audio.pad_mode, audio.crop_mode, training=False)


def _windows_with_index(x, index, num_samples, audio):
    frames = frame_windows(x, num_samples, audio.window_hop, audio.pad_mode)
    return frames, tf.fill([tf.shape(frames)[0]], index)

