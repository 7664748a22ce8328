"""Training losses. Each returns a per-sample loss `[B]` so the loop can weight and reduce it itself."""

from __future__ import annotations

import keras

from voxtrace.vocabulary import LOSSES


def get_loss(cfg) -> keras.losses.Loss:
    """The loss named by `cfg.train.loss`, with no reduction (one value per sample).

    All three accept soft labels (pseudo-labels, mixup): targets are probability vectors, not indices.
    """
    t = cfg.train
    if t.loss == "CCE":
        return keras.losses.CategoricalCrossentropy(label_smoothing=t.label_smoothing, reduction=None)
    if t.loss == "BCE":
        return keras.losses.BinaryCrossentropy(label_smoothing=t.label_smoothing, reduction=None)
    if t.loss == "Focal":
        return keras.losses.CategoricalFocalCrossentropy(
            alpha=t.focal_alpha, gamma=t.focal_gamma, label_smoothing=t.label_smoothing, reduction=None
        )
    raise ValueError(f"train.loss must be one of {list(LOSSES)}. Received: train.loss={t.loss!r}")
