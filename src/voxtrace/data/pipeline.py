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

Inference cuts whole clips into windows instead (`voxtrace.inference.windows`, `voxtrace.inference.predictor`).

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
MODES = ("train", "valid")
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
                  skip_batches: int = 0) -> tf.data.Dataset:
    """A tf.data pipeline over audio files (see the module docstring for what each `mode` yields).

    Args:
        paths: audio file paths.
        labels: [n, C] float targets (one-hot or soft); required for train and valid.
        cfg: the `voxtrace.config.Config` (audio, augment, batch size).
        mode: ``train`` or ``valid``.
        batch_size: global batch size; default `cfg.train.batch_size`.
        sample_weights: [n] per-file loss weights (default 1).
        shuffle_seed: seed of the training stream's order and augmentation (default `cfg.seed`).
        cache: keep decoded waveforms in memory (before cropping and augmentation), for small corpora.
        skip_batches: train only: start the stream after this many batches (the steps a resumed run has done);
            exact as long as every file decodes.
    """
    if cfg is None:
        raise ValueError("build_dataset needs cfg (a voxtrace.config.Config)")
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}. Received: mode={mode!r}")
    paths = np.asarray([str(p) for p in paths], dtype=object)
    n = len(paths)
    if n == 0:
        raise ValueError(f"build_dataset got no audio files (mode={mode!r})")
    batch_size = int(batch_size or cfg.train.batch_size)
    num_samples, sample_rate, audio = cfg.num_samples, cfg.audio.sample_rate, cfg.audio
    decode = _decoder(sample_rate, cache, fail_after=n if mode == "train" else None)

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
