"""Frozen-feature members: heads against scikit-learn / brute-force references, the cache, the training run and
its checkpoint, geometric window merging, and ensemble weights fitted on out-of-fold scores."""

from __future__ import annotations

import keras
import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from fixtures_inference import write_clips
from voxtrace.config import Config
from voxtrace.models.classifier import CLASSIFIER_LAYER
from voxtrace.models.heads import frozen_head
from voxtrace.inference import features as clip_features
from voxtrace.training import frozen


def _head_model(cfg, fitted, dim):
    inputs = keras.Input((dim,))
    model = keras.Model(inputs, frozen_head(inputs, cfg.num_classes, cfg.model.head, CLASSIFIER_LAYER,
                                            fitted.bank_size))
    fitted.assign(model)
    return model


def _blobs(n=90, dim=12, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, n)
    centres = rng.normal(0, 2, (classes, dim))
    x = centres[labels] + rng.normal(0, 1.5, (n, dim)) * rng.uniform(0.2, 5, dim)
    return x, labels


def _cfg(**head):
    overrides = ["classes=[a, b, c]", "unknown_class=c", "model.name=cnn4"]
    overrides += [f"model.head.{k}={v}" for k, v in head.items()]
    return Config.load(None, overrides)


def test_logistic_head_equals_scikit_learn_pipeline():
    x, labels = _blobs()
    cfg = _cfg(kind="logistic", c=0.5)
    fitted = frozen.fit_head(cfg, x, np.eye(3)[labels], np.ones(len(x)))
    reference = LogisticRegression(C=0.5, max_iter=2000).fit(StandardScaler().fit_transform(x), labels)
    expected = reference.predict_proba(StandardScaler().fit(x).transform(x))
    got = _head_model(cfg, fitted, x.shape[1]).predict(x.astype("float32"), verbose=0)
    np.testing.assert_allclose(got, expected, atol=2e-5)


def test_known_only_logistic_never_predicts_the_unknown_class():
    x, labels = _blobs()
    known = labels != 2
    cfg = _cfg(kind="logistic", known_only="true")
    fitted = frozen.fit_head(cfg, x[known], np.eye(3)[labels[known]], np.ones(int(known.sum())))
    probs = _head_model(cfg, fitted, x.shape[1]).predict(x.astype("float32"), verbose=0)
    assert probs[:, 2].max() < 1e-6
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)


def test_binary_logistic_head_matches_scikit_learn():
    x, labels = _blobs(classes=2)
    cfg = Config.load(None, ["classes=[a, b]", "unknown_class=null", "model.name=cnn4", "model.head.kind=logistic"])
    fitted = frozen.fit_head(cfg, x, np.eye(2)[labels], np.ones(len(x)))
    scaler = StandardScaler().fit(x)
    expected = LogisticRegression(max_iter=2000).fit(scaler.transform(x), labels).predict_proba(scaler.transform(x))
    np.testing.assert_allclose(_head_model(cfg, fitted, x.shape[1]).predict(x.astype("float32"), verbose=0),
                               expected, atol=2e-5)


@pytest.mark.parametrize("weighted", [False, True])
def test_knn_head_matches_brute_force_vote(weighted):
    """Each of the k nearest clips votes exp(similarity / T) times its sample weight (data.balance: weights)."""
    x, labels = _blobs(n=60)
    queries = _blobs(n=15, seed=1)[0]
    cfg = _cfg(kind="knn", k=5, temperature=0.2)
    weights = np.array([1.0, 6.0, 0.5])[labels] if weighted else np.ones(len(x))
    fitted = frozen.fit_head(cfg, x, np.eye(3)[labels], weights)
    got = _head_model(cfg, fitted, x.shape[1]).predict(queries.astype("float32"), verbose=0)
    mean, std = x.mean(0), x.std(0)
    bank = (x - mean) / std
    bank /= np.linalg.norm(bank, axis=1, keepdims=True)
    q = (queries - mean) / std
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    sims = q @ bank.T
    expected = np.zeros((len(q), 3))
    for i, row in enumerate(sims):
        for j in np.argsort(-row)[:5]:
            expected[i, labels[j]] += weights[j] * np.exp(row[j] / 0.2)
    expected /= expected.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(got, expected, atol=1e-4)


