"""Log-mel throughput: the voxtrace layer (batched, tf.function) vs librosa on the same clips and parameters.

    python benchmarks/frontend.py [--clips 48] [--batch 16] [--rounds 3]

Parameters are the default config's (6 s at 16 kHz, n_fft = win_length = 2048, 128 mel bands, the hop that
gives W = 384 frames); the clips are espeak-ng speech (random noise if espeak-ng is missing). Warm-up calls
are excluded; rounds are interleaved, each timed run starts after a short pause, and the best of each is
kept. Prints clips/s of the layer as a plain tf.function, compiled with XLA (as Keras `fit` / `predict` run
it) and of librosa; the last line, `frontend_speedup_vs_librosa: X`, uses the plain tf.function figure.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import librosa  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from voxtrace.config import Config  # noqa: E402
from voxtrace.features import build_frontend  # noqa: E402


# Pause before each timed run: numpy's OpenBLAS threads busy-wait for about 0.1 s after a call, which steals
# the cores from whatever runs next; without it the order of the contenders changes their figures.
SETTLE_S = 0.5


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
    parser.add_argument("--clips", type=int, default=48)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    cfg = Config()
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
    rates = dict.fromkeys(runs, 0.0)
    for _ in range(args.rounds):  # interleaved rounds, best of each: fair on a shared machine
        for name, fn in runs.items():
            time.sleep(SETTLE_S)
            start = time.perf_counter()
            fn()
            rates[name] = max(rates[name], len(clips) / (time.perf_counter() - start))
    for name, rate in rates.items():
        print(f"{name:>12}: {rate:8.1f} clips/s ({len(clips)} clips of {n / sr:.1f} s, hop {hop}, "
              f"n_fft {f.n_fft}, {f.img_size[0]} mels)")
    print(f"XLA speedup vs librosa: {rates['voxtrace XLA'] / rates['librosa']:.2f}")
    print(f"frontend_speedup_vs_librosa: {rates['voxtrace'] / rates['librosa']:.2f}")

if __name__ == "__main__":
    main()
