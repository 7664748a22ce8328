"""A tiny real checkpoint, real speech clips and a real uvicorn server for the serve and explain tests."""

from __future__ import annotations

import socket
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import soundfile as sf

from voxtrace.config import Config

SR = 16000
SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "Synthetic speech leaves traces in the spectrum.",
    "Please call me back after lunch.",
    "Seven bright lanterns hung above the harbour.",
    "A cold wind swept across the valley.",
]
VOICES = ["en-us", "en-gb"]


def tiny_cfg() -> Config:
    return Config.from_dict({"model": {"name": "cnn4"}, "features": {"img_size": [32, 64]}, "audio": {"duration": 0.5}})


def save_tiny_run(root: Path, seed: int = 0) -> tuple[Path, Config]:
    """`root/run/ckpt/fold-0.keras` (cnn4 classifier, random init) and `root/run/cfg/config.yaml`."""
    import keras

    from voxtrace.features import SpecAugment
    from voxtrace.models import build_classifier

    cfg = tiny_cfg()
    keras.utils.set_random_seed(seed)
    model = build_classifier(cfg, spec_augment=SpecAugment.from_config_section(cfg.augment))
    ckpt = Path(root) / "run" / "ckpt" / "fold-0.keras"
    ckpt.parent.mkdir(parents=True, exist_ok=True)
    model.save(ckpt)
    cfg.save(Path(root) / "run" / "cfg" / "config.yaml")
    return ckpt, cfg


def espeak_clips(folder: Path, count: int = 2) -> list[Path]:
    """`count` real espeak-ng utterances (different sentences and voices) as WAV files."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        path = folder / f"espeak_{i:02d}.wav"
        voice = VOICES[i % len(VOICES)]
        text = SENTENCES[i % len(SENTENCES)]
        subprocess.run(["espeak-ng", "-v", voice, "-s", str(150 + 10 * i), "-w", str(path), text], check=True)
        paths.append(path)
    return paths


def tone_clip(path: Path, seconds: float, freq: float = 440.0) -> Path:
    t = np.arange(int(seconds * SR)) / SR
    sf.write(path, (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32), SR)
    return path


def _tone_with_ffmpeg(seconds: float, *args: str) -> list[str]:
    return ["ffmpeg", "-nostdin", "-v", "error", "-y", "-f", "lavfi", "-i", f"sine=frequency=440:duration={seconds}",
            *args]


def lying_m4a(path: Path, seconds: float, claimed: float = 1.0) -> Path:
    """An AAC `.m4a` of `seconds` of tone whose mvhd, tkhd and mdhd atoms claim it lasts `claimed` seconds."""
    subprocess.run(_tone_with_ffmpeg(seconds, "-ar", str(SR), "-ac", "1", "-c:a", "aac", str(path)), check=True)
    data = bytearray(Path(path).read_bytes())

    def field(atom: bytes, at: int) -> int:
        """Byte offset of the 32-bit field `at` bytes after the version/flags of a version-0 `atom`."""
        start = data.index(atom) + 4
        assert data[start] == 0, f"{atom!r} is not a version-0 atom"
        return start + at

    movie_scale = int.from_bytes(data[field(b"mvhd", 12):field(b"mvhd", 16)])
    media_scale = int.from_bytes(data[field(b"mdhd", 12):field(b"mdhd", 16)])
    for atom, at, scale in ((b"mvhd", 16, movie_scale), (b"tkhd", 20, movie_scale), (b"mdhd", 16, media_scale)):
        data[field(atom, at):field(atom, at) + 4] = int(claimed * scale).to_bytes(4)
    Path(path).write_bytes(bytes(data))
    return Path(path)


def streamed_webm(path: Path, seconds: float) -> Path:
    """An Opus `.webm` of `seconds` of tone written to a pipe, so (like a browser recording) it declares no length."""
    webm = subprocess.run(_tone_with_ffmpeg(seconds, "-c:a", "libopus", "-f", "webm", "pipe:1"),
                          check=True, capture_output=True).stdout
    Path(path).write_bytes(webm)
    return Path(path)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LiveServer:
    """A uvicorn server on 127.0.0.1 and a free port, in a background thread."""

    def __init__(self, app):
        import uvicorn

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self):
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError(f"uvicorn did not start on {self.url}")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(timeout=10)
