"""Losses, schedules, optimizers, adaptive gradient clipping, folds and the resumable training state."""

import json
import os
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from voxtrace.config import Config, ConfigError
from voxtrace.training.folds import assign_folds
from voxtrace.training.loop import TrainingState, TrainLoop
from voxtrace.training.losses import get_loss
from voxtrace.training.optimizers import RectifiedAdam, agc_clip_factor, build_optimizer
from voxtrace.training.plots import plot_history, plot_lr_schedule
from voxtrace.training.schedules import build_schedule


def cfg_with(**train):
    return Config.from_dict({"train": train})


Y_SOFT = np.array([[0.2, 0.8, 0.0], [1.0, 0.0, 0.0], [0.1, 0.3, 0.6]], "float32")
P = np.array([[0.1, 0.6, 0.3], [0.5, 0.25, 0.25], [0.2, 0.2, 0.6]], "float32")


# ---- losses ---------------------------------------------------------------------------------------------
def test_cce_with_label_smoothing_on_soft_labels():
    loss = get_loss(cfg_with(loss="CCE", label_smoothing=0.1))
    smoothed = Y_SOFT * 0.9 + 0.1 / 3
    expected = -(smoothed * np.log(P)).sum(-1)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(loss(Y_SOFT, P)), expected, rtol=1e-5)


def test_bce_on_soft_labels():
    loss = get_loss(cfg_with(loss="BCE", label_smoothing=0.0))
    expected = -(Y_SOFT * np.log(P) + (1 - Y_SOFT) * np.log(1 - P)).mean(-1)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(loss(Y_SOFT, P)), expected, rtol=1e-5)


def test_focal_down_weights_easy_samples():
    loss = get_loss(cfg_with(loss="Focal", focal_gamma=2.0, focal_alpha=0.25, label_smoothing=0.0))
    expected = (-0.25 * (1 - P) ** 2 * Y_SOFT * np.log(P)).sum(-1)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(loss(Y_SOFT, P)), expected, rtol=1e-5)


# ---- schedules -------------------------------------------------------------------------------------------
def _rates(cfg, steps_per_epoch=10):
    schedule = build_schedule(cfg, steps_per_epoch)
    return keras.ops.convert_to_numpy(schedule(np.arange(cfg.train.epochs * steps_per_epoch)))


def test_schedule_warmup_sustain_exp_decay_and_batch_rule():
    cfg = cfg_with(batch_size=8, epochs=12, lr_start=1e-6, lr_max=1e-4, lr_min=1e-5, lr_ramp_ep=2, lr_sus_ep=3,
                   lr_decay=0.5, scheduler="exp")
    r = _rates(cfg)
    assert r[0] == pytest.approx(1e-6 * 8)
    assert r[10] == pytest.approx((1e-6 + (1e-4 - 1e-6) / 2) * 8, rel=1e-5)  # linear, per step
    assert np.all(np.diff(r[:20]) > 0)
    np.testing.assert_allclose(r[20:50], 1e-4 * 8, rtol=1e-6)  # sustain
    assert r[60] == pytest.approx(((1e-4 - 1e-5) * 0.5 + 1e-5) * 8, rel=1e-5)  # one epoch of decay
    assert np.all(np.diff(r[50:]) < 0) and r[-1] > 1e-5 * 8
    doubled = _rates(cfg.replace(train__batch_size=16))
    np.testing.assert_allclose(doubled, 2 * r, rtol=1e-6)


def test_schedule_cosine_reaches_min_and_step_halves_every_two_epochs():
    cosine = _rates(cfg_with(batch_size=1, epochs=10, lr_max=1e-3, lr_min=1e-5, lr_ramp_ep=0, scheduler="cosine"))
    assert cosine[0] == pytest.approx(1e-3) and cosine[-1] == pytest.approx(1e-5, rel=0.05)
    assert np.all(np.diff(cosine) <= 0)
    step = _rates(cfg_with(batch_size=1, epochs=8, lr_max=1e-3, lr_min=2e-4, lr_ramp_ep=0, lr_decay=0.5,
                           scheduler="step"))
    np.testing.assert_allclose(step[[0, 19, 20, 39, 40, 79]], [1e-3, 1e-3, 5e-4, 5e-4, 2.5e-4, 2e-4], rtol=1e-5)


