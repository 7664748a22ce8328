"""Raw-waveform backbones: a learnable front-end on the waveform itself, then a small 1-D encoder.

* `rawnet2_*` (Tak et al. 2021): SincNet band-pass filters (learnable low / high cut-offs, mel-spaced at
  initialisation, Hamming-windowed sinc kernels), residual 1-D blocks with filter-wise feature map scaling,
  a GRU over time.
* `wav2vec_conv_*`: the strided convolution stack of wav2vec 2.0's feature encoder (320x downsampling), then
  residual 1-D blocks and attention pooling.

They take waveforms `[B, N, 1]` (the `raw` front-end, `features.kind: raw`, passes the waveform through) and
return pooled vectors `[B, D]`. An input of any other shape is read as one mono waveform of all its values,
in order. `backbone_input_shape(cfg)` checks that backbone and front-end agree.
"""

from __future__ import annotations

import math

import keras
import numpy as np
from keras import layers, ops

from voxtrace.models.registry import check_input_size, get_entry, list_models, register_model
from voxtrace.models.small import AttentionPooling1D


def backbone_input_shape(cfg) -> tuple[int, ...]:
    """The input shape `cfg`'s backbone gets: `(N, 1)` for raw-waveform backbones, `(H, W, 3)` otherwise.

    Refuses an unknown `model.name`, a raw-waveform backbone without `features.kind: raw` and vice versa,
    an `audio.sample_rate` the backbone was not built for, and images smaller than the backbone accepts.
    """
    from voxtrace.config import ConfigError

    try:
        entry = get_entry(cfg.model.name)
    except ValueError as err:
        raise ConfigError(f"model.name: {err}") from err
    if entry.sample_rate is not None and cfg.audio.sample_rate != entry.sample_rate:
        raise ConfigError(f"{entry.name} works on {entry.sample_rate} Hz audio. "
                          f"Received: audio.sample_rate={cfg.audio.sample_rate}")
    kind = cfg.features.kind
    if entry.waveform and kind != "raw":
        raise ConfigError(f"{entry.name} is a raw-waveform backbone: it needs features.kind=raw. "
                          f"Received: features.kind={kind!r}")
    if kind == "raw" and not entry.waveform:
        raise ConfigError(f"features.kind='raw' feeds waveforms, but {entry.name} takes spectrogram images; use a "
                          f"raw-waveform backbone ({', '.join(waveform_models())}) or another features.kind. "
                          f"Received: model.name={cfg.model.name!r}")
    if entry.waveform:
        return (cfg.num_samples, 1)
    check_input_size(cfg.model.name, cfg.features.img_size, key="features.img_size")
    return (*cfg.features.img_size, 3)


def waveform_models() -> list[str]:
    """Registered names of the backbones that take waveforms."""
    return [n for n in list_models(include_aliases=False) if get_entry(n).waveform]


def _waveform_input(input_shape, min_samples: int, name: str):
    """`(inputs, [B, N, 1] waveform tensor)` for any input shape; refuses fewer than `min_samples` samples."""
    shape = tuple(int(s) for s in input_shape)
    num_samples = math.prod(shape)
    if num_samples < min_samples:
        raise ValueError(f"{name} needs at least {min_samples} samples per input. "
                         f"Received: input_shape={list(shape)}")
    inputs = keras.Input(shape, name="waveform")
    x = inputs if shape == (num_samples, 1) else layers.Reshape((num_samples, 1), name="as_mono")(inputs)
    return inputs, x


# ---- SincNet filters --------------------------------------------------------------------------------------
def _hz_to_mel(hz):
    return 2595.0 * np.log10(1.0 + np.asarray(hz, dtype="float64") / 700.0)


def _mel_to_hz(mel):
    return 700.0 * (10.0 ** (np.asarray(mel, dtype="float64") / 2595.0) - 1.0)


