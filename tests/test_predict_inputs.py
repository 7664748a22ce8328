"""`voxtrace predict` against hostile inputs and outputs: odd WAVs, non-files, unreadable folders, unwritable
or full output folders, output permissions, files longer than --max-duration."""

import errno
import os
import shutil
import subprocess
import threading
import zipfile

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from fixtures_inference import save_run, tiny_cfg, write_clips
from voxtrace.cli import main_for
from voxtrace.inference.ensemble import Ensemble
from voxtrace.io import atomic_write_text

CLASSES = tiny_cfg().classes


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("inputs")
    save_run(root / "runs" / "tiny", tiny_cfg())
    return root / "runs"


def _predict(model_dir, infer, out, *extra):
    return main_for("predict", ["--model-dir", str(model_dir), "--infer-path", str(infer), "--output", str(out),
                                "--probs", "--no-open-set", "--verbose", "0", *extra])


def _read(out):
    return pd.read_csv(out, keep_default_na=False).set_index("track")


def _expected(model_dir, paths):
    return Ensemble(model_dir).predict(paths, progress=False).probs


def _noise(seconds, rate, channels=1, seed=0):
    x = 0.3 * np.random.default_rng(seed).standard_normal((int(seconds * rate), channels))
    return x[:, 0] if channels == 1 else x


def test_input_matrix_one_row_per_file(model_dir, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    good = {
        "u8.wav": dict(data=_noise(0.6, 16000), samplerate=16000, subtype="PCM_U8"),
        "alaw.wav": dict(data=_noise(0.6, 8000), samplerate=8000, subtype="ALAW"),
        "six.wav": dict(data=_noise(0.6, 16000, channels=6), samplerate=16000, subtype="PCM_16"),
        "hires.wav": dict(data=_noise(0.6, 384000), samplerate=384000, subtype="PCM_24"),
    }
    for name, kwargs in good.items():
        sf.write(folder / name, **kwargs)
    sf.write(folder / "onehz.wav", np.full(20, 0.1), 1, subtype="PCM_16")
    inf = _noise(0.6, 16000).astype(np.float32)
    inf[100] = np.inf
    sf.write(folder / "inf.wav", inf, 16000, subtype="FLOAT")
    sf.write(folder / "header.wav", np.zeros(0, np.float32), 16000, subtype="PCM_16")
    (folder / "x.wav").mkdir()  # a folder named like audio is searched, not read
    inner = write_clips(folder / "x.wav", n=1)[0]
    (folder / "dangling.wav").symlink_to(folder / "nowhere.wav")
    os.mkfifo(folder / "fifo.wav")
    if shutil.which("ffmpeg"):
        subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "sine=duration=0.6", "-c:a", "aac", "-f", "mp4",
                        f"file:{folder / '-x.wav'}"], check=True)
        good["-x.wav"] = None
    good[inner.name] = None

    blocked = threading.Event()

    def unblock_fifo_readers():  # if predict opened the FIFO, open its other end so the test ends and fails
        if not blocked.wait(120):
            try:
                os.close(os.open(folder / "fifo.wav", os.O_WRONLY | os.O_NONBLOCK))
                blocked.set()
            except OSError:
                pass

    watchdog = threading.Thread(target=unblock_fifo_readers, daemon=True)
    watchdog.start()
    out = tmp_path / "out" / "pred.csv"
    code = _predict(model_dir, folder, out)
    finished_first = not blocked.is_set()
    blocked.set()
    assert finished_first, "predict opened the FIFO"
    assert code == 0
    frame = _read(out)
    bad = {"onehz.wav": "sample rate 1 Hz is too low", "inf.wav": "samples are NaN or infinite",
           "header.wav": "no decodable audio samples", "dangling.wav": "broken symbolic link",
           "fifo.wav": "not a regular file (a FIFO)"}
    assert sorted(frame.index) == sorted([*good, *bad])
    for name, reason in bad.items():
        assert reason in frame.loc[name, "error"] and frame.loc[name, "algorithm"] == ""
    scored = frame.loc[list(good)]
    assert (scored["error"] == "").all()
    paths = [inner if name == inner.name else folder / name for name in good]
    np.testing.assert_allclose(scored[CLASSES].to_numpy(dtype=float), _expected(model_dir, paths), atol=1e-6)
    with zipfile.ZipFile(out.parent / "answer.zip") as archive:
        assert len(archive.read("answer.txt").decode().splitlines()) == len(frame)


def test_unreadable_subfolder_gets_an_error_row(model_dir, tmp_path, monkeypatch):
    clips = write_clips(tmp_path / "in" / "ok", n=2)
    write_clips(tmp_path / "in" / "locked", n=1, seed=3)
    original = os.scandir

    def scandir(path="."):
        if os.fspath(path) == str(tmp_path / "in" / "locked"):
            raise PermissionError(errno.EACCES, "Permission denied", os.fspath(path))
        return original(path)

    monkeypatch.setattr(os, "scandir", scandir)
    out = tmp_path / "out" / "pred.csv"
    assert _predict(model_dir, tmp_path / "in", out) == 0
    frame = _read(out)
    assert sorted(frame.index) == ["clip_000.wav", "clip_001.wav", "locked"]
    assert frame.loc["locked", "error"] == "folder cannot be listed (Permission denied)"
    np.testing.assert_allclose(frame.loc[[p.name for p in clips], CLASSES].to_numpy(dtype=float),
                               _expected(model_dir, clips), atol=1e-6)
    answer = (out.parent / "answer.txt").read_text().splitlines()
    assert [line.split(",")[0] for line in answer] == ["clip_000.wav", "clip_001.wav"]


