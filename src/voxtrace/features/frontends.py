"""Front-ends: Keras layers that map float32 waveforms [B, N] to float32 images [B, H, W, 3].

Every front-end computes a time-frequency representation [B, F, T] with TF ops (so it runs in the graph
and on GPU), resizes it to the image size, normalizes each sample and repeats it to 3 channels, as the
reference feeds ImageNet-style backbones. `spectrogram_db` / `features` give the representation before
resizing, which is what the tests compare against librosa.
"""

from __future__ import annotations

import math

import keras
import numpy as np
import tensorflow as tf

# The `wavelet` front-end's wavelets (orthogonal: the packets keep the signal's energy); PyWavelets has the filters.
from voxtrace.vocabulary import FEATURE_NORMS, WAVELETS
from voxtrace.vocabulary import STFT_WINDOWS as WINDOWS

NORMALIZATIONS = FEATURE_NORMS + (None,)  # None: the dB image as it is
_AMIN = 1e-10

# ---- filterbanks (numpy, computed once per layer) ------------------------------------------------------
def hz_to_mel(freqs):
    """Slaney mel scale: linear below 1 kHz, logarithmic above (librosa's htk=False)."""
    freqs = np.asarray(freqs, dtype=np.float64)
    f_sp = 200.0 / 3
    min_log_hz, min_log_mel, logstep = 1000.0, 1000.0 / f_sp, math.log(6.4) / 27.0
    mels = freqs / f_sp
    log_region = freqs >= min_log_hz
    return np.where(log_region, min_log_mel + np.log(np.maximum(freqs, min_log_hz) / min_log_hz) / logstep, mels)


def mel_to_hz(mels):
    mels = np.asarray(mels, dtype=np.float64)
    f_sp = 200.0 / 3
    min_log_hz, min_log_mel, logstep = 1000.0, 1000.0 / f_sp, math.log(6.4) / 27.0
    freqs = f_sp * mels
    log_region = mels >= min_log_mel
    return np.where(log_region, min_log_hz * np.exp(logstep * (mels - min_log_mel)), freqs)


def triangular_filterbank(edges_hz, sample_rate, n_fft, area_norm=True):
    """Triangles between consecutive `edges_hz` (n_filters + 2 values) over the rfft bins: [n_bins, n_filters].

    With `area_norm` each triangle is scaled to constant energy per band (Slaney normalization).
    """
    bins_hz = np.linspace(0.0, sample_rate / 2.0, n_fft // 2 + 1)
    widths = np.diff(edges_hz)
    ramps = edges_hz[:, None] - bins_hz[None, :]
    lower = -ramps[:-2] / widths[:-1, None]
    upper = ramps[2:] / widths[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))
    if area_norm:
        weights *= (2.0 / (edges_hz[2:] - edges_hz[:-2]))[:, None]
    return weights.T.astype(np.float32)


def mel_filterbank(sample_rate, n_fft, n_mels, fmin, fmax):
    """Slaney-style mel filterbank [n_bins, n_mels], equal to librosa.filters.mel(htk=False, norm='slaney')."""
    edges = mel_to_hz(np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_mels + 2))
    return triangular_filterbank(edges, sample_rate, n_fft)


def linear_filterbank(sample_rate, n_fft, n_filters, fmin, fmax):
    """Linearly spaced triangular filterbank [n_bins, n_filters] (the LFCC front-end's bands)."""
    return triangular_filterbank(np.linspace(fmin, fmax, n_filters + 2), sample_rate, n_fft)


# ---- shared TF helpers ----------------------------------------------------------------------------------
def auto_hop_length(num_samples, width):
    """Hop so that a centred STFT of `num_samples` has at most `width` frames (then resized to exactly W)."""
    return max(1, int(math.ceil(num_samples / max(1, width - 1))))


