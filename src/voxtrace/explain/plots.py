"""Figures of the explanations: spectrograms, saliency overlays and generator fingerprints.

Every function returns a `matplotlib.figure.Figure` built without pyplot's global state, so the web app
can draw from several threads at once; `figure_png` renders one to PNG bytes and `voxtrace.io.atomic_savefig`
writes one to disk.
"""

from __future__ import annotations

import io

import numpy as np
from matplotlib.figure import Figure

METHOD_TITLES = {"ig": "integrated gradients", "gradcam": "Grad-CAM"}


def figure_png(fig: Figure, dpi: int = 100) -> bytes:
    """The figure as PNG bytes."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    return buffer.getvalue()


def spectrogram_figure(db: np.ndarray, duration_s: float, fmax_hz: float, title: str = "log-mel spectrogram") -> Figure:
    """A `[mels, frames]` dB spectrogram over `duration_s` seconds (mel bands up to `fmax_hz`)."""
    fig = Figure(figsize=(8, 3))
    ax = fig.add_subplot()
    im = ax.imshow(db, origin="lower", aspect="auto", cmap="magma", extent=[0, duration_s, 0, db.shape[0]])
    ax.set_xlabel("time (s)")
    ax.set_ylabel(f"mel band (0-{fmax_hz / 1000:g} kHz)")
    ax.set_title(title)
    fig.colorbar(im, ax=ax, label="dB")
    return fig


def saliency_figure(image: np.ndarray, maps: dict[str, np.ndarray], title: str, alpha: float = 0.55) -> Figure:
    """The model's input image `[H, W]` (frequency upwards) and one overlay panel per saliency map in [0, 1]."""
    panels = 1 + len(maps)
    fig = Figure(figsize=(7, 2.2 * panels))
    axes = fig.subplots(panels, 1, squeeze=False)[:, 0]
    axes[0].imshow(image, origin="lower", aspect="auto", cmap="gray")
    axes[0].set_title(title, fontsize=10)
    for ax, (method, heat) in zip(axes[1:], maps.items()):
        ax.imshow(image, origin="lower", aspect="auto", cmap="gray")
        shown = ax.imshow(heat, origin="lower", aspect="auto", cmap="inferno", alpha=alpha, vmin=0.0, vmax=1.0)
        ax.set_title(METHOD_TITLES.get(method, method), fontsize=10)
        fig.colorbar(shown, ax=ax, label="saliency")
    for ax in axes:
        ax.set_xlabel("frame")
        ax.set_ylabel("frequency bin")
    fig.tight_layout()
    return fig


def fingerprints_figure(freqs_hz: np.ndarray, mean_db: np.ndarray, classes: list[str], counts: list[int]) -> Figure:
    """Mean log-spectrum per class (top) and each class minus the mean over classes (bottom)."""
    fig = Figure(figsize=(9, 7))
    top, bottom = fig.subplots(2, 1, sharex=True)
    khz = np.asarray(freqs_hz) / 1000.0
    deviation = mean_db - mean_db.mean(axis=0, keepdims=True)
    for name, count, row, dev in zip(classes, counts, mean_db, deviation):
        top.plot(khz, row, linewidth=1.0, label=f"{name} (n={count})")
        bottom.plot(khz, dev, linewidth=1.0)
    top.set_ylabel("mean log-spectrum (dB)")
    top.set_title("generator fingerprints: STFT magnitude averaged over time and clips")
    top.legend(fontsize=8, ncol=2)
    bottom.axhline(0.0, color="black", linewidth=0.5)
    bottom.set_ylabel("minus the class mean (dB)")
    bottom.set_xlabel("frequency (kHz)")
    for ax in (top, bottom):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig
