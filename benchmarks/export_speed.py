"""Files/s of an exported ensemble against the Keras checkpoints it came from, on real clips, side by side.

    python benchmarks/export_speed.py                      # the demo's ResNet18 64x128 folds, 48 eval_part1 clips
    python benchmarks/export_speed.py --rounds 9 --files 96 --formats onnx
    python benchmarks/export_speed.py --levers             # also: model-level settings of each runtime

The checkpoints under `--model-dir` are exported with `voxtrace export`'s code (`--batch-size`: the fixed
batch where a dynamic one does not convert), then the Keras ensemble and each export score the same clips
through `voxtrace predict`'s path (`Ensemble`, resident: decoding, windows, batches, aggregation) after a
warm-up, each engine in a process of its own. Rounds alternate the engines (`rounds.interleaved`: the order
reversed each round), so a busy machine slows all of them alike; each engine's median files/s and spread
(min-max) are printed with the largest probability difference to Keras, then per format the speed-up over
Keras in the same round (median, spread), the headline `export_speedup` (the `--format` export) last.
`--levers` times single models on the clips' windows under each runtime setting (threads, graph optimisation,
execution mode, XNNPACK, batch).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from voxtrace.inference.ensemble import Ensemble  # noqa: E402
from voxtrace.inference.export import FIXED_BATCH, export_checkpoints  # noqa: E402
from rounds import headline, interleaved  # noqa: E402

TOLERANCE = 1e-4


def model_rate(predict, windows: np.ndarray, batch: int, repeats: int = 2) -> float:
    """Windows/s of `predict` over `windows` in batches of `batch`, after a warm-up batch."""
    predict(windows[:batch])
    started, done = time.perf_counter(), 0
    for _ in range(repeats):
        for start in range(0, len(windows) - batch + 1, batch):
            predict(windows[start:start + batch])
            done += batch
    return done / (time.perf_counter() - started)


def levers(ensembles: dict, files: list[Path]) -> None:
    """Windows/s of the first model of each engine under each runtime setting."""
    import onnxruntime as ort

    from voxtrace.data.audio import load_audio
    from voxtrace.inference.runtime import OnnxRunner, TFLiteRunner, cpu_threads, onnx_options
    from voxtrace.inference.windows import frame_windows

    keras_run = ensembles["keras"].members[0]
    cfg = keras_run.cfg
    windows = np.stack([w for path in files for w in frame_windows(
        load_audio(path, cfg.audio.sample_rate), cfg.num_samples, cfg.audio.window_hop, cfg.audio.pad_mode)])
    windows = np.resize(windows, (128, windows.shape[1])).astype(np.float32)  # repeated up to 128 windows
    print(f"\nlevers: windows/s of one model, {len(windows)} windows of {cfg.num_samples} samples")

    def row(engine: str, model, batch: int, setting: str = "") -> None:
        rate = model_rate(model.predict_on_batch, windows, batch)
        print(f"  {engine:<7} batch {batch:>3}  {setting:<34} {rate:7.1f}")

    keras_model = ensembles["keras"].models(keras_run)[0]
    for batch in (32, 64):
        row("keras", keras_model, batch)
    if "onnx" in ensembles:
        exported = ensembles["onnx"].models(ensembles["onnx"].members[0])[0]
        path = str(exported.folder / exported.manifest["file"])
        settings = {"voxtrace (runtime.onnx_options)": {},
                    **{f"intra-op threads {n}": {"intra_op_num_threads": n}
                       for n in (1, cpu_threads(), 2 * cpu_threads())},
                    "threads spin while idle": {"spinning": "1"},
                    "graph optimisation basic": {
                        "graph_optimization_level": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC},
                    "parallel execution": {"execution_mode": ort.ExecutionMode.ORT_PARALLEL,
                                           "inter_op_num_threads": cpu_threads()}}
        for setting, changes in settings.items():
            options = onnx_options()
            if "spinning" in changes:
                options.add_session_config_entry("session.intra_op.allow_spinning", changes.pop("spinning"))
            for key, value in changes.items():
                setattr(options, key, value)
            exported.runner = OnnxRunner(path)
            exported.runner.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
            row("onnx", exported, exported.batch_size, setting)
        exported.runner = OnnxRunner(path)
    if "tflite" in ensembles:
        from ai_edge_litert.interpreter import Interpreter, OpResolverType

        exported = ensembles["tflite"].models(ensembles["tflite"].members[0])[0]
        path = str(exported.folder / exported.manifest["file"])
        for batch in (8, 32, 64):
            row("tflite", exported, batch, "XNNPACK (runtime.TFLiteRunner)")
        for threads in sorted({1, cpu_threads()}):
            exported.runner = TFLiteRunner(model_path=path, threads=threads)
            row("tflite", exported, 32, f"XNNPACK, {threads} thread(s)")
        exported.runner.interpreter = Interpreter(
            model_path=path, num_threads=cpu_threads(),
            experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
        exported.runner.allocated = None
        row("tflite", exported, 32, "no XNNPACK")
        exported.runner = TFLiteRunner(model_path=path)


class Worker:
    """One engine in a process of its own, as deployed (an export's process never loads TensorFlow): it
    scores the clips once (warm-up; the probabilities compared), then once per request. Idle workers wait on
    a pipe, so only the engine being timed runs."""

    def __init__(self, model_dir: Path, clip_list: Path, probs: Path):
        self.probs = probs
        self.proc = subprocess.Popen([sys.executable, __file__, "--worker", str(model_dir), str(clip_list), str(probs)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.batch = self._answer().removeprefix("ready ")

    def _answer(self) -> str:
        line = self.proc.stdout.readline().strip()
        if not line:
            raise SystemExit(f"benchmark worker {self.proc.args[3]} stopped (exit status {self.proc.wait()})")
        return line

    def run(self) -> None:
        self.proc.stdin.write("run\n")
        self.proc.stdin.flush()
        self._answer()

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait()


def worker(model_dir: str, clip_list: str, probs: str) -> None:
    """The worker side of `Worker`: `ready BATCH` once warm, `done` after each `run`."""
    from voxtrace.inference.predictor import auto_batch_size

    files = [Path(line) for line in Path(clip_list).read_text().splitlines()]
    ensemble = Ensemble(model_dir, resident=True)
    np.save(probs, ensemble.predict(files, progress=False).probs)
    run = ensemble.members[0]
    model = ensemble.models(run)[0]
    batch = getattr(model, "batch_size", None) or auto_batch_size(run.cfg)
    dynamic = run.exported and model.manifest["input"]["shape"][0] is None
    print(f"ready {batch}{' dyn' if dynamic else ''}", flush=True)
    for _ in sys.stdin:
        ensemble.predict(files, progress=False)
        print("done", flush=True)


def main() -> None:
    if sys.argv[1:2] == ["--worker"]:
        return worker(*sys.argv[2:5])
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", default="runs/demo/supervised/ResNet18-64x128",
                        help="trained checkpoints (default: the demo's ResNet18 64x128 folds; `make demo` first)")
    parser.add_argument("--clips", default="data/demo/eval_part1", help="folder of real clips")
    parser.add_argument("--files", type=int, default=48, help="clips scored per round")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--formats", nargs="+", default=["tflite", "onnx"], choices=["savedmodel", "tflite", "onnx"])
    parser.add_argument("--format", default="onnx", help="the format of the headline `export_speedup`")
    parser.add_argument("--batch-size", type=int, default=FIXED_BATCH,
                        help="fixed export batch where a dynamic one fails (default: %(default)s)")
    parser.add_argument("--export-dir", default=None, help="keep the exports here (default: a temporary folder)")
    parser.add_argument("--levers", action="store_true", help="also time each runtime setting on one model")
    args = parser.parse_args()
    if args.format not in args.formats:
        parser.error(f"--format {args.format} must be one of --formats {args.formats}")

    files = sorted(Path(args.clips).resolve().glob("*.wav"))[: args.files]
    if not files:
        parser.error(f"no .wav clips in --clips {args.clips}")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        export_root = Path(args.export_dir) if args.export_dir else tmp
        dirs = {"keras": Path(args.model_dir)}
        for fmt in args.formats:
            dirs[fmt] = export_root / fmt
            if not (dirs[fmt] / "manifest.json").is_file():
                export_checkpoints(args.model_dir, fmt, out=dirs[fmt], batch_size=args.batch_size, progress=False)
        clip_list = tmp / "clips.txt"
        clip_list.write_text("\n".join(map(str, files)))
        workers = {name: Worker(folder, clip_list, tmp / f"{name}.npy") for name, folder in dirs.items()}
        seconds = interleaved({name: w.run for name, w in workers.items()}, args.rounds)
        for w in workers.values():
            w.close()
        probs = {name: np.load(w.probs) for name, w in workers.items()}
        rates = {name: [len(files) / s for s in values] for name, values in seconds.items()}
        cfg = Ensemble(args.model_dir).cfg
        print(f"{args.model_dir}: {cfg.model.name}, {cfg.num_samples} samples a window; {len(files)} clips of "
              f"{args.clips}; {args.rounds} interleaved rounds, each engine in its own process; {os.cpu_count()} CPUs")
        print(f"{'engine':<8} {'batch':>7} {'median files/s':>15} {'spread':>15} {'x keras':>8} {'max |dp|':>9}")
        keras_median = float(np.median(rates["keras"]))
        worst = 0.0
        for name, values in rates.items():
            diff = float(np.nanmax(np.abs(probs[name] - probs["keras"])))
            worst = max(worst, diff)
            median = np.median(values)
            print(f"{name:<8} {workers[name].batch:>7} {median:15.2f} {min(values):7.2f}-{max(values):<7.2f} "
                  f"{median / keras_median:8.2f} {diff:9.1e}")
        if args.levers:
            levers({name: Ensemble(folder, resident=True) for name, folder in dirs.items()}, files)
    speedups = {fmt: np.array(seconds["keras"]) / np.array(seconds[fmt]) for fmt in args.formats}
    for fmt in [f for f in args.formats if f != args.format] + [args.format]:
        print(headline("export_speedup" if fmt == args.format else f"export_speedup_{fmt}", speedups[fmt], ".2f"))
    if worst > TOLERANCE:
        raise SystemExit(f"exported probabilities differ from Keras by {worst:.1e} > {TOLERANCE}")


if __name__ == "__main__":
    main()
