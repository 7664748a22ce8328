import os
import shutil
import subprocess
import threading
import time

import numpy as np
import pytest
import soundfile as sf
import soxr

from fixtures_data import tone, write_audio
from voxtrace.data import audio
from voxtrace.data.audio import AudioError, audio_duration, find_audio_files, load_audio, save_wav


@pytest.mark.parametrize("subtype", ["PCM_16", "PCM_24", "PCM_32", "FLOAT", "DOUBLE"])
def test_wav_widths_round_trip(tmp_path, subtype):
    path = write_audio(tmp_path / "a.wav", subtype=subtype)
    x = load_audio(path)
    assert x.dtype == np.float32 and x.ndim == 1 and len(x) == 8000
    np.testing.assert_allclose(x, tone(), atol=1e-4)


def test_pcm16_fast_path_is_exact(tmp_path):
    path = write_audio(tmp_path / "a.wav", subtype="PCM_16")
    expected = sf.read(str(path), dtype="int16")[0].astype(np.float32) / 32768
    np.testing.assert_array_equal(load_audio(path), expected)


def test_flac_is_lossless(tmp_path):
    path = write_audio(tmp_path / "a.flac", subtype="PCM_24")
    np.testing.assert_allclose(load_audio(path), tone(), atol=1e-5)


@pytest.mark.parametrize("suffix", ["ogg", "mp3"])
def test_lossy_formats_decode(tmp_path, suffix):
    path = write_audio(tmp_path / f"a.{suffix}", seconds=1.0)
    x = load_audio(path)
    assert x.dtype == np.float32 and abs(len(x) - 16000) < 1200
    ref = tone(1.0)
    lag = int(np.argmax(np.correlate(x[:4000], ref[:2000], mode="valid")))
    n = min(len(x) - lag, len(ref)) - 2000
    assert np.corrcoef(x[lag: lag + n], ref[:n])[0, 1] > 0.9


def test_stereo_44k1_is_mixed_down_and_resampled(tmp_path):
    stereo = tone(1.0, 44100, channels=2)
    path = tmp_path / "s.wav"
    sf.write(str(path), stereo, 44100, subtype="FLOAT")
    x = load_audio(path, sample_rate=16000)
    expected = soxr.resample(stereo.mean(axis=1), 44100, 16000, quality="HQ")
    assert len(x) == 16000
    np.testing.assert_allclose(x, expected, atol=1e-5)


def test_offset_and_duration_read_only_the_span(tmp_path, monkeypatch):
    path = write_audio(tmp_path / "long.wav", seconds=3.0, subtype="PCM_16")
    whole = load_audio(path)
    requested = []
    original = sf.SoundFile.read

    def spy(self, frames=-1, *args, **kwargs):
        requested.append(frames)
        return original(self, frames, *args, **kwargs)

    monkeypatch.setattr(sf.SoundFile, "read", spy)
    part = load_audio(path, offset=1.25, duration=0.5)
    assert requested == [8000]
    np.testing.assert_array_equal(part, whole[20000:28000])


def test_offset_past_the_end_is_an_error(tmp_path):
    path = write_audio(tmp_path / "a.wav", seconds=0.5)
    with pytest.raises(AudioError, match="no audio at offset"):
        load_audio(path, offset=2.0)


def test_digital_silence_is_valid(tmp_path):
    path = tmp_path / "silence.wav"
    sf.write(str(path), np.zeros(8000, np.float32), 16000, subtype="PCM_16")
    x = load_audio(path)
    assert x.shape == (8000,) and not x.any()


def test_float_samples_beyond_full_scale_are_clipped(tmp_path):
    path = tmp_path / "loud.wav"
    sf.write(str(path), np.full(4000, 1.5, np.float32), 16000, subtype="FLOAT")
    assert load_audio(path).max() == 1.0


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.wav"):
        load_audio(tmp_path / "nope.wav")


def test_zero_byte_file(tmp_path):
    path = tmp_path / "empty.wav"
    path.touch()
    with pytest.raises(AudioError, match=r"empty\.wav: empty file \(0 bytes\)"):
        load_audio(path)
    with pytest.raises(AudioError, match="0 bytes"):
        audio_duration(path)


def test_truncated_wav(tmp_path):
    path = write_audio(tmp_path / "cut.wav", subtype="PCM_16")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(AudioError, match=r"cut\.wav: truncated"):
        load_audio(path)
    with pytest.raises(AudioError, match="truncated"):
        audio_duration(path)


@pytest.mark.parametrize("keep", [0.5, 0.25])
@pytest.mark.parametrize("suffix", ["flac", "ogg"])
def test_truncated_compressed(tmp_path, suffix, keep):
    path = write_audio(tmp_path / f"cut.{suffix}", seconds=2.0)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(AudioError, match=rf"cut\.{suffix}: .*(truncated|corrupted)"):
        load_audio(path)


