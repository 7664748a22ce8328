"""One training loop for every `tf.distribute` strategy (default, one device, mirrored, multi-worker, TPU).

Keras 3 `Model.fit` fails under `MultiWorkerMirroredStrategy` (keras-team/keras#20585), so voxtrace drives
the Keras callbacks from a loop of its own: a `tf.function` step run with `strategy.run` on a distributed
dataset, the loss scaled by the global batch size, loss scaling and adaptive gradient clipping handled in the
step, and per-epoch validation (`val_loss`, `val_acc`, `val_f1`) on the gathered predictions. The same code
runs on every strategy; a single device is simply a strategy with one replica.
"""

from __future__ import annotations

import json
import os
import random

import keras
import numpy as np
import pandas as pd
import tensorflow as tf

from voxtrace.evaluation.metrics import label_scores
from voxtrace.io import atomic_path, atomic_write_csv

SUM = tf.distribute.ReduceOp.SUM


class TrainLoop:
    """Trains `model` with `optimizer` on `strategy`; build both inside `strategy.scope()`.

    Args:
        model: maps a batch of inputs to float32 probabilities `[B, C]`.
        optimizer: a Keras optimizer (a `LossScaleOptimizer` under `mixed_float16`).
        loss_fn: a Keras loss with no reduction (one value per sample).
        strategy: the `tf.distribute.Strategy` the model was built under.
        agc_clip: adaptive gradient clipping factor, or None for no clipping; the final classifier layer is
            exempt (`voxtrace.models.is_agc_exempt`).
    """

    def __init__(self, model, optimizer, loss_fn, strategy, agc_clip=None):
        self.model = model
        self.optimizer = optimizer
        self.loss_fn = loss_fn
        self.strategy = strategy
        self.agc_clip = agc_clip
        if agc_clip:
            from voxtrace.models.nfnet import adaptive_clip_gradients, is_agc_exempt

            self._agc = adaptive_clip_gradients
            self._agc_mask = [not is_agc_exempt(v) for v in model.trainable_variables]
        # Running sums of the epoch, read by the progress bar: weighted loss, samples, correct top-1.
        self._totals = [tf.Variable(0.0, trainable=False, dtype="float32") for _ in range(3)]
        self._train_function = None
        self._valid_function = None

    # ---- steps ---------------------------------------------------------------------------------------
    def _replica_step(self, inputs, targets, weights):
        targets = tf.cast(targets, "float32")
        weights = tf.cast(weights, "float32")
        ctx = tf.distribute.get_replica_context()
        global_count = ctx.all_reduce(SUM, tf.cast(tf.shape(targets)[0], "float32"))
        with tf.GradientTape() as tape:
            probs = tf.cast(self.model(inputs, training=True), "float32")
            weighted = self.loss_fn(targets, probs) * weights
            loss = tf.reduce_sum(weighted) / tf.maximum(global_count, 1.0)
            if self.model.losses:
                loss += tf.add_n(self.model.losses) / self.strategy.num_replicas_in_sync
            scaled_loss = self.optimizer.scale_loss(loss)
        variables = self.model.trainable_variables
        grads = tape.gradient(scaled_loss, variables)
        if self.agc_clip:
            grads = self._clip(grads, variables)
        self.optimizer.apply(grads, variables)
        correct = tf.reduce_sum(
            tf.cast(tf.equal(tf.argmax(probs, -1), tf.argmax(targets, -1)), "float32")
        )
        return tf.reduce_sum(weighted), tf.cast(tf.shape(targets)[0], "float32"), correct

    def _clip(self, grads, variables):
        """AGC on the full-batch gradient: all-reduce, unscale, clip, rescale, and divide by the replica count
        because the optimizer sums the replicas' gradients again."""
        ctx = tf.distribute.get_replica_context()
        grads = ctx.all_reduce(SUM, list(grads))
        scale = (self.optimizer.dynamic_scale
                 if isinstance(self.optimizer, keras.optimizers.LossScaleOptimizer) else 1.0)
        index = [i for i, keep in enumerate(self._agc_mask) if keep and grads[i] is not None]
        clipped = self._agc([grads[i] / scale for i in index], [variables[i] for i in index], self.agc_clip)
        grads = list(grads)
        for i, g in zip(index, clipped):
            grads[i] = g * scale
        replicas = float(self.strategy.num_replicas_in_sync)
        return [None if g is None else g / replicas for g in grads]

    def _make_train_function(self):
        @tf.function
        def train_function(iterator):
            batch = next(iterator)
            inputs, targets, weights = batch if len(batch) == 3 else (*batch, tf.ones_like(batch[1][:, 0]))
            per_replica = self.strategy.run(self._replica_step, args=(inputs, targets, weights))
            loss_sum, count, correct = (self.strategy.reduce(SUM, v, axis=None) for v in per_replica)
            for total, value in zip(self._totals, (loss_sum, count, correct)):
                total.assign_add(value)
            seen = tf.maximum(self._totals[1], 1.0)
            return {"loss": self._totals[0] / seen, "acc": self._totals[2] / seen}

        return train_function

    def _make_valid_function(self):
        def forward(inputs):
            return tf.cast(self.model(inputs, training=False), "float32")

        @tf.function(reduce_retracing=True)
        def valid_function(batch):
            inputs, targets, weights = batch if len(batch) == 3 else (*batch, tf.ones_like(batch[1][:, 0]))
            probs = self.strategy.run(forward, args=(inputs,))
            gather = self.strategy.gather
            return gather(probs, axis=0), gather(targets, axis=0), gather(weights, axis=0)

        return valid_function

    # ---- public API ------------------------------------------------------------------------------------
    def evaluate(self, dataset) -> dict:
        """`val_loss` (weighted, as the training loss), `val_acc` and macro `val_f1` over a finite dataset."""
        self._valid_function = self._valid_function or self._make_valid_function()
        probs, targets, weights = [], [], []
        for batch in self.strategy.experimental_distribute_dataset(dataset):
            p, t, w = self._valid_function(batch)
            probs.append(p.numpy())
            targets.append(t.numpy())
            weights.append(w.numpy())
        if not probs:
            raise ValueError("the validation dataset is empty")
        probs, targets, weights = (np.concatenate(a) for a in (probs, targets, weights))
        losses = keras.ops.convert_to_numpy(self.loss_fn(targets.astype("float32"), probs))
        scores = label_scores(targets.argmax(-1), probs.argmax(-1), range(probs.shape[-1]))
        return {
            "val_loss": float(np.sum(losses * weights) / len(losses)),
            "val_acc": scores["acc"],
            "val_f1": scores["f1"],
        }

    def fit(self, train_dataset, epochs, steps_per_epoch, valid_dataset=None, callbacks=(), initial_epoch=0,
            verbose=1) -> keras.callbacks.History:
        """Train from `initial_epoch` to `epochs`, calling Keras callbacks as `Model.fit` does.

        `train_dataset` yields `(inputs, targets[, weights])` batches of the global batch size; it is repeated
        so that every epoch has `steps_per_epoch` steps.
        """
        history = keras.callbacks.History()
        callback_list = keras.callbacks.CallbackList(
            [history, *callbacks], add_history=False, add_progbar=verbose != 0, model=self.model,
            verbose=verbose, epochs=epochs, steps=steps_per_epoch,
        )
        if not self.optimizer.built:
            with self.strategy.scope():
                self.optimizer.build(self.model.trainable_variables)
        self._train_function = self._train_function or self._make_train_function()
        iterator = iter(self.strategy.experimental_distribute_dataset(train_dataset.repeat()))
        self.model.stop_training = False
        logs = {}
        callback_list.on_train_begin()
        for epoch in range(initial_epoch, epochs):
            for total in self._totals:
                total.assign(0.0)
            callback_list.on_epoch_begin(epoch)
            for step in range(steps_per_epoch):
                callback_list.on_train_batch_begin(step)
                logs = self._train_function(iterator)
                callback_list.on_train_batch_end(step, logs)
            logs = {k: float(v) for k, v in logs.items()}
            if valid_dataset is not None:
                logs.update(self.evaluate(valid_dataset))
            logs["lr"] = float(keras.ops.convert_to_numpy(self.optimizer.learning_rate))
            callback_list.on_epoch_end(epoch, logs)
            if self.model.stop_training:
                break
        callback_list.on_train_end(logs)
        return history


