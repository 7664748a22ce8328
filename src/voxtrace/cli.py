"""The `voxtrace` console script: one sub-command per verb, each a module of `voxtrace.commands`.

A command module defines `add_arguments(parser)` and `run(args) -> int` (the exit code), and is listed in
`COMMANDS`. The top-level `train.py`, `predict.py` and `generate_pseudo.py` call `main_for(verb)`, so the
reference's scripts and the console script share one parser.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import logging
import os
import sys

from voxtrace.io import WriteError

CONSOLE_HANDLER = "voxtrace-console"
# Errors that only writing can raise.
WRITE_ERRNOS = {errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.EFBIG}

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


class ConsoleHandler(logging.Handler):
    """voxtrace's progress reports (INFO) as plain lines on stdout, looked up at each record so that a
    redirected stdout gets them; warnings and errors go on to the root logger's handlers (stderr)."""

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno < logging.WARNING:
            sys.stdout.write(record.getMessage() + "\n")
            sys.stdout.flush()


def configure_logging() -> None:
    """One logging style: library modules report through `logging.getLogger(__name__)` (never `print`).
    voxtrace's INFO records go to `ConsoleHandler` (stdout); warnings and errors of every library, one line
    each, to stderr (`LEVEL name: message`). Commands print their own results to stdout."""
    if not logging.getLogger().handlers:
        handler = logging.StreamHandler()
        handler.setLevel(logging.WARNING)
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        logging.basicConfig(level=logging.WARNING, handlers=[handler])
    package = logging.getLogger("voxtrace")
    package.setLevel(logging.INFO)
    # by name: `python -m voxtrace.cli` defines this module twice (as __main__ and as voxtrace.cli)
    if not any(h.get_name() == CONSOLE_HANDLER for h in package.handlers):
        handler = ConsoleHandler()
        handler.set_name(CONSOLE_HANDLER)
        package.addHandler(handler)


def os_error_line(verb: str, err: OSError) -> str:
    """One line for an `OSError`: `voxtrace VERB: cannot read|write PATH: REASON` when it names a file.

    Outputs are written through `voxtrace.io`, whose failures are `WriteError`s; an error that no output
    raised, and no full disk or read-only file system, came from reading.
    """
    if err.filename is None:
        return f"voxtrace {verb}: error: {err}"
    writing = isinstance(err, WriteError) or err.errno in WRITE_ERRNOS
    return f"voxtrace {verb}: cannot {'write' if writing else 'read'} {err.filename}: {err.strerror or err}"


def _run(verb: str, args: argparse.Namespace) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from voxtrace.config import ConfigError

    configure_logging()
    try:
        return int(_module(verb).run(args) or 0)
    except ConfigError as err:
        print(f"voxtrace {verb}: config error: {err}", file=sys.stderr)
        return 2
    except OSError as err:
        print(os_error_line(verb, err), file=sys.stderr)
        return 2
    except ValueError as err:
        print(f"voxtrace {verb}: error: {err}", file=sys.stderr)
        return 2


def command_args(verb: str, **values) -> argparse.Namespace:
    """The arguments of command `verb` as its parser would give them: its defaults, updated with `values`
    (keyed by destination, e.g. `model_dir`); refuses a key the command does not have or a required one left
    out, so a program runs a command as a function call, with no command line to build."""
    parser = _parser_for(verb)
    actions = [a for a in parser._actions if a.dest != "help"]
    unknown = set(values) - {a.dest for a in actions}
    missing = [a.dest for a in actions if a.required and a.dest not in values]
    if unknown or missing:
        raise TypeError(f"voxtrace {verb}: unknown arguments {sorted(unknown)}, missing required {missing}")
    defaults = {}
    for action in actions:  # the first action of a destination gives its default, as argparse does
        defaults.setdefault(action.dest, action.default)
    return argparse.Namespace(**{**defaults, **values})


def run_command(verb: str, **values) -> int:
    """Run command `verb` with `command_args(verb, **values)`; returns its exit code."""
    return _run(verb, command_args(verb, **values))


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
