"""Whisper's front-end layers: the log-mel of its feature extractor, and the level and activity of a window.

`WhisperLogMel` is Whisper's own front-end; `LevelNormalization` (a window to a fixed loudness before it) and
`ActiveFrames` (which encoder frames carry speech) are voxtrace's options of the encoder
(`voxtrace.models.whisper.encoder`: `normalize_level`, `active_db`).
"""

from __future__ import annotations

import math

import keras
import tensorflow as tf
from keras import layers

from voxtrace.features.frontends import mel_filterbank, stft_window, windowed_frames


@keras.saving.register_keras_serializable(package="voxtrace")
class WhisperLogMel(layers.Layer):
    """Whisper's front-end: waveforms `[B, N]` or `[B, N, 1]` -> log-mel frames `[B, N // hop_length, n_mels]`.

    Frames are centred with reflect padding and a periodic Hann window, the last frame is dropped (as Whisper
    does), power goes through a Slaney mel filterbank from 0 Hz to Nyquist, then log10 floored at 1e-10 and
    at 8 below the clip's maximum, and `(x + 4) / 4`.
    """

    def __init__(self, n_mels: int = 80, n_fft: int = 400, hop_length: int = 160, sample_rate: int = 16000,
                 **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.n_mels, self.n_fft, self.hop_length = int(n_mels), int(n_fft), int(hop_length)
        self.sample_rate = int(sample_rate)
        self._window = stft_window("hann", self.n_fft, self.n_fft)
        self._filters = mel_filterbank(self.sample_rate, self.n_fft, self.n_mels, 0.0, self.sample_rate / 2)

    def call(self, inputs):
        x = tf.cast(inputs, tf.float32)
        if len(x.shape) == 3:
            x = x[..., 0]
        if x.shape[-1] is None or x.shape[-1] <= self.n_fft // 2:
            raise ValueError(f"WhisperLogMel needs a static length above n_fft / 2 = {self.n_fft // 2} samples. "
                             f"Received: shape={list(x.shape)}")
        half = self.n_fft // 2
        x = tf.pad(x, [[0, 0], [half, half]], mode="REFLECT")
        frames = windowed_frames(x, self._window, self.hop_length)[:, :-1]
        power = tf.math.square(tf.math.abs(tf.signal.rfft(frames, [self.n_fft])))
        log = tf.math.log(tf.maximum(tf.matmul(power, self._filters), 1e-10)) / math.log(10.0)
        log = tf.maximum(log, tf.reduce_max(log, axis=[1, 2], keepdims=True) - 8.0)
        return (log + 4.0) / 4.0

    def compute_output_shape(self, input_shape):
        frames = None if input_shape[1] is None else input_shape[1] // self.hop_length
        return (input_shape[0], frames, self.n_mels)

    def get_config(self):
        return {**super().get_config(), "n_mels": self.n_mels, "n_fft": self.n_fft,
                "hop_length": self.hop_length, "sample_rate": self.sample_rate}


@keras.saving.register_keras_serializable(package="voxtrace")
class LevelNormalization(layers.Layer):
    """Waveforms `[B, N]` scaled to `target_dbfs` RMS over their active 20 ms frames (those within 50 dB of the
    loudest), with peaks kept under `peak`; digital silence passes unchanged (`data.audio.normalize_loudness`
    per window, in the graph)."""

    def __init__(self, target_dbfs: float = -23.0, peak: float = 0.95, frame: int = 320, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.target_dbfs, self.peak, self.frame = float(target_dbfs), float(peak), int(frame)

    def call(self, inputs):
        x = tf.cast(inputs, tf.float32)
        n_frames = tf.shape(x)[1] // self.frame
        frames = tf.reshape(x[:, : n_frames * self.frame], [tf.shape(x)[0], n_frames, self.frame])
        energy = tf.reduce_mean(tf.square(frames), axis=-1)
        active = tf.cast(energy >= tf.reduce_max(energy, axis=-1, keepdims=True) * 1e-5, tf.float32)
        rms = tf.sqrt(tf.reduce_sum(energy * active, axis=-1) / tf.maximum(tf.reduce_sum(active, axis=-1), 1.0))
        gain = tf.math.divide_no_nan(tf.constant(10 ** (self.target_dbfs / 20), tf.float32), rms)
        top = tf.reduce_max(tf.abs(x), axis=-1) * gain
        gain = tf.where(top > self.peak, gain * self.peak / tf.maximum(top, 1e-30), gain)
        return x * gain[:, None]

    def get_config(self):
        return {**super().get_config(), "target_dbfs": self.target_dbfs, "peak": self.peak, "frame": self.frame}


@keras.saving.register_keras_serializable(package="voxtrace")
class ActiveFrames(layers.Layer):
    """Log-mel frames `[B, T, n_mels]` -> `[B, ceil(T / 2), 1]` weights: 1 for the encoder frames (half the
    log-mel rate) whose loudest mel bin is within `active_db` of the window's loudest, else 0; all 1 for a
    window with no such frame."""

    def __init__(self, active_db: float = 40.0, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.active_db = float(active_db)

    def call(self, logmel):
        level = tf.reduce_max(logmel, axis=-1)  # (log10 power + 4) / 4
        active = level >= tf.reduce_max(level, axis=-1, keepdims=True) - self.active_db / 40.0
        active = tf.cast(active, tf.float32)[..., None]
        pooled = tf.nn.max_pool1d(active, ksize=2, strides=2, padding="SAME")
        return tf.where(tf.reduce_sum(pooled, axis=1, keepdims=True) > 0, pooled, tf.ones_like(pooled))

    def get_config(self):
        return {**super().get_config(), "active_db": self.active_db}
