"""The classification head and `build_classifier`: waveforms `[B, N]` -> class probabilities `[B, C]`.

The model is self-describing: the front-end (waveform -> image) and SpecAugment are layers inside it, then
the backbone from the registry, then the head (global average pooling, Dense selu, optional dropout,
Dense softmax in float32 so that mixed precision keeps stable probabilities).
"""

from __future__ import annotations

import keras
import numpy as np
from keras import layers

from voxtrace.models.heads import frozen_head
from voxtrace.models.nfnet import AGC_EXEMPT
from voxtrace.models.raw import backbone_input_shape
from voxtrace.models.registry import create_model

CLASSIFIER_LAYER = AGC_EXEMPT[0]  # the output Dense; adaptive gradient clipping skips it


def pool_features(features):
    """A backbone output (4-D map, 3-D sequence or 2-D vector) averaged to `[B, C]`."""
    rank = len(features.shape)
    if rank == 4:
        return layers.GlobalAveragePooling2D(name="head_pool")(features)
    if rank == 3:
        return layers.GlobalAveragePooling1D(name="head_pool")(features)
    if rank != 2:
        raise ValueError(f"the head takes a [B, h, w, C], [B, T, C] or [B, C] tensor. Received: {features.shape}")
    return features


def classification_head(features, num_classes: int, num_features: int = 64, dropout: float = 0.0):
    """Pool a backbone output (4-D map, 3-D sequence or 2-D vector) and classify it."""
    x = layers.Dense(num_features, activation="selu", name="head_dense")(pool_features(features))
    if dropout:
        x = layers.Dropout(dropout, name="head_dropout")(x)
    return layers.Dense(num_classes, activation="softmax", dtype="float32", name=CLASSIFIER_LAYER)(x)


def batchnorm_layers(model):
    """Every BatchNormalization layer in `model`, nested models and composite layers included."""
    return [layer for layer in model._flatten_layers(include_self=False, recursive=True)
            if isinstance(layer, layers.BatchNormalization)]


def fix_batchnorm(model, freeze: bool = True, disable: bool = False, momentum: float | None = None):
    """`freeze`: BatchNorm layers stop training (statistics and affine); `disable`: they become identities;
    `momentum`: the moving-statistics momentum of every BatchNorm layer (kept as built when None)."""
    for layer in batchnorm_layers(model):
        if momentum is not None:
            layer.momentum = float(momentum)
        if disable:
            for weight in layer.weights:
                part = weight.path.rsplit("/", 1)[-1]
                value = 1.0 if part in ("gamma", "moving_variance") else 0.0
                weight.assign(np.full(weight.shape, value, dtype=weight.dtype))
        if freeze or disable:
            layer.trainable = False
    return model


def build_classifier(cfg, frontend: layers.Layer | None = None, spec_augment: layers.Layer | None = None,
                     fitted_head=None):
    """Build the model of `cfg`: waveforms `[B, cfg.num_samples]` float32 -> probabilities `[B, num_classes]`.

    `frontend` (waveforms -> `[B, H, W, 3]` images) defaults to `voxtrace.features.build_frontend(cfg)`,
    `spec_augment` (active only in training) to `voxtrace.features.SpecAugment` built from `cfg.augment`.
    Raw-waveform backbones (`features.kind: raw`) get the waveform `[B, N, 1]` and no SpecAugment.
    A frozen head (`model.head.kind` logistic, mlp or knn) takes its arrays from `fitted_head`
    (`voxtrace.models.heads.FittedHead`); without one, the model ends at the backbone's pooled features
    (the feature extractor that `attach_head` completes).
    """
    input_shape = backbone_input_shape(cfg)  # checks model.name, features.kind and features.img_size
    raw = cfg.features.kind == "raw"
    if frontend is None or spec_augment is None:
        from voxtrace import features

        frontend = frontend if frontend is not None else features.build_frontend(cfg)
        if spec_augment is None:
            spec_augment = layers.Identity(name="no_spec_augment") if raw else features.SpecAugment(cfg.augment)
    waveforms = keras.Input((cfg.num_samples,), dtype="float32", name="waveform")
    images = spec_augment(frontend(waveforms))
    backbone = create_model(cfg.model.name, input_shape, pretrain=cfg.model.pretrain, **cfg.model.options)
    features = backbone(images)
    if cfg.model.head.kind != "dense":
        features = pool_features(features)
    if cfg.model.head.kind == "dense":
        features = classification_head(features, cfg.num_classes, cfg.model.num_features, cfg.model.dropout)
    model = keras.Model(waveforms, features, name=cfg.run_name)
    fix_batchnorm(backbone, freeze=cfg.model.freeze_bn, disable=cfg.model.disable_bn, momentum=cfg.model.bn_momentum)
    return model if fitted_head is None else attach_head(model, cfg, fitted_head)


def attach_head(extractor, cfg, fitted_head):
    """`extractor` (waveforms -> pooled features) with the fitted frozen head of `cfg.model.head` on top."""
    probs = frozen_head(extractor.output, cfg.num_classes, cfg.model.head, CLASSIFIER_LAYER, fitted_head.bank_size)
    model = keras.Model(extractor.inputs, probs, name=cfg.run_name)
    fitted_head.assign(model)
    return model