def test_not_audio(tmp_path):
    path = tmp_path / "notes.wav"
    path.write_text("this is a shopping list, not a recording\n" * 20)
    with pytest.raises(AudioError, match=r"notes\.wav: .*not (an )?audio"):
        load_audio(path)


def test_nan_samples_are_corrupted(tmp_path):
    x = tone()
    x[100] = np.nan
    path = tmp_path / "nan.wav"
    sf.write(str(path), x, 16000, subtype="FLOAT")
    with pytest.raises(AudioError, match=r"nan\.wav: corrupted"):
        load_audio(path)


def test_too_short(tmp_path):
    path = write_audio(tmp_path / "blip.wav", seconds=0.05)
    with pytest.raises(AudioError, match=r"blip\.wav: too short: 0\.050 s < min_duration=0\.1"):
        load_audio(path)
    assert len(load_audio(path, min_duration=0.01)) == 800


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg not installed")
def test_ffmpeg_fallback_for_formats_soundfile_cannot_read(tmp_path):
    path = tmp_path / "a.m4a"
    cmd = ["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=22050:duration=1",
           "-c:a", "aac", str(path)]
    subprocess.run(cmd, check=True)
    x = load_audio(path, sample_rate=16000)
    assert abs(len(x) - 16000) < 800
    spectrum = np.abs(np.fft.rfft(x[2000:14000]))
    assert abs(np.argmax(spectrum) * 16000 / 12000 - 440) < 5
    assert abs(audio_duration(path) - 1.0) < 0.1


def test_audio_duration(tmp_path):
    assert audio_duration(write_audio(tmp_path / "a.flac", seconds=1.5)) == pytest.approx(1.5)


def test_find_audio_files(tmp_path):
    for name in ["b/x.WAV", "a/y.flac", "c.ogg", "d.mp3", "e.txt", ".hidden.wav", ".cache/z.wav"]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    found = [p.relative_to(tmp_path).as_posix() for p in find_audio_files(tmp_path)]
    assert found == ["a/y.flac", "b/x.WAV", "c.ogg", "d.mp3"]
    assert find_audio_files(tmp_path, extensions=["flac"]) == [tmp_path / "a/y.flac"]
    with pytest.raises(FileNotFoundError, match="missing"):
        find_audio_files(tmp_path / "missing")


def test_save_wav_is_atomic_and_round_trips(tmp_path, monkeypatch):
    path = tmp_path / "out" / "x.wav"
    save_wav(path, tone(), 16000)
    assert os.listdir(path.parent) == ["x.wav"]
    np.testing.assert_allclose(load_audio(path), tone(), atol=1e-4)

    class Boom(RuntimeError):
        pass

    def broken_write(*args, **kwargs):
        raise Boom()

    monkeypatch.setattr(audio.sf, "write", broken_write)
    with pytest.raises(Boom):
        save_wav(path, np.zeros(10), 16000)
    monkeypatch.undo()
    assert os.listdir(path.parent) == ["x.wav"]
    np.testing.assert_allclose(load_audio(path), tone(), atol=1e-4)


def test_trim_and_normalize():
    x = np.concatenate([np.zeros(8000), tone(1.0), np.zeros(4000)]).astype(np.float32)
    trimmed = audio.trim_silence(x, 16000)
    assert 15000 <= len(trimmed) <= 16700
    assert len(audio.trim_silence(np.zeros(1000, np.float32), 16000)) == 0
    louder = audio.normalize_loudness(trimmed, target_dbfs=-20)
    assert 20 * np.log10(np.sqrt(np.mean(louder**2))) == pytest.approx(-20, abs=0.5)
    assert not audio.normalize_loudness(np.zeros(800, np.float32)).any()


# ---- hostile inputs: names, non-files, stalled decoders ----------------------------------------------------
needs_ffmpeg = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg not installed")


def _aac(path, seconds=1.0, freq=440):
    """An AAC-in-MP4 tone (a format only ffmpeg reads) at `path`, whatever its name."""
    cmd = ["ffmpeg", "-v", "error", "-f", "lavfi", "-i", f"sine=frequency={freq}:sample_rate=22050:duration={seconds}",
           "-c:a", "aac", "-f", "mp4", "-y", f"file:{path}"]
    subprocess.run(cmd, check=True)
    return path


def _peak_hz(x, sample_rate=16000):
    spectrum = np.abs(np.fft.rfft(x[2000:14000]))
    return np.argmax(spectrum) * sample_rate / 12000


