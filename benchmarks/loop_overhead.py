"""Training-step time of voxtrace's training loop vs a bare `Model.fit`: the demo's model, batch and data.

The workload is `make demo`'s (configs/demo.yaml: ResNet18 from random weights on 64x128 log-mel images of
3 s windows, batch 32, SpecAugment on), mixed precision off as on a CPU. Both sides train a model with the
same initial weights, optimizer, loss and in-memory batches of waveforms; after a warm-up (graph tracing
excluded) they are timed in `--rounds` interleaved rounds of `--steps` steps each (A B, B A, ...), and every
round gives the ratio of the two. Prints each side's median steps/s and CPU seconds per step, then the extra
wall time per step of the voxtrace loop as a fraction of `Model.fit`'s (`loop_overhead_wall`), and last
`loop_overhead: median=X min=.. max=.. iqr=.. rounds=N`, the same from the CPU seconds this process spent
(0.05 = 5 % more; negative = less). On a machine shared with other jobs the wall figure carries their load,
the CPU one does not; on an idle machine the two agree (training keeps every core busy). Target: <= 0.10.

    python benchmarks/loop_overhead.py [--config configs/demo.yaml] [--model ResNet18] [--steps 2] [--rounds 15]
"""

from __future__ import annotations

import argparse
import os
import statistics
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from rounds import headline, interleaved  # noqa: E402

DEMO_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "demo.yaml"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(DEMO_CONFIG))
    parser.add_argument("--model", default="ResNet18", help="backbone (make demo trains ResNet18 with the config)")
    parser.add_argument("--steps", type=int, default=2, help="training steps per side and round")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()

    import keras
    import numpy as np
    import tensorflow as tf

    from voxtrace.config import Config
    from voxtrace.models import build_classifier
    from voxtrace.training.loop import TrainLoop
    from voxtrace.training.losses import get_loss

    cfg = Config.load(args.config, [f"model.name={args.model}", "train.mixed_precision=false"])
    batch = cfg.train.batch_size
    rng = np.random.default_rng(0)
    n = batch * 8
    x = rng.normal(scale=0.1, size=(n, cfg.num_samples)).astype("float32")
    y = np.eye(cfg.num_classes, dtype="float32")[rng.integers(0, cfg.num_classes, n)]
    w = np.ones(n, "float32")
    data = tf.data.Dataset.from_tensor_slices((x, y, w)).batch(batch, drop_remainder=True).cache().repeat()

    keras.utils.set_random_seed(0)
    ours_model = build_classifier(cfg)
    fit_model = build_classifier(cfg)
    fit_model.set_weights(ours_model.get_weights())
    loop = TrainLoop(ours_model, keras.optimizers.Adam(1e-4), get_loss(cfg), tf.distribute.get_strategy())
    fit_model.compile(optimizer=keras.optimizers.Adam(1e-4),
                      loss=keras.losses.CategoricalCrossentropy(label_smoothing=cfg.train.label_smoothing),
                      metrics=["accuracy"])

    def run_ours(steps=args.steps):
        loop.fit(data, epochs=1, steps_per_epoch=steps, verbose=0)

    def run_fit(steps=args.steps):
        fit_model.fit(data, epochs=1, steps_per_epoch=steps, shuffle=False, verbose=0)

    run_ours(args.warmup)
    run_fit(args.warmup)
    cpu = {}
    wall = interleaved({"voxtrace loop": run_ours, "Model.fit": run_fit}, args.rounds, cpu_seconds=cpu)
    print(f"device: {tf.config.list_logical_devices()[-1].name}  model: {cfg.run_name}  batch: {batch}  "
          f"steps: {args.steps} x {args.rounds} interleaved rounds")
    for name in wall:
        print(f"{name:>13}: {args.steps / statistics.median(wall[name]):8.3f} steps/s, "
              f"{statistics.median(cpu[name]) / args.steps:6.2f} CPU s/step (median rounds)")
    print(headline("loop_overhead_wall", [a / b - 1 for a, b in zip(wall["voxtrace loop"], wall["Model.fit"])]))
    print(headline("loop_overhead", [a / b - 1 for a, b in zip(cpu["voxtrace loop"], cpu["Model.fit"])]))


if __name__ == "__main__":
    main()
