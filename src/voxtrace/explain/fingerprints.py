"""Generator fingerprints: the mean log-spectrum of each class.

Every generator leaves a stable trace in the frequency domain (a vocoder's spectral spikes, a band limit, a
codec's cut-off). Averaging the STFT magnitude in dB over the frames of a clip and then over every clip of a
class cancels the speech content and keeps that trace (Gasenzer & Wolter, "Towards generalizing deep-audio
fake detection networks", 2024).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

_AMIN = 1e-10


@dataclass
class Fingerprints:
    """`mean_db[k]` is the mean log-spectrum (dB) of class `classes[k]` over `counts[k]` clips."""

    freqs_hz: np.ndarray
    classes: list[str]
    mean_db: np.ndarray
    counts: list[int]
    errors: dict[str, str] = field(default_factory=dict)

    def to_frame(self) -> pd.DataFrame:
        """One row per frequency bin, one column per class."""
        frame = pd.DataFrame(self.mean_db.T, columns=self.classes)
        frame.insert(0, "freq_hz", self.freqs_hz)
        return frame


def labelled_files(data_dir: str | os.PathLike, classes: list[str], labels_csv: str | os.PathLike | None = None):
    """`(paths, labels, class_order)` of the labelled clips of `data_dir`.

    With a labels CSV (`track,algorithm`, the SP Cup layout: `algorithm` a class id into `classes` or a
    name, `track` a file in `data_dir`) its labelled rows are used; without one, each sub-folder of
    `data_dir` is a class (`voxtrace.data.manifest.read_folder_per_class`). `class_order` follows `classes`
    where it names every label found, else sorts them.
    """
    from voxtrace.data.manifest import read_folder_per_class, read_track_labels

    data_dir = Path(data_dir)
    if labels_csv is None:
        frame = read_folder_per_class(data_dir, check=False)
    else:
        frame = read_track_labels(labels_csv, data_dir, classes)
    frame = frame.dropna(subset=["label"])
    if frame.empty:
        raise FileNotFoundError(f"no labelled audio under {data_dir} (labels: {labels_csv or 'one sub-folder per class'})")
    found = set(frame["label"])
    order = [c for c in classes if c in found] if found <= set(classes) else sorted(found)
    return [Path(p) for p in frame["path"]], list(frame["label"]), order


def mean_log_spectrum(x: np.ndarray, n_fft: int = 512, hop_length: int = 128) -> np.ndarray:
    """STFT magnitude of one clip in dB (20 log10 |X|), averaged over its frames: `[n_fft // 2 + 1]`."""
    import tensorflow as tf

    from voxtrace.features.frontends import power_spectrogram

    power = power_spectrogram(tf.constant(x[None], tf.float32), n_fft, n_fft, hop_length)[0].numpy()  # [frames, F]
    return (10.0 * np.log10(np.maximum(power, _AMIN))).mean(axis=0)


def class_fingerprints(paths, labels, classes: list[str], sample_rate: int = 16000, n_fft: int = 512,
                       hop_length: int = 128, progress: bool = True) -> Fingerprints:
    """Mean log-spectrum per class over `paths`; unreadable files are reported in `errors` and skipped."""
    from tqdm.auto import tqdm

    from voxtrace.data.audio import load_audio

    sums = np.zeros((len(classes), n_fft // 2 + 1))
    counts = np.zeros(len(classes), dtype=int)
    errors = {}
    index = {name: k for k, name in enumerate(classes)}
    for path, label in tqdm(list(zip(paths, labels)), desc="fingerprints", unit="file", disable=not progress):
        try:
            x = load_audio(path, sample_rate=sample_rate)
        except (ValueError, OSError) as err:
            errors[str(path)] = str(err)
            continue
        if len(x) < n_fft:
            x = np.pad(x, (0, n_fft - len(x)))
        sums[index[label]] += mean_log_spectrum(x, n_fft, hop_length)
        counts[index[label]] += 1
    present = [k for k in range(len(classes)) if counts[k]]
    if not present:
        raise ValueError(f"no readable clip among {len(paths)} files; errors: {list(errors.values())[:3]}")
    freqs = np.linspace(0.0, sample_rate / 2.0, n_fft // 2 + 1)
    return Fingerprints(
        freqs_hz=freqs,
        classes=[classes[k] for k in present],
        mean_db=sums[present] / counts[present, None],
        counts=[int(counts[k]) for k in present],
        errors=errors,
    )