@keras.saving.register_keras_serializable(package="voxtrace")
class SincConv1D(layers.Layer):
    """Band-pass filters with learnable cut-offs (SincNet): `[B, N, 1] -> [B, N', filters]`.

    Each filter is `2 f2 sinc(2 pi f2 t) - 2 f1 sinc(2 pi f1 t)` under a Hamming window, with
    `f1 = min_low_hz + |low|` and `f2 = min(f1 + min_band_hz + |band|, sample_rate / 2)`. The bands start
    mel-spaced between `min_low_hz` and the Nyquist frequency. `magnitude=True` returns the absolute filter
    outputs (as RawNet2 does before max-pooling).
    """

    def __init__(self, filters: int, kernel_size: int, sample_rate: int = 16000, strides: int = 1,
                 min_low_hz: float = 50.0, min_band_hz: float = 50.0, magnitude: bool = False, **kwargs):
        kwargs.setdefault("dtype", "float32")  # cut-offs in Hz need float32 precision
        super().__init__(**kwargs)
        if kernel_size % 2 == 0 or kernel_size < 3:
            raise ValueError(f"kernel_size must be odd and >= 3. Received: kernel_size={kernel_size}")
        if min_low_hz + min_band_hz >= sample_rate / 2:
            raise ValueError(f"min_low_hz + min_band_hz must stay below sample_rate / 2 = {sample_rate / 2}. "
                             f"Received: min_low_hz={min_low_hz}, min_band_hz={min_band_hz}")
        self.filters, self.kernel_size, self.strides = int(filters), int(kernel_size), int(strides)
        self.sample_rate = int(sample_rate)
        self.min_low_hz, self.min_band_hz = float(min_low_hz), float(min_band_hz)
        self.magnitude = bool(magnitude)

    def build(self, input_shape):
        nyquist = self.sample_rate / 2
        edges = _mel_to_hz(np.linspace(_hz_to_mel(self.min_low_hz), _hz_to_mel(nyquist - self.min_band_hz),
                                       self.filters + 1))
        low = (edges[:-1] - self.min_low_hz).astype("float32")
        band = np.maximum(np.diff(edges) - self.min_band_hz, 0.0).astype("float32")
        self.low_hz = self.add_weight(name="low_hz", shape=(self.filters,),
                                      initializer=keras.initializers.Constant(low))
        self.band_hz = self.add_weight(name="band_hz", shape=(self.filters,),
                                       initializer=keras.initializers.Constant(band))
        half = self.kernel_size // 2
        self._t = (np.arange(-half, half + 1, dtype="float32") / self.sample_rate)[:, None]  # [K, 1] seconds
        self._window = np.hamming(self.kernel_size).astype("float32")[:, None]

    def kernels(self):
        """The band-pass kernels `[kernel_size, 1, filters]`, with unit pass-band gain (the digital filter
        `h[n] = (2 f2 sinc(2 pi f2 n / sr) - 2 f1 sinc(2 pi f1 n / sr)) / sr` under the window)."""
        low = self.min_low_hz + ops.abs(self.low_hz)
        high = ops.minimum(low + self.min_band_hz + ops.abs(self.band_hz), self.sample_rate / 2)
        t = ops.convert_to_tensor(self._t)

        def lowpass(cutoff):  # 2 f sinc(2 pi f t), with sinc(0) = 1
            arg = 2.0 * math.pi * cutoff * t
            safe = ops.where(ops.equal(arg, 0.0), ops.ones_like(arg), arg)
            return 2.0 * cutoff * ops.where(ops.equal(arg, 0.0), ops.ones_like(arg), ops.sin(safe) / safe)

        band = (lowpass(high) - lowpass(low)) * self._window / self.sample_rate
        return band[:, None, :]

    def call(self, inputs):
        x = ops.cast(inputs, "float32")
        y = ops.conv(x, self.kernels(), strides=self.strides, padding="same")
        return ops.abs(y) if self.magnitude else y

    def compute_output_shape(self, input_shape):
        steps = None if input_shape[1] is None else -(-input_shape[1] // self.strides)
        return (input_shape[0], steps, self.filters)

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "kernel_size": self.kernel_size,
                "sample_rate": self.sample_rate, "strides": self.strides, "min_low_hz": self.min_low_hz,
                "min_band_hz": self.min_band_hz, "magnitude": self.magnitude}


@keras.saving.register_keras_serializable(package="voxtrace")
class FeatureMapScaling(layers.Layer):
    """Filter-wise feature map scaling (RawNet2): `x * s + s` with `s = sigmoid(Dense(mean over time of x))`."""

    def build(self, input_shape):
        self.dense = layers.Dense(int(input_shape[-1]), activation="sigmoid", name="dense")
        self.dense.build((input_shape[0], input_shape[-1]))

    def call(self, x):
        scale = self.dense(ops.mean(x, axis=1))[:, None, :]
        return x * scale + scale


def residual_block(x, filters: int, name: str, pool: int = 3, first: bool = False):
    """RawNet2 residual block: (BN, LeakyReLU) conv3, BN, LeakyReLU, conv3, + shortcut, max-pool, FMS."""
    shortcut = x
    if not first:
        x = layers.BatchNormalization(name=f"{name}_bn1")(x)
        x = layers.LeakyReLU(0.3, name=f"{name}_act1")(x)
    x = layers.Conv1D(filters, 3, padding="same", name=f"{name}_conv1")(x)
    x = layers.BatchNormalization(name=f"{name}_bn2")(x)
    x = layers.LeakyReLU(0.3, name=f"{name}_act2")(x)
    x = layers.Conv1D(filters, 3, padding="same", name=f"{name}_conv2")(x)
    if shortcut.shape[-1] != filters:
        shortcut = layers.Conv1D(filters, 1, name=f"{name}_proj")(shortcut)
    x = layers.Add(name=f"{name}_add")([x, shortcut])
    if pool > 1:
        x = layers.MaxPooling1D(pool, name=f"{name}_pool")(x)
    return FeatureMapScaling(name=f"{name}_fms")(x)


