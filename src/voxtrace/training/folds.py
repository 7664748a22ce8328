"""Cross-validation folds that never split a group (speaker, voice or text) across two folds."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold

from voxtrace.config import ConfigError


def assign_folds(frame: pd.DataFrame, n_folds: int, seed: int = 42) -> np.ndarray:
    """The fold index (0..n_folds-1) of every row, stratified on `label` and grouped on `group`.

    Raises `ConfigError` (naming `data.folds`) when there are fewer groups than folds.
    """
    n_groups = frame["group"].nunique()
    if n_groups < n_folds:
        raise ConfigError(
            f"data.folds={n_folds} needs at least {n_folds} distinct groups (speakers / voices / texts), "
            f"but the manifest has {n_groups}: lower data.folds or add data"
        )
    folds = np.full(len(frame), -1, dtype="int64")
    splitter = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    for fold, (_, valid_idx) in enumerate(splitter.split(frame, frame["label"].astype(str), frame["group"].astype(str))):
        folds[valid_idx] = fold
    return folds