class TrainingState(keras.callbacks.Callback):
    """Saves the whole training state at every epoch end, atomically, into one `.npz` file.

    The file holds every model variable (weights, normalisation statistics, RNG seeds), every optimizer
    variable (moments, step count, loss scale), the number of finished epochs, the best monitored score, the
    history, the Python / NumPy RNG states and the name of the fold it trains. It is written to a temporary
    file and renamed over the old one, so a process killed at any moment leaves either the previous or the
    new state, never a partial one.

    Args:
        path: the `.npz` file.
        optimizer: the optimizer whose variables are saved.
        name: what the state trains (e.g. `fold-1`); `restore()` refuses a state saved under another name, whose
            weights may have seen this fold's validation files.
        monitor: the log key of the best score (e.g. `val_f1`); `val_loss`-like keys are minimised.
        history_csv: when given, rewritten from the saved history on `restore()`, so a resumed run's
            `CSVLogger(append=True)` continues it without duplicated or missing epochs.
        write: False on the non-chief workers of a multi-worker run.
    """

    def __init__(self, path, optimizer, monitor="val_f1", history_csv=None, write=True, name=None):
        super().__init__()
        self.path = os.fspath(path)
        self.optimizer = optimizer
        self.name = name
        self.monitor = monitor
        self.mode = "min" if "loss" in monitor else "max"
        self.history_csv = history_csv
        self.write = write
        self.epochs_done = 0
        self.best = None
        self.best_epoch = None
        self.history: list[dict] = []

    def _variables(self, model):
        return list(model.variables), list(self.optimizer.variables)

    def on_epoch_end(self, epoch, logs=None):
        logs = dict(logs or {})
        score = logs.get(self.monitor)
        if score is not None and (
            self.best is None or (score < self.best if self.mode == "min" else score > self.best)
        ):
            self.best, self.best_epoch = float(score), epoch
        self.history.append({"epoch": epoch, **logs})
        self.epochs_done = epoch + 1
        if self.write:
            self.save(self.model)

    def save(self, model) -> None:
        model_vars, opt_vars = self._variables(model)
        arrays = {f"model_{i:05d}": keras.ops.convert_to_numpy(v) for i, v in enumerate(model_vars)}
        arrays.update({f"optimizer_{i:05d}": keras.ops.convert_to_numpy(v) for i, v in enumerate(opt_vars)})
        np_state = np.random.get_state()
        meta = {
            "name": self.name, "epochs_done": self.epochs_done, "monitor": self.monitor, "best": self.best,
            "best_epoch": self.best_epoch, "history": self.history,
            "numpy_rng": [np_state[0], np_state[1].tolist(), *np_state[2:]],
            "python_rng": [random.getstate()[0], list(random.getstate()[1]), random.getstate()[2]],
        }
        arrays["meta"] = np.array(json.dumps(meta))
        with atomic_path(self.path) as tmp:
            with open(tmp, "wb") as fh:
                np.savez(fh, **arrays)
                fh.flush()
                os.fsync(fh.fileno())

    def restore(self, model) -> int:
        """Load the saved state into `model` and the optimizer (built first); return the epochs finished."""
        if not self.optimizer.built:
            self.optimizer.build(model.trainable_variables)
        model_vars, opt_vars = self._variables(model)
        with np.load(self.path, allow_pickle=False) as data:
            meta = json.loads(str(data["meta"]))
            saved_name = meta.get("name")
            if None not in (saved_name, self.name) and saved_name != self.name:
                raise ValueError(
                    f"training state {self.path} was saved by {saved_name}, not {self.name}: resume each fold from "
                    f"its own state (another fold's weights have trained on this fold's validation files)"
                )
            n_model = sum(k.startswith("model_") for k in data.files)
            n_opt = sum(k.startswith("optimizer_") for k in data.files)
            if (n_model, n_opt) != (len(model_vars), len(opt_vars)):
                raise ValueError(
                    f"training state {self.path} holds {n_model} model and {n_opt} optimizer variables, but this "
                    f"run has {len(model_vars)} and {len(opt_vars)}: it was saved by a different model or optimizer"
                )
            for prefix, variables in (("model", model_vars), ("optimizer", opt_vars)):
                for i, var in enumerate(variables):
                    value = data[f"{prefix}_{i:05d}"]
                    if tuple(value.shape) != tuple(var.shape):
                        raise ValueError(
                            f"training state {self.path}: {prefix} variable {var.path} has shape {tuple(var.shape)}"
                            f", the saved one {value.shape}"
                        )
                    var.assign(value)
        self.epochs_done, self.best, self.best_epoch = meta["epochs_done"], meta["best"], meta["best_epoch"]
        self.history = meta["history"]
        kind, keys, *rest = meta["numpy_rng"]
        np.random.set_state((kind, np.asarray(keys, dtype="uint32"), *rest))
        version, internal, gauss = meta["python_rng"]
        random.setstate((version, tuple(internal), gauss))
        if self.history_csv is not None and self.history:
            frame = pd.DataFrame(self.history)
            atomic_write_csv(self.history_csv, frame[["epoch", *sorted(c for c in frame if c != "epoch")]])
        return self.epochs_done


class WandbLogger(keras.callbacks.Callback):
    """Logs each epoch's metrics to an active Weights & Biases run."""

    def __init__(self, run):
        super().__init__()
        self.run = run

    def on_epoch_end(self, epoch, logs=None):
        self.run.log({"epoch": epoch, **(logs or {})})


class TensorBoardLogger(keras.callbacks.Callback):
    """Each epoch's logs (loss, acc, val_*, lr) as TensorBoard scalars in `log_dir`.

    Keras' own TensorBoard callback reads `model.optimizer`, which a model trained by `TrainLoop` (never
    compiled) does not have; `tf.summary` needs nothing but TensorFlow.
    """

    def __init__(self, log_dir):
        super().__init__()
        self.writer = tf.summary.create_file_writer(str(log_dir))

    def on_epoch_end(self, epoch, logs=None):
        with self.writer.as_default():
            for name, value in (logs or {}).items():
                tf.summary.scalar(name, float(value), step=epoch)
        self.writer.flush()

    def on_train_end(self, logs=None):
        self.writer.close()