def test_lr_and_history_plots(tmp_path):
    cfg = cfg_with(epochs=4, lr_ramp_ep=1)
    rates = plot_lr_schedule(cfg, 5, tmp_path / "lr.png")
    assert rates.shape == (20,) and (tmp_path / "lr.png").stat().st_size > 1000
    history = pd.DataFrame({"epoch": [0, 1], "loss": [1.0, 0.5], "val_f1": [0.2, 0.4], "lr": [1e-3, 5e-4]})
    plot_history(history, tmp_path / "h.png")
    assert (tmp_path / "h.png").stat().st_size > 1000


# ---- optimizers ------------------------------------------------------------------------------------------
def test_optimizers_by_name_and_agc_default():
    kinds = {"Adam": keras.optimizers.Adam, "AdamW": keras.optimizers.AdamW, "SGD": keras.optimizers.SGD,
             "RectifiedAdam": RectifiedAdam}
    for name, kind in kinds.items():
        assert isinstance(build_optimizer(cfg_with(optimizer=name), 1e-3), kind)
    assert build_optimizer(cfg_with(optimizer="SGD"), 1e-3).nesterov
    nfnet = Config.from_dict({"model": {"name": "ECA_NFNetL2"}})
    assert agc_clip_factor(nfnet) == 0.01
    assert agc_clip_factor(nfnet.replace(train__agc_clip=0.0)) is None
    assert agc_clip_factor(cfg_with()) is None
    with pytest.raises(ConfigError, match="train.agc_clip"):
        cfg_with(agc_clip=-1.0)


def test_rectified_adam_matches_the_paper_update():
    lr, b1, b2, eps = 0.01, 0.9, 0.999, 1e-7
    var = keras.Variable(np.array([1.0, -2.0, 3.0], "float32"))
    opt = RectifiedAdam(lr, beta_1=b1, beta_2=b2, epsilon=eps)
    x = np.array([1.0, -2.0, 3.0])
    m = v = np.zeros(3)
    rho_inf = 2 / (1 - b2) - 1
    for t in range(1, 9):
        g = np.array([0.5, -1.0, 2.0]) * t
        opt.apply([tf.constant(g, "float32")], [var])
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        m_hat = m / (1 - b1 ** t)
        rho = rho_inf - 2 * t * b2 ** t / (1 - b2 ** t)
        if rho >= 5:
            r = np.sqrt((rho - 4) * (rho - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho))
            x = x - lr * r * m_hat / (np.sqrt(v / (1 - b2 ** t)) + eps)
        else:
            x = x - lr * m_hat
        np.testing.assert_allclose(var.numpy(), x, rtol=1e-5, atol=1e-6)


def test_agc_clips_backbone_gradients_but_not_the_classifier():
    from voxtrace.models.nfnet import adaptive_clip_gradients

    keras.utils.set_random_seed(0)
    inputs = keras.Input((6,))
    hidden = keras.layers.Dense(5, activation="tanh", name="hidden")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax", name="classifier")(hidden))
    x = np.random.default_rng(0).normal(size=(8, 6)).astype("float32") * 5
    y = np.eye(3, dtype="float32")[np.arange(8) % 3]
    w = np.ones(8, "float32")
    loss_fn = get_loss(cfg_with(loss="CCE", label_smoothing=0.0))
    before = [v.numpy().copy() for v in model.trainable_variables]
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(loss_fn(y, model(x, training=True)))
    grads = tape.gradient(loss, model.trainable_variables)
    clip = 1e-3
    expected = adaptive_clip_gradients(grads[:2], model.trainable_variables[:2], clip) + grads[2:]
    assert not np.allclose(expected[0], grads[0])  # the hidden layer is really clipped

    loop = TrainLoop(model, keras.optimizers.SGD(1.0), loss_fn, tf.distribute.get_strategy(), agc_clip=clip)
    loop.fit(tf.data.Dataset.from_tensors((x, y, w)), epochs=1, steps_per_epoch=1, verbose=0)
    for b, g, v in zip(before, expected, model.trainable_variables):
        np.testing.assert_allclose(v.numpy(), b - keras.ops.convert_to_numpy(g), rtol=1e-4, atol=1e-6)


