"""Steps per second of voxtrace's training loop vs a bare `Model.fit`, same model, data and device.

Both train the same classifier (same initial weights, optimizer, loss and batches) for the same number of
steps after a warm-up (tracing excluded); the two are timed alternately, `--rounds` times each, and the median
is kept. The last line is `loop_overhead: X`, the extra time per step of the voxtrace loop as a fraction of
`Model.fit`'s (0.05 = 5 % slower; negative = faster).

    python benchmarks/loop_overhead.py [--model cnn4] [--steps 60] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="cnn4")
    parser.add_argument("--img-size", type=int, nargs=2, default=[32, 64])
    parser.add_argument("--duration", type=float, default=0.5)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    import keras
    import numpy as np
    import tensorflow as tf

    from voxtrace.config import Config
    from voxtrace.models import build_classifier
    from voxtrace.training.loop import TrainLoop
    from voxtrace.training.losses import get_loss

    cfg = Config.from_dict({
        "model": {"name": args.model}, "features": {"img_size": list(args.img_size), "n_fft": 256, "win_length": 256},
        "audio": {"duration": args.duration}, "augment": {"freq_mask": 4, "time_mask": 8},
        "train": {"batch_size": args.batch_size, "mixed_precision": False},
    })
    rng = np.random.default_rng(0)
    n = args.batch_size * 8
    x = rng.normal(scale=0.1, size=(n, cfg.num_samples)).astype("float32")
    y = np.eye(cfg.num_classes, dtype="float32")[rng.integers(0, cfg.num_classes, n)]
    w = np.ones(n, "float32")
    data = tf.data.Dataset.from_tensor_slices((x, y, w)).batch(args.batch_size, drop_remainder=True).cache().repeat()

    keras.utils.set_random_seed(0)
    ours_model = build_classifier(cfg)
    fit_model = build_classifier(cfg)
    fit_model.set_weights(ours_model.get_weights())
    loop = TrainLoop(ours_model, keras.optimizers.Adam(1e-4), get_loss(cfg), tf.distribute.get_strategy())
    fit_model.compile(optimizer=keras.optimizers.Adam(1e-4),
                      loss=keras.losses.CategoricalCrossentropy(label_smoothing=cfg.train.label_smoothing),
                      metrics=["accuracy"])

    def run_ours(steps):
        start = time.perf_counter()
        loop.fit(data, epochs=1, steps_per_epoch=steps, verbose=0)
        return time.perf_counter() - start

    def run_fit(steps):
        start = time.perf_counter()
        fit_model.fit(data, epochs=1, steps_per_epoch=steps, shuffle=False, verbose=0)
        return time.perf_counter() - start

    run_ours(args.warmup)
    run_fit(args.warmup)
    ours, fit = [], []
    for _ in range(args.rounds):
        ours.append(run_ours(args.steps))
        fit.append(run_fit(args.steps))
    ours_sps = args.steps / statistics.median(ours)
    fit_sps = args.steps / statistics.median(fit)
    print(f"device: {tf.config.list_logical_devices()[-1].name}  model: {args.model} {args.img_size}  "
          f"batch: {args.batch_size}  steps: {args.steps} x {args.rounds} rounds")
    print(f"voxtrace loop: {ours_sps:8.2f} steps/s")
    print(f"Model.fit    : {fit_sps:8.2f} steps/s")
    print(f"loop_overhead: {fit_sps / ours_sps - 1:.3f}")


if __name__ == "__main__":
    main()
