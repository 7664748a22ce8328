"""`voxtrace explain`: saliency maps over the spectrogram, one PNG per audio file, named after the file."""

from __future__ import annotations

import sys
from pathlib import Path

METHOD_CHOICES = {"ig": ("ig",), "gradcam": ("gradcam",), "both": ("ig", "gradcam")}


def add_arguments(parser):
    parser.add_argument("--model-dir", required=True, help="folder with RUN/ckpt/*.keras and RUN/cfg/config.yaml")
    parser.add_argument("files", nargs="+", metavar="FILE", help="audio files to explain")
    parser.add_argument("--out", default="explanations", help="folder for the PNGs (default: %(default)s)")
    parser.add_argument("--method", choices=sorted(METHOD_CHOICES), default="both",
                        help="integrated gradients, Grad-CAM (CNN backbones) or both (default: %(default)s)")
    parser.add_argument("--steps", type=int, default=32, help="integrated-gradients steps (default: %(default)s)")
    parser.add_argument("--checkpoint", default=None,
                        help="the .keras checkpoint to explain (default: the first one under --model-dir)")
    parser.add_argument("--target", default=None,
                        help="class name to explain (default: the class the checkpoint predicts for the window)")


def run(args) -> int:
    from tqdm.auto import tqdm

    from voxtrace.data.audio import load_audio
    from voxtrace.explain.plots import saliency_figure
    from voxtrace.explain.saliency import SaliencyModel, loudest_window, saliency_maps
    from voxtrace.inference.checkpoints import discover_runs, load_checkpoint
    from voxtrace.io import atomic_savefig

    if args.steps < 1:
        raise ValueError(f"--steps must be >= 1. Received: --steps={args.steps}")
    runs = discover_runs(args.checkpoint or args.model_dir)
    run_, checkpoint = runs[0], runs[0].checkpoints[0]
    cfg = run_.cfg
    if args.target is not None and args.target not in cfg.classes:
        raise ValueError(f"--target must be one of {cfg.classes}. Received: --target={args.target!r}")
    target = None if args.target is None else cfg.classes.index(args.target)
    smodel = SaliencyModel(load_checkpoint(checkpoint))
    methods = METHOD_CHOICES[args.method]
    out_dir = Path(args.out)
    used, failed = set(), 0
    for file in tqdm(args.files, desc="explain", unit="file"):
        try:
            x = load_audio(file, sample_rate=cfg.audio.sample_rate)
            window = loudest_window(x, smodel.num_samples, cfg.audio.window_hop)
            maps = saliency_maps(smodel, window, methods, class_index=target, steps=args.steps)
        except (ValueError, OSError) as err:
            message = str(err) if str(file) in str(err) else f"{file}: {err}"
            print(f"voxtrace explain: {message}", file=sys.stderr)
            failed += 1
            continue
        k = maps["class_index"]
        title = f"{Path(file).name}: {cfg.classes[k]} (p={maps['probs'][k]:.2f}), checkpoint {checkpoint.name} of {run_.name}"
        path = _unique_png(out_dir, Path(file).stem, used)
        atomic_savefig(saliency_figure(maps["image"], {m: maps[m] for m in methods}, title), path)
        tqdm.write(f"{file} -> {path} ({cfg.classes[k]}, p={maps['probs'][k]:.2f})")
    print(f"explained {len(args.files) - failed} of {len(args.files)} files into {out_dir}")
    return 1 if failed else 0


def _unique_png(out_dir: Path, stem: str, used: set) -> Path:
    """`out_dir/stem.png`, or `stem-2.png`, ... when two inputs share a name."""
    name, n = stem, 1
    while name in used:
        n += 1
        name = f"{stem}-{n}"
    used.add(name)
    return out_dir / f"{name}.png"
