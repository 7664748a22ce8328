"""`voxtrace predict` / `predict.py`: ensemble every checkpoint under a model dir over folders of audio.

Writes the prediction CSV (`track, algorithm[, <class probs>], error`: one row per audio file, sorted by
track; `algorithm` is the class index, empty with the reason in `error` for a file that failed), and beside
it the SP Cup `answer.txt` zipped as `answer.zip` (failed files attributed to the unknown class there). Exit
code 0 even when files failed, unless `--strict`. A subfolder of an `--infer-path` that cannot be listed gets
a row with the reason in `error` (and no line in `answer.txt`).

Nothing scored is lost: every `--save-every` files the scored rows are appended to `OUTPUT.partial` beside the
CSV (`voxtrace.inference.submission.PartialPredictions`); at the end the CSV and the zip are written from it
atomically and it is removed. After a crash or a kill, `--resume` skips the files it holds and the result
equals an uninterrupted run. A file longer than `--max-duration` seconds is read and scored span by span
(every window of it, in bounded memory). An output that cannot be written (permission, full disk) stops
the run with one line naming the path and exit code 1; the rows scored until then stay in `OUTPUT.partial`
for `--resume`, and no half-written file is left.
"""

from __future__ import annotations

import contextlib
import sys
import time
from pathlib import Path

from voxtrace.vocabulary import AGGREGATIONS, OPEN_SET_SCORES

DEFAULT_SAVE_EVERY = 256  # files scored between two appends to OUTPUT.partial


class OutputError(Exception):
    """An output file could not be written; the message names it and the reason."""


def add_arguments(parser) -> None:
    parser.add_argument("--model-dir", required=True,
                        help="folder searched (any depth) for RUN/ckpt/*.keras, or an export folder (voxtrace export)")
    parser.add_argument("--infer-path", action="append", required=True,
                        help="audio file or folder (wav, flac, ogg, mp3; recursive); repeat for several")
    parser.add_argument("--output", default="submission",
                        help="prediction CSV; a path not ending in .csv is a folder that gets "
                             "ensemble_submission.csv (default: %(default)s)")
    parser.add_argument("--probs", "--pseudo", dest="probs", action="store_true",
                        help="add one probability column per class")
    parser.add_argument("--tta", type=int, default=None,
                        help="test-time augmentation passes, pass 0 deterministic (default: infer.tta, 1)")
    parser.add_argument("--agg", choices=AGGREGATIONS, default=None,
                        help="fold and model aggregation (default: infer.agg, mean)")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="windows per batch (default: infer.batch_size, else picked by input size and free RAM)")
    parser.add_argument("--weights", nargs="+", default=None, metavar="NAME=W",
                        help="per-model weights by run name or backbone name (mean/geometric only)")
    parser.add_argument("--per-model", action="store_true",
                        help="also write each model's own probabilities (weight-0 models included) to "
                             "OUTPUT_STEM.per_model/RUN.csv, for a run that is not resumed")
    parser.add_argument("--strict", action="store_true", help="exit 1 when any file could not be predicted")
    parser.add_argument("--cfg", default=None,
                        help="YAML whose `infer` section gives defaults for the flags above; checkpoints carry "
                             "their own config for everything else")
    parser.add_argument("--open-set", dest="open_set", action="store_true", default=None,
                        help="attribute low-confidence clips to the unknown class (default: infer.open_set.enabled)")
    parser.add_argument("--no-open-set", dest="open_set", action="store_false", help="turn open-set rejection off")
    parser.add_argument("--open-set-score", choices=OPEN_SET_SCORES, default=None,
                        help="confidence score (default: infer.open_set.score, maxprob)")
    parser.add_argument("--target-tpr", type=float, default=None,
                        help="fraction of correct known out-of-fold clips kept "
                             "(default: infer.open_set.target_tpr, 0.95)")
    parser.add_argument("--recalibrate", action="store_true", help="ignore a saved MODEL_DIR/open_set.json")
    parser.add_argument("--no-zip", action="store_true", help="do not write answer.txt / answer.zip")
    parser.add_argument("--max-duration", type=float, default=None,
                        help="files longer than this many seconds are decoded and scored span by span, in spans "
                             "of about this length, so memory stays bounded (default: 600)")
    parser.add_argument("--save-every", type=int, default=DEFAULT_SAVE_EVERY,
                        help="append the scored rows to OUTPUT.partial every N files; smaller loses less to a "
                             "crash (checkpoints stay loaded between appends when they fit in a tenth of free RAM, "
                             "else each append reloads them) (default: %(default)s)")
    parser.add_argument("--resume", action="store_true",
                        help="continue an interrupted run from OUTPUT.partial (same settings), skipping the "
                             "files it already holds")
    parser.add_argument("--debug", type=int, default=0, help="predict only the first 100 files")
    parser.add_argument("--verbose", type=int, default=1, help="0 hides progress bars")


