#!/usr/bin/env python
"""Runs every ratio benchmark, each in its own subprocess, and writes their headline ratios to docs/benchmarks.md.

    python benchmarks/run_all.py            # full runs (tens of minutes on a 2-core CPU)
    python benchmarks/run_all.py --quick    # short runs: fewer rounds and steps, noisier figures
    python benchmarks/run_all.py --only loop_overhead predict_scaling --note "shared 2-core machine"

`--only` runs the named benchmarks; the table keeps the others' rows from their logs when they have one.
Each benchmark prints its headline last, `name: median=X min=A max=B iqr=Q rounds=N` (benchmarks/rounds.py),
or `name: X` for a single figure. A benchmark's whole output is kept in `--logs` (one `NAME.txt` each);
`--reuse` builds the table from the logs already there and runs only the benchmarks with none. A benchmark
that fails gets a row saying so and the others still run. `backbone_speed.py`, `classical_baseline.py`,
`frozen_recipes.py` and `open_set*.py` write pages or tables of their own and are run on their own.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
HEADLINE = re.compile(r"^(\w+): median=(\S+) min=(\S+) max=(\S+) iqr=(\S+) rounds=(\d+)\s*$")
SINGLE = re.compile(r"^(\w+): (-?[\d.]+)\s*$")


@dataclass(frozen=True)
class Benchmark:
    name: str
    quick_args: tuple[str, ...]
    meanings: dict  # headline name -> what the ratio means


BENCHMARKS = (
    Benchmark("loop_overhead", ("--steps", "1", "--rounds", "5", "--warmup", "1"), {
        "loop_overhead": "extra CPU time per training step of voxtrace's TrainLoop over a bare `Model.fit`, same "
                         "data (demo ResNet18 64x128, batch 32); target <= 0.10",
        "loop_overhead_wall": "the same in wall time (carries other jobs' load on a shared machine)",
    }),
    Benchmark("pipeline_overhead", ("--steps", "2", "--rounds", "3"), {
        "pipeline_overhead": "extra time per training step when fed by the full tf.data pipeline (decode, "
                             "augmentation) instead of cached tensors (demo ResNet18 64x128, batch 32)",
    }),
    Benchmark("predict_scaling", ("--small", "100", "--large", "1000", "--rounds", "1"), {
        "predict_scaling_cost": "per-file wall time of predicting 10,000 clips / 1,000 clips (3-6 s each, cnn4 "
                                "on the demo config); target <= 1.1",
        "predict_scaling_cost_cpu": "the same in CPU time (decoding threads included)",
        "predict_scaling_rss": "peak RSS of predicting 10,000 clips / 1,000 clips; target <= 1.1",
    }),
    Benchmark("frontend", ("--clips", "32", "--rounds", "3"), {
        "frontend_speedup_vs_librosa": "log-mel clips/s of the voxtrace layer / librosa's (demo parameters, "
                                       "batch 32)",
    }),
    Benchmark("bench_audio_io", ("--rounds", "3"), {
        "span_read_speedup": "decoding a whole 20-minute WAV / reading a 6 s span of it",
    }),
    Benchmark("xla_speed", ("--rounds", "3", "--repeats", "2"), {
        "xla_train_step_speedup": "CPU time of the demo ResNet18 training step (64x128, batch 32) without / with "
                                  "XLA (jit_compile); > 1: XLA is faster",
        "xla_train_step_speedup_wall": "the same in wall time",
        "xla_extractor_speedup": "the same for the frozen Whisper extractor of demo-whisper.yaml (16 windows of 3 s; "
                                 "on by default: model.head.jit_compile)",
        "xla_extractor_speedup_wall": "the same in wall time",
    }),
    Benchmark("export_speed", (), {
        "export_speedup": "clips/s of the exported model / the Keras model (ONNX, every core); target >= 1.5",
        "export_speedup_tflite": "the same for TFLite (XNNPACK, every core)",
    }),
)


def parse_headlines(output: str) -> dict[str, dict]:
    """`{name: {median, min, max, iqr, rounds}}` of every headline line in a benchmark's output."""
    found = {}
    for line in output.splitlines():
        if m := HEADLINE.match(line.strip()):
            found[m[1]] = {"median": m[2], "min": m[3], "max": m[4], "iqr": m[5], "rounds": m[6]}
        elif m := SINGLE.match(line.strip()):
            found[m[1]] = {"median": m[2], "min": None, "max": None, "iqr": None, "rounds": "1"}
    return found


