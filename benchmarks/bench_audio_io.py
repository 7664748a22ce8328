"""Decoding and perturbation costs, side by side in one run.

Reads a 6 s span of a 20-minute WAV with `offset`/`duration` versus decoding the whole file, in `--rounds`
interleaved rounds (whole, 50 spans; 50 spans, whole; ...), and times every perturbation on one 6 s clip (what
train-time augmentation pays per clip). Last line: the span-read speed-up (whole / span time) of each round,
`span_read_speedup: median=X min=.. max=.. iqr=.. rounds=N`.

    python benchmarks/bench_audio_io.py [--rounds 7]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from voxtrace.data import perturb
from voxtrace.data.audio import load_audio, save_wav

from rounds import headline, interleaved

SR = 16000
SPANS_PER_ROUND = 50  # a span read takes well under a millisecond: time many per round


def best_of(fn, repeats=3) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        long_wav = Path(tmp) / "long.wav"
        save_wav(long_wav, (0.1 * rng.standard_normal(20 * 60 * SR)).astype(np.float32), SR)
        offsets = np.linspace(0.0, 20 * 60 - 6, SPANS_PER_ROUND)

        def spans():
            for offset in offsets:
                load_audio(long_wav, offset=float(offset), duration=6.0)

        reads = interleaved({"whole": lambda: load_audio(long_wav), "span": spans}, args.rounds)
        reads["span"] = [t / SPANS_PER_ROUND for t in reads["span"]]
        whole, span = statistics.median(reads["whole"]), statistics.median(reads["span"])
        resampled = Path(tmp) / "clip44k.wav"
        save_wav(resampled, (0.1 * rng.standard_normal(6 * 44100)).astype(np.float32), 44100)
        native = Path(tmp) / "clip16k.wav"
        save_wav(native, (0.1 * rng.standard_normal(6 * SR)).astype(np.float32), SR)
        fast = best_of(lambda: load_audio(native), repeats=20)
        slow = best_of(lambda: load_audio(resampled), repeats=20)
    print(f"{'operation':<40}{'ms':>10}")
    print(f"{'decode 20 min WAV (whole, median)':<40}{whole * 1e3:>10.1f}")
    print(f"{'decode a 6 s span of it (median)':<40}{span * 1e3:>10.2f}")
    print(f"{'decode 6 s 16 kHz PCM16 (fast path)':<40}{fast * 1e3:>10.2f}")
    print(f"{'decode 6 s 44.1 kHz (soxr HQ)':<40}{slow * 1e3:>10.2f}")
    x = (0.1 * rng.standard_normal(6 * SR)).astype(np.float32)
    perturb.pitch_shift(x, SR, 1.0)  # load librosa once
    ops = {
        "add_noise (pink)": lambda: perturb.add_noise(x, 20.0, rng, "pink"),
        "reverberate": lambda: perturb.reverberate(x, rng, SR),
        "mp3_roundtrip 8 kbps": lambda: perturb.mp3_roundtrip(x, 8, SR),
        "telephone": lambda: perturb.telephone(x, SR),
        "bandlimit": lambda: perturb.bandlimit(x, SR, 300, 3400),
        "resample_chain 8k/11.025k": lambda: perturb.resample_chain(x, SR, [8000, 11025]),
        "pitch_shift +2": lambda: perturb.pitch_shift(x, SR, 2.0),
        "speed 1.1": lambda: perturb.speed(x, 1.1),
        "formant_warp 1.1": lambda: perturb.formant_warp(x, SR, 1.1),
        "held-out channel chain": lambda: perturb.apply_channels(x, ["clip", "speex"], rng, SR),
    }
    for name, fn in ops.items():
        print(f"{'perturb ' + name + ' (6 s)':<40}{best_of(fn, 5) * 1e3:>10.2f}")
    print(headline("span_read_speedup", [a / b for a, b in zip(reads["whole"], reads["span"])], ".0f"))


if __name__ == "__main__":
    main()
