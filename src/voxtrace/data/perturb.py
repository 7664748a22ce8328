"""Channel and voice perturbations of a waveform, as pure numpy functions.

Channel perturbations imitate what happens to a clip between the generator and the listener (noise, room,
codecs, telephone, band limits, resampling); voice perturbations change the speaker but keep the synthesis
method (pitch, speed, vocal-tract length). `CHANNEL_FAMILIES` names the channel families (telephone lines,
speech and audio codecs through ffmpeg, rooms, noise, clipping, packet loss, hum); the demo corpus splits them
between its train split and its held-out channel part, and train-time augmentation calls the training ones
through `tf.numpy_function`.

Every function takes and returns a 1-D float32 waveform of the SAME length (shape-preserving), and every
random choice comes from an explicit `rng: np.random.Generator`, so a seed reproduces a perturbation.
"""

from __future__ import annotations

import io
import math
import subprocess
from collections.abc import Callable

import numpy as np
import soxr
from scipy import signal

NOISE_COLORS = ("white", "pink", "brown")
TRAIN_NOISE_COLORS = ("white", "pink")  # brown noise is one of the held-out channel families
LAME_BITRATES = (8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160, 192, 224, 256, 320)
_LAME_RATES = (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000)


def _as_wave(x) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 1:
        raise ValueError(f"expected a 1-D waveform. Received: shape={x.shape}")
    return x


def _fit(y: np.ndarray, n: int) -> np.ndarray:
    """Crop or zero-pad `y` to `n` samples, as float32."""
    y = np.asarray(y, dtype=np.float32)
    if len(y) >= n:
        return np.ascontiguousarray(y[:n])
    return np.pad(y, (0, n - len(y)))


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64)))) if x.size else 0.0


def _resample(x: np.ndarray, rate_in: float, rate_out: float) -> np.ndarray:
    if rate_in == rate_out:
        return x
    return soxr.resample(x, rate_in, rate_out, quality="HQ").astype(np.float32, copy=False)


# ---- channel ------------------------------------------------------------------------------------------------
def colored_noise(n: int, rng: np.random.Generator, color: str = "white") -> np.ndarray:
    """Unit-RMS noise whose power falls as 1/f^0 (white), 1/f (pink) or 1/f^2 (brown)."""
    if color not in NOISE_COLORS:
        raise ValueError(f"color must be one of {NOISE_COLORS}. Received: color={color!r}")
    white = rng.standard_normal(n)
    if color != "white" and n > 1:
        spectrum = np.fft.rfft(white)
        freqs = np.arange(len(spectrum), dtype=np.float64)
        freqs[0] = 1.0
        spectrum /= freqs ** (0.5 if color == "pink" else 1.0)
        white = np.fft.irfft(spectrum, n)
    rms = _rms(white)
    return (white / rms if rms > 0 else white).astype(np.float32)


def add_noise(x, snr_db: float, rng: np.random.Generator, color: str = "white") -> np.ndarray:
    """Add white, pink or brown noise at `snr_db` relative to the clip's power (digital silence stays silent)."""
    x = _as_wave(x)
    noise = colored_noise(len(x), rng, color)
    return (x + noise * (_rms(x) * 10 ** (-snr_db / 20))).astype(np.float32)


def room_impulse_response(rng: np.random.Generator, sample_rate: int = 16000, rt60: float = 0.5) -> np.ndarray:
    """A synthetic RIR: direct path, sparse early reflections and an exponentially decaying noise tail.

    The tail decays by 60 dB after `rt60` seconds; the response has unit energy.
    """
    n = max(2, int(rt60 * sample_rate))
    t = np.arange(n) / sample_rate
    tail = rng.standard_normal(n) * np.exp(-6.9078 * t / rt60)
    pre_delay = int(rng.uniform(0.002, 0.01) * sample_rate)
    tail[: pre_delay + 1] = 0.0
    early = rng.integers(pre_delay + 1, max(pre_delay + 2, min(n, int(0.05 * sample_rate))), size=6)
    tail[early] += rng.uniform(-0.6, 0.6, size=early.size)
    tail *= rng.uniform(0.3, 1.0) / max(_rms(tail) * math.sqrt(n), 1e-12)  # direct-to-reverberant ratio
    tail[0] = 1.0
    return (tail / np.sqrt(np.sum(np.square(tail)))).astype(np.float32)


