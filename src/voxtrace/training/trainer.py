"""`train(cfg)`: k-fold cross-validation (or all-data training) of one backbone, with its outputs.

Resuming (`resume=`) is exact: the training state holds the optimizer and RNG states, and the training
stream of `voxtrace.data.pipeline` is a function of (seed, position), so with `train.deterministic` a run
killed after epoch k and resumed ends with the same weights as an uninterrupted one.

Steps: `load_training_frame` (manifest + folds), `load_pseudo_frame`, then per fold `fold_data` (split,
balance, debug cut, pseudo-label mixing), `fit_fold` (build, restore, fit) and `_score_fold` (out-of-fold
scores). Frozen-feature heads take `voxtrace.training.frozen.train_frozen` instead. The run folder, under
`OUTPUT_DIR/cfg.run_name/`, is laid out as `voxtrace.rundir.RunDir` says.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import pandas as pd

from voxtrace.config import ConfigError
from voxtrace.data.manifest import read_manifest
from voxtrace.data.shift import in_view
from voxtrace.io import atomic_path, atomic_write_csv, atomic_write_json
from voxtrace.rundir import ALL_DATA, RunDir
from voxtrace.training.balance import balance_rows, epoch_summary
from voxtrace.training.folds import assign_folds
from voxtrace.training.frozen import is_frozen, train_frozen
from voxtrace.training.losses import get_loss
from voxtrace.training.loop import TensorBoardLogger, TrainingState, TrainLoop, WandbLogger
from voxtrace.training.optimizers import agc_clip_factor, build_optimizer
from voxtrace.training.plots import plot_history, plot_lr_schedule
from voxtrace.training.schedules import build_schedule
from voxtrace.training.strategy import get_strategy, is_chief, seed_everything, set_mixed_precision

log = logging.getLogger(__name__)

def _one_hot(labels: pd.Series, classes: list[str]) -> np.ndarray:
    index = {name: i for i, name in enumerate(classes)}
    return np.eye(len(classes), dtype="float32")[[index[v] for v in labels]]


def load_training_frame(cfg) -> pd.DataFrame:
    """Labelled manifest rows of `cfg`, each with its `fold` (-1 everywhere in all-data mode)."""

    frame = read_manifest(cfg, split="train")
    frame = frame[frame["label"].notna()].reset_index(drop=True)
    if frame.empty:
        raise ValueError(f"the training manifest of data.root={cfg.data.root!r} has no labelled files")
    unknown = sorted(set(frame["label"]) - set(cfg.classes))
    if unknown:
        raise ConfigError(f"the manifest has labels {unknown} that are not in classes={cfg.classes}")
    frame["fold"] = -1 if cfg.data.all_data else assign_folds(frame, cfg.data.folds, cfg.seed)
    return frame


def load_pseudo_frame(cfg, labelled_paths) -> pd.DataFrame | None:
    """Soft pseudo-labels of `cfg.data.pseudo_csv`, without files that are also labelled training data."""
    if not cfg.data.pseudo_csv:
        return None
    from voxtrace.inference.pseudo import read_pseudo_csv

    if not Path(cfg.data.pseudo_csv).is_file():
        raise ConfigError(f"data.pseudo_csv: file not found: {cfg.data.pseudo_csv}")
    pseudo = read_pseudo_csv(cfg.data.pseudo_csv, cfg.classes, parts=cfg.data.pseudo_parts or None)
    known = {str(Path(p).resolve()) for p in labelled_paths}
    return pseudo[[str(Path(p).resolve()) not in known for p in pseudo["path"]]].reset_index(drop=True)


def _log(chief: bool, message: str) -> None:
    if chief:
        log.info(message)


def _wandb_run(cfg, name):
    try:
        import wandb
    except ImportError:
        log.warning("train.wandb is on but the wandb package is not installed; not logging to W&B")
        return None
    return wandb.init(project="voxtrace", name=name, config=cfg.to_dict(), reinit=True)


@dataclass
class FoldData:
    """The clips one fold trains on (labelled, then pseudo-labelled) and the rows it is validated on."""

    paths: list[str]
    labels: np.ndarray  # [n, C] one-hot or soft
    weights: np.ndarray  # [n] per-clip loss weights
    sources: list[str]  # labelled | pseudo
    valid_rows: pd.DataFrame | None  # None for the all-data model


def train(cfg, resume: str | bool | None = None, start_epoch: int | None = None) -> dict:
    """Train `cfg.model.name` on every selected fold (or on all data) and write the run folder (`RunDir`).

    Args:
        cfg: the resolved `voxtrace.config.Config`.
        resume: continue each fold from its saved training state: True (or "auto") for the run folder's
            `ckpt/state/`, or the path of a state folder or of one fold's `.npz` file (one fold selected). A fold
            without a state starts fresh; a state saved by another fold is refused.
        start_epoch: the epoch to start from, overriding the saved one.

    Returns:
        `{"run_dir", "checkpoints", "folds": {fold: scores}, "overall": scores or None}`.
    """
    from voxtrace.models.raw import backbone_input_shape

    backbone_input_shape(cfg)  # an unknown model.name, or one that does not fit features.*, fails before any work
    folds = [ALL_DATA] if cfg.data.all_data else list(cfg.data.selected_folds)
    _check_resume(resume, folds)
    strategy = get_strategy(cfg.train.strategy)  # prints the devices and the strategy
    policy = set_mixed_precision(strategy, cfg.train.mixed_precision)
    seed_everything(cfg.seed, cfg.train.deterministic)
    chief = is_chief(strategy)
    run = RunDir(Path(cfg.output_dir) / cfg.run_name).create()
    if chief:
        cfg.save(run.config)

    frame = load_training_frame(cfg)
    pseudo = load_pseudo_frame(cfg, frame["path"])
    _log(chief, f"> {cfg.run_name}: {len(frame):,} labelled files"
         + (f" + {len(pseudo):,} pseudo-labelled" if pseudo is not None else "") + f" | policy {policy}")
    if is_frozen(cfg):
        return train_frozen(cfg, run, frame, pseudo, lambda labels: _one_hot(labels, cfg.classes))

    results, checkpoints, oof_parts = {}, [], []
    for k, fold in enumerate(folds):
        started = time.time()
        data = fold_data(cfg, frame, pseudo, fold, chief)
        if chief:
            manifest = pd.DataFrame({"path": data.paths, "source": data.sources, "weight": data.weights})
            manifest[cfg.classes] = data.labels
            atomic_write_csv(run.csv("train", fold), manifest)
        model, state = fit_fold(cfg, strategy, run, fold, data, plot_schedule=k == 0 and chief, chief=chief,
                                restore_from=_state_path(resume, run, fold) if resume else None,
                                start_epoch=start_epoch)
        if not chief:
            continue
        ckpt = run.checkpoint(fold)
        with atomic_path(ckpt) as tmp:
            model.save(tmp)
        checkpoints.append(str(ckpt))
        if data.valid_rows is not None:
            scores, oof = _score_fold(cfg, run, fold, ckpt, data.valid_rows, state)
            results[fold] = scores
            oof_parts.append(oof)
        _log(chief, f"> {run.part(fold)} done in {(time.time() - started) / 60:.1f} min -> {ckpt}")

    overall = _write_overall(cfg, run, oof_parts) if chief and oof_parts else None
    return {"run_dir": str(run.root), "checkpoints": checkpoints, "folds": results, "overall": overall}


def fold_data(cfg, frame: pd.DataFrame, pseudo: pd.DataFrame | None, fold, chief: bool = True) -> FoldData:
    """Split `frame` for `fold`, balance and shuffle the training rows (`data.balance`), cut them for `debug`,
    and add the pseudo-labelled clips with weight `data.pseudo_weight`."""
    batch_size = cfg.train.batch_size
    train_rows = frame if fold == ALL_DATA else frame[frame["fold"] != fold]
    valid_rows = None if fold == ALL_DATA else frame[frame["fold"] == fold].reset_index(drop=True)
    train_rows = balance_rows(train_rows, cfg.data.balance, cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    train_rows = train_rows.iloc[rng.permutation(len(train_rows))].reset_index(drop=True)
    if cfg.debug:
        train_rows = train_rows.iloc[: 2 * batch_size]
        valid_rows = None if valid_rows is None else valid_rows.iloc[: 2 * batch_size]
    paths = list(train_rows["path"])
    labels = _one_hot(train_rows["label"], cfg.classes)
    weights = train_rows["weight"].to_numpy("float32")
    _log(chief, f"> {RunDir.part(fold)}: " + epoch_summary(train_rows["label"], weights, cfg.data.balance))
    sources = ["labelled"] * len(paths)
    if pseudo is not None and len(pseudo):
        paths += list(pseudo["path"])
        labels = np.concatenate([labels, pseudo[cfg.classes].to_numpy("float32")])
        weights = np.concatenate([weights, np.full(len(pseudo), cfg.data.pseudo_weight, "float32")])
        sources += ["pseudo"] * len(pseudo)
    return FoldData(paths, labels, weights, sources, valid_rows)


def fit_fold(cfg, strategy, run: RunDir, fold, data: FoldData, restore_from: str | None = None,
             start_epoch: int | None = None, plot_schedule: bool = False, chief: bool = True):
    """Build the model and optimizer of `fold`, restore them from `restore_from` (a training state file, if it
    exists), train the remaining epochs saving the state to `run.state(fold)` every epoch, and return
    `(model, state)`."""
    from voxtrace.data.pipeline import build_dataset
    from voxtrace.models import build_classifier

    batch_size = cfg.train.batch_size
    epochs = 1 if cfg.debug else cfg.train.epochs
    steps = cfg.train.steps_per_epoch or math.ceil(len(data.paths) / batch_size)
    valid_count = 0 if data.valid_rows is None else len(data.valid_rows)
    _log(chief, f"\n> {run.part(fold)} | {_input_summary(cfg)} | batch {batch_size} | epochs {epochs} | "
         f"steps/epoch {steps} | optimizer {cfg.train.optimizer} | scheduler {cfg.train.scheduler} | loss "
         f"{cfg.train.loss} | train {len(data.paths):,} | valid {valid_count:,}")
    if plot_schedule:
        plot_lr_schedule(cfg, steps, run.plot("lr_schedule"))

    keras.backend.clear_session()
    fold_seed = cfg.seed + (0 if fold == ALL_DATA else fold)
    seed_everything(fold_seed)
    with strategy.scope():
        model = build_classifier(cfg)
        optimizer = build_optimizer(cfg, build_schedule(cfg, steps))
        optimizer.build(model.trainable_variables)
    history_csv = run.csv("history", fold)
    state = TrainingState(restore_from or str(run.state(fold)), optimizer, cfg.train.monitor,
                          history_csv=history_csv if chief else None, write=chief, name=run.part(fold))
    initial_epoch = 0
    if restore_from is not None:
        if Path(restore_from).is_file():
            initial_epoch = state.restore(model)
            _log(chief, f"> resumed {run.part(fold)} from {restore_from}: {initial_epoch} epochs done")
        else:
            _log(chief, f"> no training state at {restore_from}; {run.part(fold)} starts from epoch 0")
    if start_epoch is not None:
        initial_epoch = start_epoch
        optimizer.iterations.assign(start_epoch * steps)
    state.path = str(run.state(fold))  # saved to the run's own state file from here on

    train_ds = build_dataset(data.paths, data.labels, cfg, mode="train", batch_size=batch_size,
                             sample_weights=data.weights, shuffle_seed=fold_seed, skip_batches=initial_epoch * steps)
    valid_ds = None
    if data.valid_rows is not None and cfg.train.epoch_validation:
        valid_ds = build_dataset(list(data.valid_rows["path"]), _one_hot(data.valid_rows["label"], cfg.classes),
                                 cfg, mode="valid", batch_size=batch_size)
    callbacks = [state]
    if chief:
        callbacks.append(keras.callbacks.CSVLogger(str(history_csv), append=initial_epoch > 0))
        callbacks.append(TensorBoardLogger(run.logs(fold)))
    wandb_run = _wandb_run(cfg, f"{cfg.run_name}-{run.part(fold)}") if cfg.train.wandb and chief else None
    if wandb_run is not None:
        callbacks.append(WandbLogger(wandb_run))
    loop = TrainLoop(model, optimizer, get_loss(cfg), strategy, agc_clip=agc_clip_factor(cfg))
    loop.fit(train_ds, epochs, steps, valid_dataset=valid_ds, callbacks=callbacks, initial_epoch=initial_epoch,
             verbose=cfg.train.verbose if chief else 0)
    if wandb_run is not None:
        wandb_run.finish()
    if chief and history_csv.is_file():
        plot_history(pd.read_csv(history_csv), run.plot(f"history_{run.part(fold)}"),
                     title=f"{cfg.run_name} {run.part(fold)}")
    return model, state


def _input_summary(cfg) -> str:
    """`img [H, W]` for image models, `waveform N samples` for raw-waveform ones."""
    if cfg.features.kind == "raw":
        return f"waveform {cfg.num_samples} samples"
    return f"img {cfg.features.img_size}"


def _check_resume(resume, folds: list) -> None:
    """Refuse a `resume` path that is missing, or one state file for several folds (each would start from it)."""
    if resume in (None, False, True, "auto"):
        return
    path = Path(resume)
    if not path.exists():
        raise FileNotFoundError(f"--resume {resume}: no such training state file or folder")
    if path.is_file() and len(folds) > 1:
        raise ConfigError(
            f"--resume {resume} is the training state of one fold, but {len(folds)} folds are selected "
            f"(data.selected_folds={folds}): pass the state folder (one fold-K.npz per fold) or select one fold"
        )


def _state_path(resume, run: RunDir, fold) -> str:
    """The state file to resume from: the run's own, or one under / at the `resume` path."""
    if resume in (None, False, True, "auto"):
        return str(run.state(fold))
    path = Path(resume)
    return str(path / run.state(fold).name if path.is_dir() else path)


