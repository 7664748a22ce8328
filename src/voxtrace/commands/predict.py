"""`voxtrace predict` / `predict.py`: ensemble every checkpoint under a model dir over folders of audio.

Writes the prediction CSV (`track, algorithm[, <class probs>], error`: one row per audio file, sorted by
track; `algorithm` is the class index, empty with the reason in `error` for a file that failed), and beside
it the SP Cup `answer.txt` zipped as `answer.zip` (failed files attributed to the unknown class there). Exit
code 0 even when files failed, unless `--strict`.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path


def add_arguments(parser) -> None:
    parser.add_argument("--model-dir", required=True, help="folder searched (any depth) for RUN/ckpt/*.keras")
    parser.add_argument("--infer-path", action="append", required=True,
                        help="audio file or folder (wav, flac, ogg, mp3; recursive); repeat for several")
    parser.add_argument("--output", default="submission",
                        help="prediction CSV; a path not ending in .csv is a folder that gets "
                             "ensemble_submission.csv (default: %(default)s)")
    parser.add_argument("--probs", "--pseudo", dest="probs", action="store_true",
                        help="add one probability column per class")
    parser.add_argument("--tta", type=int, default=None,
                        help="test-time augmentation passes, pass 0 deterministic (default: infer.tta, 1)")
    parser.add_argument("--agg", choices=["mean", "geometric", "max"], default=None,
                        help="fold and model aggregation (default: infer.agg, mean)")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="windows per batch (default: infer.batch_size, else picked by input size and free RAM)")
    parser.add_argument("--weights", nargs="+", default=None, metavar="NAME=W",
                        help="per-model weights by run name or backbone name (mean/geometric only)")
    parser.add_argument("--strict", action="store_true", help="exit 1 when any file could not be predicted")
    parser.add_argument("--cfg", default=None,
                        help="YAML whose `infer` section gives defaults for the flags above; checkpoints carry "
                             "their own config for everything else")
    parser.add_argument("--open-set", dest="open_set", action="store_true", default=None,
                        help="attribute low-confidence clips to the unknown class (default: infer.open_set.enabled)")
    parser.add_argument("--no-open-set", dest="open_set", action="store_false", help="turn open-set rejection off")
    parser.add_argument("--open-set-score", choices=["maxprob", "energy"], default=None,
                        help="confidence score (default: infer.open_set.score, maxprob)")
    parser.add_argument("--target-tpr", type=float, default=None,
                        help="fraction of correct known out-of-fold clips kept "
                             "(default: infer.open_set.target_tpr, 0.95)")
    parser.add_argument("--recalibrate", action="store_true", help="ignore a saved MODEL_DIR/open_set.json")
    parser.add_argument("--no-zip", action="store_true", help="do not write answer.txt / answer.zip")
    parser.add_argument("--debug", type=int, default=0, help="predict only the first 100 files")
    parser.add_argument("--verbose", type=int, default=1, help="0 hides progress bars")


def resolve_output(output: str) -> Path:
    output = Path(output)
    return output if output.suffix.lower() == ".csv" else output / "ensemble_submission.csv"


def collect_files(infer_paths) -> list[Path]:
    """Audio files under every `--infer-path`; refuses a path that does not exist or holds no audio."""
    from voxtrace.data.audio import find_audio_files

    files = []
    for root in infer_paths:
        found = find_audio_files(root)
        if not found:
            raise FileNotFoundError(f"no audio files (wav, flac, ogg, mp3) under --infer-path {root}")
        files.extend(found)
    return files


def infer_settings(args, ensemble_cfg):
    """The `infer` section: flags first, then --cfg, then the checkpoints' config."""
    from voxtrace.config import Config

    base = Config.load(args.cfg).infer if args.cfg else ensemble_cfg.infer
    pick = lambda flag, default: default if flag is None else flag  # noqa: E731
    return {
        "tta": pick(args.tta, base.tta),
        "agg": pick(args.agg, base.agg),
        "batch_size": pick(args.batch_size, base.batch_size),
        "open_set": pick(args.open_set, base.open_set.enabled),
        "score": pick(args.open_set_score, base.open_set.score),
        "target_tpr": pick(args.target_tpr, base.open_set.target_tpr),
    }


def run(args) -> int:
    import numpy as np

    from voxtrace.inference.checkpoints import discover_runs
    from voxtrace.inference.ensemble import Ensemble
    from voxtrace.inference.open_set import apply_open_set, load_or_calibrate
    from voxtrace.inference.submission import prediction_frame, write_answer_zip, write_predictions

    start = time.time()
    output = resolve_output(args.output)
    settings = infer_settings(args, discover_runs(args.model_dir)[0].cfg)
    if settings["tta"] < 1 or (settings["batch_size"] is not None and settings["batch_size"] < 1):
        raise ValueError(f"--tta and --batch-size must be >= 1. Received: tta={settings['tta']}, "
                         f"batch_size={settings['batch_size']}")
    ensemble = Ensemble(args.model_dir, agg=settings["agg"], weights=args.weights, tta=settings["tta"],
                        batch_size=settings["batch_size"])
    classes, unknown = ensemble.classes, ensemble.cfg.unknown_class
    open_set = None
    if settings["open_set"]:
        open_set = load_or_calibrate(ensemble, settings["score"], settings["target_tpr"], args.recalibrate)
    files = collect_files(args.infer_path)
    if args.debug:
        files = files[:100]
    print(f"predict: {len(files)} files, {len(ensemble.runs)} models "
          f"({sum(len(r.checkpoints) for r in ensemble.runs)} checkpoints), agg={ensemble.agg}, tta={ensemble.tta}"
          + (f", open-set {open_set['score']} < {open_set['threshold']:.4f} -> {unknown}" if open_set else ""))
    result = ensemble.predict(files, progress=args.verbose > 0)
    if open_set:
        pred, rejected = apply_open_set(result.probs, open_set["threshold"], classes, unknown, open_set["score"])
    else:
        ok = np.isfinite(result.probs).all(axis=1)
        pred, rejected = np.where(ok, np.nan_to_num(result.probs).argmax(axis=1), -1), np.zeros(len(files), bool)
    frame = prediction_frame(files, result.probs, pred, result.errors, classes, with_probs=args.probs)
    write_predictions(output, frame)
    if not args.no_zip:
        fallback = classes.index(unknown) if unknown in classes else None
        write_answer_zip(output.parent, frame, fallback_class=fallback)
    counts = frame["algorithm"].dropna().astype(int).value_counts().sort_index()
    zipped = "" if args.no_zip else f" and {output.parent / 'answer.zip'}"
    print(f"predict: wrote {output} ({len(frame)} rows){zipped}")
    print("predict: per class " + ", ".join(f"{classes[i]}={n}" for i, n in counts.items())
          + (f"; rejected to {unknown}: {int(rejected.sum())}" if open_set else ""))
    tracks = frame["track"]
    if tracks.duplicated().any():
        print(f"predict: warning: {int(tracks.duplicated().sum())} file names occur more than once across "
              f"--infer-path folders (e.g. {tracks[tracks.duplicated()].iloc[0]})", file=sys.stderr)
    for path, message in sorted(result.errors.items()):
        print(f"predict: failed: {path}: {message}", file=sys.stderr)
    print(f"predict: {len(files) - len(result.errors)} predicted, {len(result.errors)} failed, "
          f"{time.time() - start:.1f} s")
    return 1 if args.strict and result.errors else 0