def reverberate(x, rng: np.random.Generator, sample_rate: int = 16000, rt60=(0.2, 0.8)) -> np.ndarray:
    """Convolve with a synthetic room (RT60 drawn from the `rt60` range, or fixed if a number), same RMS out."""
    x = _as_wave(x)
    low, high = (rt60, rt60) if np.isscalar(rt60) else rt60
    rir = room_impulse_response(rng, sample_rate, float(rng.uniform(low, high)))
    y = signal.fftconvolve(x, rir)[: len(x)]
    rms_in, rms_out = _rms(x), _rms(y)
    return (y * (rms_in / rms_out) if rms_out > 0 else y).astype(np.float32)


def mp3_roundtrip(x, bitrate_kbps: float, sample_rate: int = 16000) -> np.ndarray:
    """Encode to MP3 with LAME (CBR) and decode back.

    LAME's lowest bitrate is 8 kbps, so requests below it (the SP Cup's 6-8 kbps) encode at 8 kbps; other
    bitrates round up to the next one LAME offers. At 8 kbps the clip is encoded at 8 kHz (MPEG-2.5), the
    only rate where that bitrate is legal, and resampled back. Decoding uses soundfile (libsndfile >= 1.1) or
    else ffmpeg. The codec's delay is removed, so the output lines up with the input.
    """
    import lameenc
    import soundfile as sf

    x = _as_wave(x)
    bitrate = next((b for b in LAME_BITRATES if b >= bitrate_kbps), LAME_BITRATES[-1])
    if bitrate <= 8:
        rate = 8000
    elif bitrate <= 64:
        rate = min((r for r in _LAME_RATES if r <= 24000), key=lambda r: abs(r - sample_rate))
    else:
        rate = min(_LAME_RATES, key=lambda r: abs(r - sample_rate))
    coded = _resample(x, sample_rate, rate)
    pcm = (np.clip(coded, -1.0, 1.0) * 32767).astype("<i2")
    encoder = lameenc.Encoder()
    encoder.set_bit_rate(bitrate)
    encoder.set_in_sample_rate(rate)
    encoder.set_out_sample_rate(rate)
    encoder.set_channels(1)
    encoder.set_quality(2)
    data = bytes(encoder.encode(pcm.tobytes())) + bytes(encoder.flush())
    try:
        decoded, decoded_rate = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
        decoded = decoded[:, 0]
    except sf.LibsndfileError:  # libsndfile before 1.1 has no MP3 decoder
        decoded, decoded_rate = _ffmpeg_decode_mp3(data, rate), rate
    decoded = _align(decoded, coded)
    return _fit(_resample(decoded, decoded_rate, sample_rate), len(x))


def _ffmpeg_decode_mp3(data: bytes, rate: int) -> np.ndarray:
    proc = subprocess.run(
        ["ffmpeg", "-nostdin", "-v", "error", "-f", "mp3", "-i", "pipe:0", "-ac", "1", "-ar", str(rate), "-f", "f32le",
         "pipe:1"],
        input=data, capture_output=True, check=True,
    )
    return np.frombuffer(proc.stdout, dtype="<f4").astype(np.float32)


def _align(decoded: np.ndarray, reference: np.ndarray, max_lag: int = 2400) -> np.ndarray:
    """Drop the codec's leading delay by cross-correlating with the input (lags 0..max_lag)."""
    n = min(len(reference), len(decoded), 16000)
    if n < 64 or _rms(reference[:n]) == 0:
        return decoded
    corr = signal.correlate(decoded[: n + max_lag], reference[:n], mode="valid", method="fft")
    lag = int(np.argmax(corr[: max_lag + 1]))
    return decoded[lag:]


def mu_law(x, mu: int = 255) -> np.ndarray:
    """G.711-style mu-law companding with 8-bit quantisation (compress, quantise, expand)."""
    x = np.clip(_as_wave(x), -1.0, 1.0)
    compressed = np.sign(x) * np.log1p(mu * np.abs(x)) / np.log1p(mu)
    quantised = np.round((compressed + 1) / 2 * mu) / mu * 2 - 1
    return (np.sign(quantised) * np.expm1(np.abs(quantised) * np.log1p(mu)) / mu).astype(np.float32)


