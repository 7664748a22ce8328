"""Inference throughput of an exported model against the Keras model it came from, side by side in one run.

    python benchmarks/export_speed.py                          # cnn4 + log-mel, 2 s windows, TFLite
    python benchmarks/export_speed.py --model rawnet2_tiny --kind raw --format onnx
    python benchmarks/export_speed.py --formats savedmodel tflite onnx --format tflite

A freshly initialised classifier (front-end included) is saved as a run, exported with `voxtrace export`'s
code, and the Keras model and every asked export score the same batches of real speech windows (espeak-ng)
after a warm-up batch. Prints clips/s of each and, as the last line, the speed-up of `--format` over Keras.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from voxtrace.config import Config  # noqa: E402
from voxtrace.data.audio import load_audio  # noqa: E402
from voxtrace.inference.windows import frame_windows  # noqa: E402
from voxtrace.inference.checkpoints import load_checkpoint  # noqa: E402
from voxtrace.inference.export import ExportedModel, export_checkpoints  # noqa: E402
from voxtrace.models import build_classifier  # noqa: E402

SENTENCES = ["the quick brown fox jumps over the lazy dog", "seven green trees stood by the river bank",
             "please open the door and close the window", "a red boat sailed across the quiet lake"]


def speech_windows(folder: Path, cfg, count: int) -> np.ndarray:
    """`count` model windows `[count, N]` cut from espeak-ng sentences."""
    windows = []
    for i, text in enumerate(SENTENCES):
        path = folder / f"s{i}.wav"
        subprocess.run(["espeak-ng", "-v", ["en-us", "en-gb"][i % 2], "-w", str(path), text], check=True)
        audio = load_audio(path, cfg.audio.sample_rate)
        windows.extend(frame_windows(audio, cfg.num_samples, cfg.audio.window_hop, cfg.audio.pad_mode))
    reps = -(-count // len(windows))
    return np.stack((windows * reps)[:count]).astype(np.float32)


def clips_per_second(predict, windows: np.ndarray, batch: int, repeats: int) -> float:
    predict(windows[:batch])  # warm-up: graph tracing, tensor allocation
    started = time.perf_counter()
    for _ in range(repeats):
        for start in range(0, len(windows) - batch + 1, batch):
            predict(windows[start:start + batch])
    return repeats * (len(windows) // batch) * batch / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="cnn4")
    parser.add_argument("--kind", default="logmel", help="features.kind (raw for raw-waveform models)")
    parser.add_argument("--duration", type=float, default=2.0, help="model window in seconds")
    parser.add_argument("--img-size", type=int, nargs=2, default=[128, 256])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--clips", type=int, default=64, help="windows per timed pass")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--formats", nargs="+", default=["savedmodel", "tflite", "onnx"])
    parser.add_argument("--format", default="tflite", help="the format of the headline figure")
    args = parser.parse_args()
    if args.format not in args.formats:
        parser.error(f"--format {args.format} must be one of --formats {args.formats}")

    cfg = Config.from_dict({"audio": {"duration": args.duration},
                            "features": {"kind": args.kind, "img_size": args.img_size, "n_fft": 1024,
                                         "win_length": 1024},
                            "model": {"name": args.model}})
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        run = tmp / "models" / cfg.run_name
        cfg.save(run / "cfg" / "config.yaml")
        (run / "ckpt").mkdir(parents=True)
        build_classifier(cfg).save(run / "ckpt" / "model.keras")
        keras_model = load_checkpoint(run / "ckpt" / "model.keras")
        windows = speech_windows(tmp, cfg, args.clips)
        reference = keras_model.predict_on_batch(windows[: args.batch])

        keras_rate = clips_per_second(keras_model.predict_on_batch, windows, args.batch, args.repeats)
        print(f"{cfg.run_name} ({args.kind}, {args.duration:g} s windows), batch {args.batch}, "
              f"{os.cpu_count()} CPUs")
        print(f"keras       {keras_rate:8.1f} clips/s")
        ratios = {}
        for fmt in args.formats:
            out = tmp / "export" / fmt
            export_checkpoints(tmp / "models", fmt, out=out, batch_size=args.batch, progress=False)
            exported = ExportedModel.load(out / cfg.run_name / "model")
            diff = float(np.abs(exported.predict_on_batch(windows[: args.batch]) - reference).max())
            rate = clips_per_second(exported.predict_on_batch, windows, args.batch, args.repeats)
            ratios[fmt] = rate / keras_rate
            batch = exported.manifest["input"]["shape"][0] or "dynamic"
            print(f"{fmt:<11} {rate:8.1f} clips/s  x{ratios[fmt]:.2f} vs keras  (export batch {batch}, "
                  f"max |dp| {diff:.1e})")
    print(f"export_speedup: {ratios[args.format]:.2f}")


if __name__ == "__main__":
    main()