def test_geometric_window_merge_is_logistic_regression_on_mean_features():
    """The probe's recipe: a clip's features are its windows' mean; merging window scores geometrically gives
    exactly the logistic regression of those mean features."""
    x, labels = _blobs()
    cfg = _cfg(kind="logistic").replace(audio__window_agg="geometric")
    fitted = frozen.fit_head(cfg, x, np.eye(3)[labels], np.ones(len(x)))
    rng = np.random.default_rng(3)
    windows = [rng.normal(0, 2, (k, x.shape[1])) for k in (1, 3, 4)]
    got = frozen.head_probs(cfg, fitted, windows)
    scaler = StandardScaler().fit(x)
    reference = LogisticRegression(max_iter=2000).fit(scaler.transform(x), labels)
    expected = reference.predict_proba(scaler.transform(np.stack([w.mean(axis=0) for w in windows])))
    np.testing.assert_allclose(got, expected, atol=2e-5)


def test_feature_cache_is_keyed_by_file_state(tmp_path):
    clip = tmp_path / "a.wav"
    clip.write_bytes(b"one")
    cache = clip_features.FeatureCache(tmp_path / "cache", "fp")
    cache.put(clip, 0, np.arange(6, dtype="float32").reshape(2, 3))
    np.testing.assert_array_equal(cache.get(clip, 0), np.arange(6).reshape(2, 3))
    assert cache.get(clip, 1) is None
    clip.write_bytes(b"changed")
    assert cache.get(clip, 0) is None


def test_frozen_training_run_oof_checkpoint_and_cache(tmp_path):
    """A logistic head on cnn4 features of the tone / noise corpus: leave-group-out OOF scores, a checkpoint whose
    predictions equal the head on the cached features, and a rerun that decodes nothing."""
    from fixtures_training import make_tone_noise_corpus, tone_noise_overrides

    from voxtrace.inference.predictor import predict_files
    from voxtrace.training.trainer import train

    corpus = make_tone_noise_corpus(tmp_path / "corpus", clips_per_class=8)
    overrides = tone_noise_overrides(corpus, tmp_path / "run", epochs=1) + [
        "model.head.kind=logistic", "audio.window_agg=geometric", f"model.head.cache_dir={tmp_path / 'cache'}"]
    cfg = Config.load(None, overrides)
    result = train(cfg)
    assert result["overall"]["f1"] > 0.9  # tones vs white noise are separable even on random features
    oof = pd.read_csv(f"{result['run_dir']}/csv/oof.csv")
    assert sorted(oof["path"]) == sorted(pd.read_csv(corpus)["path"]) and oof["fold"].nunique() == 3
    cached = sorted((tmp_path / "cache").rglob("*.npy"))
    assert len(cached) == 16

    model = keras.saving.load_model(result["checkpoints"][0])
    paths = list(pd.read_csv(corpus)["path"][:5])
    probs, errors = predict_files(model, cfg, paths, progress=False)
    extractor = keras.Model(model.inputs, model.get_layer("head_norm").input)  # the checkpoint's own backbone
    manifest = pd.read_csv(corpus)
    features, _ = clip_features.extract_features(cfg, extractor, list(manifest["path"]), progress=False)
    fitted = frozen.fit_head(cfg, np.stack([features[(p, 0)].mean(0) for p in manifest["path"]]),
                             np.eye(2)[manifest["label"].map(["tone", "noise"].index)], np.ones(len(manifest)))
    expected = frozen.head_probs(cfg, fitted, [features[(p, 0)] for p in paths])
    assert not errors
    np.testing.assert_allclose(probs, expected, atol=1e-4)

    mtimes = [p.stat().st_mtime_ns for p in cached]
    train(cfg)
    assert [p.stat().st_mtime_ns for p in sorted((tmp_path / "cache").rglob("*.npy"))] == mtimes


