"""Small spectrogram detectors: `cnn4`, `dilated_cnn` and `mobilenetv3_bilstm`.

Images are `[H = frequency, W = time, 3]`. `cnn4` and `dilated_cnn` return 4-D feature maps like every
convolutional backbone; `mobilenetv3_bilstm` is a sequence model and returns a pooled vector `[B, 2 * units]`.
"""

from __future__ import annotations

import keras
from keras import layers, ops

from voxtrace.models.registry import register_model


@register_model(name="cnn4", min_size=16)
def cnn4(input_shape, filters=(32, 64, 128, 128), kernel_size=3):
    """A four-layer CNN: four blocks of conv (ReLU) + 2x2 max pooling; the head pools and classifies."""
    inputs = keras.Input(tuple(input_shape), name="image")
    x = inputs
    for i, width in enumerate(filters):
        x = layers.Conv2D(width, kernel_size, padding="same", activation="relu", name=f"conv{i + 1}")(x)
        x = layers.MaxPooling2D(2, name=f"pool{i + 1}")(x)
    return keras.Model(inputs, x, name="cnn4")


@register_model(name="dilated_cnn", min_size=16)
def dilated_cnn(input_shape, filters=(32, 64, 64, 64, 64), dilations=(1, 2, 4), dropout=0.1):
    """A lightweight dilated CNN after Gasenzer & Wolter's DCNN (2024).

    A PReLU conv stack downsamples 8x (three 2x2 max pools, non-affine BatchNorm between convs), then three
    3x3 convolutions dilated along time (rates `dilations`) widen the temporal receptive field cheaply.
    """
    inputs = keras.Input(tuple(input_shape), name="image")
    x = inputs
    plan = [(filters[0], 5, True), (filters[1], 1, False), (filters[2], 3, True), (filters[3], 3, False),
            (filters[4], 3, True)]
    for i, (width, kernel, pool) in enumerate(plan):
        x = layers.Conv2D(width, kernel, padding="same", name=f"conv{i + 1}")(x)
        x = layers.PReLU(shared_axes=[1, 2], name=f"prelu{i + 1}")(x)
        if pool:
            x = layers.MaxPooling2D(2, name=f"pool{i + 1}")(x)
        x = layers.BatchNormalization(center=False, scale=False, name=f"bn{i + 1}")(x)
    if dropout:
        x = layers.Dropout(dropout, name="dropout")(x)
    for rate in dilations:
        x = layers.Conv2D(filters[-1], 3, padding="same", dilation_rate=(1, rate), name=f"dil{rate}_conv")(x)
        x = layers.PReLU(shared_axes=[1, 2], name=f"dil{rate}_prelu")(x)
        x = layers.BatchNormalization(name=f"dil{rate}_bn")(x)
    return keras.Model(inputs, x, name="dilated_cnn")


@keras.saving.register_keras_serializable(package="voxtrace")
class AttentionPooling1D(layers.Layer):
    """Additive attention over time: `[B, T, D] -> [B, D]`, a softmax-weighted sum of the frames."""

    def __init__(self, units: int = 128, **kwargs):
        super().__init__(**kwargs)
        self.units = int(units)

    def build(self, input_shape):
        dim = input_shape[-1]
        self.w = self.add_weight(name="w", shape=(dim, self.units), initializer="glorot_uniform")
        self.b = self.add_weight(name="b", shape=(self.units,), initializer="zeros")
        self.v = self.add_weight(name="v", shape=(self.units, 1), initializer="glorot_uniform")

    def call(self, inputs):
        scores = ops.matmul(ops.tanh(ops.matmul(inputs, self.w) + self.b), self.v)  # [B, T, 1]
        weights = ops.softmax(scores, axis=1)
        return ops.sum(inputs * weights, axis=1)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[-1])

    def get_config(self):
        return {**super().get_config(), "units": self.units}


@register_model(name="mobilenetv3_bilstm")
def mobilenetv3_bilstm(input_shape, lstm_units=256, attention_units=128):
    """MobileNetV3-Large features read as a sequence over time -> BiLSTM -> attention pooling -> `[B, 2*units]`."""
    cnn = keras.applications.MobileNetV3Large(include_top=False, weights=None, input_shape=tuple(input_shape),
                                              include_preprocessing=False)
    inputs = keras.Input(tuple(input_shape), name="image")
    fmap = cnn(inputs)  # [B, h (frequency), w (time), C]
    _, h, w, c = fmap.shape
    x = layers.Permute((2, 1, 3), name="time_major")(fmap)
    x = layers.Reshape((w, h * c), name="frames")(x)
    x = layers.Bidirectional(layers.LSTM(lstm_units, return_sequences=True), name="bilstm")(x)
    x = AttentionPooling1D(attention_units, name="attention_pool")(x)
    return keras.Model(inputs, x, name="mobilenetv3_bilstm")
