"""Window features of a frozen backbone, computed once per clip and cached on disk.

A frozen backbone (e.g. `whisper_tiny_en` with `trainable_blocks: 0`) maps a window to the same features
whoever asks, so its features are computed once: each clip is decoded, cut into the windows `voxtrace predict`
uses (`voxtrace.inference.windows.tta_windows`, pass 0), and every window goes through the backbone once.
`FeatureCache` keeps them on disk under a fingerprint of the backbone (name, options, weights), the windowing
and the augmentation, keyed by the clip's path, size, modification time and augmentation draw. Training
(`voxtrace.training.frozen`) and prediction (`voxtrace.inference.ensemble`, frozen members) share them. The
backbone runs compiled with XLA (`model.head.jit_compile`, `XlaExtractor`), on batches of one fixed size.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import weakref
from pathlib import Path

import keras
import numpy as np
from tqdm.auto import tqdm

from voxtrace.io import atomic_path

log = logging.getLogger(__name__)


def cache_root(cfg) -> Path:
    """Where a run's features are cached: `model.head.cache_dir`, else `OUTPUT_DIR/feature_cache`."""
    return Path(cfg.model.head.cache_dir or Path(cfg.output_dir) / "feature_cache")


class FeatureCache:
    """Window features `[windows, D]` of one clip and draw, one `.npy` file each under `root/fingerprint/`."""

    def __init__(self, root, fingerprint: str):
        self.dir = Path(root) / fingerprint
        self.dir.mkdir(parents=True, exist_ok=True)

    @staticmethod
    def key(path, draw: int) -> str:
        stat = os.stat(path)
        raw = f"{Path(path).resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{draw}"
        return hashlib.sha1(raw.encode()).hexdigest()

    def get(self, path, draw: int) -> np.ndarray | None:
        """The cached features, or None (also when `path` cannot be read: decoding it will report why)."""
        try:
            file = self.dir / f"{self.key(path, draw)}.npy"
        except OSError:
            return None
        return np.load(file) if file.is_file() else None

    def put(self, path, draw: int, features: np.ndarray) -> None:
        with atomic_path(self.dir / f"{self.key(path, draw)}.npy") as tmp:
            with open(tmp, "wb") as fh:
                np.save(fh, features.astype("float32"))


def fingerprint(cfg, extractor: keras.Model) -> str:
    """What the cached features depend on: the backbone, its weights, the windowing and the augmentation."""
    settings = {
        "model": [cfg.model.name, cfg.model.pretrain, cfg.model.options], "features": cfg.to_dict()["features"],
        "audio": [cfg.audio.sample_rate, cfg.num_samples, cfg.audio.window_hop, cfg.audio.pad_mode],
        "augment": cfg.to_dict()["augment"], "seed": cfg.seed,
    }
    digest = hashlib.sha1(json.dumps(settings, sort_keys=True, default=str).encode())
    for weight in extractor.weights:
        digest.update(np.ascontiguousarray(weight.numpy()).tobytes()[:4096])
    return f"{cfg.model.name}-{digest.hexdigest()[:16]}"


def feature_extractor(cfg) -> keras.Model:
    """The backbone of `cfg` with its front-end: waveforms `[B, num_samples]` -> pooled features `[B, D]`."""
    from voxtrace.models import build_classifier

    return build_classifier(cfg)  # a frozen head without its arrays ends at the features


def _draw_seed(cfg, path, draw: int) -> np.ndarray:
    digest = hashlib.sha1(f"{Path(path).name}|{draw}".encode()).digest()
    return np.array([cfg.seed, int.from_bytes(digest[:4], "little") & 0x7FFFFFFF], dtype=np.int64)


def _clip_windows(cfg, path, draw: int) -> np.ndarray:
    """The windows `predict` scores (pass 0) of one clip, after the draw's augmentation (draw 0: none)."""
    from voxtrace.data.audio import load_audio
    from voxtrace.inference.windows import tta_windows

    x = load_audio(path, cfg.audio.sample_rate)
    if draw:
        from voxtrace.data.augment import augment_waveform

        x = augment_waveform(x, cfg.augment, cfg.audio.sample_rate, seed=_draw_seed(cfg, path, draw)).numpy()
    return tta_windows(x, cfg, 1, np.random.default_rng(0))[0]


class XlaExtractor:
    """An extractor on one fixed-size batch of windows (NumPy in, NumPy out), compiled with XLA: the frozen
    Whisper tiny.en of configs/demo-whisper.yaml runs 1.4x the windows/s of plain graph execution on a 2-core
    CPU, features within 1.2e-5 (benchmarks/xla_speed.py). Where XLA cannot compile the backbone, the first
    call warns and it runs without."""

    def __init__(self, extractor: keras.Model):
        import tensorflow as tf

        self.extractor = weakref.ref(extractor)  # `compiled` keeps one per extractor only while it is loaded
        self.function = tf.function(lambda windows: self.extractor()(windows, training=False), jit_compile=True)

    def __call__(self, windows: np.ndarray) -> np.ndarray:
        import tensorflow as tf

        if self.function is not None:
            try:
                return self.function(windows).numpy()
            except (tf.errors.InvalidArgumentError, tf.errors.UnimplementedError, tf.errors.InternalError) as err:
                log.warning("XLA cannot compile %s (%s): its features are computed without",
                            self.extractor().name, str(err).splitlines()[0][:200])
                self.function = None
        return self.extractor().predict_on_batch(windows)


