#!/usr/bin/env python
"""Ensemble prediction scaling: per-file cost and peak memory of 1,000 clips against 100 clips.

A two-model ensemble (untrained `cnn4` and `dilated_cnn` built with `build_classifier`, different window
lengths) predicts 100 and then 1,000 clips, each size in a fresh subprocess. The per-file cost is the
marginal one: each subprocess predicts 10 clips once untimed (TensorFlow start-up), then times 10 clips (model
loading and graph tracing: the fixed cost of a call) and all clips, and divides the difference of the two
times by the difference in clips. Clips are the demo corpus's
`data/demo/eval_part1` when present, else synthesized 1-8 s tones in noise; both sets are copies of the same
100 clips so the audio mix is identical. Prediction streams files, so the per-file cost should stay constant
(cost ratio ~1, target <= 1.2) and peak RSS should not grow with the number of files (target <= 1.2).

    python benchmarks/predict_scaling.py [--small 100] [--large 1000] [--work DIR]

The last line is `predict_scaling: cost_ratio=X rss_ratio=Y`.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

DEMO_CLIPS = Path(__file__).resolve().parents[1] / "data" / "demo" / "eval_part1"
SR = 16000
WARMUP = 10  # files predicted first in each subprocess; their run measures the fixed cost per call


def make_models(root: Path) -> None:
    from voxtrace.config import Config
    from voxtrace.models import build_classifier

    for name, duration in (("cnn4", 2.0), ("dilated_cnn", 3.0)):
        cfg = Config.from_dict({"model": {"name": name}, "features": {"img_size": [64, 128]},
                                "audio": {"duration": duration}})
        run = root / "models" / f"{name}-64x128"
        (run / "ckpt").mkdir(parents=True)
        build_classifier(cfg).save(run / "ckpt" / "fold-0.keras")
        cfg.save(run / "cfg" / "config.yaml")


def base_clips(root: Path, n: int) -> list[Path]:
    """`n` source clips: demo corpus files when present, else synthesized."""
    from voxtrace.data.audio import find_audio_files, save_wav

    if DEMO_CLIPS.is_dir():
        found = find_audio_files(DEMO_CLIPS)
        if found:
            return [found[i % len(found)] for i in range(n)]
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        length = int(rng.uniform(1.0, 8.0) * SR)
        t = np.arange(length) / SR
        x = 0.3 * np.sin(2 * np.pi * rng.uniform(100, 3000) * t) + 0.05 * rng.standard_normal(length)
        path = root / "source" / f"src_{i:04d}.wav"
        save_wav(path, x, SR)
        out.append(path)
    return out


def fill(folder: Path, sources: list[Path], n: int) -> None:
    folder.mkdir(parents=True)
    for i in range(n):
        src = sources[i % len(sources)]
        shutil.copyfile(src, folder / f"clip_{i:05d}{src.suffix}")


def child(model_dir: str, infer_path: str) -> None:
    from voxtrace.data.audio import find_audio_files
    from voxtrace.inference.ensemble import Ensemble

    files = find_audio_files(infer_path)
    ensemble = Ensemble(model_dir)
    ensemble.predict(files[:WARMUP], progress=False)  # first call: TensorFlow start-up, not timed
    start = time.perf_counter()
    ensemble.predict(files[:WARMUP], progress=False)
    fixed = time.perf_counter() - start  # per call: model loading, graph tracing, and WARMUP files
    start = time.perf_counter()
    result = ensemble.predict(files, progress=False)
    seconds = time.perf_counter() - start
    rss_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"files": len(files), "seconds": seconds, "marginal": (seconds - fixed) / (len(files) - WARMUP),
                      "rss_kib": rss_kib, "failed": len(result.errors)}))


def measure(model_dir: Path, folder: Path) -> dict:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.run([sys.executable, __file__, "--child", str(model_dir), str(folder)],
                          capture_output=True, text=True, env=env, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", type=int, default=100)
    parser.add_argument("--large", type=int, default=1000)
    parser.add_argument("--work", default=None, help="scratch folder (default: a temporary one, removed)")
    parser.add_argument("--child", nargs=2, metavar=("MODEL_DIR", "INFER_PATH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    work = Path(args.work or tempfile.mkdtemp(prefix="predict_scaling_"))
    try:
        make_models(work)
        sources = base_clips(work, args.small)
        fill(work / "small", sources, args.small)
        fill(work / "large", sources, args.large)
        small = measure(work / "models", work / "small")
        large = measure(work / "models", work / "large")
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    for name, r in (("small", small), ("large", large)):
        print(f"{name:>5}: {r['files']} files in {r['seconds']:.1f} s including model loading "
              f"({1000 * r['seconds'] / r['files']:.1f} ms/file), marginal {1000 * r['marginal']:.1f} ms/file, "
              f"peak RSS {r['rss_kib'] / 1024:.0f} MiB, failed {r['failed']}")
    cost_ratio = large["marginal"] / small["marginal"]
    rss_ratio = large["rss_kib"] / small["rss_kib"]
    print(f"predict_scaling: cost_ratio={cost_ratio:.3f} rss_ratio={rss_ratio:.3f}")


if __name__ == "__main__":
    main()
