"""Training and inference throughput of each registered backbone (with the voxtrace head) on this machine.

    python benchmarks/backbone_speed.py                 # a representative subset
    python benchmarks/backbone_speed.py --all           # every registered backbone (slow on a CPU)
    python benchmarks/backbone_speed.py --models cnn4 ResNetRS50
    python benchmarks/backbone_speed.py --models whisper_tiny_en:trainable_blocks=0 --seconds 3

Images are random `[H, W, 3]` at the demo size; raw-waveform backbones get random waveforms of `--seconds`
at 16 kHz instead. A model may carry builder options after a colon (`name:key=value,key=value`, values read
as YAML). Each model is timed side by side in one run after a warm-up step (graph tracing is excluded).
Writes a Markdown table to docs/backbones.md and prints the fastest training throughput as the last line.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import yaml  # noqa: E402
from tqdm import tqdm  # noqa: E402

from voxtrace.config import Config  # noqa: E402
from voxtrace.io import atomic_write_text  # noqa: E402
from voxtrace.models import classification_head, create_model, get_entry, list_models  # noqa: E402

DEFAULT_MODELS = ["cnn4", "dilated_cnn", "resnet18", "MobileNetV3Small", "EfficientNetB0", "RegNetY008",
                  "ResNet50D", "ECA_NFNetL0", "whisper_tiny_en:trainable_blocks=0",
                  "whisper_tiny_en:trainable_blocks=1"]


def parse_spec(spec: str) -> tuple[str, dict]:
    """`name:key=value,key=value` -> `(name, {key: value})`, values read as YAML."""
    name, _, options = spec.partition(":")
    pairs = [item.partition("=") for item in options.split(",") if item]
    return name, {key: yaml.safe_load(value) for key, _, value in pairs}


def measure(spec: str, img_size, batch_size: int, steps: int, seconds: float = 3.0, num_classes: int = 6) -> dict:
    """Samples per second of one training step and one inference pass of `spec` + the voxtrace head."""
    name, options = parse_spec(spec)
    shape = (int(seconds * 16000), 1) if get_entry(name).waveform else (*img_size, 3)
    inputs = keras.Input(shape)
    backbone = create_model(name, shape, **options)
    model = keras.Model(inputs, classification_head(backbone(inputs), num_classes))
    model.compile(optimizer="adam", loss="categorical_crossentropy")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(batch_size, *shape)).astype("float32")
    y = np.eye(num_classes, dtype="float32")[rng.integers(0, num_classes, batch_size)]
    model.train_on_batch(x, y)  # warm-up: traces the graphs
    model.predict_on_batch(x)
    start = time.perf_counter()
    for _ in range(steps):
        model.train_on_batch(x, y)
    train = batch_size * steps / (time.perf_counter() - start)
    start = time.perf_counter()
    for _ in range(steps):
        model.predict_on_batch(x)
    infer = batch_size * steps / (time.perf_counter() - start)
    return {"name": spec, "family": get_entry(name).family, "params_m": backbone.count_params() / 1e6,
            "train": train, "infer": infer}


def markdown(rows, img_size, batch_size, steps, seconds) -> str:
    best = max(r["train"] for r in rows)
    lines = [
        "# Backbone throughput",
        "",
        f"Random images {img_size[0]}x{img_size[1]}x3 (raw-waveform backbones: random {seconds:g} s waveforms "
        f"at 16 kHz), batch {batch_size}, {steps} timed steps after one warm-up step, backbone + voxtrace head, "
        f"float32 on {platform.processor() or platform.machine()} with {os.cpu_count()} logical CPUs "
        f"(Keras {keras.__version__}). Regenerate with `python benchmarks/backbone_speed.py [--all]`.",
        "",
        "| backbone | family | parameters (M) | train samples/s | inference samples/s | train time vs fastest |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for r in sorted(rows, key=lambda r: -r["train"]):
        lines.append(f"| {r['name']} | {r['family']} | {r['params_m']:.1f} | {r['train']:.1f} | "
                     f"{r['infer']:.1f} | {best / r['train']:.1f}x |")
    notes = []
    for alias in sorted(set(list_models()) - set(list_models(include_aliases=False)), key=str.lower):
        entry = get_entry(alias)
        extra = f" (default pretrain {entry.default_pretrain})" if entry.default_pretrain else ""
        notes.append(f"`{alias}` = `{entry.alias_of}`{extra}")
    lines += ["", "Aliases (same architecture, not timed separately): " + ", ".join(notes) + "."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--all", action="store_true", help="time every registered backbone (aliases excluded)")
    parser.add_argument("--models", nargs="+", help="backbone names to time, each optionally "
                        "name:key=value,... with builder options (default: a representative subset)")
    parser.add_argument("--seconds", type=float, default=3.0, help="waveform length for raw-waveform backbones")
    parser.add_argument("--img-size", nargs=2, type=int, default=None, metavar=("H", "W"),
                        help="image size (default: features.img_size of configs/demo.yaml)")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--output", default="docs/backbones.md")
    args = parser.parse_args(argv)
    if args.img_size is None:
        args.img_size = Config.load("configs/demo.yaml").features.img_size
    names = list_models(include_aliases=False) if args.all else (args.models or DEFAULT_MODELS)
    rows = []
    for name in tqdm(names, desc="backbones", unit="model"):
        rows.append(measure(name, args.img_size, args.batch_size, args.steps, args.seconds))
        keras.backend.clear_session()
        tqdm.write(f"{name}: train {rows[-1]['train']:.1f} samples/s, inference {rows[-1]['infer']:.1f} samples/s")
    atomic_write_text(args.output, markdown(rows, args.img_size, args.batch_size, args.steps, args.seconds))
    fastest = max(rows, key=lambda r: r["train"])
    print(f"wrote {args.output}")
    print(f"backbone_speed: fastest={fastest['name']} {fastest['train']:.1f} samples/s")


if __name__ == "__main__":
    main()
