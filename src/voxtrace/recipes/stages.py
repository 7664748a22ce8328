"""Resumable stages: each runs a voxtrace command as a function call and leaves a completion marker.

A stage that finished leaves `OUT/stages/<name>.done`: its first line the command and its arguments (JSON), its
second the seconds it took. A stage is skipped when its marker holds the same command and arguments, so a
rerun after an interruption finishes only the rest, and a stage whose arguments changed (e.g. a corpus that
gained an evaluation part to predict) runs again.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from voxtrace.io import atomic_write_text

log = logging.getLogger(__name__)


class Stages:
    """The completion markers under `OUT/stages/`."""

    def __init__(self, out: Path):
        self.root = Path(out) / "stages"

    def marker(self, name: str) -> Path:
        return self.root / f"{name}.done"

    @staticmethod
    def describe(verb: str, values: dict) -> str:
        """One line naming the command and its arguments."""
        return f"voxtrace {verb} " + json.dumps(values, sort_keys=True, default=str)

    def done(self, name: str, verb: str | None = None, values: dict | None = None) -> bool:
        """Whether stage `name` finished (with this command and these arguments, when given)."""
        marker = self.marker(name)
        if not marker.is_file():
            return False
        return verb is None or marker.read_text().splitlines()[0] == self.describe(verb, values or {})

    def run(self, name: str, verb: str, **values) -> None:
        """Run command `verb` with `values` (its arguments by destination) unless stage `name` is done with
        them; raise if it fails."""
        from voxtrace.cli import run_command

        if self.done(name, verb, values):
            log.info(f"[skip] {name}: done before ({self.marker(name)})")
            return
        line = self.describe(verb, values)
        log.info(f"\n[run] {name}: {line}")
        start = time.time()
        code = run_command(verb, **values)
        if code != 0:
            raise RuntimeError(f"stage {name} failed with exit code {code}: {line}")
        self.mark(name, line, time.time() - start)

    def mark(self, name: str, line: str, seconds: float) -> None:
        """Record stage `name` as finished: `line` describes what ran, `seconds` how long it took."""
        atomic_write_text(self.marker(name), f"{line}\n{seconds:.0f} s\n")

    def seconds(self) -> dict[str, float]:
        """Seconds each finished stage took."""
        seconds = {}
        for marker in sorted(self.root.glob("*.done")):
            lines = marker.read_text().splitlines()
            if len(lines) > 1 and lines[1].endswith(" s"):
                seconds[marker.stem] = float(lines[1][:-2])
        return seconds
