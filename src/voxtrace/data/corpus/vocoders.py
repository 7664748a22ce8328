"""Generators of the `unknown` class that are not human speech: vocoders resynthesising human recordings.

`unknown` means "none of the known generators", so the demo corpus teaches it with synthetic speech too, and
holds some generators out of training entirely to measure what the model does on a generator it never saw:

| vocoder | method | split |
|---|---|---|
| griffinlim | magnitude STFT, phase estimated by Griffin-Lim | train and eval parts 1-2 |
| lpc | source-filter: LPC envelope over a pulse / noise excitation from the clip's pitch track | train and eval parts 1-2 |
| phasevocoder | phase-vocoder time stretch there and back (phasiness, smeared transients) | train and eval parts 1-2 |
| world | WORLD analysis-synthesis (F0, spectral envelope, aperiodicity), pitch shifted (PyPI pyworld) | eval part 3 only |
| codec2 | Codec 2, a sinusoidal speech vocoder at 700-3200 bit/s (Debian ffmpeg's libcodec2) | eval part 3 only |

Each takes (x, rng, sample_rate) and returns (waveform of the same length, description for metadata.csv).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from voxtrace.data import perturb


def griffin_lim(x: np.ndarray, rng, sample_rate: int) -> tuple[np.ndarray, str]:
    """Resynthesise from the magnitude spectrogram alone: the phase is Griffin-Lim's estimate."""
    import librosa

    n_fft = int(rng.choice([512, 1024]))
    n_iter = int(rng.choice([16, 32, 64]))
    magnitude = np.abs(librosa.stft(x, n_fft=n_fft, hop_length=n_fft // 4))
    y = librosa.griffinlim(magnitude, n_iter=n_iter, hop_length=n_fft // 4, n_fft=n_fft, length=len(x),
                           init="random", random_state=int(rng.integers(2**31 - 1)))
    return y.astype(np.float32), f"griffinlim(n_fft={n_fft},iter={n_iter})"


def lpc_vocoder(x: np.ndarray, rng, sample_rate: int) -> tuple[np.ndarray, str]:
    """Source-filter resynthesis: per 25 ms frame an LPC envelope excited by a pulse train at the frame's
    pitch (voiced) or white noise (unvoiced), gain-matched to the LPC residual, overlap-added."""
    import librosa
    from scipy import signal

    order = int(rng.choice([12, 16, 20]))
    frame, hop = int(0.025 * sample_rate), int(0.01 * sample_rate)
    padded = np.pad(x, (frame, frame))
    f0, voiced = _pitch(padded, sample_rate, hop, frame)
    window = np.hanning(frame).astype(np.float32)
    y = np.zeros(len(padded) + frame, np.float32)
    phase = 0.0
    for i in range(min(len(f0), (len(padded) - frame) // hop + 1)):
        start = i * hop
        chunk = padded[start: start + frame] * window
        if not np.any(chunk):
            continue
        a = _stable(librosa.lpc(chunk.astype(np.float64) + 1e-9 * rng.standard_normal(frame), order=order))
        residual_rms = np.sqrt(np.mean(signal.lfilter(a, [1.0], chunk) ** 2))
        if voiced[i]:
            period = sample_rate / f0[i]
            excitation = np.zeros(frame, np.float32)
            pulses = np.arange(phase, frame, period)
            excitation[pulses.astype(int)] = np.sqrt(period)
            phase = (pulses[-1] + period - hop) if len(pulses) else phase - hop
            phase = max(phase, 0.0)
        else:
            excitation = rng.standard_normal(frame).astype(np.float32)
        y[start: start + frame] += signal.lfilter([residual_rms], a, excitation).astype(np.float32) * window
    y = y[frame: frame + len(x)]
    return _match_rms(y, x), f"lpc(order={order})"


def phase_vocoder(x: np.ndarray, rng, sample_rate: int) -> tuple[np.ndarray, str]:
    """Time-stretch by a factor and back with a phase vocoder: the envelope stays, the phase coherence goes."""
    import librosa

    rate = float(rng.uniform(0.6, 0.85))
    n_fft = int(rng.choice([512, 1024]))
    stft = librosa.stft(x, n_fft=n_fft, hop_length=n_fft // 4)
    there = librosa.phase_vocoder(stft, rate=rate, hop_length=n_fft // 4)
    back = librosa.phase_vocoder(there, rate=1 / rate, hop_length=n_fft // 4)
    y = librosa.istft(back, hop_length=n_fft // 4, n_fft=n_fft, length=len(x))
    return _match_rms(y.astype(np.float32), x), f"phasevocoder(rate={rate:.2f},n_fft={n_fft})"


def world_vocoder(x: np.ndarray, rng, sample_rate: int) -> tuple[np.ndarray, str]:
    """WORLD analysis-synthesis with the pitch shifted by -3..+3 semitones (PyPI package pyworld)."""
    try:
        import pyworld
    except ImportError:
        raise RuntimeError("the WORLD vocoder needs the PyPI package pyworld (pip install 'voxtrace[corpus]')") from None
    semitones = float(rng.uniform(-3.0, 3.0))
    signal64 = x.astype(np.float64)
    f0, sp, ap = pyworld.wav2world(signal64, sample_rate, frame_period=5.0)
    y = pyworld.synthesize(f0 * 2 ** (semitones / 12), sp, ap, sample_rate, frame_period=5.0)
    return _match_rms(perturb._fit(y.astype(np.float32), len(x)), x), f"world(pitch={semitones:+.1f}st)"


def codec2_vocoder(x: np.ndarray, rng, sample_rate: int) -> tuple[np.ndarray, str]:
    """Codec 2 at 1200-3200 bit/s: sinusoidal analysis-synthesis of the speech at 8 kHz."""
    mode = int(rng.choice([1200, 1300, 1600, 2400, 3200]))
    return _match_rms(perturb.codec_roundtrip(x, "codec2", sample_rate, mode), x), f"codec2(mode={mode})"


TRAIN_VOCODERS: dict[str, Callable] = {"griffinlim": griffin_lim, "lpc": lpc_vocoder, "phasevocoder": phase_vocoder}
HELD_OUT_VOCODERS: dict[str, Callable] = {"world": world_vocoder, "codec2": codec2_vocoder}
VOCODERS = {**TRAIN_VOCODERS, **HELD_OUT_VOCODERS}
VOCODER_PACKAGES = {"world": "pyworld (PyPI)", "codec2": "ffmpeg (Debian, with libcodec2)"}


def available_vocoders(names) -> list[str]:
    """The vocoders of `names` that run on this machine (each tried on a 0.5 s tone)."""
    rng = np.random.default_rng(0)
    probe = (0.1 * np.sin(np.arange(8000) * 0.07)).astype(np.float32)
    found = []
    for name in names:
        try:
            VOCODERS[name](probe, rng, 16000)
            found.append(name)
        except (RuntimeError, OSError):
            continue
    return found


def _pitch(x: np.ndarray, sample_rate: int, hop: int, frame: int):
    """Per-frame F0 (Hz) and a voicing decision from librosa's YIN and the frame energy."""
    import librosa

    f0 = librosa.yin(x, fmin=60, fmax=400, sr=sample_rate, frame_length=max(frame * 2, 1024), hop_length=hop,
                     center=False)
    energy = np.array([np.mean(x[i * hop: i * hop + frame] ** 2) for i in range(len(f0))])
    zcr = librosa.feature.zero_crossing_rate(x, frame_length=frame, hop_length=hop, center=False)[0]
    zcr = np.pad(zcr, (0, max(0, len(f0) - len(zcr))), constant_values=1.0)[: len(f0)]
    voiced = (energy > 0.05 * np.median(energy[energy > 0]) if np.any(energy > 0) else energy > 0) & (zcr < 0.25)
    return f0, voiced


def _stable(a: np.ndarray) -> np.ndarray:
    """An all-pole filter `1 / a` made stable: poles on or outside the unit circle are reflected inside
    (the magnitude response keeps its shape); a stable filter is returned as it is."""
    roots = np.roots(a)
    outside = np.abs(roots) >= 1.0
    if not outside.any():
        return a
    roots[outside] = 1.0 / np.conj(roots[outside])
    magnitude = np.abs(roots)
    roots = np.where(magnitude > 0.999, roots * 0.999 / np.maximum(magnitude, 1e-12), roots)
    return np.real(np.poly(roots)) * a[0]


def _match_rms(y: np.ndarray, reference: np.ndarray) -> np.ndarray:
    gain = perturb._rms(reference) / max(perturb._rms(y), 1e-12)
    return (y * gain).astype(np.float32)