def test_frozen_members_predict_from_the_feature_cache(tmp_path, monkeypatch):
    """`Ensemble.predict` scores a frozen-head run from cached window features: the same probabilities as the
    waveform path, each new clip's features computed once, and a second prediction that decodes nothing."""
    from fixtures_training import make_tone_noise_corpus, tone_noise_overrides

    import voxtrace.data.audio
    from voxtrace.inference.ensemble import Ensemble
    from voxtrace.inference.predictor import predict_files
    from voxtrace.training.trainer import train

    corpus = make_tone_noise_corpus(tmp_path / "corpus", clips_per_class=6)
    overrides = tone_noise_overrides(corpus, tmp_path / "run", epochs=1) + [
        "model.head.kind=logistic", "audio.window_agg=geometric", f"model.head.cache_dir={tmp_path / 'cache'}"]
    cfg = Config.load(None, overrides)
    result = train(cfg)
    evaluation = list(pd.read_csv(make_tone_noise_corpus(tmp_path / "eval", clips_per_class=2))["path"])
    before = len(list((tmp_path / "cache").rglob("*.npy")))
    got = Ensemble(result["run_dir"]).predict(evaluation, progress=False)
    expected, _ = predict_files(keras.saving.load_model(result["checkpoints"][0]), cfg, evaluation, progress=False)
    np.testing.assert_allclose(got.probs, expected, atol=1e-4)
    assert len(list((tmp_path / "cache").rglob("*.npy"))) == before + len(evaluation)

    def no_decoding(*args, **kwargs):
        raise AssertionError("a cached clip was decoded again")

    monkeypatch.setattr(voxtrace.data.audio, "load_audio", no_decoding)
    again = Ensemble(result["run_dir"]).predict(evaluation, progress=False)
    np.testing.assert_array_equal(again.probs, got.probs)


def test_fit_member_weights_drops_a_useless_member_and_mixes_complementary_ones():
    from voxtrace.inference.ensemble import fit_member_weights

    rng = np.random.default_rng(0)
    classes = ["a", "b", "c"]
    labels = rng.integers(0, 3, 120)
    good = np.full((120, 3), 0.1)
    good[np.arange(120), labels] = 0.8
    noise = rng.dirichlet(np.ones(3), 120)

    def frame(probs):
        return pd.DataFrame({"path": [f"clip{i}" for i in range(120)], "label": np.array(classes)[labels],
                             **{c: probs[:, i] for i, c in enumerate(classes)}})

    weights, table = fit_member_weights({"good": frame(good), "noise": frame(noise)}, classes)
    assert weights == {"good": 1.0, "noise": 0.0} and table.iloc[0]["f1"] == 1.0

    # each member is right on half the clips, confidently; wrong on the other half, hesitantly: only a mix is right
    half = np.arange(120) < 60
    first, second = np.full((120, 3), 1 / 3), np.full((120, 3), 1 / 3)
    first[half] = 0.05
    first[half, labels[half]] = 0.9
    second[~half] = 0.05
    second[~half, labels[~half]] = 0.9
    weights, table = fit_member_weights({"first": frame(first), "second": frame(second)}, classes)
    assert 0 < weights["first"] < 1 and table.iloc[0]["f1"] == 1.0
    assert table.set_index(["first"]).loc[1.0, "f1"] < 1.0


