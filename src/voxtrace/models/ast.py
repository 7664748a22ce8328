"""Audio Spectrogram Transformer (AST, Gong et al. 2021): a ViT over patches of the log-mel image.

The image `[H = frequency, W = time, 3]` is cut into `patch_size` patches every `patch_stride` pixels
(overlapping when the stride is smaller than the patch, as AST does), each patch is embedded linearly, a
learned CLS token is prepended and learned position embeddings are added. Pre-norm Transformer encoder
blocks follow; the backbone returns the final-normalised CLS token `[B, embed_dim]`.

Position embeddings are stored on the patch grid of the image size the model was built for and are
interpolated (bilinear) to any other grid: when the model runs on another image size, and when a weights
file from a model built for another image size is loaded (`model.pretrain=path.weights.h5`).
"""

from __future__ import annotations

import keras
import numpy as np
from keras import layers, ops

from voxtrace.models.registry import register_model


def resize_position_grid(table, grid):
    """Bilinearly resize position embeddings `[h, w, D]` to `[grid[0], grid[1], D]`."""
    import tensorflow as tf

    table = tf.convert_to_tensor(table)
    if tuple(table.shape[:2]) == tuple(grid):
        return table
    resized = tf.image.resize(tf.cast(table, "float32")[None], tuple(int(g) for g in grid), method="bilinear")
    return tf.cast(resized[0], table.dtype)


@keras.saving.register_keras_serializable(package="voxtrace")
class PatchTokens(layers.Layer):
    """Patch embeddings `[B, gh, gw, D]` -> tokens `[B, 1 + gh * gw, D]`: CLS token first, position added.

    Args:
        grid_size: the patch grid `(gh, gw)` the position embeddings are stored on; other grids are served by
            interpolation.
    """

    def __init__(self, grid_size, **kwargs):
        super().__init__(**kwargs)
        self.grid_size = tuple(int(g) for g in grid_size)
        if len(self.grid_size) != 2 or min(self.grid_size) < 1:
            raise ValueError(f"grid_size must be (rows, columns) >= 1. Received: grid_size={grid_size!r}")

    def build(self, input_shape):
        dim = int(input_shape[-1])
        init = keras.initializers.TruncatedNormal(stddev=0.02)
        self.cls_token = self.add_weight(name="cls_token", shape=(1, dim), initializer=init)
        self.cls_position = self.add_weight(name="cls_position", shape=(1, dim), initializer=init)
        self.patch_position = self.add_weight(name="patch_position", shape=(*self.grid_size, dim), initializer=init)

    def call(self, patches):
        grid = (patches.shape[1], patches.shape[2])
        if None in grid:
            raise ValueError(f"PatchTokens needs a static patch grid. Received: shape={patches.shape}")
        dim = patches.shape[-1]
        position = resize_position_grid(self.patch_position, grid) if grid != self.grid_size else self.patch_position
        tokens = ops.reshape(patches, (-1, grid[0] * grid[1], dim))
        tokens = tokens + ops.cast(ops.reshape(position, (1, grid[0] * grid[1], dim)), tokens.dtype)
        cls = ops.cast(self.cls_token + self.cls_position, tokens.dtype)
        cls = ops.broadcast_to(cls[None], (ops.shape(tokens)[0], 1, dim))
        return ops.concatenate([cls, tokens], axis=1)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], 1 + input_shape[1] * input_shape[2], input_shape[3])

    def load_own_variables(self, store):
        """Load saved variables, interpolating position embeddings stored on another patch grid."""
        if len(store.keys()) != len(self.weights):
            raise ValueError(f"layer {self.name!r} expects {len(self.weights)} variables, the file has "
                             f"{len(store.keys())}")
        for i, variable in enumerate(self.weights):
            value = np.asarray(store[str(i)])
            if variable is self.patch_position and value.shape[-1] == variable.shape[-1]:
                value = np.asarray(resize_position_grid(value, self.grid_size))
            variable.assign(value)

    def get_config(self):
        return {**super().get_config(), "grid_size": list(self.grid_size)}


@keras.saving.register_keras_serializable(package="voxtrace")
class SelectToken(layers.Layer):
    """`[B, T, D] -> [B, D]`: the token at `index` (0: the CLS token)."""

    def __init__(self, index: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.index = int(index)

    def call(self, tokens):
        return tokens[:, self.index]

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[2])

    def get_config(self):
        return {**super().get_config(), "index": self.index}


