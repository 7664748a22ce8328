"""`voxtrace pseudo` / `generate_pseudo.py`: soft pseudo-labels of unlabelled audio from a supervised ensemble.

Output columns: `path, track, <one probability column per class>, confidence, part`. Defaults: keep rows
whose top probability reaches `infer.pseudo_threshold` (0.6) of the checkpoints' config, no cap per class and
part (`infer.pseudo_cap_per_class`), ensemble `infer.agg` (mean) and `infer.tta` (1). Either one `--model-dir`
with one or more `--infer-path`, or the reference's `--partN-model-dir` / `--partN-infer-path` pairs (each
part predicted by its own ensemble). A semi-supervised run dir is a valid `--model-dir`, so rounds chain.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from voxtrace.vocabulary import AGGREGATIONS


def add_arguments(parser) -> None:
    parser.add_argument("--model-dir", default=None, help="ensemble used for every --infer-path")
    parser.add_argument("--infer-path", action="append", default=[], help="unlabelled audio folder; repeat")
    for part in (1, 2):
        parser.add_argument(f"--part{part}-model-dir", default=None, help=f"ensemble for --part{part}-infer-path")
        parser.add_argument(f"--part{part}-infer-path", default=None, help=f"audio of evaluation part {part}")
    parser.add_argument("--output", default="pseudo.csv",
                        help="pseudo CSV; a path not ending in .csv is a folder that gets pseudo.csv "
                             "(default: %(default)s)")
    parser.add_argument("--threshold", type=float, default=None,
                        help="minimum top probability (default: infer.pseudo_threshold of the checkpoints, 0.6)")
    parser.add_argument("--cap-per-class", type=int, default=None,
                        help="at most K rows per predicted class of each part, most confident first (default: "
                             "infer.pseudo_cap_per_class, no cap)")
    parser.add_argument("--tta", type=int, default=None, help="test-time augmentation passes (default: infer.tta)")
    parser.add_argument("--agg", choices=AGGREGATIONS, default=None, help="default: infer.agg")
    parser.add_argument("--batch-size", type=int, default=None, help="default: picked to fit memory")
    parser.add_argument("--weights", nargs="+", default=None, metavar="NAME=W", help="per-model weights")
    parser.add_argument("--cfg", default=None, help="YAML whose `infer` section gives the defaults above")
    parser.add_argument("--debug", type=int, default=0, help="only the first 100 files of each part")
    parser.add_argument("--verbose", type=int, default=1, help="0 hides progress bars")
    parser.add_argument("--temp-save-dir", default=None, help=argparse.SUPPRESS)  # the reference's, unused


def pairs(args) -> list[tuple[str, str]]:
    """(model dir, infer path) per part."""
    out = [(args.model_dir, p) for p in args.infer_path]
    for part in (1, 2):
        model_dir, infer_path = getattr(args, f"part{part}_model_dir"), getattr(args, f"part{part}_infer_path")
        if infer_path:
            model_dir = model_dir or args.model_dir
            if not model_dir:
                raise ValueError(f"--part{part}-infer-path {infer_path} needs --part{part}-model-dir or --model-dir")
            out.append((model_dir, infer_path))
    if not out:
        raise ValueError("give --infer-path (with --model-dir) or --part1-infer-path / --part2-infer-path")
    missing = [p for m, p in out if not m]
    if missing:
        raise ValueError(f"--infer-path {missing[0]} needs --model-dir")
    return out


def run(args) -> int:
    import numpy as np

    from voxtrace.config import Config
    from voxtrace.data.audio import collect_audio_files
    from voxtrace.inference.checkpoints import check_same_classes, discover_runs
    from voxtrace.inference.ensemble import Ensemble
    from voxtrace.inference.pseudo import select_pseudo_labels
    from voxtrace.inference.settings import infer_settings
    from voxtrace.io import atomic_write_csv

    output = Path(args.output)
    output = output if output.suffix.lower() == ".csv" else output / "pseudo.csv"
    jobs = pairs(args)
    runs = [run for model_dir in dict.fromkeys(m for m, _ in jobs) for run in discover_runs(model_dir)]
    classes = check_same_classes(runs)
    infer = Config.load(args.cfg).infer if args.cfg else runs[0].cfg.infer
    settings = infer_settings(runs[0].cfg, args.cfg, tta=args.tta, agg=args.agg, batch_size=args.batch_size)
    threshold = infer.pseudo_threshold if args.threshold is None else args.threshold
    cap = infer.pseudo_cap_per_class if args.cap_per_class is None else args.cap_per_class
    paths, probs, parts, failed = [], [], [], 0
    for part, (model_dir, infer_path) in enumerate(jobs, start=1):
        files = collect_audio_files([infer_path])[: 100 if args.debug else None]
        ensemble = Ensemble(model_dir, agg=settings.agg, weights=args.weights, tta=settings.tta,
                            batch_size=settings.batch_size)
        print(f"pseudo: part {part}: {len(files)} files from {infer_path}, {len(ensemble.runs)} models in {model_dir}")
        result = ensemble.predict(files, progress=args.verbose > 0)
        for path, message in sorted(result.errors.items()):
            print(f"pseudo: skipped: {path}: {message}", file=sys.stderr)
        failed += len(result.errors)
        paths += files
        probs.append(result.probs)
        parts += [part] * len(files)
    frame = select_pseudo_labels(paths, np.concatenate(probs), classes, threshold, cap, parts=parts)
    atomic_write_csv(output, frame, float_format="%.6f")
    top = frame[classes].to_numpy().argmax(axis=1) if len(frame) else np.zeros(0, int)
    print(f"pseudo: wrote {output}: {len(frame)} of {len(paths)} files (confidence >= {threshold}"
          + (f", at most {cap} per class and part" if cap is not None else "") + f"); {failed} files failed")
    print("pseudo: per class " + ", ".join(f"{c}={int((top == i).sum())}" for i, c in enumerate(classes)))
    return 0
