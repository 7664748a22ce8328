"""ResNeSt (Zhang et al., "ResNeSt: Split-Attention Networks", 2020).

A ResNet-D whose bottleneck 3x3 convolution is a split-attention convolution: it produces `radix` groups of
feature maps, and a small MLP on their pooled sum picks, per channel, a softmax mixture of the groups.
Strided blocks average-pool after the split attention ("avd"), as the reference ResNeSt-50.
"""

from __future__ import annotations

import keras
from keras import layers, ops

from voxtrace.models.layers import conv_bn, resnet_d_shortcut
from voxtrace.models.registry import register_model


@keras.saving.register_keras_serializable(package="voxtrace")
class SplitAttention(layers.Layer):
    """Mixes `radix` feature-map groups `[B, H, W, radix * C]` into `[B, H, W, C]` with attention."""

    def __init__(self, radix: int = 2, reduction: int = 4, min_hidden: int = 32, **kwargs):
        super().__init__(**kwargs)
        if radix < 2:
            raise ValueError(f"SplitAttention needs radix >= 2. Received: radix={radix}")
        self.radix, self.reduction, self.min_hidden = int(radix), int(reduction), int(min_hidden)
        self.fc1 = self.norm = self.fc2 = None

    def build(self, input_shape):
        total = input_shape[-1]
        if total % self.radix:
            raise ValueError(f"SplitAttention: {total} channels do not split into radix={self.radix} groups")
        self.channels = total // self.radix
        hidden = max(total // self.reduction, self.min_hidden)
        self.fc1 = layers.Dense(hidden, name="fc1", dtype=self.dtype_policy)
        self.norm = layers.BatchNormalization(momentum=0.9, epsilon=1e-5, name="bn", dtype=self.dtype_policy)
        self.fc2 = layers.Dense(total, name="fc2", dtype=self.dtype_policy)
        self.fc1.build((None, self.channels))
        self.norm.build((None, hidden))
        self.fc2.build((None, hidden))

    def call(self, inputs, training=None):
        shape = ops.shape(inputs)
        splits = ops.reshape(inputs, (shape[0], shape[1], shape[2], self.radix, self.channels))
        pooled = ops.mean(ops.sum(splits, axis=3), axis=(1, 2))  # [B, C]
        attn = ops.relu(self.norm(self.fc1(pooled), training=training))
        attn = ops.reshape(self.fc2(attn), (shape[0], self.radix, self.channels))
        attn = ops.softmax(attn, axis=1)  # over the radix groups, per channel
        return ops.sum(splits * attn[:, None, None, :, :], axis=3)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], input_shape[-1] // self.radix)

    def get_config(self):
        return {**super().get_config(), "radix": self.radix, "reduction": self.reduction,
                "min_hidden": self.min_hidden}


def _split_bottleneck(x, filters, strides, radix, name):
    out_channels = filters * 4
    shortcut = resnet_d_shortcut(x, out_channels, strides, name)
    r = conv_bn(x, filters, 1, name=f"{name}_1")
    r = conv_bn(r, filters * radix, 3, groups=radix, name=f"{name}_2")
    r = SplitAttention(radix, name=f"{name}_attn")(r)
    if strides > 1:
        r = layers.AveragePooling2D(3, strides, padding="same", name=f"{name}_avd")(r)
    r = conv_bn(r, out_channels, 1, activation=None, zero_gamma=True, name=f"{name}_3")
    x = layers.Add(name=f"{name}_add")([shortcut, r])
    return layers.Activation("relu", name=f"{name}_out")(x)


def resnest(input_shape, depths, radix=2, width=64, name="resnest"):
    """A ResNeSt with deep stem, average-pool shortcuts and split-attention bottlenecks."""
    inputs = keras.Input(tuple(input_shape), name="image")
    x = conv_bn(inputs, width // 2, 3, strides=2, name="stem_1")
    x = conv_bn(x, width // 2, 3, name="stem_2")
    x = conv_bn(x, width, 3, name="stem_3")
    x = layers.MaxPooling2D(3, 2, padding="same", name="stem_pool")(x)
    for stage, depth in enumerate(depths):
        for block in range(depth):
            strides = 2 if block == 0 and stage > 0 else 1
            x = _split_bottleneck(x, width * 2**stage, strides, radix, name=f"s{stage + 1}_b{block + 1}")
    return keras.Model(inputs, x, name=name)


@register_model(name="ResNeSt50", batch_hint=32)
def resnest50(input_shape, **kwargs):
    """ResNeSt-50 (radix 2, one cardinal group, bottleneck width 64)."""
    return resnest(input_shape, [3, 4, 6, 3], name="resnest50", **kwargs)
