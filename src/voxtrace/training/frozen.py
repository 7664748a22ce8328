"""Members on a frozen backbone: features computed once per clip and cached, a head fitted on them in seconds.

A frozen backbone (e.g. `whisper_tiny_en` with `trainable_blocks: 0`) maps a window to the same features at
every epoch, so training it end to end recomputes them for nothing. Here each training clip is decoded once,
cut into the windows `voxtrace predict` uses (`inference.windows.tta_windows`, pass 0), every window goes
through the backbone once, and the clip's feature vector is the mean of its window features. With
`model.head.augment_draws: n` each clip also gets n augmented copies (the `augment` section's voice and
channel perturbations, seeded by the clip and the draw). Features are cached on disk
(`voxtrace.inference.features`), so the supervised and semi-supervised runs, every fold and `predict` share
them.

The head (`model.head.kind`: logistic, mlp, knn; `voxtrace.models.heads`) is fitted on the clip features.
Leave-voice-out out-of-fold probabilities come for free: the head is refitted without each fold's voices
(`data.folds`, `training.folds.assign_folds`) and scores that fold's clips as `predict` would (the head
applied to every window, windows merged with `audio.window_agg`). The checkpoints are full models, waveforms ->
probabilities, that load like any other: with `model.head.save: all` (`ckpt/model.keras`) the head fitted on
every clip; with `folds` (`ckpt/fold-K.keras`) each fold's head, fitted without fold K: the models whose
out-of-fold scores the ensemble weights and a decision threshold are fitted on, averaged by `predict` as a
CNN's folds are.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import keras
import numpy as np
import pandas as pd

from voxtrace.config import ConfigError
from voxtrace.inference.features import FeatureCache, cache_root, extract_features, feature_extractor, fingerprint
from voxtrace.io import atomic_path, atomic_write_csv
from voxtrace.rundir import ALL_DATA
from voxtrace.training.balance import balance_rows
from voxtrace.vocabulary import FROZEN_HEADS

log = logging.getLogger(__name__)
HEAD_SAVES = ("all", "folds")  # model.head.save


def is_frozen(cfg) -> bool:
    """Whether `cfg` trains a frozen-feature head instead of the whole model."""
    return cfg.model.head.kind in FROZEN_HEADS


# ---- fitting -----------------------------------------------------------------------------------------------
def fit_head(cfg, x: np.ndarray, targets: np.ndarray, weights: np.ndarray):
    """Fit `cfg.model.head` on clip features `x [n, D]` with (soft) `targets [n, C]` and sample `weights`.

    `logistic` is scikit-learn's `StandardScaler` + `LogisticRegression(C=head.c)` on the hard labels (the
    argmax of soft targets, weighted by the sample weight); classes absent from the targets (e.g. `unknown`
    with `known_only`) get a bias that keeps their probability at zero. `knn` keeps every clip in its bank, its
    label scaled by the clip's weight: with `data.balance: weights` each class votes with the same total weight.
    """
    from voxtrace.models.classifier import CLASSIFIER_LAYER
    from voxtrace.models.heads import FittedHead

    head = cfg.model.head
    mean = x.mean(axis=0)
    scale = x.std(axis=0)
    scale = np.where(scale > 1e-8, scale, 1.0)  # as StandardScaler: constant features are left unscaled
    z = (x - mean) / scale
    num_classes = targets.shape[1]
    if head.kind == "logistic":
        from sklearn.linear_model import LogisticRegression

        labels = targets.argmax(axis=1)
        model = LogisticRegression(C=head.c, max_iter=2000)
        model.fit(z, labels, sample_weight=weights)
        coef, bias = model.coef_, model.intercept_
        if len(model.classes_) == 2:  # scikit-learn's binary form: p1 = sigmoid(w.x + b) = softmax([0, w.x + b])
            coef, bias = np.vstack([np.zeros_like(coef[0]), coef[0]]), np.array([0.0, bias[0]])
        kernel = np.zeros((x.shape[1], num_classes))
        full_bias = np.full(num_classes, -1e4)
        kernel[:, model.classes_] = coef.T
        full_bias[model.classes_] = bias
        return FittedHead("logistic", mean, scale, {CLASSIFIER_LAYER: [kernel, full_bias]})
    if head.kind == "knn":
        bank = z / np.maximum(np.linalg.norm(z, axis=1, keepdims=True), 1e-12)
        return FittedHead("knn", mean, scale, {CLASSIFIER_LAYER: [bank, targets * weights[:, None]]})
    return _fit_mlp(cfg, z, targets, weights, FittedHead("mlp", mean, scale))


def _fit_mlp(cfg, z, targets, weights, fitted):
    from voxtrace.models.classifier import CLASSIFIER_LAYER
    from voxtrace.models.heads import frozen_head

    keras.utils.set_random_seed(cfg.seed)
    inputs = keras.Input((z.shape[1],))
    # its Standardize layer starts as the identity (mean 0, scale 1): z is standardised already
    model = keras.Model(inputs, frozen_head(inputs, targets.shape[1], cfg.model.head, CLASSIFIER_LAYER))
    model.compile(optimizer=keras.optimizers.Adam(1e-3),
                  loss=keras.losses.CategoricalCrossentropy(label_smoothing=cfg.train.label_smoothing))
    model.fit(z.astype("float32"), targets.astype("float32"), sample_weight=weights, batch_size=64,
              epochs=cfg.model.head.epochs, verbose=0, shuffle=True)
    fitted.weights = {name: model.get_layer(name).get_weights() for name in ("head_dense", CLASSIFIER_LAYER)}
    return fitted


def head_probs(cfg, fitted, window_features: list[np.ndarray]) -> np.ndarray:
    """Clip probabilities as `predict` computes them: the head on every window, merged by `audio.window_agg`."""
    from voxtrace.inference.predictor import merge_window_scores
    from voxtrace.models.classifier import CLASSIFIER_LAYER
    from voxtrace.models.heads import frozen_head

    inputs = keras.Input((window_features[0].shape[1],))
    model = keras.Model(inputs, frozen_head(inputs, cfg.num_classes, cfg.model.head, CLASSIFIER_LAYER,
                                            fitted.bank_size))
    fitted.assign(model)
    flat = np.concatenate(window_features).astype("float32")
    window_probs = np.asarray(model(flat, training=False), dtype=np.float64)
    return merge_window_scores(window_probs, [len(f) for f in window_features], cfg.audio.window_agg)


# ---- the training run --------------------------------------------------------------------------------------
def train_frozen(cfg, run, frame: pd.DataFrame, pseudo: pd.DataFrame | None, targets_of) -> dict:
    """Fit a frozen head on `frame` (+ `pseudo`): leave-voice-out OOF scores, then the checkpoints of
    `model.head.save` (the all-data model, or the fold models behind the OOF scores).

    `run` is the trainer's run folder; `targets_of(labels)` one-hot encodes class names. Returns the
    trainer's result dict.
    """
    from voxtrace.training.folds import assign_folds
    from voxtrace.training.trainer import _write_overall

    started = time.time()
    head = cfg.model.head
    if head.save not in HEAD_SAVES:
        raise ConfigError(f"model.head.save must be one of {list(HEAD_SAVES)}. Received: model.head.save={head.save!r}")
    extractor = feature_extractor(cfg)
    cache = FeatureCache(cache_root(cfg), fingerprint(cfg, extractor))
    paths = list(frame["path"])
    pseudo_paths = [] if pseudo is None else list(pseudo["path"])
    progress = cfg.train.verbose > 0
    features, errors = extract_features(cfg, extractor, paths, head.augment_draws, cache, progress=progress)
    pseudo_features, pseudo_errors = extract_features(cfg, extractor, pseudo_paths, 0, cache, progress=progress)
    for path, message in list({**errors, **pseudo_errors}.items())[:5]:
        log.warning(f"skipped {path}: {message}")
    log.info(f"> features of {len(paths):,} clips x {head.augment_draws + 1} draws + {len(pseudo_paths):,} pseudo-"
             f"labelled in {time.time() - started:.0f} s (cache {cache.dir})")

    ok = np.array([(p, 0) in features for p in paths])
    frame = frame[ok].reset_index(drop=True)
    if pseudo is not None:
        pseudo = pseudo[[(p, 0) in pseudo_features for p in pseudo["path"]]].reset_index(drop=True)
    data = ClipFeatures(cfg, frame, targets_of(frame["label"]), features, pseudo, pseudo_features)
    oof = frame[["path", "track", "label"]].copy()
    oof["fold"] = assign_folds(frame, cfg.data.folds, cfg.seed)
    oof["view"] = "clean"
    folds = oof["fold"].to_numpy()
    fold_heads = data.fold_heads(folds)
    oof[cfg.classes] = data.out_of_fold(folds, fold_heads)
    views = [oof]
    if cfg.train.oof_shift.enabled:
        shifted = oof.assign(view="shifted")
        shifted[cfg.classes] = data.out_of_fold(folds, fold_heads, _shifted_windows(cfg, extractor, cache, frame))
        views.append(shifted)
    overall = _write_overall(cfg, run, views)

    everything = np.ones(len(frame), bool)
    heads = fold_heads if head.save == "folds" else {ALL_DATA: fit_head(cfg, *data.design(everything))}
    checkpoints = save_head_checkpoints(cfg, run, extractor, heads)
    pseudo_kept = [] if pseudo is None else list(pseudo["path"])
    for part, fitted in heads.items():
        rows = everything if part == ALL_DATA else folds != part
        manifest = pd.DataFrame({"path": list(frame["path"][rows]) + pseudo_kept,
                                 "source": ["labelled"] * int(rows.sum()) + ["pseudo"] * len(pseudo_kept)})
        atomic_write_csv(run.csv("train", part), manifest)
    log.info(f"> {cfg.run_name}: {head.kind} head on frozen features, leave-voice-out OOF macro-F1 "
             f"{overall['f1']:.4f}, done in {time.time() - started:.0f} s -> "
             + ", ".join(str(c) for c in checkpoints))
    return {"run_dir": str(run.root), "checkpoints": [str(c) for c in checkpoints], "folds": {}, "overall": overall}


def _shifted_windows(cfg, extractor, cache: FeatureCache, frame: pd.DataFrame) -> dict:
    """`{path: window features of its copy in the shifted view}` of every clip of `frame` that could be made."""
    from voxtrace.training.trainer import shifted_paths

    progress = cfg.train.verbose > 0
    copies, errors = shifted_paths(cfg, list(frame["path"]), progress)
    features, more = extract_features(cfg, extractor, list(copies.values()), 0, cache, progress=progress)
    for path, message in list({**errors, **more}.items())[:5]:
        log.warning(f"skipped the shifted view of {path}: {message}")
    return {path: features[(copy, 0)] for path, copy in copies.items() if (copy, 0) in features}


def save_head_checkpoints(cfg, run, extractor: keras.Model, heads: dict) -> list[Path]:
    """Save the extractor with each fitted head (`{fold or ALL_DATA: FittedHead}`) as the run's checkpoints,
    and remove the run's other checkpoints (left by an earlier `model.head.save`): `predict` averages every
    checkpoint of a run, so only these may remain."""
    from voxtrace.models.classifier import attach_head

    saved = []
    for part, fitted in heads.items():
        ckpt = run.checkpoint(part)
        with atomic_path(ckpt) as tmp:
            attach_head(extractor, cfg, fitted).save(tmp)
        saved.append(ckpt)
    for stale in set(run.checkpoints()) - set(saved):
        log.info(f"  removed {stale} (not a checkpoint of model.head.save={cfg.model.head.save})")
        stale.unlink()
    return saved


class ClipFeatures:
    """The labelled clips' window features (every draw) and the pseudo-labelled ones, ready to fit heads on.

    `design(rows)` gives clip features (the mean of the windows), targets and sample weights of the selected
    labelled rows (each of their draws; known classes only with `model.head.known_only`) plus every
    pseudo-labelled clip (soft targets, weight `data.pseudo_weight`); `out_of_fold(folds)` refits the head
    without each fold (`fold_heads`) and scores that fold's clean windows as `predict` would.
    """

    def __init__(self, cfg, frame: pd.DataFrame, targets: np.ndarray, features: dict, pseudo=None,
                 pseudo_features=None):
        self.cfg, self.paths, self.targets, self.features = cfg, list(frame["path"]), targets, features
        self.known = (frame["label"] != cfg.unknown_class).to_numpy()
        self.pseudo, self.pseudo_features = pseudo, pseudo_features or {}

    def design(self, rows: np.ndarray):
        head = self.cfg.model.head
        keep = np.flatnonzero(rows & self.known if head.known_only else rows)
        picked = balance_rows(pd.DataFrame({"label": self.targets[keep].argmax(axis=1), "row": keep}),
                              self.cfg.data.balance, self.cfg.seed)  # data.balance, as the trainer applies it
        keep = picked["row"].to_numpy()
        draws = head.augment_draws + 1
        xs = [self.features[(self.paths[i], d)].mean(axis=0) for i in keep for d in range(draws)]
        ys = np.repeat(self.targets[keep], draws, axis=0)
        ws = np.repeat(picked["weight"].to_numpy("float32"), draws)
        if self.pseudo is not None and len(self.pseudo):
            xs += [self.pseudo_features[(p, 0)].mean(axis=0) for p in self.pseudo["path"]]
            ys = np.concatenate([ys, self.pseudo[self.cfg.classes].to_numpy("float32")])
            ws = np.concatenate([ws, np.full(len(self.pseudo), self.cfg.data.pseudo_weight, "float32")])
        return np.stack(xs), ys, ws

    def fold_heads(self, folds: np.ndarray) -> dict:
        """`{fold: the head fitted without that fold's labelled clips}`."""
        return {int(fold): fit_head(self.cfg, *self.design(folds != fold)) for fold in np.unique(folds)}

    def out_of_fold(self, folds: np.ndarray, heads: dict | None = None, windows: dict | None = None) -> np.ndarray:
        """Every labelled clip scored by the head of its fold (`heads`, fitted here when not given), on its clean
        window features or on `windows` (`{path: [windows, D]}`; a clip absent from it gets NaN)."""
        heads = self.fold_heads(folds) if heads is None else heads
        windows = {p: self.features[(p, 0)] for p in self.paths} if windows is None else windows
        probs = np.full((len(self.paths), self.cfg.num_classes), np.nan, np.float32)
        for fold, fitted in heads.items():
            rows = [i for i, p in enumerate(self.paths) if folds[i] == fold and p in windows]
            if rows:
                probs[rows] = head_probs(self.cfg, fitted, [windows[self.paths[i]] for i in rows])
        return probs
