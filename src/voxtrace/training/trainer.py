"""`train(cfg)`: k-fold cross-validation (or all-data training) of one backbone, with its outputs.

Resuming (`resume=`) is exact: the training state holds the optimizer and RNG states, and the training
stream of `voxtrace.data.pipeline` is a function of (seed, position), so with `train.deterministic` a run
killed after epoch k and resumed ends with the same weights as an uninterrupted one.

Output layout, under `OUTPUT_DIR/{model}-{H}x{W}/` (`cfg.run_name`):

    ckpt/fold-K.keras | ckpt/model.keras   the full model (waveforms -> probabilities) after the last epoch
    ckpt/state/fold-K.npz                  the resumable training state, rewritten atomically every epoch
    cfg/config.yaml                        the resolved config
    csv/oof.csv                            path, track, label, fold and one probability column per class
    csv/train_fold-K.csv | csv/train_all.csv  the clips trained on: path, source (labelled | pseudo), weight
                                           and one target column per class
    csv/history_fold-K.csv                 per-epoch logs; csv/report_fold-K.csv, csv/report_oof.csv
    score/fold-K.json, score/overall.json  acc, precision, recall, f1 (macro) and auc
    plots/confusion_matrix.png, plots/history_fold-K.png, plots/lr_schedule.png
    logs/fold-K/                           TensorBoard scalars of every epoch
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import keras
import numpy as np
import pandas as pd

from voxtrace.config import ConfigError
from voxtrace.data.manifest import balance_classes, read_manifest
from voxtrace.io import atomic_path, atomic_write_csv, atomic_write_json
from voxtrace.training.folds import assign_folds
from voxtrace.training.frozen import is_frozen, train_frozen
from voxtrace.training.losses import get_loss
from voxtrace.training.loop import TensorBoardLogger, TrainingState, TrainLoop, WandbLogger
from voxtrace.training.optimizers import agc_clip_factor, build_optimizer
from voxtrace.training.plots import plot_history, plot_lr_schedule
from voxtrace.training.schedules import build_schedule
from voxtrace.training.strategy import get_strategy, is_chief, seed_everything, set_mixed_precision

ALL_DATA = "all"


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


class _Run:
    """Paths of one run folder."""

    def __init__(self, cfg):
        self.root = Path(cfg.output_dir) / cfg.run_name
        for sub in ("ckpt/state", "cfg", "csv", "score", "plots"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)

    def ckpt(self, fold) -> Path:
        return self.root / "ckpt" / ("model.keras" if fold == ALL_DATA else f"fold-{fold}.keras")

    def state(self, fold) -> Path:
        return self.root / "ckpt" / "state" / f"{'model' if fold == ALL_DATA else f'fold-{fold}'}.npz"

    def name(self, fold) -> str:
        return "all" if fold == ALL_DATA else f"fold-{fold}"


def _log(chief: bool, message: str) -> None:
    if chief:
        print(message, flush=True)


def _wandb_run(cfg, name):
    try:
        import wandb
    except ImportError:
        print("train.wandb is on but the wandb package is not installed; not logging to W&B", flush=True)
        return None
    return wandb.init(project="voxtrace", name=name, config=cfg.to_dict(), reinit=True)


def train(cfg, resume: str | bool | None = None, start_epoch: int | None = None) -> dict:
    """Train `cfg.model.name` on every selected fold (or on all data) and write the run folder.

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
    strategy = get_strategy(cfg.train.strategy)
    policy = set_mixed_precision(strategy, cfg.train.mixed_precision)
    seed_everything(cfg.seed, cfg.train.deterministic)
    chief = is_chief(strategy)
    run = _Run(cfg)
    if chief:
        cfg.save(run.root / "cfg" / "config.yaml")

    frame = load_training_frame(cfg)
    pseudo = load_pseudo_frame(cfg, frame["path"])
    batch_size = cfg.train.batch_size
    epochs = 1 if cfg.debug else cfg.train.epochs
    _log(chief, f"> {cfg.run_name}: {len(frame):,} labelled files"
         + (f" + {len(pseudo):,} pseudo-labelled" if pseudo is not None else "")
         + f" | strategy {type(strategy).__name__} ({strategy.num_replicas_in_sync} replicas) | policy {policy}")
    if is_frozen(cfg):
        return train_frozen(cfg, run, frame, pseudo, lambda labels: _one_hot(labels, cfg.classes))

    results, checkpoints, oof_parts = {}, [], []
    lr_plotted = False
    for fold in folds:
        started = time.time()
        train_rows = frame if fold == ALL_DATA else frame[frame["fold"] != fold]
        valid_rows = None if fold == ALL_DATA else frame[frame["fold"] == fold].reset_index(drop=True)
        if cfg.data.balance:
            train_rows = balance_classes(train_rows, cfg.seed)
        rng = np.random.default_rng(cfg.seed)
        train_rows = train_rows.iloc[rng.permutation(len(train_rows))].reset_index(drop=True)
        if cfg.debug:
            train_rows = train_rows.iloc[: 2 * batch_size]
            valid_rows = None if valid_rows is None else valid_rows.iloc[: 2 * batch_size]
        paths = list(train_rows["path"])
        labels = _one_hot(train_rows["label"], cfg.classes)
        weights = np.ones(len(paths), "float32")
        sources = ["labelled"] * len(paths)
        if pseudo is not None and len(pseudo):
            paths += list(pseudo["path"])
            labels = np.concatenate([labels, pseudo[cfg.classes].to_numpy("float32")])
            weights = np.concatenate([weights, np.full(len(pseudo), cfg.data.pseudo_weight, "float32")])
            sources += ["pseudo"] * len(pseudo)
        if chief:
            manifest = pd.DataFrame({"path": paths, "source": sources, "weight": weights})
            manifest[cfg.classes] = labels
            atomic_write_csv(run.root / "csv" / f"train_{run.name(fold)}.csv", manifest)
        steps = cfg.train.steps_per_epoch or math.ceil(len(paths) / batch_size)
        _log(chief, f"\n> {run.name(fold)} | img {cfg.features.img_size} | batch {batch_size} | epochs {epochs} | "
             f"steps/epoch {steps} | optimizer {cfg.train.optimizer} | scheduler {cfg.train.scheduler} | loss "
             f"{cfg.train.loss} | train {len(paths):,} | valid {0 if valid_rows is None else len(valid_rows):,}")
        if chief and not lr_plotted:
            plot_lr_schedule(cfg, steps, run.root / "plots" / "lr_schedule.png")
            lr_plotted = True

        from voxtrace.data.pipeline import build_dataset
        from voxtrace.models import build_classifier

        keras.backend.clear_session()
        seed_everything(cfg.seed + (0 if fold == ALL_DATA else fold))
        with strategy.scope():
            model = build_classifier(cfg)
            optimizer = build_optimizer(cfg, build_schedule(cfg, steps))
            optimizer.build(model.trainable_variables)
        history_csv = run.root / "csv" / f"history_{run.name(fold)}.csv"
        state = TrainingState(_state_path(resume, run, fold), optimizer, cfg.train.monitor,
                              history_csv=history_csv if chief else None, write=chief, name=run.name(fold))
        initial_epoch = 0
        if resume:
            if Path(state.path).is_file():
                initial_epoch = state.restore(model)
                _log(chief, f"> resumed {run.name(fold)} from {state.path}: {initial_epoch} epochs done")
            else:
                _log(chief, f"> no training state at {state.path}; {run.name(fold)} starts from epoch 0")
        if start_epoch is not None:
            initial_epoch = start_epoch
            optimizer.iterations.assign(start_epoch * steps)
        state.path = str(run.state(fold))

        train_ds = build_dataset(paths, labels, cfg, mode="train", batch_size=batch_size, sample_weights=weights,
                                 shuffle_seed=cfg.seed + (0 if fold == ALL_DATA else fold),
                                 skip_batches=initial_epoch * steps)
        valid_ds = None
        if valid_rows is not None and cfg.train.epoch_validation:
            valid_ds = build_dataset(list(valid_rows["path"]), _one_hot(valid_rows["label"], cfg.classes), cfg,
                                     mode="valid", batch_size=batch_size)

        callbacks = [state]
        if chief:
            callbacks.append(keras.callbacks.CSVLogger(str(history_csv), append=initial_epoch > 0))
            callbacks.append(TensorBoardLogger(run.root / "logs" / run.name(fold)))
        wandb_run = _wandb_run(cfg, f"{cfg.run_name}-{run.name(fold)}") if cfg.train.wandb and chief else None
        if wandb_run is not None:
            callbacks.append(WandbLogger(wandb_run))

        loop = TrainLoop(model, optimizer, get_loss(cfg), strategy, agc_clip=agc_clip_factor(cfg))
        loop.fit(train_ds, epochs, steps, valid_dataset=valid_ds, callbacks=callbacks, initial_epoch=initial_epoch,
                 verbose=cfg.train.verbose if chief else 0)
        if wandb_run is not None:
            wandb_run.finish()
        if not chief:
            continue

        ckpt = run.ckpt(fold)
        with atomic_path(ckpt) as tmp:
            model.save(tmp)
        checkpoints.append(str(ckpt))
        if history_csv.is_file():
            plot_history(pd.read_csv(history_csv), run.root / "plots" / f"history_{run.name(fold)}.png",
                         title=f"{cfg.run_name} {run.name(fold)}")
        if valid_rows is not None:
            scores, oof = _score_fold(cfg, run, fold, ckpt, valid_rows, state)
            results[fold] = scores
            oof_parts.append(oof)
        _log(chief, f"> {run.name(fold)} done in {(time.time() - started) / 60:.1f} min -> {ckpt}")

    overall = _write_overall(cfg, run, oof_parts) if chief and oof_parts else None
    return {"run_dir": str(run.root), "checkpoints": checkpoints, "folds": results, "overall": overall}


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


