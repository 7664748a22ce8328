"""The inference settings every entry point resolves the same way: a flag given on the command line, else the
`infer` section of `--cfg`, else the checkpoints' own config."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class InferSettings:
    """How an ensemble scores and labels clips (`voxtrace.config.InferConfig` with flags applied)."""

    tta: int
    agg: str
    batch_size: int | None
    open_set: bool
    score: str
    target_tpr: float

    def check(self) -> "InferSettings":
        """Refuse a TTA count or batch size below 1, naming both."""
        if self.tta < 1 or (self.batch_size is not None and self.batch_size < 1):
            raise ValueError(f"--tta and --batch-size must be >= 1. Received: tta={self.tta}, "
                             f"batch_size={self.batch_size}")
        return self


def infer_settings(runs_cfg, cfg_path=None, **flags) -> InferSettings:
    """`InferSettings` from `flags` (None: not given), then `cfg_path`'s `infer` section, then `runs_cfg`'s.

    Flags: tta, agg, batch_size, open_set, score, target_tpr.
    """
    from voxtrace.config import Config

    base = Config.load(cfg_path).infer if cfg_path else runs_cfg.infer
    defaults = {"tta": base.tta, "agg": base.agg, "batch_size": base.batch_size, "open_set": base.open_set.enabled,
                "score": base.open_set.score, "target_tpr": base.open_set.target_tpr}
    unknown = set(flags) - set(defaults)
    if unknown:
        raise TypeError(f"unknown inference settings: {sorted(unknown)}")
    return InferSettings(**{k: defaults[k] if flags.get(k) is None else flags[k] for k in defaults}).check()