def rawnet2(input_shape, name: str, sinc_filters: int, sinc_kernel: int, block_filters, gru_units: int,
            sample_rate: int = 16000):
    """SincNet filters -> max-pool 3, BN, LeakyReLU -> residual blocks with FMS -> GRU -> `[B, gru_units]`."""
    inputs, x = _waveform_input(input_shape, 3 ** (len(block_filters) + 1), name)  # one frame left for the GRU
    x = SincConv1D(sinc_filters, sinc_kernel, sample_rate=sample_rate, magnitude=True, name="sinc")(x)
    x = layers.MaxPooling1D(3, name="sinc_pool")(x)
    x = layers.BatchNormalization(name="sinc_bn")(x)
    x = layers.LeakyReLU(0.3, name="sinc_act")(x)
    for i, filters in enumerate(block_filters):
        x = residual_block(x, filters, name=f"block{i}", first=i == 0)
    x = layers.BatchNormalization(name="gru_bn")(x)
    x = layers.LeakyReLU(0.3, name="gru_act")(x)
    x = layers.GRU(gru_units, name="gru")(x)
    return keras.Model(inputs, x, name=name)


@register_model(name="rawnet2_tiny", waveform=True)
def rawnet2_tiny(input_shape, sinc_filters=20, sinc_kernel=129, block_filters=(20, 32, 64, 64), gru_units=64,
                 sample_rate=16000):
    """A small RawNet2 (about 0.1 M weights)."""
    return rawnet2(input_shape, "rawnet2_tiny", sinc_filters, sinc_kernel, block_filters, gru_units, sample_rate)


@register_model(name="rawnet2", waveform=True)
def rawnet2_full(input_shape, sinc_filters=20, sinc_kernel=1025, block_filters=(20, 20, 128, 128, 128, 128),
                 gru_units=1024, sample_rate=16000):
    """RawNet2 as published for ASVspoof 2021 (about 25 M weights; 4 s windows or longer)."""
    return rawnet2(input_shape, "rawnet2", sinc_filters, sinc_kernel, block_filters, gru_units, sample_rate)


# ---- wav2vec 2.0 convolutional feature encoder ------------------------------------------------------------
WAV2VEC_KERNELS = (10, 3, 3, 3, 3, 2, 2)
WAV2VEC_STRIDES = (5, 2, 2, 2, 2, 2, 2)


def wav2vec_conv(input_shape, name: str, conv_dim: int, hidden_dim: int, num_blocks: int, attention_units: int):
    """Strided conv stack (GroupNorm after the first conv, GELU) -> LayerNorm, Dense -> residual blocks ->
    attention pooling -> `[B, hidden_dim]`."""
    receptive = 1
    for kernel, stride in zip(reversed(WAV2VEC_KERNELS), reversed(WAV2VEC_STRIDES)):
        receptive = (receptive - 1) * stride + kernel
    inputs, x = _waveform_input(input_shape, receptive, name)
    for i, (kernel, stride) in enumerate(zip(WAV2VEC_KERNELS, WAV2VEC_STRIDES)):
        x = layers.Conv1D(conv_dim, kernel, strides=stride, use_bias=False, name=f"conv{i}")(x)
        if i == 0:
            x = layers.GroupNormalization(groups=conv_dim, name="conv0_norm")(x)
        x = layers.Activation("gelu", name=f"conv{i}_act")(x)
    x = layers.LayerNormalization(name="projection_norm")(x)
    x = layers.Dense(hidden_dim, name="projection")(x)
    for i in range(num_blocks):
        y = layers.Conv1D(hidden_dim, 3, padding="same", name=f"block{i}_conv1")(x)
        y = layers.BatchNormalization(name=f"block{i}_bn1")(y)
        y = layers.Activation("gelu", name=f"block{i}_act1")(y)
        y = layers.Conv1D(hidden_dim, 3, padding="same", name=f"block{i}_conv2")(y)
        y = layers.BatchNormalization(name=f"block{i}_bn2")(y)
        x = layers.Activation("gelu", name=f"block{i}_act2")(layers.Add(name=f"block{i}_add")([x, y]))
    x = AttentionPooling1D(attention_units, name="attention_pool")(x)
    return keras.Model(inputs, x, name=name)


@register_model(name="wav2vec_conv_tiny", waveform=True)
def wav2vec_conv_tiny(input_shape, conv_dim=64, hidden_dim=64, num_blocks=2, attention_units=32):
    """The wav2vec 2.0 conv stack at 64 channels with two residual blocks (about 0.1 M weights)."""
    return wav2vec_conv(input_shape, "wav2vec_conv_tiny", conv_dim, hidden_dim, num_blocks, attention_units)


@register_model(name="wav2vec_conv", waveform=True)
def wav2vec_conv_base(input_shape, conv_dim=512, hidden_dim=256, num_blocks=4, attention_units=128):
    """The wav2vec 2.0 conv stack at its published width (512 channels), four residual blocks."""
    return wav2vec_conv(input_shape, "wav2vec_conv", conv_dim, hidden_dim, num_blocks, attention_units)
