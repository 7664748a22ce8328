"""Normalizer-free ResNets: NFNet-F0 and ECA-NFNet-L0/L1/L2 (Brock et al., 2021; timm's ECA variants).

No BatchNorm. Each convolution standardises its kernel (scaled weight standardisation with a learnable
gain), activations are rescaled by a constant gamma that keeps unit variance, and each residual block
sees its input divided by the expected standard deviation (`beta`) and adds its branch scaled by `alpha`.
The last convolution of each branch starts with zero gain, so every block starts as the identity.
NFNets are trained with adaptive gradient clipping: `adaptive_clip_gradients` below, applied to every
weight except the final classifier (`is_agc_exempt`).
"""

from __future__ import annotations

import math

import keras
from keras import layers, ops

from voxtrace.models.layers import StochasticDepth, squeeze_excite
from voxtrace.models.registry import register_model

# Rescale activations to keep unit variance for unit-variance Gaussian inputs (from the NFNet paper).
ACTIVATION_GAMMA = {"gelu": 1.7015043497085571, "silu": 1.7881293296813965, "relu": 1.7139588594436646}

# Layers whose weights adaptive gradient clipping leaves alone: the classifier head's output layer.
AGC_EXEMPT = ("classifier",)


def is_agc_exempt(variable) -> bool:
    """True for weights of the final classifier (AGC is not applied to them, as in the NFNet paper)."""
    path = getattr(variable, "path", None) or variable.name
    return any(part in AGC_EXEMPT for part in path.split("/"))


def _unitwise_norm(x):
    """L2 norm per output unit: over all axes but the last for kernels, the whole tensor otherwise."""
    if len(x.shape) <= 1:
        return ops.sqrt(ops.sum(ops.square(x)))
    return ops.sqrt(ops.sum(ops.square(x), axis=tuple(range(len(x.shape) - 1)), keepdims=True))


def adaptive_clip_gradients(grads, params, clip_factor: float, eps: float = 1e-3):
    """Adaptive gradient clipping: rescale each unit's gradient to at most `clip_factor` times its weight norm.

    `grads` and `params` are aligned lists (a `None` gradient passes through). Weight norms below `eps`
    count as `eps`, so zero-initialised weights can still move. Leave the classifier out (`is_agc_exempt`).
    """
    clipped = []
    for grad, param in zip(grads, params):
        if grad is None:
            clipped.append(None)
            continue
        grad = ops.convert_to_tensor(grad)
        max_norm = ops.maximum(_unitwise_norm(ops.cast(param, grad.dtype)), eps) * clip_factor
        grad_norm = _unitwise_norm(grad)
        scaled = grad * (max_norm / ops.maximum(grad_norm, 1e-6))
        clipped.append(ops.where(grad_norm > max_norm, scaled, grad))
    return clipped


@keras.saving.register_keras_serializable(package="voxtrace")
class ScaledStdConv2D(layers.Conv2D):
    """Conv2D with scaled weight standardisation: `gain * (W - mean(W)) / (std(W) * sqrt(fan_in))`."""

    def __init__(self, *args, gain_init: float = 1.0, std_eps: float = 1e-5, **kwargs):
        super().__init__(*args, **kwargs)
        self.gain_init = float(gain_init)
        self.std_eps = float(std_eps)

    def build(self, input_shape):
        super().build(input_shape)
        self.gain = self.add_weight(name="gain", shape=(self.filters,),
                                    initializer=keras.initializers.Constant(self.gain_init))

    def convolution_op(self, inputs, kernel):
        fan_in = math.prod(kernel.shape[:-1])
        mean = ops.mean(kernel, axis=(0, 1, 2), keepdims=True)
        var = ops.var(kernel, axis=(0, 1, 2), keepdims=True)
        scale = ops.rsqrt(ops.maximum(var * fan_in, self.std_eps)) * ops.cast(self.gain, kernel.dtype)
        return super().convolution_op(inputs, (kernel - mean) * scale)

    def save_own_variables(self, store):
        super().save_own_variables(store)  # kernel [, bias]
        if self.built:
            store[str(1 + int(self.use_bias))] = self.gain

    def load_own_variables(self, store):
        super().load_own_variables(store)
        if self.built:
            self.gain.assign(store[str(1 + int(self.use_bias))])

    def get_config(self):
        return {**super().get_config(), "gain_init": self.gain_init, "std_eps": self.std_eps}


def _conv(x, filters, kernel_size, name, strides=1, groups=1, gain_init=1.0):
    return ScaledStdConv2D(filters, kernel_size, strides=strides, padding="same", groups=groups,
                           kernel_initializer="variance_scaling", gain_init=gain_init, name=name)(x)


def _act(x, activation, name):
    x = layers.Activation(activation, name=f"{name}_{activation}")(x)
    return layers.Rescaling(ACTIVATION_GAMMA[activation], name=f"{name}_gamma")(x)


