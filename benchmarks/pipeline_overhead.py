"""Input-pipeline overhead: a training epoch fed by the full pipeline vs by cached tensors.

    python benchmarks/pipeline_overhead.py [--files 32] [--batch 8] [--epochs 3]

The model is `voxtrace.models.build_classifier` (EfficientNetB0, random init) at the demo image size
[128, 256] with 3 s clips, so both runs include the in-model front-end and SpecAugment. Run A feeds it from
`build_dataset(mode="train")` (decode, crop, waveform / channel / voice augmentation, batching); run B feeds
it the same number of batches of waveforms already in memory. Clips come from the demo corpus
(data/demo/train) when it exists, else from espeak-ng. Each feed trains in one `fit` call (its iterator
persists across epochs, as in training); the first epoch is a warm-up and the fastest of the timed epochs
is kept. Last line: `pipeline_overhead: X` = A / B - 1.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from voxtrace.config import Config  # noqa: E402
from voxtrace.data.audio import find_audio_files  # noqa: E402
from voxtrace.data.pipeline import build_dataset  # noqa: E402
from voxtrace.models import build_classifier  # noqa: E402

DEMO = Path(__file__).resolve().parent.parent / "data" / "demo" / "train"
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


class EpochTimer(keras.callbacks.Callback):
    """Wall-clock seconds of every epoch."""

    def __init__(self):
        super().__init__()
        self.seconds = []

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self._start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=32)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=3, help="timed epochs per feed (best kept)")
    args = parser.parse_args()

    cfg = Config.from_dict({"features": {"img_size": [128, 256]}, "audio": {"duration": 3.0},
                            "model": {"name": "EfficientNetB0"}, "train": {"batch_size": args.batch}})
    steps = args.files // args.batch
    with tempfile.TemporaryDirectory() as workdir:
        paths = corpus(args.files, workdir)
        labels = np.eye(cfg.num_classes, dtype=np.float32)[np.arange(len(paths)) % cfg.num_classes]
        pipeline = build_dataset(paths, labels, cfg, mode="train", shuffle_seed=0)
        batches = list(pipeline.take(steps))
        cached = tf.data.Dataset.from_tensor_slices(tuple(np.concatenate([b[i] for b in batches]) for i in range(3)))
        cached = cached.batch(args.batch, drop_remainder=True).repeat().prefetch(tf.data.AUTOTUNE)

        model = build_classifier(cfg)
        model.compile(optimizer=keras.optimizers.Adam(1e-4), loss="categorical_crossentropy")
        feeds = {"full pipeline": pipeline, "cached tensors": cached}
        seconds = {}
        for name, ds in feeds.items():  # one fit per feed, so its iterator persists across epochs as in training
            timer = EpochTimer()
            model.fit(ds, steps_per_epoch=steps, epochs=1 + args.epochs, verbose=0, callbacks=[timer])
            seconds[name] = min(timer.seconds[1:])  # the first epoch is the warm-up
    for name, s in seconds.items():
        print(f"{name:>15}: {s:7.2f} s per epoch ({steps} steps of {args.batch} clips, {cfg.run_name})")
    print(f"pipeline_overhead: {seconds['full pipeline'] / seconds['cached tensors'] - 1:.3f}")


if __name__ == "__main__":
    main()
