"""`voxtrace export`: every checkpoint under a model dir as a SavedModel, TFLite or ONNX model with a manifest."""

from __future__ import annotations

import argparse

from voxtrace.vocabulary import EXPORT_FORMATS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    add("--model-dir", required=True, help="folder with trained runs (*/ckpt/*.keras + cfg/config.yaml)")
    add("--format", required=True, choices=EXPORT_FORMATS, help="export format")
    add("--out", default=None, help="output folder (default: MODEL_DIR/export/FORMAT)")
    add("--batch-size", type=int, default=None,
        help="fixed batch of TFLite / ONNX exports where a dynamic batch does not convert (default 32)")


def run(args: argparse.Namespace) -> int:
    from voxtrace.inference.export import FIXED_BATCH, export_checkpoints

    batch_size = FIXED_BATCH if args.batch_size is None else args.batch_size
    result = export_checkpoints(args.model_dir, args.format, out=args.out, batch_size=batch_size)
    for member in result["members"]:
        batch = member["batch"] or "dynamic"
        print(f"  exported: {result['out']}/{member['path']} ({member['model_name']}, batch {batch})")
    if result["members"]:
        print(f"ensemble manifest: {result['out']}/manifest.json")
    for ckpt, reason in result["failed"].items():
        print(f"  FAILED: {ckpt}: {reason}")
    return 1 if result["failed"] else 0
