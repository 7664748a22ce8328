"""Input-pipeline overhead: training steps fed by the full pipeline vs by cached tensors, the demo's workload.

    python benchmarks/pipeline_overhead.py [--config configs/demo.yaml] [--model ResNet18] [--steps 6] [--rounds 5]

The model is `make demo`'s (configs/demo.yaml with ResNet18 from random weights: 3 s clips, 64x128 log-mel,
batch 32; the in-model front-end and SpecAugment included), mixed precision off as on a CPU. Feed A is
`build_dataset(mode="train")` over the demo corpus's training clips (decode, crop, waveform / channel / voice
augmentation, mixup, batching); feed B is the same number of batches of its waveforms already in memory.
Clips come from data/demo/train when it exists, else from espeak-ng. After a warm-up, the two feeds train
`--steps` steps each in `--rounds` interleaved rounds (A B, B A, ...), one `fit` call per feed and round (a
fresh iterator, as a new epoch of `fit` starts one), and each round gives the ratio of the two times.
Last line: `pipeline_overhead: median=X min=.. max=.. iqr=.. rounds=N`, A / B - 1 (0.05 = 5 % slower).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from voxtrace.config import Config  # noqa: E402
from voxtrace.data.audio import find_audio_files  # noqa: E402
from voxtrace.data.pipeline import build_dataset  # noqa: E402
from voxtrace.models import build_classifier  # noqa: E402

from rounds import headline, interleaved  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "data" / "demo" / "train"
DEMO_CONFIG = ROOT / "configs" / "demo.yaml"
SENTENCES = ["The birch canoe slid on the smooth planks.", "Glue the sheet to the dark blue background.",
             "It is easy to tell the depth of a well.", "These days a chicken leg is a rare dish."]


def corpus(count: int, workdir: str) -> list[str]:
    files = find_audio_files(DEMO) if DEMO.is_dir() else []
    if len(files) >= count:
        return [str(p) for p in files[:count]]
    paths = []
    for k in range(count):
        path = os.path.join(workdir, f"clip{k}.wav")
        voice = ["en-us", "en-gb", "en-us+f3", "en-us+m3"][k % 4]
        subprocess.run(["espeak-ng", "-v", voice, "-w", path, SENTENCES[k % len(SENTENCES)]], check=True)
        paths.append(path)
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(DEMO_CONFIG))
    parser.add_argument("--model", default="ResNet18", help="backbone (make demo trains ResNet18 with the config)")
    parser.add_argument("--steps", type=int, default=6, help="training steps per feed and round")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    cfg = Config.load(args.config, [f"model.name={args.model}", "train.mixed_precision=false"])
    batch = cfg.train.batch_size
    with tempfile.TemporaryDirectory() as workdir:
        paths = corpus(batch * args.steps, workdir)
        labels = np.eye(cfg.num_classes, dtype=np.float32)[np.arange(len(paths)) % cfg.num_classes]
        pipeline = build_dataset(paths, labels, cfg, mode="train", shuffle_seed=0)
        batches = list(pipeline.take(args.steps))
        cached = tf.data.Dataset.from_tensor_slices(tuple(np.concatenate([b[i] for b in batches]) for i in range(3)))
        cached = cached.batch(batch, drop_remainder=True).repeat().prefetch(tf.data.AUTOTUNE)

        model = build_classifier(cfg)
        model.compile(optimizer=keras.optimizers.Adam(1e-4), loss="categorical_crossentropy")
        feeds = {"full pipeline": pipeline, "cached tensors": cached}
        runs = {name: (lambda ds=ds: model.fit(ds, steps_per_epoch=args.steps, epochs=1, verbose=0))
                for name, ds in feeds.items()}
        for run in runs.values():
            run()  # warm-up: tracing, the pipeline's first decodes
        seconds = interleaved(runs, args.rounds)
    for name, times in seconds.items():
        print(f"{name:>15}: {statistics.median(times):7.2f} s per {args.steps} steps of {batch} clips, median round "
              f"({cfg.run_name})")
    ratios = [a / b - 1 for a, b in zip(seconds["full pipeline"], seconds["cached tensors"])]
    print(headline("pipeline_overhead", ratios))


if __name__ == "__main__":
    main()
