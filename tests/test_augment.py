"""Waveform, voice, channel and batch augmentation."""

import numpy as np
import pytest
import tensorflow as tf

from voxtrace.config import Config
from voxtrace.data.augment import (
    PERTURBATIONS,
    apply_perturbations,
    augment_waveform,
    batch_augment,
    cutmix,
    mixup,
    perturb_augment,
    waveform_augment,
)

SR = 16000


def _speechlike(n=SR, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(n) / SR
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 3 * t)
    x = envelope * (np.sin(2 * np.pi * 140 * t) + 0.5 * np.sin(2 * np.pi * 1100 * t)) + 0.01 * rng.normal(size=n)
    return (0.1 * x).astype(np.float32)


def _augment(**probs):
    zeros = {k: 0.0 for k in ("audio_augment_prob", "gn_prob", "timeshift_prob", "timereverse_prob",
                              "noise_snr_prob", "reverb_prob", "bandlimit_prob", "codec_prob", "pitch_prob",
                              "formant_prob", "speed_prob", "mixup_prob", "cutmix_prob")}
    return Config.from_dict({"augment": {**zeros, **probs}}).augment


@pytest.mark.parametrize("name", PERTURBATIONS)
def test_each_perturbation_changes_signal_keeps_shape(name):
    x = _speechlike()
    flags = [p == name for p in PERTURBATIONS]
    y = apply_perturbations(x, flags, seed=7, sample_rate=SR)
    assert y.shape == x.shape and y.dtype == np.float32 and np.all(np.isfinite(y))
    assert not np.allclose(x, y, atol=1e-4)
    np.testing.assert_array_equal(y, apply_perturbations(x, flags, seed=7, sample_rate=SR))


def test_no_probability_means_identity():
    x = _speechlike()
    cfg = _augment()
    for fn in (lambda v: waveform_augment(v, cfg), lambda v: perturb_augment(v, cfg, SR)):
        np.testing.assert_array_equal(fn(tf.constant(x)).numpy(), x)
    cfg = _augment(audio_augment_prob=1.0, gn_prob=1.0, reverb_prob=1.0)
    cfg.enabled = False
    np.testing.assert_array_equal(augment_waveform(tf.constant(x), cfg, SR).numpy(), x)


def test_augment_waveform_in_a_tf_function_changes_signal_keeps_shape():
    cfg = _augment(audio_augment_prob=1.0, gn_prob=1.0, timeshift_prob=1.0, timereverse_prob=1.0,
                   noise_snr_prob=1.0, reverb_prob=1.0, bandlimit_prob=1.0, codec_prob=1.0,
                   pitch_prob=1.0, formant_prob=1.0, speed_prob=1.0)
    x = _speechlike()
    fn = tf.function(lambda v: augment_waveform(v, cfg, SR), input_signature=[tf.TensorSpec([SR], tf.float32)])
    y = fn(tf.constant(x))
    assert y.shape == (SR,) and y.dtype == tf.float32
    y = y.numpy()
    assert np.all(np.isfinite(y)) and not np.allclose(x, y, atol=1e-3)
    reversed_only = waveform_augment(tf.constant(x), _augment(audio_augment_prob=1.0, timereverse_prob=1.0))
    np.testing.assert_array_equal(reversed_only.numpy(), x[::-1])


def _batch(b=6, n=1000, classes=4):
    waves = tf.constant(np.repeat(np.arange(1, b + 1, dtype=np.float32)[:, None], n, axis=1))
    targets = tf.constant(np.eye(classes, dtype=np.float32)[np.arange(b) % classes])
    weights = tf.constant(np.linspace(0.5, 1.0, b).astype(np.float32))
    return waves, targets, weights


def test_mixup_gives_soft_labels_that_sum_to_one():
    tf.random.set_seed(0)
    waves, targets, weights = _batch()
    w2, t2, s2 = mixup(waves, targets, weights, alpha=0.4, prob=1.0)
    t2, w2, s2 = t2.numpy(), w2.numpy(), s2.numpy()
    np.testing.assert_allclose(t2.sum(axis=1), 1.0, atol=1e-6)
    assert (t2 > 0).sum() > len(t2)  # some targets are soft
    # each clip is lam * itself + (1 - lam) * its neighbour, and lam is the weight of its own class
    own, neighbour = waves.numpy()[:, 0], np.roll(waves.numpy()[:, 0], 1)
    lam = (w2[:, 0] - neighbour) / (own - neighbour)
    np.testing.assert_allclose(w2, w2[:, :1] * np.ones_like(w2), atol=1e-5)
    expected = lam[:, None] * targets.numpy() + (1 - lam[:, None]) * np.roll(targets.numpy(), 1, axis=0)
    np.testing.assert_allclose(t2, expected, atol=1e-5)
    np.testing.assert_allclose(s2, lam * weights.numpy() + (1 - lam) * np.roll(weights.numpy(), 1), atol=1e-5)


def test_cutmix_labels_follow_the_pasted_fraction():
    tf.random.set_seed(1)
    waves, targets, weights = _batch()
    w2, t2, _ = cutmix(waves, targets, weights, alpha=1.0, prob=1.0)
    w2, t2 = w2.numpy(), t2.numpy()
    assert w2.shape == waves.shape
    np.testing.assert_allclose(t2.sum(axis=1), 1.0, atol=1e-6)
    kept = (w2 == waves.numpy()).mean(axis=1)
    own = (targets.numpy() * t2).sum(axis=1)
    np.testing.assert_allclose(own, kept, atol=1e-6)
    assert np.all(np.isin(w2, waves.numpy()[:, 0]))  # samples are pasted, not blended


def test_batch_augment_respects_probabilities():
    waves, targets, weights = _batch()
    out = batch_augment(waves, targets, weights, _augment())
    for a, b in zip(out, (waves, targets, weights)):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    out = batch_augment(waves, targets, weights, _augment(mixup_prob=1.0, cutmix_prob=1.0))
    assert not np.array_equal(out[1].numpy(), targets.numpy())
    np.testing.assert_allclose(out[1].numpy().sum(axis=1), 1.0, atol=1e-6)