def _score_fold(cfg, run: RunDir, fold, ckpt: Path, valid_rows: pd.DataFrame, state: TrainingState):
    """Out-of-fold probabilities from the saved checkpoint (windowed, with `train.tta`), scores and reports."""
    from voxtrace.inference.predictor import predict_files

    model = keras.saving.load_model(ckpt, safe_mode=True)
    progress = cfg.train.verbose > 0
    paths = list(valid_rows["path"])
    probs, errors = predict_files(model, cfg, paths, tta=cfg.train.tta, desc=f"OOF {run.part(fold)}",
                                  progress=progress)
    oof = valid_rows[["path", "track", "label", "fold"]].copy()
    oof["view"] = "clean"
    oof[cfg.classes] = probs
    views = [oof]
    if cfg.train.oof_shift.enabled:
        copies, shift_errors = shifted_paths(cfg, paths, progress)
        done = [p for p in paths if p in copies]
        shifted = oof.copy()
        shifted["view"] = "shifted"
        shifted[cfg.classes] = np.nan
        if done:
            probs, more = predict_files(model, cfg, [copies[p] for p in done], tta=cfg.train.tta,
                                        desc=f"OOF {run.part(fold)}, shifted view", progress=progress)
            shifted.loc[shifted["path"].isin(done).to_numpy(), cfg.classes] = probs
            shift_errors.update(more)
        errors.update(shift_errors)
        views.append(shifted)
    for path, message in list(errors.items())[:5]:
        log.warning(f"skipped {path}: {message}")
    oof = pd.concat(views, ignore_index=True)
    scores, _, _ = _evaluate_views(cfg, run, oof, fold, f"{run.part(fold)} OOF")
    scores.update({"best_" + cfg.train.monitor: state.best, "best_epoch": state.best_epoch,
                   "num_valid": int(len(valid_rows)), "failed_files": len(errors)})
    atomic_write_json(run.score(fold), scores)
    return scores, oof