@pytest.mark.parametrize("fmt", ["tflite", "onnx"])
def test_a_knn_member_exports_like_any_other(fmt, tmp_path):
    """The training-free kNN head (its bank, top-k and vote) survives export: exported probabilities equal Keras'."""
    from fixtures_training import make_tone_noise_corpus, tone_noise_overrides

    from voxtrace.cli import main
    from voxtrace.inference.checkpoints import load_checkpoint
    from voxtrace.inference.export import load_exported_ensemble
    from voxtrace.inference.predictor import predict_files
    from voxtrace.training.trainer import train

    corpus = make_tone_noise_corpus(tmp_path / "corpus", clips_per_class=6)
    cfg = Config.load(None, tone_noise_overrides(corpus, tmp_path / "run", epochs=1)
                      + ["model.head.kind=knn", "model.head.k=3"])
    result = train(cfg)
    out = tmp_path / fmt
    assert main(["export", "--model-dir", str(tmp_path / "run"), "--format", fmt, "--out", str(out)]) == 0
    paths = list(pd.read_csv(corpus)["path"][::3])
    keras_probs, _ = predict_files(load_checkpoint(result["checkpoints"][0]), cfg, paths, progress=False)
    exported_probs, errors = predict_files(load_exported_ensemble(out)[0], cfg, paths, progress=False)
    assert not errors and np.ptp(keras_probs[:, 0]) > 0.1
    np.testing.assert_allclose(exported_probs, keras_probs, atol=1e-4)


def test_bad_head_and_state_options_name_their_key():
    from voxtrace.config import ConfigError
    from voxtrace.models.whisper import select_states

    with pytest.raises(ConfigError, match="model.head.kind"):
        Config.load(None, ["model.head.kind=svm"])
    with pytest.raises(ConfigError, match="model.head.known_only"):
        Config.load(None, ["model.head.known_only=true"])  # the dense head trains end to end: nothing to leave out
    with pytest.raises(ConfigError, match="model.head.augment_draws"):
        Config.load(None, ["model.head.kind=logistic", "model.head.augment_draws=-1"])
    assert select_states("all", 4) == [0, 1, 2, 3, 4] and select_states([-1, 2], 4) == [2, 4]
    with pytest.raises(ValueError, match="states"):
        select_states([7], 4)


def test_fold_head_checkpoints_are_the_heads_behind_the_out_of_fold_scores(tmp_path):
    """`model.head.save=folds`: one checkpoint per fold, each scoring like a logistic regression (scikit-learn)
    fitted on the other folds' mean clip features, and reproducing its held-out fold's rows of csv/oof.csv; the
    all-data checkpoint of an earlier run in the same folder is removed, so `predict` averages the folds only."""
    from fixtures_training import make_tone_noise_corpus, tone_noise_overrides

    from voxtrace.config import ConfigError
    from voxtrace.inference.predictor import predict_files
    from voxtrace.training.trainer import train

    corpus = make_tone_noise_corpus(tmp_path / "corpus", clips_per_class=8)
    overrides = tone_noise_overrides(corpus, tmp_path / "run", epochs=1) + [
        "model.head.kind=logistic", "model.head.c=0.05", "audio.window_agg=geometric",
        f"model.head.cache_dir={tmp_path / 'cache'}"]
    all_data = train(Config.load(None, overrides))
    assert [p.rsplit("/", 1)[1] for p in all_data["checkpoints"]] == ["model.keras"]
    cfg = Config.load(None, overrides + ["model.head.save=folds"])
    result = train(cfg)
    run_dir = tmp_path / "run" / cfg.run_name
    assert sorted(p.name for p in (run_dir / "ckpt").glob("*.keras")) == ["fold-0.keras", "fold-1.keras",
                                                                          "fold-2.keras"]
    assert sorted(result["checkpoints"]) == sorted(str(p) for p in (run_dir / "ckpt").glob("*.keras"))

    oof = pd.read_csv(run_dir / "csv" / "oof.csv")
    model = keras.saving.load_model(run_dir / "ckpt" / "fold-0.keras")
    extractor = keras.Model(model.inputs, model.get_layer("head_norm").input)
    features, _ = clip_features.extract_features(cfg, extractor, list(oof["path"]), progress=False)
    clip_x = np.stack([features[(p, 0)].mean(axis=0) for p in oof["path"]])
    labels = oof["label"].map(["tone", "noise"].index).to_numpy()
    for fold in range(3):
        held = (oof["fold"] == fold).to_numpy()
        checkpoint = keras.saving.load_model(run_dir / "ckpt" / f"fold-{fold}.keras")
        probs, errors = predict_files(checkpoint, cfg, list(oof["path"][held]), progress=False)
        assert not errors
        np.testing.assert_allclose(probs, oof.loc[held, ["tone", "noise"]].to_numpy(), atol=1e-4)
        scaler = StandardScaler().fit(clip_x[~held])
        reference = LogisticRegression(C=0.05, max_iter=2000).fit(scaler.transform(clip_x[~held]), labels[~held])
        np.testing.assert_allclose(probs, reference.predict_proba(scaler.transform(clip_x[held])), atol=1e-4)

    with pytest.raises(ConfigError, match="model.head.save"):
        train(Config.load(None, overrides + ["model.head.save=best"]))


