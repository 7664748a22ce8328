"""Every command turns an `OSError` into one line on stderr naming the path, and a non-zero exit code."""

import errno

import pandas as pd
import pytest

from voxtrace import cli
from voxtrace.io import WriteError, atomic_write_text


@pytest.fixture
def scored(tmp_path):
    """A prediction CSV (with the probabilities of classes x and y) and its labels, both readable."""
    pred, labels = tmp_path / "pred.csv", tmp_path / "labels.csv"
    pd.DataFrame({"track": ["a.wav", "b.wav"], "algorithm": [0, 1], "x": [0.9, 0.2], "y": [0.1, 0.8]}).to_csv(
        pred, index=False)
    pd.DataFrame({"track": ["a.wav", "b.wav"], "label": ["x", "y"]}).to_csv(labels, index=False)
    return pred, labels


def _stderr_lines(capsys) -> list[str]:
    return capsys.readouterr().err.strip().splitlines()


def test_missing_input_is_one_line_naming_it(scored, tmp_path, capsys):
    _, labels = scored
    missing = tmp_path / "nowhere" / "pred.csv"
    assert cli.main(["evaluate", "--pred", str(missing), "--labels", str(labels)]) == 2
    assert _stderr_lines(capsys) == [f"voxtrace evaluate: cannot read {missing}: No such file or directory"]


def test_folder_given_as_input_file_is_one_line_naming_it(scored, tmp_path, capsys):
    pred, _ = scored
    folder = tmp_path / "a_folder"
    folder.mkdir()
    assert cli.main(["evaluate", "--pred", str(pred), "--labels", str(folder)]) == 2
    assert _stderr_lines(capsys) == [f"voxtrace evaluate: cannot read {folder}: Is a directory"]


def test_output_under_a_file_is_one_line_naming_the_output(scored, tmp_path, capsys):
    pred, labels = scored
    (tmp_path / "blocker").write_text("a file, not a folder")
    out = tmp_path / "blocker" / "report"
    assert cli.main(["evaluate", "--pred", str(pred), "--labels", str(labels), "--out", str(out)]) == 2
    lines = _stderr_lines(capsys)
    assert len(lines) == 1 and lines[0].startswith(f"voxtrace evaluate: cannot write {out}/")
    assert lines[0].endswith(": Not a directory")
    assert (tmp_path / "blocker").read_text() == "a file, not a folder"


def test_full_disk_names_the_output_not_its_temporary_file(tmp_path, monkeypatch):
    def full(path, text, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr("pathlib.Path.write_text", full)
    with pytest.raises(WriteError) as caught:
        atomic_write_text(tmp_path / "report.md", "text")
    assert caught.value.filename == str(tmp_path / "report.md") and caught.value.strerror == "No space left on device"
    assert list(tmp_path.iterdir()) == []  # the temporary file is removed
    line = cli.os_error_line("evaluate", caught.value)
    assert line == f"voxtrace evaluate: cannot write {tmp_path / 'report.md'}: No space left on device"


@pytest.mark.parametrize(
    "err, line",
    [
        (FileNotFoundError(errno.ENOENT, "No such file or directory", "in.csv"),
         "voxtrace export: cannot read in.csv: No such file or directory"),
        (OSError(errno.EROFS, "Read-only file system", "/ro/out.csv"),
         "voxtrace export: cannot write /ro/out.csv: Read-only file system"),
        (FileNotFoundError("no audio files (wav, flac, ogg, mp3) under --infer-path x"),
         "voxtrace export: error: no audio files (wav, flac, ogg, mp3) under --infer-path x"),
    ],
)
def test_os_error_line(err, line):
    assert cli.os_error_line("export", err) == line