def _evaluate(cfg, oof: pd.DataFrame, report_path: Path, title: str):
    """Scores and per-class report of the predicted rows of `oof`; returns (scores, y_true, y_pred)."""
    from voxtrace.evaluation.metrics import classification_scores, per_class_report

    ok = oof[cfg.classes].notna().all(axis=1)
    if not ok.any():
        raise ValueError(f"{title}: no validation file could be predicted; see the skipped files above")
    y_true = oof.loc[ok, "label"].map(cfg.classes.index).to_numpy()
    probs = oof.loc[ok, cfg.classes].to_numpy()
    scores = {k: float(v) for k, v in classification_scores(y_true, probs, cfg.classes).items()}
    atomic_write_csv(report_path, per_class_report(y_true, probs.argmax(1), cfg.classes))
    log.info(f"> {title}: " + ", ".join(f"{k} {v:.4f}" for k, v in scores.items()))
    return scores, y_true, probs.argmax(1)


def _evaluate_views(cfg, run: RunDir, oof: pd.DataFrame, fold, title: str):
    """`_evaluate` on the clean view (`csv/report_PART.csv`), with the shifted view's scores under `shifted`
    (`csv/report_shifted_PART.csv`) when it has rows; returns (scores, y_true, y_pred) of the clean view."""
    scores, y_true, y_pred = _evaluate(cfg, oof[in_view(oof, "clean")], run.csv("report", fold), title)
    shifted = oof[in_view(oof, "shifted")]
    if len(shifted):
        scores["shifted"], _, _ = _evaluate(cfg, shifted, run.csv("report_shifted", fold), f"{title}, shifted view")
    return scores, y_true, y_pred


