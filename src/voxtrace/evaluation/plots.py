"""Evaluation plots, written as PNG through `voxtrace.io.atomic_savefig`."""

from __future__ import annotations

import numpy as np


def confusion_counts(y_true_idx, y_pred_idx, num_classes: int) -> np.ndarray:
    """`[C, C]` counts, rows = true class, columns = predicted class (indices outside 0..C-1 ignored)."""
    y_true = np.asarray(y_true_idx, dtype=np.int64)
    y_pred = np.asarray(y_pred_idx, dtype=np.int64)
    ok = (y_true >= 0) & (y_true < num_classes) & (y_pred >= 0) & (y_pred < num_classes)
    counts = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(counts, (y_true[ok], y_pred[ok]), 1)
    return counts


def plot_confusion_matrix(y_true_idx, y_pred_idx, classes, path, title=None) -> np.ndarray:
    """Save counts and the row-normalized matrix side by side as a PNG; returns the counts."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from voxtrace.io import atomic_savefig

    classes = list(classes)
    counts = confusion_counts(y_true_idx, y_pred_idx, len(classes))
    rows = counts.sum(axis=1, keepdims=True)
    normalized = np.divide(counts, rows, out=np.zeros(counts.shape, dtype=np.float64), where=rows > 0)
    size = max(4.0, 0.6 * len(classes) + 2.0)
    fig, axes = plt.subplots(1, 2, figsize=(2 * size + 1, size))
    for ax, matrix, fmt, name in ((axes[0], counts, "d", "counts"), (axes[1], normalized, ".2f", "row-normalized")):
        vmax = matrix.max() if matrix.size and matrix.max() > 0 else 1
        ax.imshow(matrix, cmap="Blues", vmin=0, vmax=vmax)
        for i in range(len(classes)):
            for j in range(len(classes)):
                value = matrix[i, j]
                ax.text(j, i, format(value, fmt), ha="center", va="center", fontsize=8,
                        color="white" if value > 0.6 * vmax else "black")
        ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
        ax.set_yticks(range(len(classes)), classes)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(name)
    if title:
        fig.suptitle(title)
    atomic_savefig(fig, path)
    return counts
