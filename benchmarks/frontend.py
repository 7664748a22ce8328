"""Log-mel throughput: the voxtrace layer (batched, tf.function) vs librosa on the same clips and parameters.

    python benchmarks/frontend.py [--config configs/demo.yaml] [--clips 64] [--batch 32] [--rounds 7]

Parameters are the demo config's (3 s at 16 kHz, n_fft = win_length = 256, 64 mel bands, the hop that gives
W = 128 frames) and its batch of 32; the clips are espeak-ng speech (random noise if espeak-ng is missing).
Warm-up calls are excluded; the contenders run in interleaved rounds (the order reversed every round), each
timed run after a short pause (the layer goes over the clips `LAYER_PASSES` times per round, librosa
once), and each round gives the ratio of the voxtrace layer's clips/s to librosa's.
Prints the median clips/s of the layer as a plain tf.function, compiled with XLA (as Keras `fit` / `predict`
run it) and of librosa; the last line, `frontend_speedup_vs_librosa: median=X min=.. max=.. iqr=..
rounds=N`, uses the plain tf.function figure.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import statistics
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import librosa  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from voxtrace.config import Config  # noqa: E402
from voxtrace.features import build_frontend  # noqa: E402

from rounds import headline, interleaved  # noqa: E402

DEMO_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "demo.yaml"


# Pause before each timed run: numpy's OpenBLAS threads busy-wait for about 0.1 s after a call, which steals
# the cores from whatever runs next; without it the order of the contenders changes their figures.
SETTLE_S = 0.5
# The layer is tens of times faster than librosa: it goes over the clips this many times per round, so that its
# timed runs are long enough not to be timer and scheduler noise.
LAYER_PASSES = 10


def speech_clips(count: int, num_samples: int, sample_rate: int) -> np.ndarray:
    """`count` clips of espeak-ng speech at different offsets of one long utterance."""
    rng = np.random.default_rng(0)
    if shutil.which("espeak-ng") is None:
        return rng.normal(0, 0.1, (count, num_samples)).astype(np.float32)
    text = " ".join(["Every generator leaves its own trace in the spectrum of the speech it makes."] * 6)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "speech.wav")
        subprocess.run(["espeak-ng", "-w", path, text], check=True, capture_output=True)
        y, _ = librosa.load(path, sr=sample_rate)
    y = np.pad(y, (0, max(0, num_samples * 2 - len(y))))
    starts = rng.integers(0, len(y) - num_samples, count)
    return np.stack([y[s : s + num_samples] for s in starts]).astype(np.float32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(DEMO_CONFIG))
    parser.add_argument("--clips", type=int, default=64)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()

    cfg = Config.load(args.config)
    f, sr, n = cfg.features, cfg.audio.sample_rate, cfg.num_samples
    clips = speech_clips(args.clips, n, sr)
    layer = build_frontend(cfg)
    hop = layer.hop_for(n)

    spec = [tf.TensorSpec([None, n], tf.float32)]
    graph = tf.function(layer.spectrogram_db, input_signature=spec)
    # Keras compiles a model's train and predict steps with XLA when every layer supports it (jit_compile="auto").
    xla = tf.function(layer.spectrogram_db, input_signature=spec, jit_compile=True)

    def batched(fn):
        def run():
            for _ in range(LAYER_PASSES):
                for k in range(0, len(clips), args.batch):
                    fn(tf.constant(clips[k : k + args.batch])).numpy()

        return run

    def run_librosa():
        for y in clips:
            mel = librosa.feature.melspectrogram(y=y, sr=sr, n_fft=f.n_fft, hop_length=hop, win_length=f.win_length,
                                                 window=f.window, n_mels=f.img_size[0], fmin=f.fmin, fmax=f.fmax,
                                                 htk=False, norm="slaney")
            librosa.power_to_db(mel, ref=np.max, top_db=f.top_db)

    runs = {"voxtrace": batched(graph), "voxtrace XLA": batched(xla), "librosa": run_librosa}
    for fn in runs.values():
        fn()  # warm-up: tracing, XLA compilation, FFT plans, filterbank caches
    seconds = interleaved(runs, args.rounds, pause=SETTLE_S)
    passes = {"voxtrace": LAYER_PASSES, "voxtrace XLA": LAYER_PASSES, "librosa": 1}
    rates = {name: passes[name] * len(clips) / statistics.median(times) for name, times in seconds.items()}
    for name, rate in rates.items():
        print(f"{name:>12}: {rate:8.1f} clips/s, median round ({len(clips)} clips of {n / sr:.1f} s, hop {hop}, "
              f"n_fft {f.n_fft}, {f.img_size[0]} mels)")
    print(f"XLA speedup vs librosa: {rates['voxtrace XLA'] / rates['librosa']:.2f} (median rounds)")
    print(headline("frontend_speedup_vs_librosa",
                   [LAYER_PASSES * b / a for a, b in zip(seconds["voxtrace"], seconds["librosa"])], ".2f"))


if __name__ == "__main__":
    main()