def run(bench: Benchmark, quick: bool, log: Path) -> tuple[str, float]:
    """The benchmark's output (stdout then stderr), written to `log`, and its wall seconds."""
    command = [sys.executable, str(HERE / f"{bench.name}.py"), *(bench.quick_args if quick else ())]
    print(f"running {' '.join(command[1:])} ...", flush=True)
    start = time.perf_counter()
    proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    output = proc.stdout + (f"\n[exit status {proc.returncode}]\n{proc.stderr[-4000:]}" if proc.returncode else "")
    from voxtrace.io import atomic_write_text

    atomic_write_text(log, output)
    return output, seconds


def machine() -> str:
    """CPU model, core count and OS of this machine."""
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            model = next(line.split(":", 1)[1].strip() for line in fh if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{model}, {os.cpu_count()} cores, {platform.system()} {platform.release()}, Python {platform.python_version()}"


def table(rows: list[dict], note: str, quick: bool) -> str:
    lines = [
        "# Benchmarks",
        "",
        f"Written by `python benchmarks/run_all.py{' --quick' if quick else ''}` on {datetime.date.today()}, on "
        f"{machine()}. {note}",
        "",
        "Every ratio is measured side by side in one run, in interleaved rounds (A B, B A, ...), so that a "
        "slow spell of the machine lands on both sides; each round gives one ratio and the table shows their "
        "median and spread (min-max over the rounds, and the interquartile range). A benchmark's full output "
        "(absolute rates, memory) is in its log; each script's docstring says what it measures.",
        "",
        "| benchmark | headline ratio | median | spread (min-max) | IQR | rounds | what it means | date |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        spread = f"{r['min']} to {r['max']}" if r["min"] is not None else ""
        lines.append(f"| `{r['benchmark']}.py` | `{r['headline']}` | {r['median']} | {spread} | {r['iqr'] or ''} | "
                     f"{r['rounds']} | {r['meaning']} | {r['date']} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short runs (fewer rounds and steps)")
    parser.add_argument("--only", nargs="+", choices=[b.name for b in BENCHMARKS], help="run only these")
    parser.add_argument("--logs", default=str(ROOT / "runs" / "benchmarks"), help="folder of each benchmark's output")
    parser.add_argument("--reuse", action="store_true", help="take a benchmark's figures from its log when present")
    parser.add_argument("--out", default=str(ROOT / "docs" / "benchmarks.md"))
    parser.add_argument("--note", default="Other work may share the CPU: compare medians, not single rounds.",
                        help="a sentence on the conditions (e.g. a machine shared with other jobs)")
    args = parser.parse_args()

    from voxtrace.io import atomic_write_text

    logs = Path(args.logs)
    rows = []
    for bench in BENCHMARKS:
        log = logs / f"{bench.name}.txt"
        selected = not args.only or bench.name in args.only
        if not selected and not log.is_file():
            continue
        if (args.reuse or not selected) and log.is_file():
            output = log.read_text()
            date = datetime.date.fromtimestamp(log.stat().st_mtime).isoformat()
            print(f"{bench.name}: from {log}")
        else:
            output, seconds = run(bench, args.quick, log)
            date = datetime.date.today().isoformat()
            print(f"{bench.name}: {seconds:.0f} s, output in {log}")
        found = parse_headlines(output)
        for headline, meaning in bench.meanings.items():
            figures = found.get(headline)
            if figures is None:
                figures = {"median": f"failed (see {log.name})", "min": None, "max": None, "iqr": None, "rounds": ""}
            rows.append({"benchmark": bench.name, "headline": headline, "meaning": meaning, "date": date, **figures})
            print(f"  {headline}: {figures['median']} ({figures['min']} - {figures['max']})")
    atomic_write_text(args.out, table(rows, args.note, args.quick))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
