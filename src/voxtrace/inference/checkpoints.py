"""Find and load self-describing checkpoints: `RUN/ckpt/fold-K.keras` or `RUN/ckpt/model.keras`, with the
resolved config in `RUN/cfg/config.yaml` (`voxtrace.rundir.RunDir`). A model dir may hold one run or many, at
any depth."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from voxtrace.config import Config
from voxtrace.rundir import RunDir


@dataclass
class ModelRun:
    """One trained model: its folds' checkpoints and the config they were trained with."""

    run_dir: Path
    name: str  # the run's path relative to the model dir, e.g. `EfficientNetB0-128x384`
    cfg: Config
    checkpoints: list[Path] = field(default_factory=list)
    exported: bool = False  # the checkpoints are exported model folders (`voxtrace.inference.runtime`)

    @property
    def files(self) -> RunDir:
        """The run folder's layout (out-of-fold scores, scores, plots)."""
        return RunDir(self.run_dir)

    @property
    def folds(self) -> list[int | None]:
        """Fold index of each checkpoint (None for an all-data `model.keras`)."""
        return [RunDir.fold_of(p) for p in self.checkpoints]


def discover_runs(model_dir: str | os.PathLike) -> list[ModelRun]:
    """Every run under `model_dir` (any depth, `*/ckpt/*.keras`), sorted by name; refuses an empty dir.

    `model_dir` may also be one `.keras` file inside a run's `ckpt/` folder, or an exported ensemble (a
    folder whose `manifest.json` lists members, written by `voxtrace export`).
    """
    from voxtrace.inference.runtime import export_runs, is_export_folder

    model_dir = Path(model_dir)
    if not model_dir.exists():
        raise FileNotFoundError(f"model dir not found: {model_dir}")
    if is_export_folder(model_dir):
        return export_runs(model_dir)
    if model_dir.is_file():
        found = [model_dir] if RunDir.is_checkpoint(model_dir) else []
        root = model_dir.parent.parent.parent
    else:
        found = sorted(p for p in model_dir.rglob("*.keras") if RunDir.is_checkpoint(p) and p.is_file())
        root = model_dir
    if not found:
        raise FileNotFoundError(f"no checkpoints (*/ckpt/*.keras) found under model dir {model_dir}")
    by_run: dict[Path, list[Path]] = {}
    for ckpt in found:
        by_run.setdefault(ckpt.parent.parent, []).append(ckpt)
    runs = []
    for run_dir, ckpts in sorted(by_run.items()):
        cfg_path = RunDir(run_dir).config
        if not cfg_path.is_file():
            raise FileNotFoundError(f"checkpoint {ckpts[0]} has no config beside it: expected {cfg_path}")
        name = run_dir.relative_to(root).as_posix() if run_dir != root else run_dir.name
        runs.append(ModelRun(run_dir=run_dir, name=name, cfg=Config.load(cfg_path), checkpoints=sorted(ckpts)))
    check_same_classes(runs)
    return runs


def check_same_classes(runs: list[ModelRun]) -> list[str]:
    """The common class list of `runs`; refuses the first run whose list differs, naming both sides."""
    first = runs[0]
    for run in runs[1:]:
        if list(run.cfg.classes) != list(first.cfg.classes):
            raise ValueError(
                f"checkpoints disagree on the class list: {first.run_dir} has classes={first.cfg.classes} but "
                f"{run.run_dir} has classes={run.cfg.classes}; ensemble only models trained on the same classes"
            )
    return list(first.cfg.classes)


def load_checkpoint(path: str | os.PathLike):
    """Load a `.keras` checkpoint with `safe_mode=True` (no arbitrary code), without its optimizer state; an
    exported model folder loads as an `ExportedModel`."""
    from voxtrace.inference.runtime import ExportedModel, is_export_member

    if is_export_member(path):
        return ExportedModel.load(path)
    import keras

    import voxtrace.features  # noqa: F401  (registers the front-end layers)
    import voxtrace.models  # noqa: F401  (registers the backbones' custom layers)

    try:
        return keras.saving.load_model(path, compile=False, safe_mode=True)
    except Exception as err:
        raise ValueError(f"cannot load checkpoint {path}: {type(err).__name__}: {err}") from err