@needs_ffmpeg
def test_dash_named_file_is_a_file_for_ffmpeg_and_ffprobe(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _aac(tmp_path / "-x.wav")
    x = load_audio("-x.wav")  # a relative name starting with "-": an option to a bare ffprobe / ffmpeg
    assert abs(len(x) - 16000) < 800 and abs(_peak_hz(x) - 440) < 5
    assert audio_duration("-x.wav") == pytest.approx(1.0, abs=0.1)


@needs_ffmpeg
def test_ffmpeg_decoding_is_capped_by_duration(tmp_path, monkeypatch):
    path = _aac(tmp_path / "long.m4a", seconds=3.0)
    commands = []
    original = subprocess.run

    def spy(cmd, *args, **kwargs):
        commands.append(cmd)
        return original(cmd, *args, **kwargs)

    monkeypatch.setattr(audio.subprocess, "run", spy)
    x = load_audio(path, offset=1.0, duration=0.5)
    decode = next(c for c in commands if c[0] == "ffmpeg")
    assert decode[decode.index("-t") + 1] == "0.5" and decode[decode.index("-ss") + 1] == "1.0"
    assert len(x) == 8000


def _fake_tools(tmp_path, monkeypatch, ffprobe: str, ffmpeg: str):
    """Put shell scripts named ffprobe and ffmpeg first on PATH."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, body in (("ffprobe", ffprobe), ("ffmpeg", ffmpeg)):
        (bin_dir / name).write_text(f"#!/bin/sh\n{body}\n")
        (bin_dir / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")


@pytest.mark.parametrize("stalled", ["ffprobe", "ffmpeg"])
def test_stalled_ffprobe_or_ffmpeg_times_out_naming_the_file(tmp_path, monkeypatch, stalled):
    path = tmp_path / "stuck.m4a"
    path.write_bytes(b"\x00\x00\x00\x18ftypM4A " + b"\x00" * 64)  # soundfile cannot open it: ffmpeg's turn
    sleep, rate = "exec sleep 30", "echo 16000"
    _fake_tools(tmp_path, monkeypatch, ffprobe=sleep if stalled == "ffprobe" else rate, ffmpeg=sleep)
    monkeypatch.setattr(audio, "FFPROBE_TIMEOUT_S", 0.5)
    monkeypatch.setattr(audio, "FFMPEG_TIMEOUT_S", 0.5)
    started = time.monotonic()
    with pytest.raises(AudioError, match=rf"stuck\.m4a: {stalled} did not finish within 0\.5 s"):
        load_audio(path)
    assert time.monotonic() - started < 5


def test_fifo_folder_and_broken_link_are_refused_without_opening(tmp_path):
    fifo = tmp_path / "pipe.wav"
    os.mkfifo(fifo)
    outcome = {}

    def read_fifo():
        for reader in (load_audio, audio_duration):
            try:
                reader(fifo)
            except AudioError as err:
                outcome[reader.__name__] = str(err)

    worker = threading.Thread(target=read_fifo, daemon=True)
    worker.start()
    worker.join(timeout=10)
    if worker.is_alive():  # a reader blocked on the FIFO: release it, then fail
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        pytest.fail("reading a FIFO blocked")
    assert outcome == {name: f"{fifo}: not a regular file (a FIFO); refusing to read it"
                       for name in ("load_audio", "audio_duration")}
    (tmp_path / "folder.wav").mkdir()
    with pytest.raises(AudioError, match=r"folder\.wav: is a folder"):
        load_audio(tmp_path / "folder.wav")
    (tmp_path / "gone.wav").symlink_to(tmp_path / "missing.wav")
    with pytest.raises(FileNotFoundError, match=r"gone\.wav \(a broken symbolic link to .*missing\.wav\)"):
        audio_duration(tmp_path / "gone.wav")


@pytest.mark.parametrize("rate", [1, 3999])
def test_sample_rate_too_low_for_speech(tmp_path, rate):
    path = tmp_path / "slow.wav"
    sf.write(str(path), np.full(rate * 2, 0.1, np.float32), rate, subtype="PCM_16")
    with pytest.raises(AudioError, match=rf"slow\.wav: sample rate {rate} Hz is too low"):
        load_audio(path)
    with pytest.raises(AudioError, match="too low"):
        audio_duration(path)


def test_offset_past_the_end_is_end_of_audio(tmp_path):
    path = write_audio(tmp_path / "a.wav", seconds=0.5)
    with pytest.raises(audio.EndOfAudio):
        load_audio(path, offset=0.5, duration=1.0)


def test_truncated_flac_is_caught_when_the_span_reaches_its_end(tmp_path):
    path = write_audio(tmp_path / "cut.flac", seconds=2.0)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(AudioError, match=r"cut\.flac: .*(truncated|corrupted)"):
        load_audio(path, duration=600.0)


def test_unreadable_subfolder_is_reported_not_skipped(tmp_path, monkeypatch):
    write_audio(tmp_path / "ok" / "a.wav")
    write_audio(tmp_path / "locked" / "b.wav")
    original = os.scandir

    def scandir(path="."):
        if os.fspath(path) == str(tmp_path / "locked"):
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return original(path)

    monkeypatch.setattr(os, "scandir", scandir)
    with pytest.raises(PermissionError, match="locked"):
        find_audio_files(tmp_path)
    unreadable = []
    assert find_audio_files(tmp_path, unreadable=unreadable) == [tmp_path / "ok" / "a.wav"]
    assert [err.filename for err in unreadable] == [str(tmp_path / "locked")]
