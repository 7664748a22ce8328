"""`data.balance`: how the classes of a training set are made equal in the loss.

- `weights`: every clip is kept once and weighted by the inverse frequency of its class, `n / (k * n_class)`
  for `n` clips of `k` classes, so each class carries the same total weight in an epoch;
- `resample`: every clip is kept and the rarer classes' clips are repeated (whole copies, then a random subset
  for the remainder) up to the commonest class' count; augmentation makes the copies differ;
- `undersample` (or `true`, its older spelling): a random subset of every class, as large as the rarest class;
  the other clips are never seen;
- `false`: the clips as read.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from voxtrace.data.manifest import balance_classes


def balance_mode(setting) -> str | None:
    """The `data.balance` setting as a mode name (None: no balancing)."""
    if setting is True:
        return "undersample"
    return setting or None


def class_weights(labels) -> np.ndarray:
    """Per-clip inverse-frequency weights `n / (k * n_class)` of `labels` (one class name per clip)."""
    labels = pd.Series(np.asarray(labels))
    counts = labels.value_counts()
    return (len(labels) / (len(counts) * labels.map(counts))).to_numpy("float32")


def balance_rows(rows: pd.DataFrame, setting, seed: int) -> pd.DataFrame:
    """The training rows (column `label`) under `data.balance = setting`, with their loss `weight` column."""
    mode = balance_mode(setting)
    if mode in ("undersample", "resample"):
        rows = balance_classes(rows, seed, mode)
    weights = class_weights(rows["label"]) if mode == "weights" else np.ones(len(rows), "float32")
    return rows.assign(weight=weights)


def epoch_summary(labels, weights, setting) -> str:
    """What one epoch sees per class: clips and their total loss weight, e.g. for the training log."""
    frame = pd.DataFrame({"label": np.asarray(labels), "weight": np.asarray(weights, np.float64)})
    per_class = frame.groupby("label", sort=True)["weight"].agg(["size", "sum"])
    parts = [f"{label} {int(row['size']):,} clips (loss weight {row['sum']:,.1f})" for label, row in per_class.iterrows()]
    return f"data.balance={balance_mode(setting) or 'false'}: an epoch sees " + ", ".join(parts)
