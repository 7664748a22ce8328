"""MFCC / LFCC statistics + SVM (or gradient boosting): the classical attribution baseline.

The approach seeds/000 attributes to Bird et al.: summary statistics of cepstral coefficients per clip, fed to
a kernel SVM. It is trained on the same training split as the CNNs and scored by the same `voxtrace evaluate`,
so the two are compared side by side.
"""

from __future__ import annotations

import functools

import librosa
import numpy as np
import scipy.fft
from joblib import Parallel, delayed
from sklearn.calibration import CalibratedClassifierCV
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC

from voxtrace.data.audio import AudioError, load_audio

N_FFT = 512
HOP = 160
N_FILTERS = 40
N_CEPS = 20
DELTA_WIDTH = 3  # regression deltas over one frame each side: (c[t+1] - c[t-1]) / 2


@functools.lru_cache(maxsize=4)
def filterbanks(sample_rate: int) -> tuple[np.ndarray, np.ndarray]:
    """Unnormalised triangular filterbanks [N_FILTERS, N_FFT // 2 + 1]: HTK mel (librosa) and linear bands.

    The linear bands are written here rather than taken from `voxtrace.features`, which would load
    TensorFlow into every feature-extraction worker.
    """
    mel = librosa.filters.mel(sr=sample_rate, n_fft=N_FFT, n_mels=N_FILTERS, fmin=0.0, htk=True, norm=None)
    edges = np.linspace(0.0, sample_rate / 2, N_FILTERS + 2)
    bins = np.fft.rfftfreq(N_FFT, 1.0 / sample_rate)
    linear = np.stack([np.interp(bins, edges[i : i + 3], [0.0, 1.0, 0.0]) for i in range(N_FILTERS)])
    return mel, linear


def cepstral_statistics(wave: np.ndarray, sample_rate: int = 16000) -> np.ndarray:
    """Mean and std of MFCC, LFCC and their deltas over time: one fixed-length vector per clip."""
    if len(wave) < N_FFT:
        wave = np.pad(wave, (0, N_FFT - len(wave)))
    power = np.abs(librosa.stft(wave, n_fft=N_FFT, hop_length=HOP, window=np.hanning(N_FFT), center=False)) ** 2
    stats = []
    for bank in filterbanks(sample_rate):
        log_energies = np.log(bank @ power + 1e-10)  # [N_FILTERS, frames]
        ceps = scipy.fft.dct(log_energies, type=2, norm="ortho", axis=0)[:N_CEPS]
        delta = librosa.feature.delta(ceps, width=DELTA_WIDTH, axis=-1, mode="nearest")
        stats += [ceps.mean(1), ceps.std(1), delta.mean(1), delta.std(1)]
    return np.concatenate(stats).astype(np.float32)


def extract_features(paths, sample_rate: int = 16000, jobs: int = -1):
    """Feature matrix for `paths`; rows of files that fail to decode are NaN and their errors returned."""

    def one(path):
        try:
            return cepstral_statistics(load_audio(path, sample_rate=sample_rate), sample_rate), None
        except AudioError as err:
            return None, str(err)

    results = Parallel(n_jobs=jobs)(delayed(one)(p) for p in paths)
    dim = next((len(f) for f, _ in results if f is not None), 8 * N_CEPS)
    feats = np.stack([f if f is not None else np.full(dim, np.nan, np.float32) for f, _ in results])
    errors = {str(p): e for p, (_, e) in zip(paths, results) if e is not None}
    return feats, errors


def make_classifier(kind: str = "svm", seed: int = 0, calibration_folds: int = 5):
    """`svm` (RBF kernel on standardised features, as Bird et al.) or `gbm` (histogram gradient boosting)."""
    if kind == "svm":
        svm = SVC(C=10.0, gamma="scale", random_state=seed)
        calibrated = CalibratedClassifierCV(svm, cv=calibration_folds, ensemble=False)  # Platt-scaled probabilities
        return make_pipeline(StandardScaler(), calibrated)
    if kind == "gbm":
        return HistGradientBoostingClassifier(max_iter=300, learning_rate=0.1, random_state=seed)
    raise ValueError(f"baseline kind must be 'svm' or 'gbm'. Received: kind={kind!r}")


def fit(train_paths, train_labels, kind: str = "svm", seed: int = 0):
    """Train the baseline on `train_paths` with integer labels; files that fail to decode are left out."""
    features, _ = extract_features(train_paths)
    keep = ~np.isnan(features).any(axis=1)
    labels = np.asarray(train_labels)[keep]
    smallest = int(np.unique(labels, return_counts=True)[1].min()) if len(labels) else 0
    if smallest < 2:
        raise ValueError(f"the classical baseline needs two or more decodable training clips per class; the "
                         f"smallest class has {smallest}")
    return make_classifier(kind, seed, calibration_folds=min(5, smallest)).fit(features[keep], labels)


def predict_proba(model, paths, num_classes: int):
    """Class probabilities [n, num_classes] of `paths` (NaN rows for files that fail to decode) and the errors."""
    features, errors = extract_features(paths)
    probs = np.full((len(paths), num_classes), np.nan, np.float32)
    ok = ~np.isnan(features).any(axis=1)
    if ok.any():
        probs[ok] = 0.0
        probs[np.ix_(ok, model.classes_)] = model.predict_proba(features[ok])
    return probs, errors
