"""A second view of the validation clips, finished by other habits than the ones that made the training data.

A corpus builder leaves habits in every clip it finishes: one loudness target, silences trimmed the same way,
lengths in one range, one speaking-rate range. Validation clips from the same builder share them, so out-of-fold
scores cannot tell a member that learnt the synthesis method from one that leans on the habits, and the
ensemble's choices fitted on them favour the second (silence alone can give a detector away: Müller et al.,
"Speech is Silver, Silence is Golden", Interspeech 2021). `habit_shift` re-finishes a clip by other habits,
each drawn per clip: a speaking rate (tempo and pitch together, as a tape), a shorter span, a recording floor's
silence at either edge and a peak level. With `train.oof_shift.enabled` the trainer scores every held-out clip
a second time in this view (`view` = `shifted` in `csv/oof.csv`), and the ensemble weights, the open-set
threshold and the detection threshold are fitted on both views.

The shifted copies are written once per clip (seeded by its file name) under `FEATURE_CACHE/shifted/`, so
every member of an ensemble is validated on the same audio and frozen features of them are cached like any
other clip's.
"""

from __future__ import annotations

import hashlib
import json
import zlib
from pathlib import Path

import numpy as np
import soxr
from tqdm.auto import tqdm

from voxtrace.data.audio import load_audio, save_wav

SHIFT_SEED = 7_919  # the shifted view's random stream: the config seed plus this, then the clip's file name


def habit_shift(x: np.ndarray, rng: np.random.Generator, sample_rate: int, shift) -> np.ndarray:
    """`x` re-finished by the habits of `shift` (a `train.oof_shift` section), drawn from `rng`."""
    x = np.asarray(x, np.float32)
    if rng.random() < shift.rate_prob:
        factor = rng.uniform(*shift.rate)
        x = soxr.resample(x, factor * 1000.0, 1000.0, quality="HQ").astype(np.float32)
    shortest = int(shift.min_s * sample_rate)
    if len(x) > shortest and rng.random() < shift.crop_prob:
        length = int(rng.uniform(shortest, len(x)))
        start = int(rng.integers(0, len(x) - length + 1))
        x = x[start: start + length]
    floor = 10.0 ** (rng.uniform(*shift.floor_dbfs) / 20.0)
    edges = [rng.normal(0.0, floor, int(rng.uniform(*shift.edge_s) * sample_rate)).astype(np.float32)
             for _ in range(2)]
    x = np.concatenate([edges[0], x, edges[1]])
    peak = 10.0 ** (rng.uniform(*shift.peak_dbfs) / 20.0)
    return (x * (peak / max(float(np.abs(x).max()), 1e-9))).astype(np.float32)


def in_view(frame, view: str) -> np.ndarray:
    """Which rows of an out-of-fold frame are in `view` (`clean` or `shifted`); a frame without a `view` column
    is all clean."""
    return (frame["view"] == view).to_numpy() if "view" in frame else np.full(len(frame), view == "clean")


def clean_view(frame):
    """The rows of an out-of-fold frame in the clean view."""
    return frame[in_view(frame, "clean")]


def _clip_rng(seed: int, name: str) -> np.random.Generator:
    return np.random.default_rng([seed + SHIFT_SEED, zlib.crc32(name.encode())])


def shifted_dir(root, shift, seed: int, sample_rate: int) -> Path:
    """`root/shifted/TAG`: TAG names the shift settings, the seed and the rate, so other settings get other copies."""
    settings = json.dumps({"shift": vars(shift), "seed": seed, "rate": sample_rate}, sort_keys=True, default=str)
    return Path(root) / "shifted" / hashlib.sha1(settings.encode()).hexdigest()[:12]


def shifted_copies(paths, out_dir, shift, seed: int, sample_rate: int, progress: bool = True):
    """Write (or find) the shifted copy of every clip of `paths` under `out_dir`.

    Returns `({path: shifted path}, {path: error message})`: a clip that cannot be read is reported and left
    out, every other clip is processed. A copy depends only on the clip's file name, `shift` and `seed`.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    copies, errors = {}, {}
    for path in tqdm(list(paths), desc="shifted view", unit="clip", disable=not progress):
        name = Path(path).name
        digest = hashlib.sha1(str(Path(path).resolve()).encode()).hexdigest()[:8]
        target = out_dir / f"{Path(path).stem}-{digest}.wav"
        if not target.is_file():
            try:
                x = load_audio(path, sample_rate)
            except Exception as err:  # noqa: BLE001 - one bad file must not stop the others
                errors[str(path)] = f"{type(err).__name__}: {err}"
                continue
            save_wav(target, habit_shift(x, _clip_rng(seed, name), sample_rate, shift), sample_rate)
        copies[str(path)] = str(target)
    return copies, errors
