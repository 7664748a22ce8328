"""The layout of a run folder, written by the trainer and read by every stage after it.

    RUN/cfg/config.yaml                       the resolved config
    RUN/ckpt/fold-K.keras | ckpt/model.keras  the model of fold K, or of all data (`ALL_DATA`)
    RUN/ckpt/state/fold-K.npz | model.npz     the resumable training state
    RUN/csv/oof.csv                           out-of-fold scores: path, track, label, fold, view (clean, and
                                              shifted with train.oof_shift), one column per class
    RUN/csv/{train,history,report}_PART.csv   clips trained on, per-epoch logs, per-class reports
    RUN/score/PART.json, score/overall.json   scores of a fold, and over all folds
    RUN/plots/*.png, RUN/logs/PART/           plots and TensorBoard scalars

PART is `fold-K` or `all`. A run's folder name is `Config.run_name`.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

ALL_DATA = "all"  # the fold id of a run trained on all data
_FOLD = re.compile(r"fold-?(\d+)$")


class RunDir:
    """Paths of one run folder."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"RunDir({str(self.root)!r})"

    def create(self) -> "RunDir":
        """Make the folders the trainer writes into."""
        for sub in ("ckpt/state", "cfg", "csv", "score", "plots"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        return self

    @staticmethod
    def part(fold) -> str:
        """`fold-K`, or `all` for the all-data model."""
        return ALL_DATA if fold == ALL_DATA else f"fold-{fold}"

    @staticmethod
    def fold_of(checkpoint: str | os.PathLike) -> int | None:
        """The fold of a checkpoint file (None for the all-data `model.keras`)."""
        match = _FOLD.search(Path(checkpoint).stem)
        return int(match.group(1)) if match else None

    @staticmethod
    def is_checkpoint(path: Path) -> bool:
        """A finished checkpoint file (`*/ckpt/*.keras`; hidden files are partial writes)."""
        return path.suffix == ".keras" and path.parent.name == "ckpt" and not path.name.startswith(".")

    @property
    def config(self) -> Path:
        return self.root / "cfg" / "config.yaml"

    @property
    def checkpoint_dir(self) -> Path:
        return self.root / "ckpt"

    def checkpoint(self, fold) -> Path:
        return self.checkpoint_dir / ("model.keras" if fold == ALL_DATA else f"{self.part(fold)}.keras")

    def state(self, fold) -> Path:
        return self.checkpoint_dir / "state" / f"{'model' if fold == ALL_DATA else self.part(fold)}.npz"

    def checkpoints(self) -> list[Path]:
        return sorted(p for p in self.checkpoint_dir.glob("*.keras") if p.is_file() and self.is_checkpoint(p))

    @property
    def oof(self) -> Path:
        return self.root / "csv" / "oof.csv"

    def csv(self, kind: str, fold=None) -> Path:
        """`csv/{kind}_{part}.csv` (train, history, report), or `csv/{kind}_oof.csv` for all folds."""
        return self.root / "csv" / f"{kind}_{'oof' if fold is None else self.part(fold)}.csv"

    def score(self, fold=None) -> Path:
        """`score/{part}.json`, or `score/overall.json` for all folds."""
        return self.root / "score" / f"{'overall' if fold is None else self.part(fold)}.json"

    def plot(self, name: str) -> Path:
        return self.root / "plots" / f"{name}.png"

    def logs(self, fold) -> Path:
        return self.root / "logs" / self.part(fold)