def windowed_frames(x, window: np.ndarray, hop_length: int):
    """Overlapping frames of [B, N] (static N) times `window`: [B, T, len(window)], T = 1 + (N - len) // hop.

    Cut as hop-sized blocks, each multiplied by its slice of the window and concatenated straight to the
    frame length: one pass over the frames, several times faster on CPU than `tf.signal.frame` when the hop
    shares no large factor with the frame length.
    """
    frame_length, n = len(window), x.shape[-1]
    per_frame = -(-frame_length // hop_length)
    if per_frame > 32:
        return tf.signal.frame(x, frame_length, hop_length) * window
    frames = 1 + (n - frame_length) // hop_length
    need = (frames - 1 + per_frame) * hop_length
    x = tf.pad(x, [[0, 0], [0, max(0, need - n)]])[:, :need]
    blocks = tf.reshape(x, [-1, need // hop_length, hop_length])
    parts = []
    for k in range(per_frame):
        start, stop = k * hop_length, min((k + 1) * hop_length, frame_length)
        parts.append(blocks[:, k : k + frames, : stop - start] * window[start:stop])
    return tf.concat(parts, axis=2)


def stft_window(window, win_length, n_fft):
    """The periodic `window` of `win_length` samples centred in `n_fft` zeros (as librosa), float32."""
    phase = 2 * np.pi * np.arange(win_length) / win_length
    shape = {"hann": 0.5 - 0.5 * np.cos(phase), "hamming": 0.54 - 0.46 * np.cos(phase)}[window]
    left = (n_fft - win_length) // 2
    return np.pad(shape, (left, n_fft - win_length - left)).astype(np.float32)


def power_spectrogram(x, n_fft, win_length, hop_length, window="hann"):
    """|STFT|^2 of [B, N] as [B, frames, n_fft // 2 + 1]; centred frames with zero padding, like librosa."""
    x = tf.pad(x, [[0, 0], [n_fft // 2, n_fft // 2]])
    stft = tf.signal.rfft(windowed_frames(x, stft_window(window, win_length, n_fft), hop_length), [n_fft])
    return tf.math.square(tf.math.abs(stft))  # |.| (ComplexAbs) keeps the graph convertible to ONNX by tf2onnx


def frequency_band(fmin, fmax, sample_rate):
    """`(fmin, fmax)` as floats, `fmax=None` meaning Nyquist; refuses a band outside [0, sample_rate / 2]."""
    low, high = float(fmin), float(fmax if fmax is not None else sample_rate / 2)
    if not 0 <= low < high <= sample_rate / 2:
        raise ValueError(f"need 0 <= fmin < fmax <= sample_rate / 2. Received: fmin={fmin}, fmax={fmax}")
    return low, high


def power_to_db(power, top_db=80.0):
    """10 log10(power) relative to each sample's maximum, floored `top_db` below it (librosa ref=np.max)."""
    log = 10.0 * tf.math.log(tf.maximum(power, _AMIN)) / math.log(10.0)
    peak = tf.reduce_max(log, axis=[1, 2], keepdims=True)
    log = log - peak
    if top_db is not None:
        log = tf.maximum(log, -float(top_db))
    return log


# ---- base layer --------------------------------------------------------------------------------------------
class Frontend(keras.layers.Layer):
    """Waveforms [B, N] -> images [B, H, W, 3]; subclasses implement `features(x) -> [B, F, T]`."""

    def __init__(self, sample_rate=16000, img_size=(128, 384), normalize="standard", **kwargs):
        kwargs.setdefault("dtype", "float32")  # spectra stay float32 under mixed precision
        super().__init__(**kwargs)
        if normalize not in NORMALIZATIONS:
            raise ValueError(f"normalize must be one of {NORMALIZATIONS}. Received: normalize={normalize!r}")
        if len(img_size) != 2 or min(img_size) < 1:
            raise ValueError(f"img_size must be [H, W] of positive ints. Received: img_size={img_size!r}")
        self.sample_rate = int(sample_rate)
        self.img_size = tuple(int(v) for v in img_size)
        self.normalize = normalize
        self.supports_masking = False

    def features(self, x):
        raise NotImplementedError

    def call(self, inputs):
        x = tf.cast(inputs, tf.float32)
        feat = self.features(x)[..., tf.newaxis]  # [B, F, T, 1]
        img = tf.image.resize(feat, self.img_size, method="bilinear")
        img = normalize_images(img, self.normalize)
        return tf.tile(img, [1, 1, 1, 3])

    def compute_output_shape(self, input_shape):
        return (input_shape[0], *self.img_size, 3)

    def get_config(self):
        config = super().get_config()
        config.update(sample_rate=self.sample_rate, img_size=list(self.img_size), normalize=self.normalize)
        return config


def normalize_images(img, mode):
    """Per-sample standardization (`"standard"`) or min-max scaling to [0, 1] (`"minmax"`) over H, W, C."""
    if mode is None:
        return img
    axes = [1, 2, 3]
    if mode == "standard":
        mean, var = tf.nn.moments(img, axes=axes, keepdims=True)
        return (img - mean) / tf.sqrt(var + 1e-6)
    low = tf.reduce_min(img, axis=axes, keepdims=True)
    high = tf.reduce_max(img, axis=axes, keepdims=True)
    return (img - low) / tf.maximum(high - low, 1e-6)


class _STFTMixin:
    """STFT parameters shared by the spectral front-ends."""

    def _init_stft(self, n_fft, win_length, window, hop_length):
        if window not in WINDOWS:
            raise ValueError(f"window must be one of {WINDOWS}. Received: window={window!r}")
        win_length = int(win_length or n_fft)
        if not 0 < win_length <= n_fft:
            raise ValueError(f"win_length must be within [1, n_fft={n_fft}]. Received: win_length={win_length}")
        self.n_fft, self.win_length, self.window = int(n_fft), win_length, window
        self.hop_length = None if hop_length is None else int(hop_length)

    def hop_for(self, num_samples):
        return self.hop_length or auto_hop_length(num_samples, self.img_size[1])

    def power(self, x):
        num_samples = x.shape[-1]
        if num_samples is None:
            raise ValueError(f"{type(self).__name__} needs a static number of samples; got shape {x.shape}")
        return power_spectrogram(x, self.n_fft, self.win_length, self.hop_for(num_samples), self.window)

    def _stft_config(self):
        return dict(n_fft=self.n_fft, win_length=self.win_length, window=self.window, hop_length=self.hop_length)


# ---- front-ends ---------------------------------------------------------------------------------------------
@keras.saving.register_keras_serializable(package="voxtrace")
class LogMelSpectrogram(_STFTMixin, Frontend):
    """Log-mel spectrogram in dB (Slaney mel, power 2, ref = per-sample max, floored at -top_db).

    `n_mels` defaults to H; `hop_length` defaults to ceil(N / (W - 1)) so the frames (<= W) are resized to W.
    """

    def __init__(self, sample_rate=16000, img_size=(128, 384), n_fft=2048, win_length=None, window="hann",
                 fmin=20.0, fmax=None, top_db=80.0, n_mels=None, hop_length=None, normalize="standard", **kwargs):
        super().__init__(sample_rate=sample_rate, img_size=img_size, normalize=normalize, **kwargs)
        self._init_stft(n_fft, win_length, window, hop_length)
        self.fmin, self.fmax = frequency_band(fmin, fmax, sample_rate)
        self.top_db = None if top_db is None else float(top_db)
        self.n_mels = int(n_mels or self.img_size[0])
        self._fbank = mel_filterbank(self.sample_rate, self.n_fft, self.n_mels, self.fmin, self.fmax)

    def mel_power(self, x):
        """Mel power spectrogram [B, n_mels, frames]."""
        return tf.transpose(tf.matmul(self.power(x), tf.constant(self._fbank)), [0, 2, 1])

    def spectrogram_db(self, x):
        """The dB mel spectrogram before resizing: [B, n_mels, frames]."""
        return power_to_db(self.mel_power(tf.cast(x, tf.float32)), self.top_db)

    features = spectrogram_db

    def get_config(self):
        config = super().get_config()
        config.update(self._stft_config(), fmin=self.fmin, fmax=self.fmax, top_db=self.top_db, n_mels=self.n_mels)
        return config


@keras.saving.register_keras_serializable(package="voxtrace")
class STFTSpectrogram(_STFTMixin, Frontend):
    """Linear-frequency log power spectrogram in dB: [B, n_fft // 2 + 1, frames] resized to [H, W]."""

    def __init__(self, sample_rate=16000, img_size=(128, 384), n_fft=2048, win_length=None, window="hann",
                 top_db=80.0, hop_length=None, normalize="standard", **kwargs):
        super().__init__(sample_rate=sample_rate, img_size=img_size, normalize=normalize, **kwargs)
        self._init_stft(n_fft, win_length, window, hop_length)
        self.top_db = None if top_db is None else float(top_db)

    def features(self, x):
        return power_to_db(tf.transpose(self.power(x), [0, 2, 1]), self.top_db)

    def get_config(self):
        config = super().get_config()
        config.update(self._stft_config(), top_db=self.top_db)
        return config


class _CepstralFrontend(_STFTMixin, Frontend):
    """DCT-II (orthonormal) over the log filterbank energies, keeping `n_coeffs` coefficients."""

    filterbank_fn = None

    def __init__(self, sample_rate=16000, img_size=(128, 384), n_fft=2048, win_length=None, window="hann",
                 fmin=20.0, fmax=None, n_filters=None, n_coeffs=40, top_db=80.0, hop_length=None,
                 normalize="standard", **kwargs):
        super().__init__(sample_rate=sample_rate, img_size=img_size, normalize=normalize, **kwargs)
        self._init_stft(n_fft, win_length, window, hop_length)
        self.fmin, self.fmax = frequency_band(fmin, fmax, sample_rate)
        self.n_filters = int(n_filters or self.img_size[0])
        self.n_coeffs = int(n_coeffs)
        if not 1 <= self.n_coeffs <= self.n_filters:
            raise ValueError(f"n_coeffs must be within [1, n_filters={self.n_filters}]. Received: n_coeffs={n_coeffs}")
        self.top_db = None if top_db is None else float(top_db)
        self._fbank = type(self).filterbank_fn(self.sample_rate, self.n_fft, self.n_filters, self.fmin, self.fmax)

    def features(self, x):
        energies = tf.matmul(self.power(x), tf.constant(self._fbank))  # [B, T, filters]
        log = tf.transpose(power_to_db(tf.transpose(energies, [0, 2, 1]), self.top_db), [0, 2, 1])
        ceps = tf.signal.dct(log, type=2, norm="ortho")[..., : self.n_coeffs]
        return tf.transpose(ceps, [0, 2, 1])  # [B, n_coeffs, T]

    def get_config(self):
        config = super().get_config()
        config.update(self._stft_config(), fmin=self.fmin, fmax=self.fmax, n_filters=self.n_filters,
                      n_coeffs=self.n_coeffs, top_db=self.top_db)
        return config


@keras.saving.register_keras_serializable(package="voxtrace")
class MFCC(_CepstralFrontend):
    """Mel-frequency cepstral coefficients (DCT of the Slaney log-mel energies)."""

    filterbank_fn = staticmethod(mel_filterbank)


@keras.saving.register_keras_serializable(package="voxtrace")
class LFCC(_CepstralFrontend):
    """Linear-frequency cepstral coefficients (DCT of log energies of linearly spaced triangular bands)."""

    filterbank_fn = staticmethod(linear_filterbank)


@keras.saving.register_keras_serializable(package="voxtrace")
class WaveletPacket(Frontend):
    """Wavelet-packet decomposition to `level`: 2**level frequency-ordered packets over time, in dB.

    Each level splits every packet into a low-pass and a high-pass half with PyWavelets' analysis filters
    (`pywt.Wavelet(name).dec_lo / dec_hi`, periodic extension, stride 2), so the packets equal
    `pywt.WaveletPacket(x, wavelet, mode="periodization").get_level(level, order="freq")`: the children of a
    high-pass node swap places, giving frequency (Gray-code) order.
    The image is 20 log10 |c| relative to the per-sample maximum, floored `top_db` below it.
    """

    def __init__(self, sample_rate=16000, img_size=(128, 384), wavelet="haar", level=7, top_db=80.0,
                 normalize="standard", **kwargs):
        import pywt

        super().__init__(sample_rate=sample_rate, img_size=img_size, normalize=normalize, **kwargs)
        if wavelet not in WAVELETS:
            raise ValueError(f"wavelet must be one of {list(WAVELETS)}. Received: wavelet={wavelet!r}")
        if not 1 <= int(level) <= 14:
            raise ValueError(f"level must be within [1, 14]. Received: level={level!r}")
        self.wavelet, self.level = wavelet, int(level)
        self.top_db = None if top_db is None else float(top_db)
        filters = pywt.Wavelet(wavelet)
        # conv1d kernel [taps, in=1, out=2]: tf.nn.conv1d correlates, so the filters are reversed to convolve.
        self._kernel = np.stack([filters.dec_lo[::-1], filters.dec_hi[::-1]], axis=-1)[:, None, :].astype(np.float32)

    def packets(self, x):
        """Frequency-ordered packet coefficients [B, 2**level, N / 2**level] (N zero-padded to a multiple)."""
        x = tf.cast(x, tf.float32)
        num_samples = x.shape[-1]
        if num_samples is None:
            raise ValueError(f"WaveletPacket needs a static number of samples; got shape {x.shape}")
        step = 2 ** self.level
        padded = -(-num_samples // step) * step
        nodes = tf.pad(x, [[0, 0], [0, padded - num_samples]])[:, tf.newaxis, :]  # [B, 1, N]
        kernel = tf.constant(self._kernel)
        half = self._kernel.shape[0] // 2 - 1  # periodic samples each side: output k is centred as in pywt
        for depth in range(self.level):
            count, length = 2**depth, padded // 2**depth
            flat = tf.reshape(nodes, [-1, length, 1])
            if half:  # periodic extension, wrapping as often as a short packet needs
                flat = tf.gather(flat, np.arange(-half, length + half) % length, axis=1)
            out = tf.nn.conv1d(flat, kernel, stride=2, padding="VALID")  # [B*count, length/2, 2]
            out = tf.reshape(out, [-1, count, length // 2, 2])
            swap = tf.constant(np.arange(count) % 2 == 1)[None, :, None, None]  # high-pass parents flip order
            out = tf.where(swap, tf.reverse(out, axis=[3]), out)
            nodes = tf.reshape(tf.transpose(out, [0, 1, 3, 2]), [-1, 2 * count, length // 2])
        return nodes

    def features(self, x):
        coeffs = self.packets(x)
        return power_to_db(tf.square(coeffs), self.top_db)

    def get_config(self):
        config = super().get_config()
        config.update(wavelet=self.wavelet, level=self.level, top_db=self.top_db)
        return config


@keras.saving.register_keras_serializable(package="voxtrace")
class RawWaveform(keras.layers.Layer):
    """The `raw` front-end: waveforms `[B, N]` -> `[B, N, 1]` float32, unchanged, for raw-waveform backbones."""

    def __init__(self, sample_rate=16000, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.sample_rate = int(sample_rate)

    def call(self, inputs):
        return tf.cast(inputs, tf.float32)[..., tf.newaxis]

    def compute_output_shape(self, input_shape):
        return (*input_shape, 1)

    def get_config(self):
        return {**super().get_config(), "sample_rate": self.sample_rate}


FRONTENDS = {
    "logmel": LogMelSpectrogram,
    "stft": STFTSpectrogram,
    "mfcc": MFCC,
    "lfcc": LFCC,
    "wavelet": WaveletPacket,
}


def build_frontend(cfg, **overrides) -> Frontend:
    """The front-end layer named by `cfg.features.kind`, with the config's audio and feature parameters."""
    f, sr = cfg.features, cfg.audio.sample_rate
    if f.kind == "raw":  # no image: raw-waveform backbones read the waveform itself
        return RawWaveform(sample_rate=sr, **{"name": "raw_frontend", **overrides})
    if f.kind not in FRONTENDS:
        raise ValueError(f"features.kind must be one of {sorted(FRONTENDS)} or 'raw'. "
                         f"Received: features.kind={f.kind!r}")
    common = dict(sample_rate=sr, img_size=list(f.img_size), normalize=f.norm if f.normalize else None)
    stft = dict(n_fft=f.n_fft, win_length=f.win_length, window=f.window, top_db=f.top_db)
    band = dict(fmin=f.fmin, fmax=f.fmax)
    kwargs = {
        "logmel": {**stft, **band},
        "stft": stft,
        "mfcc": {**stft, **band, "n_coeffs": f.n_coeffs},
        "lfcc": {**stft, **band, "n_coeffs": f.n_coeffs},
        "wavelet": dict(wavelet=f.wavelet, level=f.wavelet_level, top_db=f.top_db),
    }[f.kind]
    name = overrides.pop("name", f"{f.kind}_frontend")
    return FRONTENDS[f.kind](**{**common, **kwargs, **overrides}, name=name)