def test_features_fill_whole_batches_across_clips_and_equal_clip_by_clip(tmp_path, monkeypatch):
    """Windows of consecutive clips share batches: the backbone runs on ceil(windows / batch) full batches (only
    the last padded), and every clip's features and cache entry equal its windows run on their own."""
    cfg = Config.load(None, ["classes=[a, b, c]", "unknown_class=c", "model.name=cnn4", "audio.duration=0.2",
                             "model.head.kind=logistic", "model.head.jit_compile=false"])
    paths = write_clips(tmp_path / "audio", n=9, seconds=(0.25, 0.9))
    extractor = clip_features.feature_extractor(cfg)
    windows = {path: clip_features._clip_windows(cfg, path, 0) for path in paths}
    expected = {path: extractor.predict_on_batch(w) for path, w in windows.items()}
    total = sum(len(w) for w in windows.values())
    assert total > 4 * 4 and total % 4 and {len(w) for w in windows.values()} != {1}
    batches = []
    run = extractor.predict_on_batch
    monkeypatch.setattr(extractor, "predict_on_batch", lambda batch: batches.append(len(batch)) or run(batch))
    cache = clip_features.FeatureCache(tmp_path / "cache", "test")
    features, errors = clip_features.extract_features(cfg, extractor, paths + [tmp_path / "missing.wav"],
                                                      cache=cache, batch_size=4, progress=False)
    assert batches == [4] * -(-total // 4) and list(errors) == [str(tmp_path / "missing.wav")]
    for path in paths:
        np.testing.assert_allclose(features[(path, 0)], expected[path], atol=1e-5)
        np.testing.assert_array_equal(cache.get(path, 0), features[(path, 0)])


def test_xla_features_equal_plain_ones_and_an_uncompilable_backbone_falls_back(tmp_path, caplog):
    """`model.head.jit_compile` computes the cached features with XLA: equal to the plain extractor's within 1e-5;
    a backbone XLA cannot compile (here a NumPy op) warns once and is computed without."""
    import tensorflow as tf

    cfg = _cfg(kind="logistic")
    paths = write_clips(tmp_path / "audio", n=4)
    extractor = clip_features.feature_extractor(cfg)
    plain, _ = clip_features.extract_features(_cfg(kind="logistic", jit_compile="false"), extractor, paths,
                                              progress=False)
    xla, _ = clip_features.extract_features(cfg, extractor, paths, progress=False)
    assert isinstance(clip_features.compiled(extractor), clip_features.XlaExtractor)
    for path in paths:
        np.testing.assert_allclose(xla[(path, 0)], plain[(path, 0)], atol=1e-5 * np.abs(plain[(path, 0)]).max())

    inputs = keras.Input((cfg.num_samples,))
    doubled = keras.layers.Lambda(lambda x: tf.reshape(tf.numpy_function(lambda a: a * 2, [x], tf.float32),
                                                       [-1, cfg.num_samples])[:, :8], output_shape=(8,))(inputs)
    odd = keras.Model(inputs, doubled)
    with caplog.at_level("WARNING"):
        features, errors = clip_features.extract_features(cfg, odd, paths[:2], progress=False)
    assert "XLA cannot compile" in caplog.text and not errors
    windows = clip_features._clip_windows(cfg, paths[0], 0)
    np.testing.assert_allclose(features[(paths[0], 0)], 2 * windows[:, :8], rtol=1e-6)
