"""A PNG grid of a batch of (augmented) spectrogram images, to check what the model sees."""

from __future__ import annotations

import math
import os

import numpy as np

from voxtrace.io import atomic_savefig


def plot_spec_batch(images, labels, class_names, path: str | os.PathLike, max_images: int = 16, cols: int = 4):
    """Save `images` [B, H, W, C] with their `labels` ([B, C] one-hot/soft, or [B] ids) as a PNG grid at `path`.

    Each panel shows channel 0 (frequency upwards) titled with the top class and its weight.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    images = np.asarray(images)
    if images.ndim != 4:
        raise ValueError(f"images must be [B, H, W, C]. Received shape {images.shape}")
    labels = np.asarray(labels)
    count = min(len(images), max_images)
    cols = min(cols, count)
    rows = math.ceil(count / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 2.4 * rows), squeeze=False)
    for k, ax in enumerate(axes.flat):
        ax.axis("off")
        if k >= count:
            continue
        ax.imshow(images[k, :, :, 0], origin="lower", aspect="auto", cmap="magma")
        if labels.ndim == 2:
            top = int(np.argmax(labels[k]))
            title = f"{class_names[top]} ({labels[k, top]:.2f})"
        else:
            title = str(class_names[int(labels[k])])
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    atomic_savefig(fig, path)