def test_each_clips_weight_scales_its_share_of_the_gradient():
    """One SGD step of a softmax layer on a weighted batch is the hand-derived update
    `W -= lr * X^T ((p - y) * w) / B`: a clip of weight 0 moves nothing, one of weight 2 twice as much."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((3,))
    model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax", name="classifier")(inputs))
    kernel, bias = (v.numpy().astype("float64") for v in model.trainable_variables)
    x = np.array([[1.0, -0.5, 0.2], [0.3, 0.8, -1.0], [-0.7, 0.1, 0.4], [0.5, 0.5, 0.5]], "float32")
    y = np.eye(2, dtype="float32")[[0, 1, 1, 0]]
    w = np.array([1.0, 0.0, 2.0, 0.5], "float32")
    logits = x @ kernel + bias
    p = np.exp(logits - logits.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    delta = (p - y) * w[:, None] / len(x)  # d(sum_i w_i CE_i / B) / d logits
    lr = 0.5
    loop = TrainLoop(model, keras.optimizers.SGD(lr), get_loss(cfg_with(loss="CCE", label_smoothing=0.0)),
                     tf.distribute.get_strategy())
    loop.fit(tf.data.Dataset.from_tensors((x, y, w)), epochs=1, steps_per_epoch=1, verbose=0)
    np.testing.assert_allclose(model.trainable_variables[0].numpy(), kernel - lr * x.T @ delta, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(model.trainable_variables[1].numpy(), bias - lr * delta.sum(0), rtol=1e-5, atol=1e-6)


def _noise_probability_with_pseudo_weight(tmp_path, weight):
    """Train cnn4 on labelled tones plus pseudo-labelled noise clips of loss weight `weight` (all data, 16 steps);
    returns the noise probability the checkpoint gives each noise clip."""
    from fixtures_training import make_tone_noise_corpus, tone_noise_overrides
    from voxtrace.inference.predictor import predict_files
    from voxtrace.training.trainer import train

    corpus = pd.read_csv(make_tone_noise_corpus(tmp_path / "corpus", clips_per_class=8))
    labelled, pseudo = tmp_path / "labelled.csv", tmp_path / "pseudo.csv"
    corpus[corpus["label"] == "tone"].to_csv(labelled, index=False)
    noise = list(corpus.loc[corpus["label"] == "noise", "path"])
    pd.DataFrame({"path": noise, "tone": 0.0, "noise": 1.0}).to_csv(pseudo, index=False)
    cfg = Config.load(None, tone_noise_overrides(labelled, tmp_path / "run", epochs=2) + [
        "data.all_data=true", f"data.pseudo_csv={pseudo}", f"data.pseudo_weight={weight}", "augment.enabled=false",
        "train.steps_per_epoch=8", "train.lr_max=0.001", "train.lr_min=0.001",
        "model.bn_momentum=0.9"])  # BatchNorm's moving statistics settle within the 16 steps
    result = train(cfg)
    trained = pd.read_csv(Path(result["run_dir"]) / "csv" / "train_all.csv")
    np.testing.assert_allclose(trained.loc[trained["source"] == "pseudo", "weight"], weight)
    model = keras.saving.load_model(result["checkpoints"][0], safe_mode=True)
    probs, errors = predict_files(model, cfg, noise, progress=False)
    assert not errors
    return probs[:, cfg.classes.index("noise")]


def test_a_class_whose_clips_all_weigh_zero_is_not_learnt(tmp_path):
    """Pseudo-labelled noise clips at weight 1 teach the class (the control); at weight 0 the same run never
    calls a noise clip noise: every clip's weight multiplies its loss."""
    learnt = _noise_probability_with_pseudo_weight(tmp_path / "one", 1.0)
    assert (learnt > 0.5).all(), learnt
    ignored = _noise_probability_with_pseudo_weight(tmp_path / "zero", 0.0)
    assert (ignored < 0.5).all(), ignored


