"""Worker process of the distributed-training tests (see tests/test_distributed.py).

    python tests/multiworker_worker.py multiworker OUT --task-index I --ports P0,P1
        one worker of a two-worker MultiWorkerMirroredStrategy cluster on 127.0.0.1; trains a tiny model with
        voxtrace's loop and writes OUT/worker-I.npz (its final weights) and OUT/worker-I.json (its logs).
    python tests/multiworker_worker.py mirrored OUT
        trains the same tiny model with the default strategy and with MirroredStrategy over two logical CPU
        devices and writes OUT/default.npz, OUT/mirrored.npz and their logs.
    python tests/multiworker_worker.py single OUT
        trains the same tiny model in this one process with the default strategy (the same global batch of
        BATCH examples per step) and writes OUT/single.npz and OUT/single.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

STEPS, EPOCHS, BATCH = 3, 2, 8


def tiny_problem():
    import numpy as np
    import tensorflow as tf

    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 16)).astype("float32")
    y = np.eye(3, dtype="float32")[(x[:, 0] > 0).astype(int) + (x[:, 1] > 1).astype(int)]
    w = rng.uniform(0.5, 1.5, size=64).astype("float32")
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    options.deterministic = True
    train = tf.data.Dataset.from_tensor_slices((x, y, w)).batch(BATCH, drop_remainder=True).with_options(options)
    valid = tf.data.Dataset.from_tensor_slices((x[:10], y[:10], np.ones(10, "float32"))).batch(4).with_options(options)
    return train, valid


def train(strategy, agc_clip=0.05):
    """Fit the tiny model for EPOCHS x STEPS with AGC; returns (weights, per-epoch logs)."""
    import keras

    from voxtrace.training.loop import TrainLoop

    keras.utils.set_random_seed(1)
    train_ds, valid_ds = tiny_problem()
    with strategy.scope():
        inputs = keras.Input((16,))
        x = keras.layers.Dense(12, activation="relu", name="hidden")(inputs)
        outputs = keras.layers.Dense(3, activation="softmax", name="classifier")(x)
        model = keras.Model(inputs, outputs)
        optimizer = keras.optimizers.Adam(0.05)
    loss = keras.losses.CategoricalCrossentropy(label_smoothing=0.1, reduction=None)
    loop = TrainLoop(model, optimizer, loss, strategy, agc_clip=agc_clip)
    history = loop.fit(train_ds, EPOCHS, STEPS, valid_dataset=valid_ds, verbose=0)
    return model.get_weights(), history.history


def save(out, name, weights, logs):
    import numpy as np

    np.savez(os.path.join(out, f"{name}.npz"), *weights)
    with open(os.path.join(out, f"{name}.json"), "w") as fh:
        json.dump(logs, fh)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["multiworker", "mirrored", "single"])
    parser.add_argument("out")
    parser.add_argument("--task-index", type=int, default=0)
    parser.add_argument("--ports", default="")
    args = parser.parse_args(argv)

    if args.mode == "multiworker":
        workers = [f"127.0.0.1:{p}" for p in args.ports.split(",")]
        os.environ["TF_CONFIG"] = json.dumps(
            {"cluster": {"worker": workers}, "task": {"type": "worker", "index": args.task_index}}
        )
        import tensorflow as tf

        from voxtrace.training.strategy import get_strategy, is_chief

        strategy = get_strategy("auto")
        assert isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy), type(strategy)
        weights, logs = train(strategy)
        logs["is_chief"] = is_chief(strategy)
        logs["replicas"] = strategy.num_replicas_in_sync
        save(args.out, f"worker-{args.task_index}", weights, logs)
        return 0

    import tensorflow as tf

    if args.mode == "single":
        weights, logs = train(tf.distribute.get_strategy())
        logs["replicas"] = 1
        save(args.out, "single", weights, logs)
        return 0

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from voxtrace.training.strategy import get_strategy

    weights, logs = train(get_strategy("auto"))
    save(args.out, "default", weights, logs)
    strategy = get_strategy("mirrored")
    weights, logs = train(strategy)
    logs["replicas"] = strategy.num_replicas_in_sync
    save(args.out, "mirrored", weights, logs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
