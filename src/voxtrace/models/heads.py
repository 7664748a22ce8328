"""Heads fitted on a frozen backbone's features: `logistic`, `mlp` and the training-free `knn`.

The backbone's pooled features are standardised (`Standardize`, the mean and scale of the training features),
then classified:

* `logistic`: one Dense softmax layer: multinomial logistic regression (its weights come from scikit-learn's
  `LogisticRegression`, fitted on the cached features: `voxtrace.training.frozen`);
* `mlp`: Dense(hidden, GELU), dropout, Dense softmax, trained with Keras on the cached features;
* `knn`: `KNNVote`, a vote of the `k` training windows nearest in cosine similarity (TADA-style), each weighted
  by `exp(similarity / temperature)` and by the clip's sample weight (carried in its bank label),
  normalised over the classes; its bank is the training features.

`FittedHead` carries the fitted arrays; `frozen_head` builds the layers with the shapes they need and
`FittedHead.assign` writes the arrays into a built model, so a checkpoint's config holds shapes only and
its weights file the arrays: a saved model loads like any other.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import keras
import numpy as np
from keras import layers, ops

from voxtrace.vocabulary import FROZEN_HEADS

NORM_LAYER = "head_norm"


@keras.saving.register_keras_serializable(package="voxtrace")
class Standardize(layers.Layer):
    """`(x - mean) / scale` with fixed (non-trainable) per-feature `mean` and `scale`."""

    def build(self, input_shape):
        dim = int(input_shape[-1])
        self.mean = self.add_weight(name="mean", shape=(dim,), initializer="zeros", trainable=False)
        self.scale = self.add_weight(name="scale", shape=(dim,), initializer="ones", trainable=False)

    def call(self, x):
        return (x - ops.cast(self.mean, x.dtype)) / ops.cast(self.scale, x.dtype)


@keras.saving.register_keras_serializable(package="voxtrace")
class KNNVote(layers.Layer):
    """Class probabilities from the `k` bank rows nearest (cosine) to each input row.

    The bank (`bank_size x D` features, L2-normalised) and its labels (`bank_size x C`: one-hot or soft, scaled
    by each row's sample weight) are non-trainable weights. Each neighbour votes for its label with weight
    `exp(similarity / temperature)`.
    """

    def __init__(self, bank_size: int, num_classes: int, k: int = 10, temperature: float = 0.1, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.bank_size, self.num_classes = int(bank_size), int(num_classes)
        self.k, self.temperature = min(int(k), self.bank_size), float(temperature)

    def build(self, input_shape):
        dim = int(input_shape[-1])
        self.bank = self.add_weight(name="bank", shape=(self.bank_size, dim), initializer="zeros", trainable=False)
        self.bank_labels = self.add_weight(name="bank_labels", shape=(self.bank_size, self.num_classes),
                                           initializer="zeros", trainable=False)

    def call(self, x):
        x = ops.cast(x, "float32")
        x = x / ops.maximum(ops.norm(x, axis=-1, keepdims=True), 1e-12)
        similarity = ops.matmul(x, ops.transpose(self.bank))
        top, index = ops.top_k(similarity, self.k)
        votes = ops.exp((top - 1.0) / self.temperature)  # shifted by the largest possible similarity: no overflow
        labels = ops.take(self.bank_labels, index, axis=0)  # [B, k, C]
        scores = ops.sum(votes[..., None] * labels, axis=1)
        return scores / ops.maximum(ops.sum(scores, axis=-1, keepdims=True), 1e-30)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.num_classes)

    def get_config(self):
        return {**super().get_config(), "bank_size": self.bank_size, "num_classes": self.num_classes,
                "k": self.k, "temperature": self.temperature}


@dataclass
class FittedHead:
    """The arrays of a fitted frozen head, by layer name and weight order (`Standardize` first)."""

    kind: str
    mean: np.ndarray
    scale: np.ndarray
    weights: dict[str, list[np.ndarray]] = field(default_factory=dict)

    @property
    def bank_size(self) -> int:
        return len(next(iter(self.weights.values()))[0]) if self.kind == "knn" else 0

    def assign(self, model: keras.Model) -> None:
        """Write the fitted arrays into the head layers of a built `model`."""
        model.get_layer(NORM_LAYER).set_weights([self.mean.astype("float32"), self.scale.astype("float32")])
        for name, arrays in self.weights.items():
            model.get_layer(name).set_weights([np.asarray(a, "float32") for a in arrays])


def frozen_head(features, num_classes: int, head_cfg, classifier_name: str, bank_size: int = 0):
    """The layers of a frozen head over `[B, D]` features -> probabilities `[B, num_classes]`."""
    x = Standardize(name=NORM_LAYER)(features)
    if head_cfg.kind == "logistic":
        return layers.Dense(num_classes, activation="softmax", dtype="float32", name=classifier_name)(x)
    if head_cfg.kind == "mlp":
        x = layers.Dense(head_cfg.hidden, activation="gelu", name="head_dense")(x)
        x = layers.Dropout(head_cfg.dropout, name="head_dropout")(x)
        return layers.Dense(num_classes, activation="softmax", dtype="float32", name=classifier_name)(x)
    if head_cfg.kind == "knn":
        if bank_size < 1:
            raise ValueError("a knn head needs its bank size (the number of fitted training windows)")
        return KNNVote(bank_size, num_classes, head_cfg.k, head_cfg.temperature, name=classifier_name)(x)
    raise ValueError(f"model.head.kind must be one of {list(FROZEN_HEADS)} here. Received: {head_cfg.kind!r}")
