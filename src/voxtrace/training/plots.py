"""Training curves and the learning-rate schedule as PNG files."""

from __future__ import annotations

import keras
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from voxtrace.io import atomic_savefig  # noqa: E402
from voxtrace.training.schedules import build_schedule  # noqa: E402


def plot_lr_schedule(cfg, steps_per_epoch: int, path) -> np.ndarray:
    """Plot the per-step learning rate of `cfg.train` over all epochs; return the rates."""
    schedule = build_schedule(cfg, steps_per_epoch)
    steps = np.arange(cfg.train.epochs * steps_per_epoch)
    rates = keras.ops.convert_to_numpy(schedule(steps))
    fig, ax = plt.subplots(figsize=(8, 4))
    ax.plot(steps / steps_per_epoch, rates)
    ax.set_xlabel("epoch")
    ax.set_ylabel("learning rate")
    ax.set_title(f"{cfg.train.scheduler} schedule, global batch {cfg.train.batch_size}")
    ax.grid(alpha=0.3)
    atomic_savefig(fig, path)
    return rates


def plot_history(history, path, title: str | None = None) -> None:
    """Plot loss, accuracy / macro F1 and learning rate per epoch from a history table (CSVLogger columns)."""
    panels = [("loss", ["loss", "val_loss"]), ("score", ["acc", "val_acc", "val_f1"]), ("learning rate", ["lr"])]
    panels = [(name, [k for k in keys if k in history]) for name, keys in panels]
    panels = [(name, keys) for name, keys in panels if keys]
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.8), squeeze=False)
    epochs = np.asarray(history["epoch"]) + 1
    for ax, (name, keys) in zip(axes[0], panels):
        for key in keys:
            ax.plot(epochs, history[key], marker="o", label=key)
        ax.set_xlabel("epoch")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    atomic_savefig(fig, path)
