"""The Whisper encoder (Radford et al. 2022) as a waveform backbone: 16 kHz waveforms -> pooled features.

The model holds Whisper's own front-end (`WhisperLogMel`: 80 log-mel bins from a 400-point STFT every 160
samples, log10 floored 8 below each clip's maximum, then `(x + 4) / 4`), two GELU convolutions (the second
halves the frame rate), the sinusoidal position table sliced to the clip's length (clips are not padded to
30 s), pre-norm Transformer blocks and a final LayerNorm. The frames are pooled to one vector (mean and
standard deviation by default) for the voxtrace head.

Registered as `whisper_tiny_en` (alias `whisper_tiny`), `whisper_base` and `whisper_small`; any other size
is the same builder with `width`, `num_layers` and `num_heads` (and `n_mels=128` for large-v3). Weights come
from local files only (`voxtrace.models.whisper.weights`, `model.pretrain: whisper`). Training options:

* `trainable_blocks`: None trains everything; `k` freezes the front-end, the convolutions and all but the
  last `k` blocks (0: frozen encoder, only the head learns).
* `layer_weights`: True replaces the last block's output by a softmax-weighted sum of every hidden state
  (the SUPERB recipe), each layer-normalised without learned scale first.
* `pooling`: `mean_std` (mean and standard deviation over frames, `[B, 2 * width]`) or `mean` (`[B, width]`),
  over the active frames alone with `active_db`.
* `normalize_level`: scale each window to -23 dBFS RMS over its active 20 ms frames (peaks kept under 0.95)
  before the front-end, so that a recording's gain is not a feature.
* `active_db`: pool only the encoder frames whose log-mel energy is within this many dB of the window's
  loudest (None: every frame), so that silences and the zero padding of short clips are not features.
* `states`: which hidden states feed the pooling: None (the last), `all`, or a list of indices (0: after the
  position table, k: after block k, the last one after the final LayerNorm). Several states are pooled one by
  one and concatenated (`[B, S * 2 * width]` with `mean_std`), or summed first with `layer_weights`.
"""

from __future__ import annotations

import math

import keras
import numpy as np
import tensorflow as tf
from keras import layers, ops

from voxtrace.models.raw import _waveform_input
from voxtrace.models.registry import register_alias, register_model
from voxtrace.models.whisper.frontend import ActiveFrames, LevelNormalization, WhisperLogMel
from voxtrace.models.whisper.weights import WHISPER_SOURCES, build_whisper_pretrained

MAX_POSITIONS = 1500  # 30 s of audio at 50 encoder frames per second
LAYER_NORM_EPSILON = 1e-5
POOLINGS = ("mean_std", "mean")
WHISPER_SIZES = {"tiny": (384, 4, 6), "base": (512, 6, 8), "small": (768, 12, 12)}  # width, blocks, heads


