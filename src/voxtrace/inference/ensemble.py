"""Ensembles of checkpoints: folds are averaged into one score per model, models into the ensemble score.

Both levels use the same aggregation: `mean` (weighted arithmetic mean), `geometric` (weighted mean of log
probabilities, renormalized to sum to 1) or `max` (element-wise maximum, renormalized; weights not allowed).
Per-model weights apply at the model level only. Members whose row is NaN (a file that failed) are skipped;
a row is NaN in the result only when it is NaN in every member.
"""

from __future__ import annotations

import gc
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from voxtrace.inference.checkpoints import ModelRun, discover_runs, load_checkpoint
from voxtrace.vocabulary import AGGREGATIONS, FROZEN_HEADS

_EPS = 1e-7
RESIDENT_RAM_SHARE = 0.1  # models stay loaded between calls when their checkpoints take under this share of free RAM


class Aggregator:
    """Running (streaming) aggregate of `[n, C]` probability arrays."""

    def __init__(self, agg: str = "mean"):
        if agg not in AGGREGATIONS:
            raise ValueError(f"agg must be one of {list(AGGREGATIONS)}. Received: agg={agg!r}")
        self.agg = agg
        self.total = None
        self.weight = None

    def add(self, probs, weight: float = 1.0) -> None:
        probs = np.asarray(probs, dtype=np.float64)
        if weight < 0:
            raise ValueError(f"ensemble weights must be >= 0. Received: weight={weight}")
        if self.agg == "max" and weight != 1.0:
            raise ValueError(f"agg='max' takes no weights. Received: weight={weight}")
        ok = np.isfinite(probs).all(axis=1, keepdims=True)
        if self.total is None:
            fill = -np.inf if self.agg == "max" else 0.0
            self.total = np.full(probs.shape, fill, dtype=np.float64)
            self.weight = np.zeros((len(probs), 1), dtype=np.float64)
        elif probs.shape != self.total.shape:
            raise ValueError(f"cannot aggregate shape {probs.shape} with {self.total.shape}")
        if self.agg == "max":
            self.total = np.where(ok, np.maximum(self.total, np.nan_to_num(probs)), self.total)
        else:
            values = np.log(np.clip(probs, _EPS, 1.0)) if self.agg == "geometric" else probs
            self.total += np.where(ok, weight * np.nan_to_num(values), 0.0)
        self.weight += np.where(ok, weight, 0.0)

    def result(self) -> np.ndarray:
        if self.total is None:
            raise ValueError("nothing to aggregate")
        missing = self.weight[:, 0] <= 0
        weight = np.where(self.weight > 0, self.weight, 1.0)
        if self.agg == "mean":
            out = self.total / weight
        else:
            if self.agg == "geometric":
                out = np.exp(self.total / weight)
            else:
                out = np.where(missing[:, None], 0.0, self.total)
            out = out / np.clip(out.sum(axis=1, keepdims=True), 1e-300, None)
        out[missing] = np.nan
        return out.astype(np.float32)


def aggregate(probs_list, agg: str = "mean", weights=None) -> np.ndarray:
    """Aggregate a list of `[n, C]` probability arrays (optionally weighted) into one `[n, C]` array."""
    acc = Aggregator(agg)
    weights = [1.0] * len(probs_list) if weights is None else list(weights)
    if len(weights) != len(probs_list):
        raise ValueError(f"got {len(weights)} weights for {len(probs_list)} members")
    for probs, weight in zip(probs_list, weights):
        acc.add(probs, weight)
    return acc.result()


def parse_weights(items, runs: list[ModelRun]) -> dict[str, float]:
    """`NAME=W` items -> {run name: weight}; NAME is a run's name, its folder name or its backbone name."""
    weights = {run.name: 1.0 for run in runs}
    for item in items or ():
        name, sep, value = str(item).partition("=")
        try:
            weight = float(value)
        except ValueError:
            weight = None
        if not sep or weight is None or weight < 0:
            raise ValueError(f"--weights entries must look like NAME=W with W >= 0. Received: {item!r}")
        matched = [r for r in runs if name in (r.name, r.run_dir.name, r.cfg.model.name)]
        if not matched:
            known = sorted({r.name for r in runs} | {r.cfg.model.name for r in runs})
            raise ValueError(f"--weights names no model in the ensemble: {name!r}; known names: {known}")
        for run in matched:
            weights[run.name] = weight
    if not any(w > 0 for w in weights.values()):
        raise ValueError(f"at least one ensemble weight must be > 0. Received: {weights}")
    return weights


@dataclass
class EnsembleResult:
    """Scores of the ensemble and of each model (per-model arrays keyed by run name)."""

    paths: list[Path]
    probs: np.ndarray
    per_model: dict[str, np.ndarray]
    errors: dict[str, str]
    classes: list[str]


