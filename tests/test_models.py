"""Backbone registry, every registered backbone end to end, the classifier, pretrain handling and AGC."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from voxtrace.config import Config
from voxtrace.models import (
    PretrainError,
    adaptive_clip_gradients,
    build_classifier,
    classification_head,
    create_model,
    get_entry,
    is_agc_exempt,
    list_models,
    registry,
)
from voxtrace.models.classifier import batchnorm_layers
from voxtrace.models.weights import keras_cache_dir

# One representative per family runs by default; the rest (same code paths at other widths and depths, up
# to hundreds of millions of weights) take 10-60 s each on a 2-core CPU and run with `-m slow`.
FAST_MODELS = {
    "cnn4", "convnext_tiny", "dilated_cnn", "ECA_NFNetL0", "EfficientNetB0", "EfficientNetV2B0",
    "mobilenetv3_bilstm", "MobileNetV3Large", "MobileNetV3Small", "RegNetX002", "RegNetY002", "ResNeSt50",
    "resnet18", "ResNet50", "ResNet50D", "ResNetRS50", "ast_tiny", "rawnet2_tiny", "wav2vec_conv_tiny",
    "whisper_tiny_en",
}
WAVEFORM_SHAPE = (8000, 1)  # raw-waveform backbones: half a second at 16 kHz


def test_every_family_trains_in_the_default_suite():
    names = list_models(include_aliases=False)
    assert FAST_MODELS <= set(names), sorted(FAST_MODELS - set(names))
    assert {get_entry(n).family for n in FAST_MODELS} == {get_entry(n).family for n in names}


def _model_params():
    names = list_models(include_aliases=False)
    return [n if n in FAST_MODELS else pytest.param(n, marks=pytest.mark.slow) for n in names]


def _one_hot(labels, num_classes):
    return np.eye(num_classes, dtype="float32")[labels]


@pytest.mark.parametrize("name", _model_params())
def test_backbone_builds_trains_saves_and_reloads(name, tmp_path):
    size = max(get_entry(name).min_size, 32)
    shape = WAVEFORM_SHAPE if get_entry(name).waveform else (size, 2 * size, 3)
    inputs = keras.Input(shape)
    model = keras.Model(inputs, classification_head(create_model(name, shape)(inputs), 3, num_features=8))
    x = np.random.default_rng(0).normal(size=(2, *shape)).astype("float32")
    y = _one_hot([0, 2], 3)

    probs = model(x, training=False)
    assert probs.shape == (2, 3)
    np.testing.assert_allclose(np.sum(probs, axis=-1), 1.0, rtol=1e-5)

    variables = model.trainable_variables
    before = [v.numpy().copy() for v in variables]
    with tf.GradientTape() as tape:
        loss = keras.ops.mean(keras.losses.categorical_crossentropy(y, model(x, training=True)))
    grads = tape.gradient(loss, variables)
    assert np.isfinite(float(loss))
    assert all(g is not None for g in grads), [v.path for v, g in zip(variables, grads) if g is None]
    keras.optimizers.SGD(0.1).apply(grads, variables)
    assert any(not np.allclose(b, v.numpy()) for b, v in zip(before, variables))

    expected = model(x, training=False)
    path = tmp_path / f"{name}.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    np.testing.assert_allclose(loaded(x, training=False), expected, atol=1e-5)


def test_aliases_resolve_to_their_architecture():
    aliases = sorted(set(list_models()) - set(list_models(include_aliases=False)))
    assert {"RegNetZD8", "convnext_base_in22k", "convnext_large_in22k"} <= set(aliases)
    for alias in aliases:
        entry = get_entry(alias)
        assert entry.builder is get_entry(entry.alias_of).builder
    assert get_entry("convnext_base_in22k").default_pretrain == "imagenet21k"
    assert get_entry("RegNetZD8").alias_of == "RegNetY040"
    # The reference's spellings and case-insensitive matching.
    for name in ["ResNest50", "resnest50", "ResNet50D", "NFNet-F0", "eca_nfnetl2", "efficientnetb0"]:
        get_entry(name)


def test_list_models_filters_and_sorts():
    assert list_models("EfficientNetV2*") == [f"EfficientNetV2{v}" for v in ["B0", "B1", "B2", "B3", "L", "M", "S"]]
    assert list_models("regnety0*") == [f"RegNetY0{c}" for c in ["02", "04", "06", "08", "16", "32", "40", "64", "80"]]
    assert list_models("*nfnet*") == ["ECA_NFNetL0", "ECA_NFNetL1", "ECA_NFNetL2", "NFNetF0"]
    names = list_models()
    assert names == sorted(names, key=str.lower)
    assert list_models("no_such_model*") == []


def test_unknown_name_suggests_close_matches():
    with pytest.raises(ValueError, match=r"Did you mean: .*ResNetRS50.*list_models\(\)") as err:
        create_model("ResNetRS05", (64, 64, 3))
    assert "Received: name='ResNetRS05'" in str(err.value)


def test_none_kwargs_are_dropped_and_input_size_checked():
    backbone = create_model("cnn4", (32, 48), filters=None, kernel_size=None)
    assert backbone.output_shape == (None, 2, 3, 128)
    with pytest.raises(ValueError, match=r"at least 32x32.*input_shape=\[16, 64\]"):
        create_model("ResNet50D", (16, 64, 3))


def test_adaptive_clip_gradients_clips_large_and_keeps_small():
    kernel = np.ones((4, 3), "float32")  # unit-wise norm per output column: 2.0
    bias = np.zeros((3,), "float32")
    small = np.full((4, 3), 0.001, "float32")
    large = np.full((4, 3), 10.0, "float32")  # column norm 20 > 0.01 * 2
    out_small, out_large, out_bias, out_none = adaptive_clip_gradients(
        [small, large, np.full((3,), 1.0, "float32"), None], [kernel, kernel, bias, bias], clip_factor=0.01
    )
    np.testing.assert_allclose(out_small, small)
    np.testing.assert_allclose(np.linalg.norm(np.asarray(out_large), axis=0), [0.02] * 3, rtol=1e-5)
    # Zero weights count as norm eps=1e-3: the bias gradient (norm sqrt(3)) is cut to 0.01 * 1e-3.
    np.testing.assert_allclose(np.linalg.norm(np.asarray(out_bias)), 1e-5, rtol=1e-4)
    assert out_none is None


def test_agc_exempts_the_classifier_only():
    inputs = keras.Input((8, 8, 3))
    model = keras.Model(inputs, classification_head(keras.layers.Conv2D(4, 3)(inputs), 3))
    exempt = {v.path for v in model.trainable_variables if is_agc_exempt(v)}
    assert exempt == {"classifier/kernel", "classifier/bias"}


def test_imagenet_offline_names_the_file_and_cache(monkeypatch):
    def offline(*args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr(keras.utils, "get_file", offline)
    with pytest.raises(PretrainError) as err:
        create_model("MobileNetV3Small", (32, 32, 3), pretrain="imagenet")
    message = str(err.value)
    assert "weights_mobilenet_v3_small_224_1.0_float_no_top_v2.h5" in message
    assert str(keras_cache_dir() / "models" / "weights_mobilenet_v3_small") in message
    assert "https://storage.googleapis.com/" in message
    with pytest.raises(PretrainError, match=r"kimm_models/regnetx002_.*\.keras"):
        create_model("RegNetX002", (32, 32, 3), pretrain="imagenet")


def test_pretrain_errors_name_what_is_wrong(tmp_path):
    with pytest.raises(PretrainError, match="no published ImageNet weights"):
        create_model("cnn4", (32, 32), pretrain="imagenet")
    with pytest.raises(PretrainError, match="ImageNet-1k weights only"):
        create_model("convnext_tiny_in22k", (32, 32), pretrain="default")
    with pytest.raises(PretrainError, match="weights file not found"):
        create_model("cnn4", (32, 32), pretrain=str(tmp_path / "missing.weights.h5"))
    with pytest.raises(PretrainError, match=r"Received: pretrain='imagenet1000'"):
        create_model("cnn4", (32, 32), pretrain="imagenet1000")


def test_local_weights_files_load(tmp_path):
    source = create_model("cnn4", (32, 32))
    source.save_weights(tmp_path / "cnn4.weights.h5")
    loaded = create_model("cnn4", (32, 32), pretrain=str(tmp_path / "cnn4.weights.h5"))
    for a, b in zip(source.weights, loaded.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())

    # A whole classifier saved as .keras: the backbone's layers load by name, its 5-class head is skipped.
    inputs = keras.Input((32, 32, 3))
    classifier = keras.Model(inputs, classification_head(source(inputs), 5))
    classifier.save(tmp_path / "classifier.keras")
    fresh = create_model("cnn4", (32, 32), pretrain=str(tmp_path / "classifier.keras"))
    np.testing.assert_array_equal(fresh.get_layer("conv3").kernel.numpy(), source.get_layer("conv3").kernel.numpy())


# ---- build_classifier with a stand-in front-end -------------------------------------------------------------
@keras.saving.register_keras_serializable(package="voxtrace_tests")
class WaveformImage(keras.layers.Layer):
    """Stand-in front-end: lays the waveform out as an [H, W] image and repeats it over 3 channels."""

    def __init__(self, height, width, **kwargs):
        super().__init__(**kwargs)
        self.height, self.width = height, width

    def call(self, waveforms):
        image = keras.ops.reshape(waveforms, (-1, self.height, self.width, 1))
        return keras.ops.repeat(image, 3, axis=-1)

    def get_config(self):
        return {**super().get_config(), "height": self.height, "width": self.width}


def _cfg(name="dilated_cnn", **model):
    return Config.from_dict({
        "audio": {"duration": 32 * 64 / 16000},
        "features": {"img_size": [32, 64]},
        "augment": {"freq_mask": 4, "time_mask": 8},
        "model": {"name": name, "num_features": 8, "dropout": 0.1, **model},
    })


def _classifier(cfg):
    return build_classifier(cfg, frontend=WaveformImage(32, 64), spec_augment=keras.layers.Identity())


def test_build_classifier_maps_waveforms_to_probabilities(tmp_path):
    cfg = _cfg()
    model = _classifier(cfg)
    assert model.name == cfg.run_name == "dilated_cnn-32x64"
    waves = np.random.default_rng(1).uniform(-1, 1, (2, cfg.num_samples)).astype("float32")
    probs = model(waves, training=False)
    assert probs.shape == (2, cfg.num_classes) and probs.dtype == "float32"
    model.compile(optimizer="adam", loss="categorical_crossentropy")
    model.train_on_batch(waves, _one_hot([0, 5], cfg.num_classes))
    expected = model(waves, training=False)
    model.save(tmp_path / "model.keras")
    loaded = keras.saving.load_model(tmp_path / "model.keras", safe_mode=True)
    assert loaded.name == cfg.run_name
    np.testing.assert_allclose(loaded(waves, training=False), expected, atol=1e-5)


def test_freeze_and_disable_batchnorm():
    frozen = _classifier(_cfg(freeze_bn=True))
    bns = [layer for layer in frozen._flatten_layers() if isinstance(layer, keras.layers.BatchNormalization)]
    assert bns and all(not layer.trainable for layer in bns)
    assert _classifier(_cfg()).get_layer("dilated_cnn").get_layer("dil1_bn").trainable
    disabled = _classifier(_cfg(disable_bn=True)).get_layer("dilated_cnn").get_layer("dil1_bn")
    np.testing.assert_array_equal(disabled.gamma.numpy(), 1.0)
    np.testing.assert_array_equal(disabled.moving_mean.numpy(), 0.0)
    assert not disabled.trainable


def test_build_classifier_refuses_images_below_the_backbone_minimum(monkeypatch):
    entry = registry.ModelEntry(name="needs64", builder=get_entry("cnn4").builder, min_size=64)
    monkeypatch.setitem(registry._REGISTRY, "needs64", entry)
    with pytest.raises(ValueError, match=r"needs64 needs images of at least 64x64.*features\.img_size=\[32, 64\]"):
        _classifier(_cfg("needs64"))


def test_build_classifier_uses_the_configured_frontend_and_spec_augment(tmp_path):
    from voxtrace import features

    cfg = Config.from_dict({
        "audio": {"duration": 0.5},
        "features": {"img_size": [32, 64], "n_fft": 256, "win_length": 256},
        "augment": {"freq_mask": 4, "time_mask": 8},
        "model": {"name": "cnn4", "num_features": 8},
    })
    model = build_classifier(cfg)
    assert any(isinstance(layer, features.SpecAugment) for layer in model.layers)
    waves = np.random.default_rng(2).uniform(-0.5, 0.5, (2, cfg.num_samples)).astype("float32")
    expected = model(waves, training=False)
    assert expected.shape == (2, cfg.num_classes)
    model.save(tmp_path / "model.keras")
    loaded = keras.saving.load_model(tmp_path / "model.keras", safe_mode=True)
    np.testing.assert_allclose(loaded(waves, training=False), expected, atol=1e-5)


def test_efficientnet_sees_the_normalised_image_at_the_scale_it_expects():
    """EfficientNetB* divide by 255 inside; the wrapper undoes it so the stem BatchNorm gets unit-scale input."""
    backbone = create_model("EfficientNetB0", (32, 64, 3))
    inner = next(layer for layer in backbone.layers if isinstance(layer, keras.Model))
    stem_input = keras.Model(inner.input, inner.get_layer("stem_conv").output)
    image = np.random.default_rng(0).standard_normal((2, 32, 64, 3)).astype("float32")
    undo = backbone.get_layer("undo_rescale")(image)
    assert float(np.std(stem_input(undo, training=False))) > 0.1  # was ~0.004: below BatchNorm's epsilon


def test_bn_momentum_applies_to_every_batchnorm_and_survives_saving(tmp_path):
    cfg = Config.load(None, ["model.name=resnet18", "features.img_size=[32, 64]", "audio.duration=0.5",
                             "model.bn_momentum=0.9"])
    model = build_classifier(cfg)
    norms = batchnorm_layers(model)
    assert norms and {layer.momentum for layer in norms} == {0.9}
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras", safe_mode=True)
    assert {layer.momentum for layer in batchnorm_layers(loaded)} == {0.9}