def sinusoids(length: int, channels: int) -> np.ndarray:
    """Whisper's position table `[length, channels]`: sines then cosines over geometric timescales 1..10000."""
    increment = math.log(10000) / (channels // 2 - 1)
    inv_timescales = np.exp(-increment * np.arange(channels // 2))
    scaled = np.arange(length)[:, None] * inv_timescales[None, :]
    return np.concatenate([np.sin(scaled), np.cos(scaled)], axis=1).astype(np.float32)


@keras.saving.register_keras_serializable(package="voxtrace")
class WhisperPositions(layers.Layer):
    """Adds the first `T` rows of the (fixed) position table to frames `[B, T, D]`, `T <= max_positions`."""

    def __init__(self, max_positions: int = MAX_POSITIONS, **kwargs):
        super().__init__(**kwargs)
        self.max_positions = int(max_positions)

    def build(self, input_shape):
        steps, dim = input_shape[1], int(input_shape[-1])
        if steps is not None and steps > self.max_positions:
            raise ValueError(f"Whisper encodes at most {self.max_positions} frames (30 s of audio). "
                             f"Received: {steps} frames")
        self.table = self.add_weight(name="table", shape=(self.max_positions, dim), trainable=False,
                                     initializer=keras.initializers.Constant(sinusoids(self.max_positions, dim)))

    def call(self, x):
        return x + ops.cast(self.table[: ops.shape(x)[1]], x.dtype)

    def get_config(self):
        return {**super().get_config(), "max_positions": self.max_positions}


@keras.saving.register_keras_serializable(package="voxtrace")
class WeightedLayerSum(layers.Layer):
    """Softmax-weighted sum of hidden states `L x [B, T, D] -> [B, T, D]` (one learned logit per state).

    With `normalize`, each state is layer-normalised (no learned scale) before weighting, so that the
    growing residual stream of deep layers does not outweigh the others.
    """

    def __init__(self, normalize: bool = True, **kwargs):
        super().__init__(**kwargs)
        self.normalize = bool(normalize)

    def build(self, input_shape):
        self.logits = self.add_weight(name="logits", shape=(len(input_shape),), initializer="zeros")

    def call(self, states):
        stacked = ops.stack(states, axis=0)
        if self.normalize:
            mean = ops.mean(stacked, axis=-1, keepdims=True)
            var = ops.var(stacked, axis=-1, keepdims=True)
            stacked = (stacked - mean) * ops.rsqrt(var + LAYER_NORM_EPSILON)
        weights = ops.cast(ops.softmax(self.logits), stacked.dtype)
        return ops.tensordot(weights, stacked, axes=1)

    def compute_output_shape(self, input_shape):
        return input_shape[0]

    def get_config(self):
        return {**super().get_config(), "normalize": self.normalize}


@keras.saving.register_keras_serializable(package="voxtrace")
class MeanStdPooling1D(layers.Layer):
    """Statistics pooling over time: `[B, T, D] -> [B, 2D]`, the mean then the standard deviation (`[B, D]`, the
    mean alone, with `with_std=False`); with frame weights (`[x, weights [B, T, 1]]`), over the weighted frames
    only."""

    def __init__(self, with_std: bool = True, **kwargs):
        super().__init__(**kwargs)
        self.with_std = bool(with_std)

    def call(self, inputs):
        x, weights = inputs if isinstance(inputs, (list, tuple)) else (inputs, None)
        if weights is None:
            mean, var = ops.mean(x, axis=1), ops.var(x, axis=1)
        else:
            weights = ops.cast(weights, x.dtype)
            total = ops.maximum(ops.sum(weights, axis=1), 1e-6)
            mean = ops.sum(x * weights, axis=1) / total
            var = ops.sum(ops.square(x - mean[:, None]) * weights, axis=1) / total
        if not self.with_std:
            return mean
        std = ops.sqrt(ops.maximum(var, 0.0) + LAYER_NORM_EPSILON)
        return ops.concatenate([mean, std], axis=-1)

    def compute_output_shape(self, input_shape):
        shape = input_shape[0] if isinstance(input_shape, (list, tuple)) and isinstance(input_shape[0], (list, tuple)) \
            else input_shape
        return (shape[0], (2 if self.with_std else 1) * shape[-1])

    def get_config(self):
        return {**super().get_config(), "with_std": self.with_std}


@keras.saving.register_keras_serializable(package="voxtrace")
class FrozenAwareAttention(layers.MultiHeadAttention):
    """MultiHeadAttention whose `trainable=False` also covers the projections it builds: Keras' own layer builds
    them trainable when a frozen attention layer is loaded from a .keras file."""

    def build(self, query_shape, value_shape, key_shape=None):
        super().build(query_shape, value_shape, key_shape)
        if not self.trainable:
            for projection in self._layers:
                projection.trainable = False


def encoder_block(x, width: int, num_heads: int, name: str):
    """Pre-norm Transformer block: `x + attention(norm(x))`, then `x + mlp(norm(x))` (GELU, 4x width)."""
    y = layers.LayerNormalization(epsilon=LAYER_NORM_EPSILON, name=f"{name}_attn_norm")(x)
    y = FrozenAwareAttention(num_heads, width // num_heads, name=f"{name}_attn")(y, y)
    x = layers.Add(name=f"{name}_attn_add")([x, y])
    y = layers.LayerNormalization(epsilon=LAYER_NORM_EPSILON, name=f"{name}_mlp_norm")(x)
    y = layers.Dense(4 * width, activation="gelu", name=f"{name}_mlp1")(y)
    y = layers.Dense(width, name=f"{name}_mlp2")(y)
    return layers.Add(name=f"{name}_mlp_add")([x, y])


def select_states(states, num_layers: int) -> list[int]:
    """Indices of the hidden states a `states` option names (see the module docstring)."""
    if states is None:
        return [num_layers]
    if states == "all":
        return list(range(num_layers + 1))
    if isinstance(states, (list, tuple)) and states and all(isinstance(i, int) for i in states):
        chosen = sorted({i if i >= 0 else num_layers + 1 + i for i in states})
        if all(0 <= i <= num_layers for i in chosen):
            return chosen
    raise ValueError(f"states must be null, 'all' or a list of state indices within [0, {num_layers}] (negative "
                     f"counts from the last). Received: states={states!r}")


def whisper_encoder(input_shape, name: str, width: int, num_layers: int, num_heads: int, n_mels: int = 80,
                    trainable_blocks: int | None = None, layer_weights: bool = False,
                    pooling: str = "mean_std", states=None, normalize_level: bool = False,
                    active_db: float | None = None) -> keras.Model:
    """Waveforms (any input shape, read as one mono 16 kHz waveform) -> pooled encoder features."""
    chosen = select_states(states, int(num_layers))  # a bad option fails before the model is built
    width, num_layers, num_heads = int(width), int(num_layers), int(num_heads)
    if width % num_heads:
        raise ValueError(f"width must be a multiple of num_heads. Received: width={width}, num_heads={num_heads}")
    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {list(POOLINGS)}. Received: pooling={pooling!r}")
    if trainable_blocks is not None and not 0 <= int(trainable_blocks) <= num_layers:
        raise ValueError(f"trainable_blocks must be None or within [0, num_layers={num_layers}]. "
                         f"Received: trainable_blocks={trainable_blocks}")
    hop = 160
    inputs, waveform = _waveform_input(input_shape, 2 * hop, name)
    num_frames = math.prod(int(s) for s in input_shape) // hop
    if -(-num_frames // 2) > MAX_POSITIONS:
        raise ValueError(f"{name} encodes at most 30 s of audio ({MAX_POSITIONS * 2 * hop} samples). "
                         f"Received: input_shape={list(input_shape)}")
    if normalize_level:
        waveform = LevelNormalization(name="level")(layers.Reshape((-1,), name="level_flat")(waveform))
    x = WhisperLogMel(n_mels=n_mels, hop_length=hop, name="logmel")(waveform)
    frames = ActiveFrames(active_db, name="active_frames")(x) if active_db is not None else None
    x = layers.Conv1D(width, 3, padding="same", activation="gelu", name="conv1")(x)
    x = layers.ZeroPadding1D(1, name="conv2_pad")(x)
    x = layers.Conv1D(width, 3, strides=2, activation="gelu", name="conv2")(x)
    x = WhisperPositions(MAX_POSITIONS, name="positions")(x)
    hidden = [x]
    for i in range(num_layers):
        hidden.append(encoder_block(hidden[-1], width, num_heads, name=f"block{i}"))
    hidden[-1] = layers.LayerNormalization(epsilon=LAYER_NORM_EPSILON, name="final_norm")(hidden[-1])
    if layer_weights:  # SUPERB: every state (or the chosen ones) summed with learned weights, then pooled
        x = _pool(WeightedLayerSum(name="layer_sum")(hidden if states is None else [hidden[i] for i in chosen]),
                  pooling, "pool", frames)
    elif len(chosen) == 1:
        x = _pool(hidden[chosen[0]], pooling, "pool", frames)
    else:
        x = layers.Concatenate(name="pool")([_pool(hidden[i], pooling, f"pool_state{i}", frames) for i in chosen])
    model = keras.Model(inputs, x, name=name)
    if trainable_blocks is not None:
        freeze_encoder(model, num_layers - int(trainable_blocks))
    return model


def _pool(x, pooling: str, name: str, frames=None):
    if frames is not None:
        return MeanStdPooling1D(with_std=pooling == "mean_std", name=name)([x, frames])
    return (MeanStdPooling1D(name=name) if pooling == "mean_std" else layers.GlobalAveragePooling1D(name=name))(x)


def freeze_encoder(model: keras.Model, frozen_blocks: int) -> None:
    """Freeze the front-end, the convolutions and the first `frozen_blocks` blocks (and the final LayerNorm
    when every block is frozen); the layer weights and pooling stay trainable."""
    num_layers = sum(1 for layer in model.layers if layer.name.endswith("_mlp_add"))
    frozen = {"logmel", "conv1", "conv2", "positions"}
    if frozen_blocks >= num_layers:
        frozen.add("final_norm")
    prefixes = tuple(f"block{i}_" for i in range(frozen_blocks))
    for layer in model.layers:
        if layer.name in frozen or layer.name.startswith(prefixes):
            layer.trainable = False


def _register(size: str, registered_name: str) -> None:
    default_width, default_layers, default_heads = WHISPER_SIZES[size]

    def builder(input_shape, width=default_width, num_layers=default_layers, num_heads=default_heads, n_mels=80,
                trainable_blocks=None, layer_weights=False, pooling="mean_std", states=None, normalize_level=False,
                active_db=None):
        return whisper_encoder(input_shape, registered_name, width, num_layers, num_heads, n_mels,
                               trainable_blocks, layer_weights, pooling, states, normalize_level, active_db)

    builder.__name__ = registered_name
    builder.__doc__ = (f"The Whisper {size} encoder ({default_width} wide, {default_layers} blocks, "
                       f"{default_heads} heads) over 16 kHz waveforms.")
    register_model(builder, name=registered_name, family="whisper", waveform=True, sample_rate=16000,
                   pretrain_sources=WHISPER_SOURCES, pretrain_loader=build_whisper_pretrained)


for _size, _name in (("tiny", "whisper_tiny_en"), ("base", "whisper_base"), ("small", "whisper_small")):
    _register(_size, _name)
register_alias("whisper_tiny", "whisper_tiny_en")  # tiny and tiny.en share the encoder's shapes
