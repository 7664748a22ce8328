"""`voxtrace train` / `python train.py`: train one backbone, k-fold or on all data, optionally with pseudo-labels.

Every flag defaults to None and overrides the YAML config only when given; `--set key.sub=value` overrides any
other key. Flag names follow the reference's train.py (its underscore spellings are kept as aliases).
"""

from __future__ import annotations

import argparse
import json
import re

from voxtrace.vocabulary import PRETRAIN_TAGS


def _img_size(values: list[str]) -> list[int]:
    """`--img-size 128 384` or `--img-size 128x384`."""
    parts = [p for v in values for p in re.split(r"[xX,]", v) if p]
    try:
        size = [int(p) for p in parts]
    except ValueError:
        size = []
    if len(size) != 2:
        from voxtrace.config import ConfigError

        raise ConfigError(f"features.img_size (--img-size) must be H W or HxW. Received: {' '.join(values)!r}")
    return size


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    add("--cfg", default=None, help="YAML config file (default: the built-in defaults)")
    add("--model-name", "--model", dest="model_name", default=None, help="backbone name (voxtrace.models.list_models())")
    add("--img-size", nargs="+", default=None, metavar="H W", help="spectrogram image size: H W or HxW")
    add("--batch-size", "--batch", dest="batch_size", type=int, default=None, help="global batch size")
    add("--epochs", type=int, default=None)
    add("--output-dir", default=None, help="outputs go to OUTPUT_DIR/{model}-{H}x{W}/")
    add("--all-data", nargs="?", type=int, const=1, default=None, metavar="0|1",
        help="train on every labelled file, no validation (saves ckpt/model.keras)")
    add("--selected-folds", nargs="+", type=int, default=None, metavar="K", help="folds to train")
    add("--pretrain", default=None, help=f"null | {' | '.join(PRETRAIN_TAGS)} | path to a weights file")
    add("--resume", nargs="?", const="auto", default=None, metavar="STATE",
        help="continue from the last finished epoch (optionally: a state folder or .npz file)")
    add("--start-epoch", type=int, default=None, help="epoch to start from (overrides the resumed one)")
    add("--pseudo-csv", "--pseudo_csv", dest="pseudo_csv", default=None, help="soft pseudo-label CSV to mix in")
    add("--pseudo", type=int, choices=[0, 1], default=None, help="1: use the pseudo CSV, 0: ignore it (reference)")
    add("--paths-json", default=None, help="PATHS.json mapping data set names to folders")
    add("--debug", nargs="?", type=int, const=1, default=None, metavar="0|1", help="tiny run: few files, 1 epoch")
    add("--verbose", type=int, default=None, help="0 silent, 1 progress bar, 2 one line per epoch")
    add("--loss", default=None, help="CCE | BCE | Focal")
    add("--scheduler", default=None, help="exp | cosine | step | constant")
    add("--wandb", nargs="?", type=int, const=1, default=None, metavar="0|1", help="log to Weights & Biases")
    add("--anonymous", default=None, help="W&B anonymous mode (accepted for the reference's scripts)")
    add("--strategy", default=None, help="auto | cpu | gpu | mirrored | multiworker | tpu")
    add("--seed", type=int, default=None)
    add("--seeds", nargs="+", type=int, default=None, metavar="S",
        help="run the experiment once per seed (output dirs suffixed -seed{S}) and tabulate mean ± std scores")
    add("--sweep", default=None, metavar="SWEEP.yaml",
        help="YAML mapping dotted config keys to lists of values: train every combination (x --seeds)")
    add("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="override any config key, e.g. --set train.lr_max=1e-5 (repeatable)")


def config_overrides(args: argparse.Namespace) -> list[str]:
    """The dotted `key=value` overrides that the given flags stand for, then the `--set` ones."""
    pairs = {
        "model.name": args.model_name,
        "features.img_size": _img_size(args.img_size) if args.img_size else None,
        "train.batch_size": args.batch_size,
        "train.epochs": args.epochs,
        "output_dir": args.output_dir,
        "data.all_data": None if args.all_data is None else bool(args.all_data),
        "data.selected_folds": args.selected_folds,
        "model.pretrain": args.pretrain,
        "data.pseudo_csv": args.pseudo_csv,
        "data.paths_json": args.paths_json,
        "debug": None if args.debug is None else bool(args.debug),
        "train.verbose": args.verbose,
        "train.loss": args.loss,
        "train.scheduler": args.scheduler,
        "train.wandb": None if args.wandb is None else bool(args.wandb),
        "train.strategy": args.strategy,
        "seed": args.seed,
    }
    out = [f"{key}={json.dumps(value)}" for key, value in pairs.items() if value is not None]
    if args.pseudo == 0:
        out.append("data.pseudo_csv=null")
    return out + list(args.overrides)


def run(args: argparse.Namespace) -> int:
    from voxtrace.config import Config, ConfigError

    cfg = Config.load(args.cfg, config_overrides(args))
    if args.pseudo == 1 and not cfg.data.pseudo_csv:
        raise ConfigError("--pseudo 1 needs a pseudo-label CSV: pass --pseudo-csv or set data.pseudo_csv")
    if args.start_epoch is not None and not 0 <= args.start_epoch < cfg.train.epochs:
        raise ConfigError(f"--start-epoch must be within [0, train.epochs={cfg.train.epochs}). "
                          f"Received: {args.start_epoch}")

    if (args.seeds or args.sweep) and args.resume not in (None, "auto"):
        raise ConfigError(f"--resume {args.resume} would start every run of the sweep from one training state: with "
                          f"--seeds or --sweep pass --resume alone, and each run resumes from its own folder")

    if args.seeds or args.sweep:
        from voxtrace.training.sweep import read_sweep, run_sweep

        grid = read_sweep(args.sweep) if args.sweep else {}
        sweep = run_sweep(cfg, grid, args.seeds, resume=args.resume, start_epoch=args.start_epoch)
        return 1 if sweep.failed else 0

    from voxtrace.training.trainer import train

    result = train(cfg, resume=args.resume, start_epoch=args.start_epoch)
    print(f"\noutputs: {result['run_dir']}")
    for path in result["checkpoints"]:
        print(f"  checkpoint: {path}")
    if result["overall"]:
        overall = result["overall"]
        print("  OOF: " + ", ".join(f"{k} {overall[k]:.4f}" for k in ("acc", "f1", "auc")))
        if "shifted" in overall:
            print("  OOF, shifted view: " + ", ".join(f"{k} {overall['shifted'][k]:.4f}" for k in ("acc", "f1", "auc")))
    return 0