def _state_path(resume, run: _Run, fold) -> str:
    """The state file to resume from: the run's own, or one under / at the `resume` path."""
    if resume in (None, False, True, "auto"):
        return str(run.state(fold))
    path = Path(resume)
    return str(path / run.state(fold).name if path.is_dir() else path)


def _score_fold(cfg, run: _Run, fold, ckpt: Path, valid_rows: pd.DataFrame, state: TrainingState):
    """Out-of-fold probabilities from the saved checkpoint (windowed, with `train.tta`), scores and reports."""
    from voxtrace.inference.predictor import predict_files

    model = keras.saving.load_model(ckpt, safe_mode=True)
    probs, errors = predict_files(model, cfg, list(valid_rows["path"]), tta=cfg.train.tta,
                                  desc=f"OOF {run.name(fold)}", progress=cfg.train.verbose > 0)
    for path, message in list(errors.items())[:5]:
        print(f"  skipped {path}: {message}", flush=True)
    oof = valid_rows[["path", "track", "label", "fold"]].copy()
    oof[cfg.classes] = probs
    scores, _, _ = _evaluate(cfg, oof, run.root / "csv" / f"report_{run.name(fold)}.csv", f"{run.name(fold)} OOF")
    scores.update({"best_" + cfg.train.monitor: state.best, "best_epoch": state.best_epoch,
                   "num_valid": int(len(valid_rows)), "failed_files": len(errors)})
    atomic_write_json(run.root / "score" / f"{run.name(fold)}.json", scores)
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
    print(f"> {title}: " + ", ".join(f"{k} {v:.4f}" for k, v in scores.items()), flush=True)
    return scores, y_true, probs.argmax(1)


def _write_overall(cfg, run: _Run, parts: list[pd.DataFrame]) -> dict:
    """csv/oof.csv, score/overall.json, csv/report_oof.csv and plots/confusion_matrix.png over all folds."""
    from voxtrace.evaluation.plots import plot_confusion_matrix

    oof = pd.concat(parts, ignore_index=True)
    atomic_write_csv(run.root / "csv" / "oof.csv", oof)
    scores, y_true, y_pred = _evaluate(cfg, oof, run.root / "csv" / "report_oof.csv", "overall OOF")
    scores["folds"] = sorted(int(f) for f in oof["fold"].unique())
    atomic_write_json(run.root / "score" / "overall.json", scores)
    plot_confusion_matrix(y_true, y_pred, cfg.classes, run.root / "plots" / "confusion_matrix.png",
                          title=f"{cfg.run_name} out-of-fold")
    return scores
