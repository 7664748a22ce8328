"""`voxtrace demo`: the whole competition pipeline on the demo corpus (see voxtrace.recipes.demo)."""

from __future__ import annotations

from pathlib import Path

# log-mel ResNet18 from random weights, and a head fitted on the frozen pretrained Whisper encoder's states
DEFAULT_MODELS = ["ResNet18", "whisper_tiny_en=configs/demo-whisper.yaml"]
# retrained with pseudo-labels: the frozen-encoder member (seconds); the ensemble keeps, per member, the stage
# with the higher leave-voice-out score
DEFAULT_SEMI = ["whisper_tiny_en"]


def add_arguments(parser):
    parser.add_argument("--cfg", default="configs/demo.yaml", help="config of every training run (default: %(default)s)")
    parser.add_argument(
        "--models", nargs="+", default=DEFAULT_MODELS,
        help="backbones of the ensemble, each NAME (trained with --cfg) or NAME=CONFIG (default: %(default)s)",
    )
    parser.add_argument("--semi-models", nargs="*", default=DEFAULT_SEMI, metavar="NAME",
                        help="members retrained with the pseudo-labels (default: %(default)s)")
    parser.add_argument("--out", default="runs/demo", help="run folder; a rerun skips finished stages (default: %(default)s)")
    parser.add_argument("--per-class", type=int, default=None, help="training clips per class when the corpus is built")


def run(args) -> int:
    from voxtrace.recipes.demo import DemoPlan, run_demo

    cfg_path = Path(args.cfg)
    if not cfg_path.is_file():
        raise FileNotFoundError(f"--cfg {cfg_path}: no such config file")
    run_demo(DemoPlan(cfg_path=cfg_path, models=list(args.models), out=Path(args.out), per_class=args.per_class,
                      semi_models=tuple(args.semi_models)))
    return 0