class Ensemble:
    """Every checkpoint under a model dir, predicted one run at a time (its folds share one decoding pass).

    A run of weight 0 is not predicted at all, unless `every_member` asks for each run's own scores.
    `resident` keeps every model loaded between calls (the web app, and `predict`'s chunks); False loads each
    run's models for one call and releases them, so memory holds one run at a time; None (the default) keeps
    them loaded when all checkpoints together take under `RESIDENT_RAM_SHARE` of free RAM. `open_set` (a
    calibrated rule from `inference.open_set.load_or_calibrate`) makes `labels` reject unsure clips to the
    unknown class.
    """

    def __init__(self, model_dir, agg: str = "mean", weights=None, tta: int = 1, batch_size: int | None = None,
                 max_duration: float | None = None, every_member: bool = False, resident: bool | None = None):
        if agg not in AGGREGATIONS:
            raise ValueError(f"agg must be one of {list(AGGREGATIONS)}. Received: agg={agg!r}")
        if agg == "max" and weights:
            raise ValueError(
                f"--weights need agg 'mean' or 'geometric'; agg='max' takes no weights. Received: {weights}"
            )
        self.model_dir = Path(model_dir)
        self.runs = discover_runs(model_dir)
        self.classes = list(self.runs[0].cfg.classes)
        self.weights = parse_weights(weights, self.runs)
        self.agg, self.tta, self.batch_size = agg, int(tta), batch_size
        self.max_duration = max_duration  # files longer are read span by span (predictor.MAX_DECODE_S if None)
        self.every_member = every_member
        self.resident = fits_in_memory(self.runs) if resident is None else resident
        self.open_set: dict | None = None
        self.decision: dict | None = None  # a fitted detection threshold (inference.decision.load_or_fit_decision)
        self._loaded: dict[str, list] = {}

    @property
    def cfg(self):
        """The first run's config (class list, unknown class, infer defaults)."""
        return self.runs[0].cfg

    @property
    def sample_rates(self) -> list[int]:
        """The rates a clip is needed at (one per distinct run sample rate), for `predict_clip`."""
        return sorted({run.cfg.audio.sample_rate for run in self.runs})

    @property
    def members(self) -> list[ModelRun]:
        """The runs `predict` scores: weight above 0, or all of them with `every_member`."""
        return [run for run in self.runs if self.every_member or self.weights[run.name] > 0]

    def saved_state(self, name: str, expected: dict) -> tuple[Path | None, dict | None]:
        """`(path, state)` of a calibration saved beside the ensemble (`MODEL_DIR/name`): `state` when the file
        holds every `expected` key with its value, else None; `path` is None for a single checkpoint file."""
        import json

        path = self.model_dir / name if self.model_dir.is_dir() else None
        if path is None or not path.is_file():
            return path, None
        state = json.loads(path.read_text())
        return path, state if all(state.get(k) == v for k, v in expected.items()) else None

    @property
    def checkpoint_names(self) -> list[str]:
        """Every checkpoint, relative to the model dir: what a saved calibration was fitted with."""
        root = self.model_dir if self.model_dir.is_dir() else self.runs[0].run_dir.parent
        return sorted(p.relative_to(root).as_posix() for r in self.runs for p in r.checkpoints)

    def models(self, run: ModelRun) -> list:
        """The loaded checkpoints of `run` (kept for later calls when resident)."""
        if run.name in self._loaded:
            return self._loaded[run.name]
        models = [load_checkpoint(p) for p in run.checkpoints]
        if self.resident:
            self._loaded[run.name] = models
        return models

    def predict(self, paths, progress: bool = True) -> EnsembleResult:
        """Scores of audio files: `[n, C]` ensemble probabilities (NaN rows for files no member could read)."""
        paths = [Path(p) for p in paths]
        return self._predict(paths, lambda run: paths, progress)

    def predict_clip(self, waveforms: dict[int, np.ndarray], name: str = "clip") -> np.ndarray:
        """Ensemble probabilities `[C]` of one clip decoded at each of `sample_rates` (`{rate: samples}`);
        `name` seeds its test-time passes. Raises ValueError when the clip cannot be scored."""
        from voxtrace.inference.predictor import AudioClip

        clips = {rate: AudioClip(name, np.asarray(x, np.float32)) for rate, x in waveforms.items()}
        result = self._predict([Path(name)], lambda run: [clips[run.cfg.audio.sample_rate]], progress=False)
        if result.errors:
            raise ValueError(next(iter(result.errors.values())))
        return result.probs[0]

    def labels(self, probs) -> tuple[np.ndarray, np.ndarray]:
        """`(class index [n], rejected [n] bool)`: the top class (under a detection `decision`, the class its
        threshold gives), or the unknown class for clips the open-set rule rejects; -1 for NaN rows."""
        from voxtrace.inference.open_set import apply_open_set

        probs = np.asarray(probs, np.float64)
        if self.decision is not None:
            from voxtrace.inference.decision import decide

            return decide(probs, self.decision, self.classes), np.zeros(len(probs), bool)
        if self.open_set is None:
            ok = np.isfinite(probs).all(axis=1)
            return np.where(ok, np.nan_to_num(probs).argmax(axis=1), -1), np.zeros(len(probs), bool)
        return apply_open_set(probs, self.open_set["threshold"], self.classes, self.cfg.unknown_class,
                              self.open_set["score"])

    def _cached_features(self, run: ModelRun, clips) -> bool:
        """Whether `run` is scored from cached frozen features: a frozen-head run, files on disk, no TTA."""
        return (run.cfg.model.head.kind in FROZEN_HEADS and self.tta == 1 and not run.exported
                and all(isinstance(c, Path) for c in clips))

    def _predict(self, paths: list[Path], sources, progress: bool) -> EnsembleResult:
        from voxtrace.inference.predictor import predict_models

        models_acc = Aggregator(self.agg)
        per_model, errors = {}, {}
        for i, run in enumerate(self.members):
            models = self.models(run)
            desc = f"model {i + 1}/{len(self.members)} {run.name} ({len(models)} ckpt)"
            clips = sources(run)
            if self._cached_features(run, clips):
                from voxtrace.inference.features import predict_frozen

                fold_probs, run_errors = predict_frozen(models, run.cfg, clips, progress=progress)
            else:
                fold_probs, run_errors = predict_models(
                    models, run.cfg, clips, batch_size=self.batch_size, tta=self.tta, desc=desc, progress=progress,
                    max_duration=self.max_duration,
                )
            if not self.resident:
                del models
                _release_models()
            per_model[run.name] = aggregate(fold_probs, self.agg)
            if self.weights[run.name] > 0:
                models_acc.add(per_model[run.name], self.weights[run.name])
            for path, message in run_errors.items():  # keyed by str(path), or by the clip's name
                errors.setdefault(path, message)
        probs = models_acc.result()
        position = {str(p): i for i, p in enumerate(paths)}
        errors = {p: m for p, m in errors.items() if not np.isfinite(probs[position[p]]).all()}
        return EnsembleResult(paths=paths, probs=probs, per_model=per_model, errors=errors, classes=self.classes)


