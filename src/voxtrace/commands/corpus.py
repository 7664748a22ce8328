"""`voxtrace corpus`: build the demo attribution corpus from real speech engines and human recordings."""

from __future__ import annotations

import argparse
import sys
import time

from voxtrace.vocabulary import TASKS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="data/demo", help="corpus folder (default: data/demo)")
    parser.add_argument("--per-class", type=int, default=240, help="training clips per class (default: 240)")
    parser.add_argument(
        "--eval-per-class", type=int, default=None,
        help="clips per class in each evaluation part (default: a quarter of --per-class, at least 1)",
    )
    parser.add_argument(
        "--cross-per-class", type=int, default=30,
        help="clips per class in each cross-corpus part, eval_part4 and eval_part5 (default: 30)",
    )
    parser.add_argument("--seed", type=int, default=0, help="fixes sentences, speakers, voices and track names")
    parser.add_argument(
        "--task", choices=TASKS, default="attribute",
        help="label files: generator class ids (attribute) or 0 bonafide / 1 spoof (detect)",
    )
    parser.add_argument("--jobs", type=int, default=None, help="worker processes (default: all CPU cores)")


def run(args: argparse.Namespace) -> int:
    from voxtrace.data.corpus import build_demo_corpus

    eval_per_class = args.eval_per_class if args.eval_per_class is not None else max(1, args.per_class // 4)
    started = time.time()
    try:
        out = build_demo_corpus(
            args.out, per_class=args.per_class, eval_per_class=eval_per_class, seed=args.seed, task=args.task,
            jobs=args.jobs, cross_per_class=args.cross_per_class,
        )
    except RuntimeError as err:  # missing engines, or clips that failed (the others are kept)
        print(f"voxtrace corpus: {err}", file=sys.stderr)
        return 1
    print(f"corpus ready in {out} ({time.time() - started:.0f} s); see {out / 'README.md'}")
    return 0