# ---- folds -----------------------------------------------------------------------------------------------
def test_folds_keep_groups_together_and_stratify():
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"label": np.repeat(["a", "b", "c"], 40), "group": [f"g{i}" for i in rng.integers(0, 30, 120)]})
    frame["group"] = frame["label"] + frame["group"]
    folds = assign_folds(frame, 4, seed=1)
    assert set(folds) == {0, 1, 2, 3}
    assert (frame.assign(fold=folds).groupby("group")["fold"].nunique() == 1).all()
    per_fold = frame.assign(fold=folds).groupby("fold")["label"].nunique()
    assert (per_fold == 3).all()
    np.testing.assert_array_equal(folds, assign_folds(frame, 4, seed=1))
    with pytest.raises(ConfigError, match="data.folds"):
        assign_folds(frame.iloc[:3].assign(label=["a", "b", "c"], group=["one", "two", "two"]), 3)


def test_a_class_with_one_voice_is_split_across_folds_not_held_out_whole():
    frame = pd.DataFrame({"label": ["a"] * 30 + ["b"] * 30, "group": [f"v{i % 6}" for i in range(30)] + ["solo"] * 30})
    folds = assign_folds(frame, 3, seed=0)
    solo_folds = pd.Series(folds[30:])
    assert set(solo_folds) == {0, 1, 2}  # every fold trains on (and validates) some of the single-voice class
    assert (frame.iloc[:30].assign(fold=folds[:30]).groupby("group")["fold"].nunique() == 1).all()


# ---- training state --------------------------------------------------------------------------------------
def _tiny(seed):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax", name="classifier")(inputs))
    optimizer = keras.optimizers.Adam(1e-2)
    optimizer.build(model.trainable_variables)
    return model, optimizer


