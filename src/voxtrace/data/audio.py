"""Audio decoding: any common file in, float32 mono at the requested rate out.

`load_audio` reads WAV (any PCM width or float), FLAC, OGG and MP3 through soundfile, and anything
soundfile cannot open through an `ffmpeg` subprocess. Other rates are resampled with soxr (HQ), channels
are averaged. With `offset` / `duration` only the requested span is read from disk (soundfile seeks), so
hour-long recordings are never loaded whole.

Bad input raises `AudioError` (a `ValueError`) whose message names the file and the reason: empty file,
truncated file, not audio, corrupted samples, a clip shorter than `min_duration`, a sample rate too low for
speech, or a path that is not a regular file (a folder, a FIFO, a device: nothing here opens those, so a
FIFO never blocks). Digital silence is valid audio and is returned as zeros; nothing here rescales the
level, so callers that normalise must guard against a zero RMS (see `normalize_loudness`).

ffmpeg and ffprobe run with a timeout (`FFMPEG_TIMEOUT_S`, `FFPROBE_TIMEOUT_S`) and get the file as
`file:PATH`, so a name such as `-x.wav` or `pipe:1.wav` is read as a file, never as an option or protocol.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import struct
import subprocess
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from voxtrace.io import atomic_path

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3")
MIN_DURATION = 0.1  # seconds; shorter files carry no usable synthesis artifacts
MIN_SAMPLE_RATE = 4000  # Hz; below it a file cannot hold the speech band
FFPROBE_TIMEOUT_S = 30.0  # seconds for one ffprobe header read
FFMPEG_TIMEOUT_S = 600.0  # seconds for one ffmpeg decode (callers cap long files with `duration`)


class AudioError(ValueError):
    """A file cannot be used as audio. The message names the file and the reason."""

    def __init__(self, path, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{path}: {reason}")


class EndOfAudio(AudioError):
    """The requested `offset` lies at or past the end of the file (nothing left to read)."""


def load_audio(
    path: str | os.PathLike,
    sample_rate: int = 16000,
    offset: float = 0.0,
    duration: float | None = None,
    min_duration: float = MIN_DURATION,
) -> np.ndarray:
    """Decode `path` to a float32 mono waveform in [-1, 1] at `sample_rate`.

    Args:
        path: a WAV, FLAC, OGG or MP3 file (any other format ffmpeg can decode also works).
        sample_rate: output rate in Hz; other rates are resampled with soxr (HQ).
        offset: start of the span to read, in seconds.
        duration: length of the span in seconds; `None` reads to the end of the file.
        min_duration: files shorter than this (seconds) raise `AudioError`.
    """
    path = _readable_file(path)
    if offset < 0 or (duration is not None and duration <= 0):
        raise ValueError(f"offset must be >= 0 and duration > 0. Received: offset={offset}, duration={duration}")
    try:
        handle = sf.SoundFile(str(path))
    except sf.LibsndfileError as err:
        handle, sf_error = None, err
    if handle is None:
        with _explained(path, sf_error):
            x, native_rate = _decode_ffmpeg(path, offset, duration)
    else:
        with handle:
            x, native_rate = _decode_soundfile(path, handle, offset, duration, min_duration)
    if x.size == 0:
        raise EndOfAudio(path, f"no audio at offset={offset} s (the file is shorter)")
    read_to_end = duration is None or x.size < duration * native_rate - 1
    if x.size < min_duration * native_rate and offset == 0 and read_to_end:
        raise AudioError(path, f"too short: {x.size / native_rate:.3f} s < min_duration={min_duration} s")
    if not np.all(np.isfinite(x)):
        raise AudioError(path, "corrupted: samples are NaN or infinite")
    if native_rate != sample_rate:
        x = soxr.resample(x, native_rate, sample_rate, quality="HQ")
    return np.clip(x, -1.0, 1.0).astype(np.float32, copy=False)


def audio_duration(path: str | os.PathLike) -> float:
    """Duration of `path` in seconds, read from the header (no decoding); raises `AudioError`."""
    path = _readable_file(path)
    try:
        info = sf.info(str(path))
    except sf.LibsndfileError as err:
        with _explained(path, err):
            return _ffprobe_duration(path)
    if info.format == "WAV":
        _check_wav_size(path)
    if info.frames == 0:
        raise AudioError(path, "no decodable audio samples (truncated or corrupted, or a header only)")
    _check_rate(path, info.samplerate)
    return float(info.duration)


def find_audio_files(root: str | os.PathLike, extensions=AUDIO_EXTENSIONS,
                     unreadable: list | None = None) -> list[Path]:
    """Audio files under `root` (recursive, extension case-insensitive, hidden files skipped), sorted.

    Every non-folder entry with an audio extension is listed (a FIFO or a broken link too: `load_audio` then
    says what is wrong with it); a folder is searched whatever its name. A subfolder that cannot be listed
    raises its `OSError`, or is appended to `unreadable` (as the `OSError`) when that list is given.
    """
    root = Path(root)
    if not root.exists():
        raise FileNotFoundError(f"audio folder not found: {root}")
    suffixes = {e.lower() if e.startswith(".") else f".{e.lower()}" for e in extensions}
    if root.is_file():
        return [root] if root.suffix.lower() in suffixes else []
    found = []
    def on_error(err: OSError):
        if unreadable is None:
            raise err
        unreadable.append(err)

    for dirpath, dirnames, filenames in os.walk(root, onerror=on_error):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        found.extend(
            Path(dirpath) / name
            for name in filenames
            if not name.startswith(".") and os.path.splitext(name)[1].lower() in suffixes
        )
    return sorted(found)


def collect_audio_files(roots, unreadable: list | None = None) -> list[Path]:
    """Audio files under every one of `roots` (files or folders, as `--infer-path` gives them); refuses a root
    that does not exist or holds no audio.

    A subfolder that cannot be listed is appended to `unreadable` (its `OSError`), or refused without it.
    """
    files = []
    for root in roots:
        found_unreadable = []
        found = find_audio_files(root, unreadable=found_unreadable)
        if found_unreadable and unreadable is None:
            err = found_unreadable[0]
            raise ValueError(f"cannot list folder {err.filename} under --infer-path {root}: {err.strerror}")
        if not found and not found_unreadable:
            raise FileNotFoundError(f"no audio files (wav, flac, ogg, mp3) under --infer-path {root}")
        files.extend(found)
        if unreadable is not None:
            unreadable.extend(found_unreadable)
    return files


def save_wav(path: str | os.PathLike, x: np.ndarray, sample_rate: int = 16000, subtype: str = "PCM_16") -> None:
    """Write a mono (or [N, C]) waveform as WAV, atomically."""
    x = np.asarray(x, dtype=np.float32)
    with atomic_path(path) as tmp:
        sf.write(str(tmp), np.clip(x, -1.0, 1.0), sample_rate, subtype=subtype, format="WAV")


def trim_silence(x: np.ndarray, sample_rate: int, top_db: float = 40.0, frame_s: float = 0.02) -> np.ndarray:
    """Cut leading and trailing frames quieter than `top_db` below the loudest frame (all-silent in, empty out)."""
    frame = max(1, int(frame_s * sample_rate))
    n_frames = len(x) // frame
    if n_frames == 0:
        return x
    energy = np.square(x[: n_frames * frame].reshape(n_frames, frame)).mean(axis=1)
    peak = energy.max()
    if peak <= 0:
        return x[:0]
    active = np.flatnonzero(energy >= peak * 10 ** (-top_db / 10))
    start, stop = active[0] * frame, min(len(x), (active[-1] + 1) * frame)
    return x[start:stop]


def normalize_loudness(x: np.ndarray, target_dbfs: float = -23.0, peak: float = 0.95) -> np.ndarray:
    """Scale to `target_dbfs` RMS (over 20 ms frames above -50 dB of the loudest), with peaks kept under `peak`.

    Digital silence is returned unchanged.
    """
    x = np.asarray(x, dtype=np.float32)
    frame = 320
    n_frames = len(x) // frame
    if n_frames:
        energy = np.square(x[: n_frames * frame].reshape(n_frames, frame)).mean(axis=1)
        active = energy[energy >= energy.max() * 1e-5]
        rms = float(np.sqrt(active.mean())) if active.size else 0.0
    else:
        rms = float(np.sqrt(np.mean(np.square(x)))) if x.size else 0.0
    if rms <= 0:
        return x
    gain = 10 ** (target_dbfs / 20) / rms
    top = float(np.abs(x).max()) * gain
    if top > peak:
        gain *= peak / top
    return (x * gain).astype(np.float32)


# ---- decoders ---------------------------------------------------------------------------------------------
@contextlib.contextmanager
def _explained(path: Path, sf_error: Exception):
    """When ffmpeg cannot decode a file soundfile recognised but found malformed, say it is damaged."""
    try:
        yield
    except AudioError as err:
        if "malformed" in str(sf_error):
            raise AudioError(path, f"corrupted or truncated ({err.reason}; soundfile: file is malformed)") from None
        raise


def _decode_soundfile(path: Path, fh: sf.SoundFile, offset, duration, min_duration) -> tuple[np.ndarray, int]:
    """Read the requested span from an open file: seek, then read only `duration` seconds."""
    rate, total = fh.samplerate, fh.frames
    if fh.format == "WAV":
        _check_wav_size(path)
    _check_rate(path, rate)
    if total == 0:
        raise AudioError(path, "no decodable audio samples (truncated or corrupted, or a header only)")
    if total < min_duration * rate:
        raise AudioError(path, f"too short: {total / rate:.3f} s < min_duration={min_duration} s")
    start = int(round(offset * rate))
    frames = -1 if duration is None else int(round(duration * rate))
    if start >= total and fh.format != "MPEG":  # MP3 frame counts are estimates
        return np.zeros(0, np.float32), rate
    try:
        if start:
            fh.seek(start)
        x = fh.read(frames, dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError) as err:
        raise AudioError(path, f"corrupted or truncated {fh.format} stream ({err})") from None
    read_to_end = frames < 0 or start + frames >= total
    if start == 0 and read_to_end and fh.format != "WAV" and x.shape[0] < 0.98 * total:
        raise AudioError(path, f"truncated: decoded {x.shape[0]} of the {total} frames its header declares")
    x = x[:, 0] if x.shape[1] == 1 else x.mean(axis=1)
    return np.ascontiguousarray(x, dtype=np.float32), rate


def _decode_ffmpeg(path: Path, offset: float, duration: float | None) -> tuple[np.ndarray, int]:
    """Decode with ffmpeg to float32 mono at the file's own rate (at most `duration` s); `AudioError` if it cannot."""
    rate = _ffprobe_rate(path)
    cmd = ["ffmpeg", "-nostdin", "-v", "error", "-ss", f"{offset}", "-i", _ffmpeg_input(path)]
    if duration is not None:
        cmd += ["-t", f"{duration}"]
    cmd += ["-vn", "-ac", "1", "-ar", str(rate), "-f", "f32le", "-"]
    proc = _run_tool(path, cmd, FFMPEG_TIMEOUT_S)
    if proc.returncode != 0:
        message = proc.stderr.decode(errors="replace").strip().splitlines()
        raise AudioError(path, f"corrupted or not audio (ffmpeg: {message[-1] if message else proc.returncode})")
    return np.frombuffer(proc.stdout, dtype="<f4").astype(np.float32), rate