def resolve_output(output: str) -> Path:
    output = Path(output)
    return output if output.suffix.lower() == ".csv" else output / "ensemble_submission.csv"


@contextlib.contextmanager
def writing(path):
    """Turn an `OSError` raised while writing `path` into an `OutputError` naming the file and the reason."""
    try:
        yield
    except OSError as err:
        raise OutputError(f"cannot write {path}: {err.strerror or err}") from None


def run(args) -> int:
    from voxtrace.data.audio import collect_audio_files
    from voxtrace.inference.checkpoints import discover_runs
    from voxtrace.inference.decision import decision_settings, load_or_fit_decision
    from voxtrace.inference.ensemble import Ensemble
    from voxtrace.inference.open_set import load_or_calibrate
    from voxtrace.inference.settings import infer_settings
    from voxtrace.inference.submission import PartialPredictions

    start = time.time()
    output = resolve_output(args.output)
    settings = infer_settings(discover_runs(args.model_dir)[0].cfg, args.cfg, tta=args.tta, agg=args.agg,
                              batch_size=args.batch_size, open_set=args.open_set, score=args.open_set_score,
                              target_tpr=args.target_tpr)
    if args.save_every < 1 or (args.max_duration is not None and args.max_duration <= 0):
        raise ValueError(f"--save-every must be >= 1 and --max-duration > 0. Received: save_every="
                         f"{args.save_every}, max_duration={args.max_duration}")
    ensemble = Ensemble(args.model_dir, agg=settings.agg, weights=args.weights, tta=settings.tta,
                        batch_size=settings.batch_size, max_duration=args.max_duration, every_member=args.per_model)
    partial = PartialPredictions(output, {
        "classes": ensemble.classes, "agg": ensemble.agg, "tta": ensemble.tta, "weights": ensemble.weights,
        "max_duration": args.max_duration,
        "checkpoints": [str(p) for run in ensemble.runs for p in run.checkpoints],
    }, ensemble.classes)
    if settings.open_set:
        ensemble.open_set = load_or_calibrate(ensemble, settings.score, settings.target_tpr, args.recalibrate)
    open_set = ensemble.open_set
    ensemble.decision = load_or_fit_decision(ensemble, decision_settings(ensemble.cfg, args.cfg))
    unreadable: list[OSError] = []
    files = collect_audio_files(args.infer_path, unreadable)
    if args.debug:
        files = files[:100]
    done = _previous_rows(partial, args.resume)
    if args.per_model and done:
        raise ValueError(f"--per-model needs every file scored in this run, but {partial.path} holds {len(done)} "
                         f"rows of an interrupted one: delete it, or resume without --per-model")
    per_model: dict[str, list] = {}
    try:
        todo = [f for f in files if str(f) not in done]
        print(f"predict: {len(files)} files" + (f" ({len(files) - len(todo)} already in {partial.path})" if
                                                  len(todo) < len(files) else "")
              + f", {len(ensemble.runs)} models ({sum(len(r.checkpoints) for r in ensemble.runs)} checkpoints), "
              f"agg={ensemble.agg}, tta={ensemble.tta}" + (f", open-set {open_set['score']} < "
              f"{open_set['threshold']:.4f} -> {ensemble.cfg.unknown_class}" if open_set else ""))
        with writing(partial.path):
            if not partial.rows:
                partial.create()
            for first in range(0, len(todo), args.save_every):
                chunk = todo[first: first + args.save_every]
                result = ensemble.predict(chunk, progress=args.verbose > 0)
                partial.append(chunk, result.probs, result.errors)
                for name, probs in result.per_model.items():
                    per_model.setdefault(name, []).append(probs)
                done.update((str(p), (result.probs[i], result.errors.get(str(p), ""))) for i, p in enumerate(chunk))
        frame, errors = _write_outputs(args, output, ensemble, files, done, unreadable)
        if args.per_model:
            _write_per_model(output, ensemble, todo, per_model)
    except OutputError as err:
        partial.discard_if_empty()
        kept = f" (the {partial.rows} rows scored so far are in {partial.path}: rerun with --resume)"
        kept = kept if partial.rows else ""
        print(f"predict: error: {err}{kept}", file=sys.stderr)
        return 1
    except BaseException:
        partial.discard_if_empty()
        raise
    partial.remove()
    for path, message in sorted(errors.items()):
        print(f"predict: failed: {path}: {message}", file=sys.stderr)
    print(f"predict: {len(frame) - len(errors)} predicted, {len(errors)} failed, {time.time() - start:.1f} s")
    return 1 if args.strict and errors else 0


