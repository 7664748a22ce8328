"""The spectrogram transformer (`ast_*`) and the raw-waveform backbones (`rawnet2*`, `wav2vec_conv*`): registry
checks, position-embedding interpolation, SincNet filters, the `raw` front-end, front-end / backbone
validation, and a raw model ensembled with a spectrogram model through the inference module."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from fixtures_inference import write_clips
from voxtrace.config import Config, ConfigError
from voxtrace.features import RawWaveform, build_frontend
from voxtrace.inference.checkpoints import load_checkpoint
from voxtrace.inference.ensemble import Ensemble
from voxtrace.inference.predictor import predict_files
from voxtrace.models import build_classifier, create_model, get_entry, list_models
from voxtrace.models.ast import PatchTokens, resize_position_grid
from voxtrace.models.raw import SincConv1D, backbone_input_shape, waveform_models


def test_families_are_registered():
    assert {"ast_tiny", "ast_small", "ast_base"} <= set(list_models("ast_*"))
    assert waveform_models() == ["rawnet2", "rawnet2_tiny", "wav2vec_conv", "wav2vec_conv_tiny", "whisper_base",
                                 "whisper_small", "whisper_tiny_en"]
    assert not get_entry("ast_tiny").waveform and get_entry("rawnet2_tiny").waveform


def bilinear_grid(table, grid):
    """`table` [h, w, D] sampled bilinearly at the centres of a `grid` of cells spanning the same extent
    (half-pixel centres, edges clamped), by scipy in float64."""
    from scipy.interpolate import RegularGridInterpolator

    h, w, _ = table.shape
    rows = np.clip((np.arange(grid[0]) + 0.5) * h / grid[0] - 0.5, 0, h - 1)
    cols = np.clip((np.arange(grid[1]) + 0.5) * w / grid[1] - 0.5, 0, w - 1)
    points = np.stack(np.meshgrid(rows, cols, indexing="ij"), axis=-1)
    return RegularGridInterpolator((np.arange(h), np.arange(w)), np.asarray(table, np.float64))(points)


def test_position_grid_resize_is_bilinear():
    table = np.random.default_rng(0).normal(size=(2, 4, 5)).astype("float32")
    for grid in ((4, 4), (3, 5), (5, 9), (1, 2)):
        np.testing.assert_allclose(resize_position_grid(table, grid), bilinear_grid(table, grid), atol=1e-6)
    # two rows to four: the first is the source row (edge clamped), the second a quarter of the way to the next
    doubled = resize_position_grid(table, (4, 4)).numpy()
    np.testing.assert_allclose(doubled[0], table[0], atol=1e-6)
    np.testing.assert_allclose(doubled[1], 0.75 * table[0] + 0.25 * table[1], atol=1e-6)
    np.testing.assert_array_equal(resize_position_grid(table, (2, 4)), table)


def test_ast_overlapping_patches_and_position_interpolation(tmp_path):
    overlapping = create_model("ast_tiny", (32, 64), patch_stride=8, depth=1)
    assert overlapping.get_layer("tokens").grid_size == (3, 7)
    assert overlapping.output_shape == (None, 192)

    source = create_model("ast_tiny", (32, 64), depth=2)
    source.save_weights(tmp_path / "ast.weights.h5")
    # Built for another image size: the 2x4 position grid is interpolated to 4x4, everything else is copied.
    target = create_model("ast_tiny", (64, 64), depth=2, pretrain=str(tmp_path / "ast.weights.h5"))
    src_pos = source.get_layer("tokens").patch_position.numpy()
    np.testing.assert_allclose(target.get_layer("tokens").patch_position.numpy(), bilinear_grid(src_pos, (4, 4)),
                               atol=1e-6)
    np.testing.assert_array_equal(target.get_layer("block1_mlp2").kernel.numpy(),
                                  source.get_layer("block1_mlp2").kernel.numpy())

    # At run time, other image sizes are served from the stored grid too.
    layer = source.get_layer("tokens")
    patches = tf.random.normal((2, 3, 5, 192))
    tokens = layer(patches)
    assert tokens.shape == (2, 16, 192)
    expected = patches.numpy().reshape(2, 15, 192) + bilinear_grid(src_pos, (3, 5)).reshape(1, 15, 192)
    np.testing.assert_allclose(tokens[:, 1:], expected, atol=1e-5)
    np.testing.assert_allclose(tokens[0, 0], layer.cls_token[0] + layer.cls_position[0], atol=1e-6)
    assert PatchTokens.from_config(layer.get_config()).grid_size == (2, 4)


def test_ast_refuses_bad_geometry():
    with pytest.raises(ValueError, match=r"patch_stride must be within \[1, patch_size=16\]"):
        create_model("ast_tiny", (32, 64), patch_stride=20)
    with pytest.raises(ValueError, match=r"at least 24x24 \(patch_size\).*input_shape=\[16, 64, 3\]"):
        create_model("ast_tiny", (16, 64), patch_size=24)


def test_sinc_filters_are_mel_spaced_band_passes():
    layer = SincConv1D(8, 257, sample_rate=16000)
    layer.build((None, 4000, 1))
    kernels = np.asarray(layer.kernels())[:, 0, :]
    low = 50.0 + np.abs(layer.low_hz.numpy())
    high = np.minimum(low + 50.0 + np.abs(layer.band_hz.numpy()), 8000.0)
    assert np.all(np.diff(low) > 0) and np.all(np.diff(np.diff(low)) > 0)  # mel spacing: widening gaps
    response = np.abs(np.fft.rfft(kernels, 4096, axis=0))
    freqs = np.fft.rfftfreq(4096, 1 / 16000)
    peaks = freqs[response.argmax(axis=0)]
    assert np.all((peaks >= low - 40) & (peaks <= high + 40)), (peaks, low, high)
    np.testing.assert_allclose(response.max(axis=0), 1.0, atol=0.15)  # unit pass-band gain
    config = SincConv1D.from_config(layer.get_config()).get_config()
    assert config == layer.get_config()

    x = np.random.default_rng(0).normal(size=(2, 4000, 1)).astype("float32")
    with tf.GradientTape() as tape:
        y = SincConv1D(8, 65, strides=2, magnitude=True)(x)
        loss = tf.reduce_mean(y)
    assert y.shape == (2, 2000, 8) and float(tf.reduce_min(y)) >= 0.0
    assert all(g is not None for g in tape.gradient(loss, tape.watched_variables()))


def test_raw_backbones_take_waveforms_and_check_their_length():
    assert create_model("rawnet2_tiny", (8000, 1)).output_shape == (None, 64)
    assert create_model("wav2vec_conv_tiny", (8000, 1)).output_shape == (None, 64)
    with pytest.raises(ValueError, match=r"needs at least 400 samples.*input_shape=\[200, 1\]"):
        create_model("wav2vec_conv_tiny", (200, 1))


def _cfg(name, kind, **extra):
    return Config.from_dict({
        "classes": ["a", "b", "c"], "unknown_class": "c",
        "audio": {"duration": 0.25, "window_hop": 0.5}, "features": {"kind": kind, "img_size": [32, 64], "n_fft": 256, "win_length": 256},
        "augment": {"freq_mask": 4, "time_mask": 8}, "model": {"name": name, "num_features": 8},
        "infer": {"batch_size": 4}, **extra,
    })


def test_raw_frontend_passes_the_waveform_through():
    layer = build_frontend(_cfg("rawnet2_tiny", "raw"))
    assert isinstance(layer, RawWaveform) and layer.name == "raw_frontend"
    x = np.random.default_rng(0).uniform(-1, 1, (2, 4000)).astype("float32")
    np.testing.assert_array_equal(layer(x), x[..., None])
    assert RawWaveform.from_config(layer.get_config()).sample_rate == 16000


def test_frontend_and_backbone_must_agree():
    with pytest.raises(ConfigError, match=r"rawnet2_tiny is a raw-waveform backbone.*features\.kind=raw.*"
                                          r"Received: features\.kind='logmel'"):
        build_classifier(_cfg("rawnet2_tiny", "logmel"))
    with pytest.raises(ConfigError, match=r"features\.kind='raw'.*Received: model\.name='cnn4'"):
        build_classifier(_cfg("cnn4", "raw"))
    with pytest.raises(ConfigError, match=r"model\.name: unknown model name 'cnn5'"):
        backbone_input_shape(_cfg("cnn5", "logmel"))
    assert backbone_input_shape(_cfg("rawnet2_tiny", "raw")) == (4000, 1)
    assert backbone_input_shape(_cfg("cnn4", "logmel")) == (32, 64, 3)


def test_raw_classifier_trains_saves_and_reloads(tmp_path):
    cfg = _cfg("rawnet2_tiny", "raw")
    model = build_classifier(cfg)
    assert not any(type(layer).__name__ == "SpecAugment" for layer in model.layers)
    waves = np.random.default_rng(1).uniform(-0.5, 0.5, (2, cfg.num_samples)).astype("float32")
    model.compile(optimizer="adam", loss="categorical_crossentropy")
    model.train_on_batch(waves, np.eye(3, dtype="float32")[[0, 2]])
    expected = model(waves, training=False)
    model.save(tmp_path / "raw.keras")
    loaded = keras.saving.load_model(tmp_path / "raw.keras", safe_mode=True)
    np.testing.assert_allclose(loaded(waves, training=False), expected, atol=1e-5)


def save_untrained_runs(model_dir, duration=0.25, models=(("rawnet2_tiny", "raw"), ("cnn4", "logmel"))):
    """`MODEL_DIR/{run}/ckpt/fold-0.keras` + `cfg/config.yaml` of freshly initialised classifiers."""
    for name, kind in models:
        cfg = _cfg(name, kind, audio={"duration": duration})
        run = model_dir / cfg.run_name
        cfg.save(run / "cfg" / "config.yaml")
        (run / "ckpt").mkdir(parents=True)
        build_classifier(cfg).save(run / "ckpt" / "fold-0.keras")


def test_raw_and_spectrogram_models_ensemble_through_inference(tmp_path):
    model_dir = tmp_path / "models"
    save_untrained_runs(model_dir)
    clips = write_clips(tmp_path / "clips", n=3)

    result = Ensemble(model_dir).predict(clips, progress=False)
    assert set(result.per_model) == {"rawnet2_tiny-0.25s", "cnn4-32x64"} and not result.errors
    for run_name, probs in result.per_model.items():
        cfg = Config.load(model_dir / run_name / "cfg" / "config.yaml")
        alone, _ = predict_files(load_checkpoint(model_dir / run_name / "ckpt" / "fold-0.keras"), cfg, clips,
                                 progress=False)
        np.testing.assert_allclose(probs, alone, atol=1e-5)
    np.testing.assert_allclose(result.probs, np.mean(list(result.per_model.values()), axis=0), atol=1e-6)
    np.testing.assert_allclose(result.probs.sum(axis=1), 1.0, atol=1e-5)
