"""The `voxtrace` console script: one sub-command per verb, each a module of `voxtrace.commands`.

A command module defines `add_arguments(parser)` and `run(args) -> int` (the exit code), and is listed in
`COMMANDS`. The top-level `train.py`, `predict.py` and `generate_pseudo.py` call `main_for(verb)`, so the
reference's scripts and the console script share one parser.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

COMMANDS = {
    "corpus": "build the demo attribution corpus from real speech engines and recordings",
    "train": "train one backbone (k-fold or all data), optionally with pseudo-labels",
    "pseudo": "ensemble supervised models on unlabelled audio into soft pseudo-labels",
    "predict": "ensemble checkpoints over a folder of audio into a track,algorithm CSV",
    "evaluate": "score a prediction CSV against labels: accuracy, macro F1, AUC, EER, confusion matrix",
    "demo": "run the whole competition pipeline on the demo corpus and print the results table",
    "serve": "web app and JSON API: upload or record a clip, see the generator, every class's probability and why",
    "explain": "saliency maps (integrated gradients, Grad-CAM) over the spectrogram, one PNG per audio file",
    "fingerprints": "mean log-spectrum of every class in one figure (generator fingerprints)",
    "export": "export every checkpoint under a model dir to SavedModel, TFLite or ONNX, with a manifest",
}


def _module(verb: str):
    return importlib.import_module(f"voxtrace.commands.{verb}")


def _parser_for(verb: str, prog: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog or f"voxtrace {verb}", description=COMMANDS[verb])
    _module(verb).add_arguments(parser)
    return parser


def _run(verb: str, args: argparse.Namespace) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from voxtrace.config import ConfigError

    try:
        return int(_module(verb).run(args) or 0)
    except ConfigError as err:
        print(f"voxtrace {verb}: config error: {err}", file=sys.stderr)
        return 2
    except (FileNotFoundError, ValueError) as err:
        print(f"voxtrace {verb}: error: {err}", file=sys.stderr)
        return 2


def main_for(verb: str, argv: list[str] | None = None) -> int:
    """Entry point of a top-level script (`train.py` -> `main_for("train")`)."""
    args = _parser_for(verb, prog=os.path.basename(sys.argv[0])).parse_args(argv)
    return _run(verb, args)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="voxtrace", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="verb", metavar="COMMAND", required=True)
    for verb, help_text in COMMANDS.items():
        sp = sub.add_parser(verb, help=help_text, description=help_text)
        _module(verb).add_arguments(sp)
    args = parser.parse_args(argv)
    return _run(args.verb, args)


if __name__ == "__main__":
    sys.exit(main())