def bandlimit(x, sample_rate: int, low_hz: float | None, high_hz: float | None, order: int = 6) -> np.ndarray:
    """Butterworth band-pass (or high-pass if `high_hz` is None / at Nyquist, low-pass if `low_hz` is None / 0)."""
    x = _as_wave(x)
    nyquist = sample_rate / 2
    low = low_hz if low_hz and low_hz > 0 else None
    high = high_hz if high_hz and high_hz < nyquist else None
    if low is not None and high is not None and low >= high:
        raise ValueError(f"low_hz must be below high_hz. Received: low_hz={low_hz}, high_hz={high_hz}")
    if low is None and high is None:
        return x.copy()
    if low is not None and high is not None:
        sos = signal.butter(order, [low, high], btype="bandpass", fs=sample_rate, output="sos")
    elif high is not None:
        sos = signal.butter(order, high, btype="lowpass", fs=sample_rate, output="sos")
    else:
        sos = signal.butter(order, low, btype="highpass", fs=sample_rate, output="sos")
    return signal.sosfiltfilt(sos, x).astype(np.float32)


def resample_chain(x, sample_rate: int, via_rates) -> np.ndarray:
    """Resample through each rate of `via_rates` in turn and back to `sample_rate` (loses what each drops)."""
    x = _as_wave(x)
    y, rate = x, sample_rate
    for target in list(via_rates) + [sample_rate]:
        y, rate = _resample(y, rate, target), target
    return _fit(y, len(x))


def telephone(x, sample_rate: int = 16000) -> np.ndarray:
    """A narrow-band phone line: 300-3400 Hz band, 8 kHz sampling and mu-law companding."""
    x = _as_wave(x)
    narrow = _resample(bandlimit(x, sample_rate, 300.0, 3400.0), sample_rate, 8000)
    return _fit(_resample(mu_law(narrow), 8000, sample_rate), len(x))


# ---- voice ----------------------------------------------------------------------------------------------------
def speed(x, factor: float) -> np.ndarray:
    """Play `factor` times faster (tempo and pitch together, like a tape), then crop / zero-pad to the length."""
    x = _as_wave(x)
    if factor <= 0:
        raise ValueError(f"factor must be > 0. Received: factor={factor}")
    return _fit(_resample(x, factor * 1000.0, 1000.0), len(x))


def pitch_shift(x, sample_rate: int, semitones: float) -> np.ndarray:
    """Shift the pitch by `semitones`, keeping the tempo (phase-vocoder stretch, then resampling)."""
    import librosa

    x = _as_wave(x)
    if semitones == 0:
        return x.copy()
    y = librosa.effects.pitch_shift(x, sr=sample_rate, n_steps=float(semitones), res_type="soxr_hq")
    return _fit(y, len(x))