def fits_in_memory(runs) -> bool:
    """Whether the checkpoints of `runs` (files, or exported model folders) together take under
    `RESIDENT_RAM_SHARE` of free RAM."""
    from voxtrace.inference.predictor import available_memory_bytes

    files = [f for run in runs for p in run.checkpoints for f in ([p] if p.is_file() else p.rglob("*"))]
    size = sum(f.stat().st_size for f in files if f.is_file())
    return size < RESIDENT_RAM_SHARE * available_memory_bytes()


def _release_models() -> None:
    if "keras" in sys.modules:  # exported models never load Keras
        sys.modules["keras"].backend.clear_session()
    gc.collect()


def join_on_path(frames: list, sources) -> list:
    """Out-of-fold frames indexed by clip: `path`, and `view` when every frame has one (`voxtrace.data.shift`;
    else only their clean rows are used), a repeated clip's first row kept, restricted to the clips all of them
    hold, in the first frame's order; refuses frames that share none, naming their `sources`."""
    from voxtrace.data.shift import clean_view

    viewed = all("view" in frame for frame in frames)
    keys = ["path", "view"] if viewed else ["path"]
    indexed = [(frame if viewed else clean_view(frame)).drop_duplicates(keys).set_index(keys) for frame in frames]
    common = indexed[0].index
    for frame in indexed[1:]:
        common = common.intersection(frame.index)
    if len(common) == 0:
        raise ValueError(f"the out-of-fold predictions of {[str(s) for s in sources]} share no clip (joined on path)")
    return [frame.loc[common] for frame in indexed]


def fit_member_weights(oof: dict[str, "pd.DataFrame"], classes, step: float = 0.1) -> tuple[dict, "pd.DataFrame"]:
    """Ensemble weights that maximise the macro-F1 of the weighted mean of out-of-fold probabilities.

    `oof` maps a run name to its out-of-fold frame (`path`, `label`, one column per class), joined on `path`.
    Every weighting on a grid of `step` over the simplex is scored; ties go to the higher mean log-probability
    of the true class. Returns `({run: weight}, table)` with one row per weighting tried (best first).
    """
    import itertools

    import pandas as pd

    from voxtrace.evaluation.metrics import label_indices, label_scores

    names = list(oof)
    frames = join_on_path([oof[n] for n in names], names)
    probs = np.stack([f[classes].to_numpy(np.float64) for f in frames])
    labels = label_indices(frames[0]["label"], classes)
    steps = int(round(1 / step))
    rows = []
    for combo in itertools.product(range(steps + 1), repeat=len(names)):
        if sum(combo) != steps:
            continue
        weights = np.array(combo, np.float64) / steps
        mixed = np.tensordot(weights, probs, axes=1)
        f1 = label_scores(labels, mixed.argmax(axis=1), classes)["f1"]
        loglik = float(np.mean(np.log(np.clip(mixed[np.arange(len(labels)), labels], _EPS, 1.0))))
        rows.append({**dict(zip(names, weights)), "f1": f1, "log_likelihood": loglik})
    table = pd.DataFrame(rows).sort_values(["f1", "log_likelihood"], ascending=False, ignore_index=True)
    best = table.iloc[0]
    return {name: float(best[name]) for name in names}, table