def per_model_dir(output: Path) -> Path:
    """Where `--per-model` writes each run's probabilities."""
    return output.parent / f"{output.stem}.per_model"


def per_model_path(output: Path, run_name: str) -> Path:
    """The `--per-model` file of one run (`/` in a run name becomes `__`)."""
    return per_model_dir(output) / f"{run_name.replace('/', '__')}.csv"


def _write_per_model(output: Path, ensemble, files, per_model: dict) -> None:
    import numpy as np

    from voxtrace.inference.submission import prediction_frame, write_predictions

    for name, chunks in per_model.items():
        probs = np.concatenate(chunks) if chunks else np.zeros((0, len(ensemble.classes)), np.float32)
        ok = np.isfinite(probs).all(axis=1)
        pred = np.where(ok, np.nan_to_num(probs).argmax(axis=1), -1)
        errors = {str(f): "not predicted" for f, good in zip(files, ok) if not good}
        path = per_model_path(output, name)
        with writing(path):
            write_predictions(path, prediction_frame(files, probs, pred, errors, ensemble.classes, with_probs=True))
    print(f"predict: wrote each model's probabilities to {per_model_dir(output)}")


def _previous_rows(partial, resume: bool) -> dict:
    """Rows of an interrupted run to resume from; refuses to start over on top of them without `--resume`."""
    if not partial.exists():
        return {}
    done = partial.read(check_settings=resume)
    if done and not resume:
        raise ValueError(f"{partial.path} holds {len(done)} scored rows of an interrupted run: add --resume to "
                         f"continue it, or delete it to start over")
    return done


def _write_outputs(args, output: Path, ensemble, files, done: dict, unreadable) -> tuple:
    """The prediction CSV and `answer.zip` from the scored rows (and a row per unreadable folder).

    Returns the frame and `{path: error}` of every row that failed.
    """
    import numpy as np

    from voxtrace.inference.submission import prediction_frame, write_answer_zip, write_predictions

    classes, unknown = ensemble.classes, ensemble.cfg.unknown_class
    probs = np.stack([done[str(f)][0] for f in files]) if files else np.zeros((0, len(classes)), np.float32)
    errors = {str(f): done[str(f)][1] for f in files if done[str(f)][1]}
    pred, rejected = ensemble.labels(probs)
    folders = [Path(err.filename) for err in unreadable]
    errors.update({str(p): f"folder cannot be listed ({err.strerror})" for p, err in zip(folders, unreadable)})
    frame = prediction_frame(files + folders, np.vstack([probs, np.full((len(folders), len(classes)), np.nan)]),
                             np.concatenate([pred, np.full(len(folders), -1)]), errors, classes,
                             with_probs=args.probs)
    with writing(output):
        write_predictions(output, frame)
    if not args.no_zip:
        with writing(output.parent / "answer.zip"):
            fallback = classes.index(unknown) if unknown in classes else None
            answer = prediction_frame(files, probs, pred, errors, classes)  # audio files only, no folder rows
            write_answer_zip(output.parent, answer, fallback_class=fallback)
    counts = frame["algorithm"].dropna().astype(int).value_counts().sort_index()
    zipped = "" if args.no_zip else f" and {output.parent / 'answer.zip'}"
    print(f"predict: wrote {output} ({len(frame)} rows){zipped}")
    print("predict: per class " + ", ".join(f"{classes[i]}={n}" for i, n in counts.items())
          + (f"; rejected to {unknown}: {int(rejected.sum())}" if ensemble.open_set else ""))
    tracks = frame["track"]
    if tracks.duplicated().any():
        print(f"predict: warning: {int(tracks.duplicated().sum())} file names occur more than once across "
              f"--infer-path folders (e.g. {tracks[tracks.duplicated()].iloc[0]})", file=sys.stderr)
    return frame, errors
