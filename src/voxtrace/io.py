"""Atomic file output: a reader never sees a half-written CSV, JSON, checkpoint or plot.

Outputs get the permissions of any other file the user creates: 0666 less the umask.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
from pathlib import Path


class WriteError(OSError):
    """Writing an output failed: `filename` is the output's path (never its temporary file), `strerror` why."""


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike):
    """Yield a temporary path beside `path`; on success it is renamed over `path`, on error removed.

    An `OSError` of the output, its folder or its temporary file is raised again as a `WriteError` naming
    `path`.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = _create_temp(path)
    except OSError as err:
        raise WriteError(err.errno, err.strerror or str(err), str(path)) from err
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException as err:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(err, OSError) and not isinstance(err, WriteError) and err.filename in (None, tmp, str(tmp)):
            raise WriteError(err.errno, err.strerror or str(err), str(path)) from err
        raise


def _create_temp(path: Path) -> Path:
    """Create an empty, unique `.STEM.XXXXXXXX.partialSUFFIX` beside `path`, mode 0666 less the umask."""
    for _ in range(100):
        tmp = path.parent / f".{path.stem}.{secrets.token_hex(4)}.partial{path.suffix}"
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            return tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"could not create a temporary file beside {path}")


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def atomic_write_json(path: str | os.PathLike, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def atomic_write_csv(path: str | os.PathLike, frame, **kwargs) -> None:
    """Write a pandas DataFrame as CSV atomically (index off unless asked)."""
    kwargs.setdefault("index", False)
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, **kwargs)


def atomic_savefig(fig, path: str | os.PathLike, **kwargs) -> None:
    """Save a matplotlib figure atomically and close it."""
    import matplotlib.pyplot as plt

    kwargs.setdefault("dpi", 120)
    kwargs.setdefault("bbox_inches", "tight")
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=Path(path).suffix.lstrip(".") or "png", **kwargs)
    plt.close(fig)


def _json_default(obj):
    import numpy as np

    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