def _ffmpeg_input(path: Path) -> str:
    """`file:PATH`: ffmpeg and ffprobe read it as a file, whatever the name looks like (`-x.wav`, `pipe:1`)."""
    return f"file:{path}"


def _run_tool(path: Path, cmd: list[str], timeout: float) -> subprocess.CompletedProcess:
    """Run ffmpeg or ffprobe on `path` (stdin closed); `AudioError` naming the file when it is missing or stalls."""
    if shutil.which(cmd[0]) is None:
        raise AudioError(path, f"not a format soundfile can read, and {cmd[0]} is not installed")
    try:
        return subprocess.run(cmd, capture_output=True, stdin=subprocess.DEVNULL, timeout=timeout)
    except subprocess.TimeoutExpired:
        reason = f"{cmd[0]} did not finish within {timeout:g} s (stalled read or pathological file)"
        raise AudioError(path, reason) from None


def _ffprobe(path: Path, entry: str) -> str:
    cmd = ["ffprobe", "-v", "error", "-select_streams", "a:0", "-show_entries", entry, "-of", "csv=p=0",
           _ffmpeg_input(path)]
    proc = _run_tool(path, cmd, FFPROBE_TIMEOUT_S)
    value = proc.stdout.decode(errors="replace").strip().split(",")[0] if proc.returncode == 0 else ""
    if not value or value == "N/A":
        raise AudioError(path, "not an audio file (no audio stream found)")
    return value


