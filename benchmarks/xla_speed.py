"""XLA (`jit_compile`) against plain graph execution on the demo's two heaviest workloads, on this machine.

1. A training step of `make demo`'s CNN member (configs/demo.yaml: ResNet18 on 64x128 log-mel images of 3 s
   windows, batch 32, SpecAugment on): forward, loss, gradients and the Adam update in one `tf.function`.
2. The frozen Whisper tiny.en extractor of configs/demo-whisper.yaml on a batch of 16 windows (every state,
   level-normalised, pooled over active frames), what `voxtrace.inference.features` runs for every clip of
   train, of the shifted view and of the evaluation parts.

Each side is built once, warmed up (tracing and XLA compilation excluded), then timed in `--rounds`
interleaved rounds (A B, B A, ...) of `--repeats` calls; each round gives the ratio plain / XLA of the CPU
seconds this process spent and of the wall time (> 1: XLA is faster). Prints the largest difference between the
two sides' outputs (the extractor's features must agree within 1e-4 of their scale for the cache to mix them),
then the headlines: `xla_train_step_speedup[_wall]` and last `xla_extractor_speedup[_wall]`. The extractor's
gain is why frozen features are computed with XLA (`model.head.jit_compile`); the training step's loss is why
training is not.

    python benchmarks/xla_speed.py [--rounds 5] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from rounds import headline, interleaved  # noqa: E402

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def _train_steps(cfg, x, y):
    """`{False: plain step, True: XLA step}`, each on its own model with the same initial weights."""
    import keras
    import tensorflow as tf

    from voxtrace.models import build_classifier

    steps = {}
    for jit in (False, True):
        keras.utils.set_random_seed(0)
        model = build_classifier(cfg)
        optimizer = keras.optimizers.Adam(1e-3)
        loss_fn = keras.losses.CategoricalCrossentropy()

        def step(a, b, model=model, optimizer=optimizer):
            with tf.GradientTape() as tape:
                loss = loss_fn(b, model(a, training=True))
            optimizer.apply(tape.gradient(loss, model.trainable_variables), model.trainable_variables)
            return loss

        steps[jit] = tf.function(step, jit_compile=jit)
    return steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3, help="calls per side and round")
    args = parser.parse_args()

    import numpy as np
    import tensorflow as tf

    from voxtrace.config import Config
    from voxtrace.inference.features import feature_extractor

    rng = np.random.default_rng(0)
    cfg = Config.load(CONFIGS / "demo.yaml", ["model.name=ResNet18"])
    x = rng.normal(0, 0.1, (32, cfg.num_samples)).astype("float32")
    y = np.eye(cfg.num_classes, dtype="float32")[np.arange(32) % cfg.num_classes]
    steps = _train_steps(cfg, x, y)
    for step in steps.values():
        step(x, y)

    whisper = Config.load(CONFIGS / "demo-whisper.yaml")
    extractor = feature_extractor(whisper)
    windows = rng.normal(0, 0.1, (16, whisper.num_samples)).astype("float32")
    extract = {jit: tf.function(lambda a: extractor(a, training=False), jit_compile=jit) for jit in (False, True)}
    plain, xla = (extract[jit](windows).numpy() for jit in (False, True))
    print(f"extractor: largest difference {np.abs(plain - xla).max():.2e} (features up to {np.abs(plain).max():.2f})")

    results = {}
    for name, sides in (("xla_train_step_speedup", {j: (lambda s=s: s(x, y).numpy()) for j, s in steps.items()}),
                        ("xla_extractor_speedup", {j: (lambda f=f: f(windows).numpy()) for j, f in extract.items()})):
        cpu = {}
        workloads = {j: (lambda run=run: [run() for _ in range(args.repeats)]) for j, run in sides.items()}
        wall = interleaved(workloads, args.rounds, cpu_seconds=cpu)
        print(f"{name}: plain {np.median(cpu[False]) / args.repeats:.3f} CPU s/call, XLA "
              f"{np.median(cpu[True]) / args.repeats:.3f}; wall plain {np.median(wall[False]):.2f} s, XLA "
              f"{np.median(wall[True]):.2f} s per round")
        results[name] = [p / x_ for p, x_ in zip(cpu[False], cpu[True])]
        results[f"{name}_wall"] = [p / x_ for p, x_ in zip(wall[False], wall[True])]
    for name, ratios in results.items():
        print(headline(name, ratios))


if __name__ == "__main__":
    main()