def formant_warp(x, sample_rate: int, alpha: float) -> np.ndarray:
    """Vocal-tract-length warping: stretch the magnitude spectrum's frequency axis by `alpha`, keep the phase.

    `alpha > 1` moves formants up (a shorter vocal tract), `alpha < 1` down; pitch harmonics move too, but
    the duration is unchanged. 32 ms Hann frames, 75 % overlap, weighted overlap-add.
    """
    x = _as_wave(x)
    if alpha <= 0:
        raise ValueError(f"alpha must be > 0. Received: alpha={alpha}")
    if alpha == 1 or len(x) < 8:
        return x.copy()
    size = min(2 ** int(round(math.log2(0.032 * sample_rate))), 2 ** int(math.log2(len(x))))
    hop = size // 4
    window = np.hanning(size + 1)[:size].astype(np.float32)
    padded = np.pad(x, (size, size + (-len(x)) % hop))
    frames = np.lib.stride_tricks.sliding_window_view(padded, size)[::hop] * window
    spec = np.fft.rfft(frames, axis=1)
    bins = spec.shape[1]
    source = np.arange(bins) / alpha
    lower = np.minimum(source.astype(int), bins - 1)
    upper = np.minimum(lower + 1, bins - 1)
    frac = (source - lower).astype(np.float32)
    magnitude = np.abs(spec)
    warped = (1 - frac) * magnitude[:, lower] + frac * magnitude[:, upper]
    warped[:, source > bins - 1] = 0.0
    phase = spec / np.maximum(magnitude, 1e-12)
    out_frames = np.fft.irfft(warped * phase, n=size, axis=1) * window
    y = np.zeros(len(padded), np.float64)
    norm = np.zeros(len(padded), np.float64)
    for i in range(size // hop):  # overlap-add, one strided pass per offset
        chunk = out_frames[i::size // hop].reshape(-1)
        start = i * hop
        y[start: start + len(chunk)] += chunk
        norm[start: start + len(chunk)] += np.tile(window**2, len(out_frames[i::size // hop]))
    y = y / np.maximum(norm, 1e-8)
    return _fit(y[size: size + len(x)], len(x))


# ---- ffmpeg speech and audio codecs ----------------------------------------------------------------------------
# codec -> (coding rate, encoder arguments, demuxer); {kbps} is filled in. All are in Debian's ffmpeg.
FFMPEG_CODECS = {
    "gsm": (8000, ["-c:a", "libgsm", "-f", "gsm"], "gsm"),  # GSM 06.10 full rate, 13 kbps: mobile networks
    "opus": (16000, ["-c:a", "libopus", "-b:a", "{kbps}k", "-f", "ogg"], "ogg"),  # VoIP, messaging apps
    "speex": (16000, ["-c:a", "libspeex", "-b:a", "{kbps}k", "-f", "ogg"], "ogg"),  # older VoIP
    "g726": (8000, ["-c:a", "g726", "-b:a", "{kbps}k", "-f", "wav"], "wav"),  # ADPCM: DECT phones, telephony
    "g722": (16000, ["-c:a", "g722", "-f", "g722"], "g722"),  # wideband ADPCM: HD voice
    "aac": (16000, ["-c:a", "aac", "-b:a", "{kbps}k", "-f", "adts"], "aac"),  # streaming at low bitrates
    "codec2": (8000, ["-c:a", "libcodec2", "-mode", "{kbps}", "-f", "codec2"], "codec2"),  # a speech vocoder
}


def codec_roundtrip(x, codec: str, sample_rate: int = 16000, kbps: float | None = None, timeout_s: float = 60):
    """Encode with ffmpeg's `codec` (a key of FFMPEG_CODECS) at `kbps` and decode back, aligned and same length.

    codec2's `kbps` is its mode (3200, 2400, 1600, 1400, 1300, 1200 bits/s).
    """
    if codec not in FFMPEG_CODECS:
        raise ValueError(f"codec must be one of {sorted(FFMPEG_CODECS)}. Received: codec={codec!r}")
    x = _as_wave(x)
    rate, encode_args, demuxer = FFMPEG_CODECS[codec]
    coded = _resample(x, sample_rate, rate)
    encode_args = [a.format(kbps=int(kbps) if kbps else "") for a in encode_args]
    pcm = ["-f", "f32le", "-ar", str(rate), "-ac", "1"]
    try:
        encoded = subprocess.run(["ffmpeg", "-nostdin", "-v", "error", *pcm, "-i", "pipe:0", *encode_args, "pipe:1"],
                                 input=np.clip(coded, -1, 1).astype("<f4").tobytes(), capture_output=True,
                                 check=True, timeout=timeout_s).stdout
        decoded = subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-f", demuxer, "-i", "pipe:0", *pcm, "pipe:1"],
                                 input=encoded, capture_output=True, check=True, timeout=timeout_s).stdout
    except FileNotFoundError:
        raise RuntimeError("ffmpeg is not installed (Debian package ffmpeg)") from None
    except subprocess.CalledProcessError as err:
        raise RuntimeError(f"ffmpeg could not code with {codec}: {err.stderr.decode(errors='replace')[-200:]}") from None
    y = _align(np.frombuffer(decoded, dtype="<f4").astype(np.float32), coded)
    return _fit(_resample(y, rate, sample_rate), len(x))


def clip_distortion(x, ratio: float) -> np.ndarray:
    """Hard clipping at `ratio` of the peak (an overdriven microphone preamp or sound card)."""
    x = _as_wave(x)
    limit = ratio * float(np.abs(x).max()) if x.size else 0.0
    return np.clip(x, -limit, limit).astype(np.float32) if limit > 0 else x.copy()


def packet_loss(x, rng: np.random.Generator, sample_rate: int = 16000, loss: float = 0.1, frame_s: float = 0.02):
    """Drop `loss` of the 20 ms packets of a VoIP stream, each lost packet filled with silence."""
    x = _as_wave(x).copy()
    frame = max(1, int(frame_s * sample_rate))
    for start in range(0, len(x), frame):
        if rng.random() < loss:
            x[start: start + frame] = 0.0
    return x


def mains_hum(x, rng: np.random.Generator, sample_rate: int = 16000, snr_db: float = 20.0) -> np.ndarray:
    """Add 50 or 60 Hz hum with its odd harmonics (a ground loop) at `snr_db`."""
    x = _as_wave(x)
    base = float(rng.choice([50.0, 60.0]))
    t = np.arange(len(x)) / sample_rate
    hum = sum(np.sin(2 * np.pi * base * k * t + rng.uniform(0, 2 * np.pi)) / k for k in (1, 3, 5, 7))
    hum = hum / max(_rms(hum), 1e-12)
    return (x + hum * _rms(x) * 10 ** (-snr_db / 20)).astype(np.float32)


# ---- channel families -----------------------------------------------------------------------------------------
# Each family draws its parameters from `rng`: (x, rng, sample_rate) -> (y, parameters as text). The families are
# split between training (the demo corpus' train split and train-time augmentation) and the corpus' held-out
# channel part, so that part measures channels no training clip went through.
def _telephone(x, rng, sr):
    return telephone(x, sr), "g711"


def _gsm(x, rng, sr):
    return codec_roundtrip(x, "gsm", sr), "13kbps"


def _bitrate_codec(codec: str, choices):
    def apply(x, rng, sr):
        kbps = int(rng.choice(choices))
        return codec_roundtrip(x, codec, sr, kbps), f"{kbps}kbps"
    return apply


def _mp3(x, rng, sr):
    kbps = int(rng.choice([8, 16, 24, 32]))
    return mp3_roundtrip(x, kbps, sr), f"{kbps}kbps"


def _resample_8k(x, rng, sr):
    return resample_chain(x, sr, (8000,)), "8kHz"


def _reverb(x, rng, sr):
    rt60 = float(rng.uniform(0.2, 0.8))
    return reverberate(x, rng, sr, rt60=rt60), f"rt60={rt60:.2f}s"


def _noise(x, rng, sr):
    color, snr = str(rng.choice(TRAIN_NOISE_COLORS)), float(rng.uniform(10.0, 30.0))
    return add_noise(x, snr, rng, color=color), f"{color},{snr:.1f}dB"


def _g722(x, rng, sr):
    return codec_roundtrip(x, "g722", sr), "64kbps"


def _clip(x, rng, sr):
    ratio = float(rng.uniform(0.15, 0.5))
    return clip_distortion(x, ratio), f"{ratio:.2f}"


def _packet_loss(x, rng, sr):
    loss = float(rng.uniform(0.03, 0.15))
    return packet_loss(x, rng, sr, loss), f"{loss:.2f}"


def _hum(x, rng, sr):
    snr = float(rng.uniform(10.0, 25.0))
    return mains_hum(x, rng, sr, snr), f"{snr:.1f}dB"


def _brown_noise(x, rng, sr):
    snr = float(rng.uniform(5.0, 20.0))
    return add_noise(x, snr, rng, color="brown"), f"{snr:.1f}dB"


CHANNEL_FAMILIES: dict[str, Callable] = {
    # training
    "telephone": _telephone, "gsm": _gsm, "opus": _bitrate_codec("opus", [6, 8, 12, 16]), "mp3": _mp3,
    "resample": _resample_8k, "reverb": _reverb, "noise": _noise,
    # held out
    "speex": _bitrate_codec("speex", [8, 11, 15]), "g726": _bitrate_codec("g726", [16, 24, 32]), "g722": _g722,
    "aac": _bitrate_codec("aac", [12, 16, 24]), "clip": _clip, "packetloss": _packet_loss, "hum": _hum,
    "brown_noise": _brown_noise,
}
TRAIN_CODECS = ("telephone", "gsm", "opus", "mp3", "resample")  # codecs and lines of the train split
TRAIN_ROOMS = ("reverb", "noise")
HELD_OUT_CODECS = ("speex", "g726", "g722", "aac")
HELD_OUT_IMPAIRMENTS = ("clip", "packetloss", "hum", "brown_noise")


def apply_channels(x, families, rng: np.random.Generator, sample_rate: int = 16000) -> tuple[np.ndarray, list[str]]:
    """Apply the named channel families in order; returns the clip (peaks under 0.99) and what each applied."""
    y, applied = _as_wave(x), []
    for name in families:
        y, params = CHANNEL_FAMILIES[name](y, rng, sample_rate)
        applied.append(f"{name}({params})")
    peak = float(np.abs(y).max()) if y.size else 0.0
    return (y * (0.99 / peak) if peak > 0.99 else y).astype(np.float32), applied
