"""Building blocks shared by the voxtrace backbones."""

from __future__ import annotations

import keras
from keras import layers, ops


@keras.saving.register_keras_serializable(package="voxtrace")
class StochasticDepth(layers.Layer):
    """`shortcut + residual`, dropping the residual for a random subset of samples while training.

    Called on `[shortcut, residual]`. The kept residuals are scaled by `1 / (1 - rate)` so that the
    expected output matches inference, where the residual is always added.
    """

    def __init__(self, rate: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        if not 0.0 <= rate < 1.0:
            raise ValueError(f"StochasticDepth rate must be in [0, 1). Received: rate={rate}")
        self.rate = float(rate)
        self.seed_generator = keras.random.SeedGenerator()

    def call(self, inputs, training=None):
        shortcut, residual = inputs
        if training and self.rate > 0.0:
            keep = 1.0 - self.rate
            shape = (ops.shape(residual)[0],) + (1,) * (len(residual.shape) - 1)
            mask = ops.floor(keep + keras.random.uniform(shape, seed=self.seed_generator, dtype=residual.dtype))
            residual = residual * mask / keep
        return shortcut + residual

    def compute_output_shape(self, input_shape):
        return input_shape[0]

    def get_config(self):
        return {**super().get_config(), "rate": self.rate}


def squeeze_excite(x, ratio: float, name: str, activation: str = "relu", gain: float = 1.0):
    """Squeeze-and-excitation: channel weights from globally pooled features (built-in layers only)."""
    channels = x.shape[-1]
    hidden = max(1, int(round(channels * ratio)))
    s = layers.GlobalAveragePooling2D(keepdims=True, name=f"{name}_pool")(x)
    s = layers.Conv2D(hidden, 1, activation=activation, name=f"{name}_reduce")(s)
    s = layers.Conv2D(channels, 1, activation="sigmoid", name=f"{name}_expand")(s)
    if gain != 1.0:
        s = layers.Rescaling(gain, name=f"{name}_gain")(s)
    return layers.Multiply(name=f"{name}_scale")([x, s])


def conv_bn(x, filters: int, kernel_size: int, strides: int = 1, activation: str | None = "relu",
            name: str = "", groups: int = 1, zero_gamma: bool = False):
    """Conv (no bias) -> BatchNorm -> optional activation."""
    x = layers.Conv2D(filters, kernel_size, strides=strides, padding="same", use_bias=False, groups=groups,
                      kernel_initializer="he_normal", name=f"{name}_conv")(x)
    x = layers.BatchNormalization(momentum=0.9, epsilon=1e-5, name=f"{name}_bn",
                                  gamma_initializer="zeros" if zero_gamma else "ones")(x)
    if activation:
        x = layers.Activation(activation, name=f"{name}_{activation}")(x)
    return x


def resnet_d_shortcut(x, out_channels: int, strides: int, name: str):
    """The ResNet-D shortcut: average-pool to downsample (no information skipped), then a 1x1 conv + BN
    when the shape changes; the identity otherwise."""
    if strides == 1 and x.shape[-1] == out_channels:
        return x
    if strides > 1:
        x = layers.AveragePooling2D(strides, strides, padding="same", name=f"{name}_down_pool")(x)
    return conv_bn(x, out_channels, 1, activation=None, name=f"{name}_down")