def encoder_block(x, num_heads: int, mlp_ratio: float, dropout: float, name: str):
    """Pre-norm Transformer block: `x + MHA(LN(x))`, then `x + MLP(LN(x))`."""
    dim = x.shape[-1]
    y = layers.LayerNormalization(epsilon=1e-6, name=f"{name}_norm1")(x)
    y = layers.MultiHeadAttention(num_heads, dim // num_heads, dropout=dropout, name=f"{name}_attn")(y, y)
    x = layers.Add(name=f"{name}_add1")([x, layers.Dropout(dropout, name=f"{name}_drop1")(y)])
    y = layers.LayerNormalization(epsilon=1e-6, name=f"{name}_norm2")(x)
    y = layers.Dense(int(dim * mlp_ratio), activation="gelu", name=f"{name}_mlp1")(y)
    y = layers.Dense(dim, name=f"{name}_mlp2")(layers.Dropout(dropout, name=f"{name}_drop2")(y))
    return layers.Add(name=f"{name}_add2")([x, layers.Dropout(dropout, name=f"{name}_drop3")(y)])


def patch_grid(input_shape, patch_size: int, patch_stride: int) -> tuple[int, int]:
    """Rows and columns of patches that fit in an `[H, W]` image (no padding)."""
    return tuple((int(s) - patch_size) // patch_stride + 1 for s in input_shape[:2])


def spectrogram_transformer(input_shape, name: str, embed_dim: int, depth: int, num_heads: int,
                            patch_size: int = 16, patch_stride: int | None = None, mlp_ratio: float = 4.0,
                            dropout: float = 0.0):
    """Build an AST backbone: image `[H, W, C]` -> CLS features `[B, embed_dim]`."""
    patch_stride = int(patch_stride or patch_size)
    if not 0 < patch_stride <= patch_size:
        raise ValueError(f"patch_stride must be within [1, patch_size={patch_size}]. Received: "
                         f"patch_stride={patch_stride}")
    if embed_dim % num_heads:
        raise ValueError(f"embed_dim must be a multiple of num_heads={num_heads}. Received: embed_dim={embed_dim}")
    if min(int(s) for s in input_shape[:2]) < patch_size:
        raise ValueError(f"{name} needs images of at least {patch_size}x{patch_size} (patch_size). "
                         f"Received: input_shape={list(input_shape)}")
    inputs = keras.Input(tuple(input_shape), name="image")
    x = layers.Conv2D(embed_dim, patch_size, strides=patch_stride, name="patch_embed")(inputs)
    x = PatchTokens(patch_grid(input_shape, patch_size, patch_stride), name="tokens")(x)
    x = layers.Dropout(dropout, name="tokens_drop")(x)
    for i in range(depth):
        x = encoder_block(x, num_heads, mlp_ratio, dropout, name=f"block{i}")
    x = layers.LayerNormalization(epsilon=1e-6, name="norm")(x)
    return keras.Model(inputs, SelectToken(0, name="cls")(x), name=name)


@register_model(name="ast_tiny", min_size=16)
def ast_tiny(input_shape, patch_size=16, patch_stride=None, embed_dim=192, depth=12, num_heads=3, mlp_ratio=4.0,
             dropout=0.0):
    """AST at DeiT-Tiny width (5.5 M weights), non-overlapping 16x16 patches by default."""
    return spectrogram_transformer(input_shape, "ast_tiny", embed_dim, depth, num_heads, patch_size, patch_stride,
                                   mlp_ratio, dropout)


@register_model(name="ast_small", min_size=16)
def ast_small(input_shape, patch_size=16, patch_stride=None, embed_dim=384, depth=12, num_heads=6, mlp_ratio=4.0,
              dropout=0.0):
    """AST at DeiT-Small width (21.7 M weights), non-overlapping 16x16 patches by default."""
    return spectrogram_transformer(input_shape, "ast_small", embed_dim, depth, num_heads, patch_size, patch_stride,
                                   mlp_ratio, dropout)


@register_model(name="ast_base", min_size=16)
def ast_base(input_shape, patch_size=16, patch_stride=10, embed_dim=768, depth=12, num_heads=12, mlp_ratio=4.0,
             dropout=0.0):
    """AST as published (ViT-Base, 86 M weights): 16x16 patches overlapping by 6 pixels (stride 10)."""
    return spectrogram_transformer(input_shape, "ast_base", embed_dim, depth, num_heads, patch_size, patch_stride,
                                   mlp_ratio, dropout)