def _ffprobe_rate(path: Path) -> int:
    rate = int(_ffprobe(path, "stream=sample_rate"))
    _check_rate(path, rate)
    return rate


def _ffprobe_duration(path: Path) -> float:
    """Container duration, else the time ffmpeg reaches decoding the stream to nowhere (nothing held in memory)."""
    _ffprobe_rate(path)  # raises if there is no audio stream
    try:
        return float(_ffprobe(path, "format=duration"))
    except (AudioError, ValueError):
        pass
    cmd = ["ffmpeg", "-nostdin", "-v", "error", "-i", _ffmpeg_input(path), "-vn", "-f", "null",
           "-progress", "pipe:1", "-"]
    proc = _run_tool(path, cmd, FFMPEG_TIMEOUT_S)
    times = [line.split("=", 1)[1] for line in proc.stdout.decode(errors="replace").splitlines()
             if line.startswith("out_time_us=")]
    if proc.returncode != 0 or not times or not times[-1].strip().isdigit():
        raise AudioError(path, "corrupted or not audio (ffmpeg could not decode the stream)")
    return int(times[-1]) / 1e6


def _readable_file(path) -> Path:
    """`path` as a `Path` once it is known to be a non-empty regular file this process may read.

    Only `stat` is used, so a FIFO or a device is refused without being opened (opening a FIFO blocks).
    """
    path = Path(path)
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        if path.is_symlink():
            target = os.readlink(path)
            raise FileNotFoundError(f"audio file not found: {path} (a broken symbolic link to {target})") from None
        raise FileNotFoundError(f"audio file not found: {path}") from None
    except OSError as err:
        raise AudioError(path, f"cannot be read ({err.strerror})") from None
    if stat.S_ISDIR(mode):
        raise AudioError(path, "is a folder, not an audio file")
    if not stat.S_ISREG(mode):
        kind = "a FIFO" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode) else "a device"
        raise AudioError(path, f"not a regular file ({kind}); refusing to read it")
    if not os.access(path, os.R_OK):
        raise AudioError(path, "cannot be read (permission denied)")
    if path.stat().st_size == 0:
        raise AudioError(path, "empty file (0 bytes)")
    return path


