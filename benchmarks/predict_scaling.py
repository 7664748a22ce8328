#!/usr/bin/env python
"""Prediction at scale: per-file cost and peak memory of 10,000 clips against 1,000 clips.

An ensemble run built with `build_classifier` on the demo config (configs/demo.yaml: 3 s windows, 64x128
log-mel, half-window hop) and `FOLDS` fold checkpoints predicts `--small` and `--large` clips of 3-6 s, each size in
a fresh subprocess, the two sizes in `--rounds` interleaved rounds (small large, large small, ...). The clips
are `--small` distinct tone-in-noise WAVs, hard-linked under distinct names to make the large set, so both sets
hold the same audio mix. The per-file cost is the marginal one: each subprocess predicts `WARMUP` clips once
(TensorFlow start-up), then times `WARMUP` clips (model loading and graph tracing: the fixed cost of a call)
and all clips with the progress bar on, as `voxtrace predict` runs, and divides the difference of the two
times by the difference in clips. The default backbone is `cnn4`, a small registered CNN (about 7 ms of CPU per
window): the demo's ResNet18 costs several times more per window, over an hour for 2 x 11,000 clips per round
on 2 CPU cores (`--model ResNet18` runs it). Both sizes also report CPU seconds per file (decoding threads
included), which other jobs on a shared machine do not inflate. Prediction
streams files (a thread pool decodes ahead of the model), so the per-file cost should stay constant (cost
ratio <= 1.1) and peak RSS should not grow with the number of files (RSS ratio <= 1.1).

    python benchmarks/predict_scaling.py [--small 1000] [--large 10000] [--rounds 2] [--model cnn4] [--work DIR]

Prints the progress bar of the last large run (files/s, ETA) and, last, the two headline lines
`predict_scaling_rss`, `predict_scaling_cost_cpu` and `predict_scaling_cost` (wall time; median, min, max and
IQR of the per-round ratios).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from rounds import headline, summary

DEMO_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "demo.yaml"
WARMUP = 20  # files predicted first in each subprocess; their run measures the fixed cost per call
FOLDS = 1  # the demo averages two folds; one keeps 2 x 11,000 clips per round within minutes on 2 cores


def make_run(root: Path, model: str) -> None:
    """An ensemble run of `FOLDS` fold checkpoints of `model` on the demo config (random weights)."""
    from voxtrace.config import Config
    from voxtrace.models import build_classifier

    cfg = Config.load(DEMO_CONFIG, [f"model.name={model}", "train.mixed_precision=false"])
    run = root / "models" / cfg.run_name
    (run / "ckpt").mkdir(parents=True)
    for fold in range(FOLDS):
        build_classifier(cfg).save(run / "ckpt" / f"fold-{fold}.keras")
    cfg.save(run / "cfg" / "config.yaml")


def make_clips(root: Path, small: int, large: int, rate: int = 16000) -> None:
    """`small` distinct 3-6 s WAVs in `root/small`, and `large` hard links to them in `root/large`."""
    from voxtrace.data.audio import save_wav

    rng = np.random.default_rng(0)
    (root / "small").mkdir(parents=True)
    (root / "large").mkdir(parents=True)
    for i in range(small):
        length = int(rng.uniform(3.0, 6.0) * rate)
        t = np.arange(length) / rate
        x = 0.3 * np.sin(2 * np.pi * rng.uniform(100, 3000) * t) + 0.05 * rng.standard_normal(length)
        save_wav(root / "small" / f"clip_{i:05d}.wav", x, rate)
    for i in range(large):
        os.link(root / "small" / f"clip_{i % small:05d}.wav", root / "large" / f"clip_{i:05d}.wav")


def child(model_dir: str, infer_path: str) -> None:
    from voxtrace.data.audio import find_audio_files
    from voxtrace.inference.ensemble import Ensemble

    files = find_audio_files(infer_path)
    ensemble = Ensemble(model_dir)
    ensemble.predict(files[:WARMUP], progress=False)  # first call: TensorFlow start-up, not timed
    start, cpu_start = time.perf_counter(), time.process_time()
    ensemble.predict(files[:WARMUP], progress=False)
    fixed = time.perf_counter() - start  # per call: model loading, graph tracing, and WARMUP files
    fixed_cpu = time.process_time() - cpu_start
    start, cpu_start = time.perf_counter(), time.process_time()
    result = ensemble.predict(files, progress=True)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    rss_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"files": len(files), "seconds": seconds, "marginal": (seconds - fixed) / (len(files) - WARMUP),
                      "marginal_cpu": (cpu - fixed_cpu) / (len(files) - WARMUP),
                      "rss_kib": rss_kib, "failed": len(result.errors)}))


def measure(model_dir: Path, folder: Path) -> tuple[dict, str]:
    """The child's figures and its progress bar's output."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.run([sys.executable, __file__, "--child", str(model_dir), str(folder)],
                          capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"predicting {folder} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1]), proc.stderr


def bar_states(stderr: str) -> tuple[str, str]:
    """A mid-run state of the progress bar (with its ETA) and its final state."""
    states = [s.strip() for s in re.split(r"[\r\n]+", stderr) if "file/s" in s or "s/file" in s]
    if not states:
        raise RuntimeError(f"predict showed no progress bar with a file rate:\n{stderr[-2000:]}")
    return states[len(states) // 2], states[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", type=int, default=1000)
    parser.add_argument("--large", type=int, default=10000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--model", default="cnn4")
    parser.add_argument("--work", default=None, help="scratch folder (default: a temporary one, removed)")
    parser.add_argument("--child", nargs=2, metavar=("MODEL_DIR", "INFER_PATH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    work = Path(args.work or tempfile.mkdtemp(prefix="predict_scaling_"))
    runs = {"small": [], "large": []}
    try:
        make_run(work, args.model)
        make_clips(work, args.small, args.large)
        for r in range(args.rounds):
            for size in ("small", "large") if r % 2 == 0 else ("large", "small"):
                figures, stderr = measure(work / "models", work / size)
                runs[size].append(figures)
                if size == "large":
                    bar = bar_states(stderr)
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    for size, figures in runs.items():
        for r in figures:
            print(f"{size:>5}: {r['files']} files in {r['seconds']:.1f} s including model loading, marginal "
                  f"{1000 * r['marginal']:.2f} ms/file ({1 / r['marginal']:.0f} files/s), "
                  f"{1000 * r['marginal_cpu']:.2f} CPU ms/file, peak RSS "
                  f"{r['rss_kib'] / 1024:.0f} MiB, failed {r['failed']}")
    print(f"progress bar of the last large run, mid-run: {bar[0]}")
    print(f"progress bar of the last large run, at the end: {bar[1]}")
    cost = [b["marginal"] / a["marginal"] for a, b in zip(runs["small"], runs["large"])]
    cost_cpu = [b["marginal_cpu"] / a["marginal_cpu"] for a, b in zip(runs["small"], runs["large"])]
    rss = [b["rss_kib"] / a["rss_kib"] for a, b in zip(runs["small"], runs["large"])]
    print(f"model: {args.model} x {FOLDS} folds; cost ratio median {summary(cost)['median']:.3f} (target <= 1.1), "
          f"RSS ratio median {summary(rss)['median']:.3f} (target <= 1.1)")
    print(headline("predict_scaling_rss", rss))
    print(headline("predict_scaling_cost_cpu", cost_cpu))
    print(headline("predict_scaling_cost", cost))


if __name__ == "__main__":
    main()
