"""Cross-validation folds that never split a group (speaker, voice or text) across two folds."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold

from voxtrace.config import ConfigError

log = logging.getLogger("voxtrace.training")


def fold_groups(frame: pd.DataFrame, n_folds: int) -> pd.Series:
    """The groups folds are split on: `group`, except for a class that has one group only.

    Holding out the only voice of a class would leave its validation fold with no training clip of that class,
    so such a class's clips are spread over the folds in `n_folds` chunks (with a warning): its validation then
    measures unseen texts, not an unseen voice.
    """
    groups = frame["group"].astype(str).copy()
    labels = frame["label"].astype(str)
    for label, n in groups.groupby(labels).nunique().items():
        if n == 1:
            rows = np.flatnonzero(labels.to_numpy() == label)
            log.warning("class %r has a single group (%s): its clips are split across folds", label, groups.iloc[rows[0]])
            groups.iloc[rows] = [f"{groups.iloc[r]}#{i % n_folds}" for i, r in enumerate(rows)]
    return groups


def assign_folds(frame: pd.DataFrame, n_folds: int, seed: int = 42) -> np.ndarray:
    """The fold index (0..n_folds-1) of every row, stratified on `label` and grouped by `fold_groups`.

    Raises `ConfigError` (naming `data.folds`) when there are fewer groups than folds.
    """
    groups = fold_groups(frame, n_folds)
    n_groups = groups.nunique()
    if n_groups < n_folds:
        raise ConfigError(
            f"data.folds={n_folds} needs at least {n_folds} distinct groups (speakers / voices / texts), "
            f"but the manifest has {n_groups}: lower data.folds or add data"
        )
    folds = np.full(len(frame), -1, dtype="int64")
    splitter = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    for fold, (_, valid_idx) in enumerate(splitter.split(frame, frame["label"].astype(str), groups)):
        folds[valid_idx] = fold
    return folds
