"""`voxtrace fingerprints`: the mean log-spectrum of every class in one figure (generator fingerprints)."""

from __future__ import annotations

import sys
from pathlib import Path


def add_arguments(parser):
    parser.add_argument("--data", default="data/demo/train", help="audio folder (default: %(default)s)")
    parser.add_argument(
        "--labels", default=None,
        help="track,algorithm CSV of class ids or names (default: DATA/labels.csv if present, else one sub-folder per class)",
    )
    parser.add_argument(
        "--cfg", default="configs/demo.yaml",
        help="config naming the classes (default: %(default)s; the base classes when it is absent)",
    )
    parser.add_argument("--out", default="fingerprints.png", help="figure to write; a CSV of the curves goes beside it")
    parser.add_argument("--n-fft", type=int, default=512, help="STFT size (default: %(default)s)")
    parser.add_argument("--hop", type=int, default=128, help="STFT hop in samples (default: %(default)s)")


def run(args) -> int:
    from voxtrace.config import Config
    from voxtrace.explain.fingerprints import class_fingerprints, labelled_files
    from voxtrace.explain.plots import fingerprints_figure
    from voxtrace.io import atomic_savefig, atomic_write_csv

    data = Path(args.data)
    if not data.is_dir():
        raise FileNotFoundError(f"--data {data}: no such folder")
    cfg = Config.load(args.cfg) if Path(args.cfg).is_file() else Config()
    labels_csv = args.labels
    if labels_csv is None and (data / "labels.csv").is_file():
        labels_csv = data / "labels.csv"
    if labels_csv is not None and not Path(labels_csv).is_file():
        raise FileNotFoundError(f"--labels {labels_csv}: no such file")
    paths, labels, classes = labelled_files(data, cfg.classes, labels_csv)
    prints = class_fingerprints(paths, labels, classes, cfg.audio.sample_rate, args.n_fft, args.hop)
    for path, message in prints.errors.items():
        print(f"voxtrace fingerprints: skipped {path}: {message}", file=sys.stderr)
    out = Path(args.out)
    atomic_savefig(fingerprints_figure(prints.freqs_hz, prints.mean_db, prints.classes, prints.counts), out)
    atomic_write_csv(out.with_suffix(".csv"), prints.to_frame())
    summary = ", ".join(f"{name}={count}" for name, count in zip(prints.classes, prints.counts))
    print(f"wrote {out} and {out.with_suffix('.csv')} ({summary} clips)")
    return 0