def _eca(x, name):
    """Efficient channel attention: a 1-D convolution across the pooled channel descriptor."""
    channels = x.shape[-1]
    k = int(abs((math.log2(channels) + 1) / 2))
    k = k if k % 2 else k + 1
    s = layers.GlobalAveragePooling2D(name=f"{name}_pool")(x)
    s = layers.Reshape((channels, 1), name=f"{name}_seq")(s)
    s = layers.Conv1D(1, k, padding="same", use_bias=False, name=f"{name}_conv")(s)
    s = layers.Activation("sigmoid", name=f"{name}_sigmoid")(s)
    s = layers.Reshape((1, 1, channels), name=f"{name}_map")(s)
    return layers.Multiply(name=f"{name}_scale")([x, s])


def _nf_block(x, out_channels, strides, beta, alpha, cfg, drop_rate, name):
    act, group_size = cfg["activation"], cfg["group_size"]
    mid = max(group_size, int(out_channels * cfg["bottle_ratio"]) // group_size * group_size)
    out = layers.Rescaling(beta, name=f"{name}_beta")(_act(x, act, f"{name}_pre"))
    shortcut = x
    if strides > 1 or x.shape[-1] != out_channels:
        s = out
        if strides > 1:
            s = layers.AveragePooling2D(2, strides, padding="same", name=f"{name}_down_pool")(s)
        shortcut = _conv(s, out_channels, 1, name=f"{name}_down_conv")
    r = _conv(out, mid, 1, name=f"{name}_conv1")
    r = _conv(_act(r, act, f"{name}_a2"), mid, 3, strides=strides, groups=mid // group_size, name=f"{name}_conv2")
    r = _conv(_act(r, act, f"{name}_a2b"), mid, 3, groups=mid // group_size, name=f"{name}_conv2b")
    r = _conv(_act(r, act, f"{name}_a3"), out_channels, 1, gain_init=0.0, name=f"{name}_conv3")
    if cfg["attention"] == "eca":
        r = _eca(r, f"{name}_eca")
    else:
        r = squeeze_excite(r, 0.5, name=f"{name}_se", gain=2.0)
    r = layers.Rescaling(alpha, name=f"{name}_alpha")(r)
    return StochasticDepth(drop_rate, name=f"{name}_add")([shortcut, r])


NFNET_CONFIGS = {
    "NFNetF0": dict(depths=(1, 2, 6, 3), feat_mult=2.0, group_size=128, bottle_ratio=0.5, attention="se",
                    activation="gelu"),
    "ECA_NFNetL0": dict(depths=(1, 2, 6, 3), feat_mult=1.5, group_size=64, bottle_ratio=0.25, attention="eca",
                        activation="silu"),
    "ECA_NFNetL1": dict(depths=(2, 4, 12, 6), feat_mult=2.0, group_size=64, bottle_ratio=0.25, attention="eca",
                        activation="silu"),
    "ECA_NFNetL2": dict(depths=(3, 6, 18, 9), feat_mult=2.0, group_size=64, bottle_ratio=0.25, attention="eca",
                        activation="silu"),
}


def nfnet(input_shape, config: dict, channels=(256, 512, 1536, 1536), alpha=0.2, drop_path_rate=0.0,
          name="nfnet"):
    """A normalizer-free ResNet with a four-conv stem, grouped bottlenecks and a final 1x1 conv."""
    act = config["activation"]
    inputs = keras.Input(tuple(input_shape), name="image")
    x = _conv(inputs, 16, 3, strides=2, name="stem_conv1")
    x = _conv(_act(x, act, "stem_a2"), 32, 3, name="stem_conv2")
    x = _conv(_act(x, act, "stem_a3"), 64, 3, name="stem_conv3")
    x = _conv(_act(x, act, "stem_a4"), channels[0] // 2, 3, strides=2, name="stem_conv4")
    total, index, expected_var = sum(config["depths"]), 0, 1.0
    for stage, (depth, out_channels) in enumerate(zip(config["depths"], channels)):
        for block in range(depth):
            strides = 2 if block == 0 and stage > 0 else 1
            rate = drop_path_rate * index / max(total - 1, 1)
            x = _nf_block(x, out_channels, strides, 1.0 / math.sqrt(expected_var), alpha, config, rate,
                          name=f"s{stage + 1}_b{block + 1}")
            expected_var = (1.0 if block == 0 else expected_var) + alpha**2
            index += 1
    x = _conv(x, int(channels[-1] * config["feat_mult"]), 1, name="final_conv")
    x = _act(x, act, "final")
    return keras.Model(inputs, x, name=name)


def _nfnet_builder(model_name):
    def builder(input_shape, drop_path_rate=0.0, **kwargs):
        return nfnet(input_shape, NFNET_CONFIGS[model_name], drop_path_rate=drop_path_rate,
                     name=model_name.lower(), **kwargs)

    builder.__doc__ = f"{model_name}: normalizer-free ResNet ({NFNET_CONFIGS[model_name]['attention']} attention)."
    return builder


for _name in NFNET_CONFIGS:  # adaptive gradient clipping at 0.01 by default, as the NFNet paper trains them
    register_model(_nfnet_builder(_name), name=_name, batch_hint=16, agc_clip=0.01)