_COMPILED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # an extractor -> its XlaExtractor


def compiled(extractor: keras.Model) -> XlaExtractor:
    """The `XlaExtractor` of `extractor`, compiled once while it is loaded (one batch size: one compilation)."""
    if extractor not in _COMPILED:
        _COMPILED[extractor] = XlaExtractor(extractor)
    return _COMPILED[extractor]


def extract_features(cfg, extractor: keras.Model, paths, draws: int = 0, cache: FeatureCache | None = None,
                     batch_size: int = 16, progress: bool = True):
    """Window features of every clip and draw: `({(path, draw): [windows, D]}, {path: error message})`.

    Windows of consecutive clips share full batches of `batch_size`; only the last batch is padded. Clips that
    cannot be decoded are reported in the error dict and left out; every other clip is processed.
    """
    features, errors = {}, {}
    todo = []
    for path in paths:
        for draw in range(draws + 1):
            cached = cache.get(path, draw) if cache else None
            if cached is None:
                todo.append((path, draw))
            else:
                features[(path, draw)] = cached
    extract = compiled(extractor) if cfg.model.head.jit_compile else extractor.predict_on_batch
    waiting, owners, done = [], [], []  # windows not yet run, (clip, window count) not yet stored, their features

    def run(last: bool = False):
        windows = np.concatenate(waiting) if waiting else np.zeros((0, cfg.num_samples), np.float32)
        count = len(windows) if last else len(windows) - len(windows) % batch_size
        if count:
            batch = windows[:count]
            batch = np.concatenate([batch, np.zeros((-count % batch_size, *batch.shape[1:]), batch.dtype)])
            done.append(np.concatenate([extract(batch[i: i + batch_size]) for i in range(0, len(batch), batch_size)])
                        [:count])
        waiting[:] = [windows[count:]]
        ready = np.concatenate(done) if done else None
        while owners and ready is not None and owners[0][1] <= len(ready):
            key, n = owners.pop(0)
            features[key], ready = ready[:n], ready[n:]
            if cache:
                cache.put(*key, features[key])
        done[:] = [ready] if ready is not None else []

    bar = tqdm(todo, desc=f"features {cfg.model.name}", unit="clip", disable=not progress or not todo)
    for path, draw in bar:
        try:
            windows = _clip_windows(cfg, path, draw)
        except Exception as err:  # noqa: BLE001 - one bad file must not stop the others
            errors[str(path)] = f"{type(err).__name__}: {err}"
            continue
        waiting.append(windows)
        owners.append(((path, draw), len(windows)))
        if sum(len(w) for w in waiting) >= 4 * batch_size:
            run()
    run(last=True)
    return features, errors


# ---- frozen members at prediction ---------------------------------------------------------------------------
_SPLITS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # a loaded checkpoint -> its two halves


def split_frozen(model) -> tuple[keras.Model, keras.Model]:
    """`(extractor, head)` of a frozen-head checkpoint: waveforms -> pooled features, features -> probabilities.

    Kept while the checkpoint is loaded, so a model predicting chunk after chunk traces its halves once."""
    from voxtrace.models.heads import NORM_LAYER

    if model not in _SPLITS:
        norm = model.get_layer(NORM_LAYER)
        _SPLITS[model] = (keras.Model(model.inputs, norm.input), keras.Model(norm.input, model.output))
    return _SPLITS[model]


def predict_frozen(models, cfg, paths, progress: bool = True) -> tuple[list[np.ndarray], dict[str, str]]:
    """`predict_models` for the folds of a frozen-head run, through the feature cache of `model.head.cache_dir`:
    each clip's window features are computed once (or read back) for every fold and every run sharing the
    backbone, then each fold's head scores the windows, merged by `audio.window_agg` as `predict` merges them.
    Returns `(probs, errors)` as `predict_models` does (one `[n, C]` array per model, NaN rows for failures)."""
    from voxtrace.inference.predictor import merge_window_scores

    extractor, _ = split_frozen(models[0])
    cache = FeatureCache(cache_root(cfg), fingerprint(cfg, extractor))
    features, errors = extract_features(cfg, extractor, paths, cache=cache, progress=progress)
    out = []
    for model in models:
        _, head = split_frozen(model)
        probs = np.full((len(paths), len(cfg.classes)), np.nan, np.float32)
        done = [i for i, p in enumerate(paths) if (p, 0) in features]
        if done:
            windows = [features[(paths[i], 0)] for i in done]
            scores = np.asarray(head.predict_on_batch(np.concatenate(windows)), np.float64)
            probs[done] = merge_window_scores(scores, [len(w) for w in windows], cfg.audio.window_agg)
        out.append(probs)
    return out, errors