def shifted_paths(cfg, paths, progress: bool = True) -> tuple[dict, dict]:
    """`({path: its copy in the shifted view}, {path: error})` (`voxtrace.data.shift`, under the feature cache)."""
    from voxtrace.data.shift import shifted_copies, shifted_dir
    from voxtrace.inference.features import cache_root

    shift, rate = cfg.train.oof_shift, cfg.audio.sample_rate
    return shifted_copies(paths, shifted_dir(cache_root(cfg), shift, cfg.seed, rate), shift, cfg.seed, rate,
                          progress=progress)


def _write_overall(cfg, run: RunDir, parts: list[pd.DataFrame]) -> dict:
    """csv/oof.csv (every view), score/overall.json, csv/report_oof.csv and plots/confusion_matrix.png over all
    folds; the scores are the clean view's, with the shifted view's under `shifted`."""
    from voxtrace.evaluation.plots import plot_confusion_matrix

    oof = pd.concat(parts, ignore_index=True)
    atomic_write_csv(run.oof, oof)
    scores, y_true, y_pred = _evaluate_views(cfg, run, oof, None, "overall OOF")
    scores["folds"] = sorted(int(f) for f in oof["fold"].unique())
    atomic_write_json(run.score(), scores)
    plot_confusion_matrix(y_true, y_pred, cfg.classes, run.plot("confusion_matrix"),
                          title=f"{cfg.run_name} out-of-fold")
    return scores