def test_long_file_scored_span_by_span_equals_whole(model_dir, tmp_path):
    clips = write_clips(tmp_path / "in", n=2, seconds=(2.0, 3.0))
    assert _predict(model_dir, tmp_path / "in", tmp_path / "whole.csv", "--no-zip") == 0
    assert _predict(model_dir, tmp_path / "in", tmp_path / "spans.csv", "--no-zip", "--max-duration", "0.5") == 0
    assert (tmp_path / "whole.csv").read_bytes() == (tmp_path / "spans.csv").read_bytes()
    np.testing.assert_allclose(_read(tmp_path / "spans.csv")[CLASSES].to_numpy(dtype=float),
                               _expected(model_dir, clips), atol=1e-6)


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_outputs_get_umask_permissions(model_dir, tmp_path, umask):
    write_clips(tmp_path / "in", n=1)
    previous = os.umask(umask)
    try:
        assert _predict(model_dir, tmp_path / "in", tmp_path / "out" / "pred.csv") == 0
        atomic_write_text(tmp_path / "note.txt", "x")
    finally:
        os.umask(previous)
    for name in ("out/pred.csv", "out/answer.zip", "out/answer.txt", "note.txt"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o666 & ~umask, name


def _leftovers(folder):
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_output_under_a_file_is_one_line_and_leaves_nothing(model_dir, tmp_path, capsys):
    write_clips(tmp_path / "in", n=1)
    (tmp_path / "blocker").write_text("a file, not a folder")
    out = tmp_path / "blocker" / "out" / "pred.csv"
    assert _predict(model_dir, tmp_path / "in", out) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"predict: error: cannot write {out}.partial: Not a directory"]
    assert (tmp_path / "blocker").read_text() == "a file, not a folder"


def test_permission_denied_output_folder(model_dir, tmp_path, monkeypatch, capsys):
    write_clips(tmp_path / "in", n=1)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    real_open, real_os_open = open, os.open

    def deny(path):
        if os.fspath(path).startswith(str(out_dir)):
            raise PermissionError(errno.EACCES, "Permission denied", os.fspath(path))

    def guarded_open(path, mode="r", *args, **kwargs):
        if any(c in mode for c in "wax+"):
            deny(path)
        return real_open(path, mode, *args, **kwargs)

    def guarded_os_open(path, flags, *args, **kwargs):
        if flags & (os.O_WRONLY | os.O_RDWR):
            deny(path)
        return real_os_open(path, flags, *args, **kwargs)

    monkeypatch.setattr("builtins.open", guarded_open)
    monkeypatch.setattr(os, "open", guarded_os_open)
    assert _predict(model_dir, tmp_path / "in", out_dir / "pred.csv") == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"predict: error: cannot write {out_dir / 'pred.csv.partial'}: Permission denied"]
    assert _leftovers(out_dir) == []


def test_disk_full_while_saving_rows(model_dir, tmp_path, monkeypatch, capsys):
    write_clips(tmp_path / "in", n=3)
    out = tmp_path / "out" / "pred.csv"

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    calls = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: calls.append(fd) or (full(fd) if len(calls) > 1 else real_fsync(fd)))
    assert _predict(model_dir, tmp_path / "in", out) == 1  # the header is written, the first rows are not
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"predict: error: cannot write {out}.partial: No space left on device"]
    assert _leftovers(out.parent) == []


def test_disk_full_while_writing_the_csv_keeps_the_rows(model_dir, tmp_path, monkeypatch, capsys):
    clips = write_clips(tmp_path / "in", n=3)
    out = tmp_path / "out" / "pred.csv"
    real_to_csv = pd.DataFrame.to_csv

    def half_then_full(self, path, *args, **kwargs):
        with open(path, "w") as fh:
            fh.write("track,alg")
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(pd.DataFrame, "to_csv", half_then_full)
    assert _predict(model_dir, tmp_path / "in", out, "--save-every", "2") == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"predict: error: cannot write {out}: No space left on device (the 3 rows scored so far are "
                   f"in {out}.partial: rerun with --resume)"]
    assert _leftovers(out.parent) == ["pred.csv.partial"]
    monkeypatch.setattr(pd.DataFrame, "to_csv", real_to_csv)
    assert _predict(model_dir, tmp_path / "in", out, "--resume") == 0
    assert _leftovers(out.parent) == ["answer.txt", "answer.zip", "pred.csv"]
    np.testing.assert_allclose(_read(out)[CLASSES].to_numpy(dtype=float), _expected(model_dir, clips), atol=1e-6)