def test_training_state_round_trips_and_leaves_no_partial_file(tmp_path):
    model, optimizer = _tiny(0)
    x = np.ones((4, 4), "float32")
    y = np.eye(2, dtype="float32")[[0, 1, 0, 1]]
    state = TrainingState(tmp_path / "state" / "fold-0.npz", optimizer, history_csv=tmp_path / "h.csv")
    loop = TrainLoop(model, optimizer, get_loss(cfg_with()), tf.distribute.get_strategy())
    loop.fit(tf.data.Dataset.from_tensors((x, y)), epochs=2, steps_per_epoch=3, valid_dataset=
             tf.data.Dataset.from_tensors((x, y, np.ones(4, "float32"))), callbacks=[state], verbose=0)
    assert os.listdir(tmp_path / "state") == ["fold-0.npz"]

    other, other_opt = _tiny(1)
    restored = TrainingState(state.path, other_opt, history_csv=tmp_path / "h.csv")
    assert restored.restore(other) == 2
    assert int(other_opt.iterations.numpy()) == 6
    for a, b in zip(model.get_weights(), other.get_weights()):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(optimizer.variables, other_opt.variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert restored.best == state.best and restored.best_epoch == state.best_epoch
    history = pd.read_csv(tmp_path / "h.csv")
    assert list(history["epoch"]) == [0, 1] and "val_f1" in history

    inputs = keras.Input((5,))
    wrong = keras.Model(inputs, keras.layers.Dense(2)(inputs))
    with pytest.raises(ValueError, match="fold-0.npz"):
        TrainingState(state.path, keras.optimizers.Adam()).restore(wrong)


# ---- exact resume ------------------------------------------------------------------------------------------
class _Killed(Exception):
    """Stands for a process killed right after an epoch's training state was saved."""


def _state_arrays(path):
    with np.load(path) as data:
        return {k: data[k] for k in data.files if k != "meta"}


def test_resume_after_epoch_one_ends_with_the_uninterrupted_weights(tmp_path, monkeypatch):
    """2 epochs in one go vs 1 epoch, a kill, and `resume=True` for the 2nd: the same model and optimizer state.

    Every random stream is on (random crop and pad, Gaussian noise, time shift, SNR noise, mixup, SpecAugment,
    dropout), and an epoch (3 batches of 4) is not a pass over the 10 training clips, so the resumed epoch must
    continue the shuffle and augmentation streams mid-pass rather than restart them.
    """
    from fixtures_training import make_tone_noise_corpus, tone_noise_overrides
    from voxtrace.training.trainer import train

    corpus = make_tone_noise_corpus(tmp_path / "corpus", clips_per_class=8)
    augment = ["augment.enabled=true", "audio.crop_mode=random", "audio.pad_mode=random",
               "augment.audio_augment_prob=1.0", "augment.gn_prob=0.5", "augment.timeshift_prob=0.5",
               "augment.noise_snr_prob=0.5", "augment.reverb_prob=0.0", "augment.bandlimit_prob=0.0",
               "augment.codec_prob=0.0", "augment.mixup_prob=0.5", "augment.spec_augment_prob=0.8",
               "model.dropout=0.3", "train.deterministic=true", "train.steps_per_epoch=3"]

    def config(name):
        return Config.load(None, tone_noise_overrides(corpus, tmp_path / name, epochs=2) + augment)

    def state_file(name):
        return tmp_path / name / "cnn4-32x64" / "ckpt" / "state" / "fold-0.npz"

    uninterrupted = train(config("full"))

    save_epoch = TrainingState.on_epoch_end

    def killed_after_first_epoch(self, epoch, logs=None):
        save_epoch(self, epoch, logs)
        raise _Killed

    with monkeypatch.context() as patch:
        patch.setattr(TrainingState, "on_epoch_end", killed_after_first_epoch)
        with pytest.raises(_Killed):
            train(config("resumed"))
    with np.load(state_file("resumed")) as data:
        assert json.loads(str(data["meta"]))["epochs_done"] == 1

    # Count the steps the resumed run takes: a run restarted from scratch ends with the same weights here
    # (every stream is deterministic), but it starts at step 0 and takes all 6.
    steps, fits = [], []
    make_train_function, fit = TrainLoop._make_train_function, TrainLoop.fit

    def counting_train_function(self):
        step = make_train_function(self)

        def counted(iterator):
            steps.append(int(self.optimizer.iterations.numpy()))
            return step(iterator)

        return counted

    def recording_fit(self, *args, **kwargs):
        start = int(self.optimizer.iterations.numpy())
        history = fit(self, *args, **kwargs)
        fits.append((start, int(self.optimizer.iterations.numpy())))
        return history

    with monkeypatch.context() as patch:
        patch.setattr(TrainLoop, "_make_train_function", counting_train_function)
        patch.setattr(TrainLoop, "fit", recording_fit)
        resumed = train(config("resumed"), resume=True)
    assert fits == [(3, 6)]  # restored after the 3 steps of epoch 1, then exactly the 3 of epoch 2
    assert steps == [3, 4, 5]

    full, again = _state_arrays(state_file("full")), _state_arrays(state_file("resumed"))
    assert full.keys() == again.keys() and any(k.startswith("optimizer_") for k in full)
    for key in full:
        np.testing.assert_allclose(again[key], full[key], rtol=1e-6, atol=1e-7, err_msg=key)
    assert resumed["folds"][0] == pytest.approx(uninterrupted["folds"][0], nan_ok=True)


def test_state_of_another_fold_is_refused(tmp_path):
    model, optimizer = _tiny(0)
    saved = TrainingState(tmp_path / "fold-0.npz", optimizer, name="fold-0")
    saved.save(model)
    other, other_opt = _tiny(1)
    with pytest.raises(ValueError, match="saved by fold-0, not fold-1"):
        TrainingState(saved.path, other_opt, name="fold-1").restore(other)
    assert TrainingState(saved.path, other_opt, name="fold-0").restore(other) == 0
    np.testing.assert_array_equal(other.get_weights()[0], model.get_weights()[0])
