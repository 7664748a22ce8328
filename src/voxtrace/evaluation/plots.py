"""Evaluation plots, written as PNG through `voxtrace.io.atomic_savefig`."""

from __future__ import annotations

import numpy as np


def confusion_counts(y_true_idx, y_pred_idx, num_classes: int) -> np.ndarray:
    """`[C, C]` counts, rows = true class, columns = predicted class (indices outside 0..C-1 ignored)."""
    from sklearn.metrics import confusion_matrix

    if len(y_true_idx) == 0:
        return np.zeros((num_classes, num_classes), dtype=np.int64)
    return confusion_matrix(np.asarray(y_true_idx, dtype=np.int64), np.asarray(y_pred_idx, dtype=np.int64),
                            labels=np.arange(num_classes)).astype(np.int64)


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


def plot_det_curves(table, path, title=None) -> None:
    """Save DET curves (a table of `curve, miss_rate, false_alarm_rate` rows, as `reports` writes them) on
    normal-deviate axes, the EER point of each marked."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from scipy.stats import norm

    from voxtrace.io import atomic_savefig

    eps = 1e-4  # rates of 0 and 1 sit at the axes' ends
    ticks = np.array([0.001, 0.01, 0.05, 0.2, 0.5, 0.8, 0.95])
    fig, ax = plt.subplots(figsize=(5.5, 5))
    for name, curve in table.groupby("curve", sort=False):
        fa = norm.ppf(np.clip(curve["false_alarm_rate"].to_numpy(float), eps, 1 - eps))
        miss = norm.ppf(np.clip(curve["miss_rate"].to_numpy(float), eps, 1 - eps))
        ax.plot(fa, miss, label=name)
        i = int(np.argmin(np.abs(curve["miss_rate"].to_numpy(float) - curve["false_alarm_rate"].to_numpy(float))))
        ax.plot(fa[i], miss[i], "o", color=ax.lines[-1].get_color())
    ax.plot(norm.ppf([eps, 1 - eps]), norm.ppf([eps, 1 - eps]), ":", color="grey", linewidth=0.8)
    ax.set_xticks(norm.ppf(ticks), [f"{t:g}" for t in ticks * 100])
    ax.set_yticks(norm.ppf(ticks), [f"{t:g}" for t in ticks * 100])
    ax.set_xlim(norm.ppf(eps), norm.ppf(1 - eps))
    ax.set_ylim(norm.ppf(eps), norm.ppf(1 - eps))
    ax.set_xlabel("false alarm rate (%)")
    ax.set_ylabel("miss rate (%)")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="upper right", fontsize=8)
    if title:
        ax.set_title(title)
    atomic_savefig(fig, path)
