import os
import shutil
import subprocess

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