def _check_rate(path: Path, rate: int) -> None:
    if rate < MIN_SAMPLE_RATE:
        raise AudioError(path, f"sample rate {rate} Hz is too low for speech (below {MIN_SAMPLE_RATE} Hz)")


def _check_wav_size(path: Path) -> None:
    """Raise if the RIFF `data` chunk declares more bytes than the file holds (a cut-off download or copy).

    libsndfile silently reads what is there, so a truncated WAV would otherwise pass as a shorter clip.
    Streamed WAVs whose header leaves the size at 0 or 0xFFFFFFFF are accepted.
    """
    size = path.stat().st_size
    with open(path, "rb") as fh:
        head = fh.read(12)
        if len(head) < 12 or head[:4] not in (b"RIFF", b"RIFX") or head[8:12] != b"WAVE":
            return
        fmt = ">I" if head[:4] == b"RIFX" else "<I"
        pos = 12
        while pos + 8 <= size:
            fh.seek(pos)
            chunk = fh.read(8)
            if len(chunk) < 8:
                return
            chunk_id, chunk_size = chunk[:4], struct.unpack(fmt, chunk[4:])[0]
            if chunk_id == b"data":
                available = size - pos - 8
                if chunk_size not in (0, 0xFFFFFFFF) and available < chunk_size:
                    reason = f"truncated: the header declares {chunk_size} bytes of samples, the file holds {available}"
                    raise AudioError(path, reason)
                return
            pos += 8 + chunk_size + (chunk_size & 1)
