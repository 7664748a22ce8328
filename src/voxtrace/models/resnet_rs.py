"""ResNet-D and ResNet-RS backbones.

ResNet-D (He et al., "Bag of Tricks", 2019): a deep stem of three 3x3 convolutions instead of one 7x7, and
shortcuts that downsample with a 2x2 average pool before the 1x1 projection instead of a strided 1x1.
ResNet-RS (Bello et al., "Revisiting ResNets", 2021) is ResNet-D with squeeze-and-excitation in every
bottleneck, zero-initialised last BatchNorm of each residual branch and optional stochastic depth that
grows linearly with block index.
"""

from __future__ import annotations

import keras
from keras import layers

from voxtrace.models.layers import StochasticDepth, conv_bn, resnet_d_shortcut, squeeze_excite
from voxtrace.models.registry import register_model

RESNET_RS_DEPTHS = {50: [3, 4, 6, 3], 101: [3, 4, 23, 3], 152: [3, 8, 36, 3], 200: [3, 24, 36, 3]}


def _bottleneck(x, filters, strides, se_ratio, drop_rate, name):
    out_channels = filters * 4
    shortcut = resnet_d_shortcut(x, out_channels, strides, name)
    r = conv_bn(x, filters, 1, name=f"{name}_1")
    r = conv_bn(r, filters, 3, strides=strides, name=f"{name}_2")
    r = conv_bn(r, out_channels, 1, activation=None, zero_gamma=True, name=f"{name}_3")
    if se_ratio:
        r = squeeze_excite(r, se_ratio / 4, name=f"{name}_se")  # ratio of the bottleneck width, as ResNet-RS
    x = StochasticDepth(drop_rate, name=f"{name}_add")([shortcut, r])
    return layers.Activation("relu", name=f"{name}_out")(x)


def resnet_d(input_shape, depths, se_ratio=0.0, drop_path_rate=0.0, width=64, stem_pool=True,
             name="resnet_d"):
    """A ResNet-D style bottleneck network. `se_ratio > 0` and `stem_pool=False` give ResNet-RS."""
    inputs = keras.Input(tuple(input_shape), name="image")
    x = conv_bn(inputs, width // 2, 3, strides=2, name="stem_1")
    x = conv_bn(x, width // 2, 3, name="stem_2")
    x = conv_bn(x, width, 3, name="stem_3")
    if stem_pool:
        x = layers.MaxPooling2D(3, 2, padding="same", name="stem_pool")(x)
    else:  # ResNet-RS replaces the stem max pool by a strided convolution
        x = conv_bn(x, width, 3, strides=2, name="stem_4")
    total, index = sum(depths), 0
    for stage, depth in enumerate(depths):
        for block in range(depth):
            strides = 2 if block == 0 and stage > 0 else 1
            rate = drop_path_rate * index / max(total - 1, 1)
            x = _bottleneck(x, width * 2**stage, strides, se_ratio, rate, name=f"s{stage + 1}_b{block + 1}")
            index += 1
    return keras.Model(inputs, x, name=name)


@register_model(name="ResNet50D")
def resnet50d(input_shape, **kwargs):
    """ResNet-50-D: the ResNet-50 layout with a deep stem and average-pool downsampling shortcuts."""
    return resnet_d(input_shape, [3, 4, 6, 3], name="resnet50d", **kwargs)


def _resnet_rs(depth):
    def builder(input_shape, drop_path_rate=0.0, **kwargs):
        return resnet_d(input_shape, RESNET_RS_DEPTHS[depth], se_ratio=0.25, drop_path_rate=drop_path_rate,
                        stem_pool=False, name=f"resnetrs{depth}", **kwargs)

    builder.__doc__ = f"ResNet-RS-{depth}: ResNet-D + squeeze-excitation, optional stochastic depth."
    return builder


for _depth in RESNET_RS_DEPTHS:
    register_model(_resnet_rs(_depth), name=f"ResNetRS{_depth}", batch_hint=32)
