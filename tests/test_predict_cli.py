"""predict.py / generate_pseudo.py / voxtrace evaluate end to end on tiny saved `build_classifier` models."""

import json
import signal
import subprocess
import sys
import time
import zipfile

import numpy as np
import pandas as pd
import pytest

from fixtures_inference import save_run, tiny_cfg, write_bad_files, write_clips
from voxtrace.cli import main_for
from voxtrace.config import Config
from voxtrace.inference.ensemble import Ensemble
from voxtrace.inference.pseudo import read_pseudo_csv


def _save_classifier(run_dir, name, duration, ckpt="fold-0.keras"):
    from voxtrace.models import build_classifier

    cfg = Config.from_dict({"model": {"name": name}, "features": {"img_size": [32, 64]},
                            "audio": {"duration": duration}, "infer": {"batch_size": 4}})
    (run_dir / "ckpt").mkdir(parents=True)
    build_classifier(cfg).save(run_dir / "ckpt" / ckpt)
    cfg.save(run_dir / "cfg" / "config.yaml")
    return cfg


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("predict")
    _save_classifier(root / "supervised" / "cnn4-32x64", "cnn4", 0.5)
    cfg = _save_classifier(root / "supervised" / "dilated_cnn-32x64", "dilated_cnn", 0.25, ckpt="model.keras")
    good = write_clips(root / "eval1", n=4, seconds=(0.3, 1.2)) + write_clips(root / "eval2", n=3, seed=5)
    bad = write_bad_files(root / "eval1")
    return root, cfg, good, bad


def test_predict_end_to_end(workspace, capsys):
    root, cfg, good, bad = workspace
    out = root / "out" / "pred.csv"
    code = main_for("predict", ["--model-dir", str(root / "supervised"), "--infer-path", str(root / "eval1"),
                                "--infer-path", str(root / "eval2"), "--output", str(out), "--probs", "--tta", "2",
                                "--cfg", "configs/sp22-part1.yaml", "--verbose", "0"])
    assert code == 0
    frame = pd.read_csv(out, keep_default_na=False)
    assert frame.columns.tolist() == ["track", "algorithm", *cfg.classes, "error"]
    assert len(frame) == len(good) + len(bad) and frame["track"].is_monotonic_increasing
    failed = frame[frame["error"] != ""]
    assert sorted(failed["track"]) == sorted(p.name for p in bad.values())
    assert (failed["algorithm"] == "").all()
    ok = frame[frame["error"] == ""]
    probs = ok[cfg.classes].to_numpy(dtype=float)
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-4)
    assert (ok["algorithm"].astype(int).to_numpy() == probs.argmax(1)).all()
    with zipfile.ZipFile(root / "out" / "answer.zip") as archive:
        lines = archive.read("answer.txt").decode().splitlines()
    assert len(lines) == len(frame) and lines[0].split(",")[0] == frame["track"][0]
    unknown = cfg.classes.index("unknown")
    assert f"{bad['empty'].name},{unknown}" in lines
    printed = capsys.readouterr()
    assert "3 failed" in printed.out and "empty file" in printed.err


def test_strict_exits_nonzero(workspace):
    root, _, _, _ = workspace
    args = ["--model-dir", str(root / "supervised"), "--infer-path", str(root / "eval1"), "--output",
            str(root / "strict" / "pred.csv"), "--strict", "--no-zip", "--verbose", "0"]
    assert main_for("predict", args) == 1
    assert (root / "strict" / "pred.csv").is_file() and not (root / "strict" / "answer.zip").exists()


def test_refusals_name_both_sides(workspace, tmp_path, capsys):
    root, _, _, _ = workspace
    (tmp_path / "empty").mkdir()
    assert main_for("predict", ["--model-dir", str(tmp_path / "empty"), "--infer-path", str(root / "eval2")]) == 2
    assert str(tmp_path / "empty") in capsys.readouterr().err
    save_run(tmp_path / "mixed" / "abc", tiny_cfg(("a", "b", "c")))
    save_run(tmp_path / "mixed" / "xyz", tiny_cfg(("x", "y", "z")))
    assert main_for("predict", ["--model-dir", str(tmp_path / "mixed"), "--infer-path", str(root / "eval2"),
                                "--output", str(tmp_path / "p.csv")]) == 2
    err = capsys.readouterr().err
    assert "['a', 'b', 'c']" in err and "['x', 'y', 'z']" in err
    assert not (tmp_path / "p.csv").exists()


def test_pseudo_rounds_and_evaluate(workspace, tmp_path):
    root, cfg, good, _ = workspace
    pseudo = tmp_path / "pseudo.csv"
    args = ["--model-dir", str(root / "supervised"), "--infer-path", str(root / "eval1"), "--infer-path",
            str(root / "eval2"), "--output", str(pseudo), "--threshold", "0", "--verbose", "0"]
    assert main_for("pseudo", args) == 0
    frame = pd.read_csv(pseudo)
    assert frame.columns.tolist() == ["path", "track", *cfg.classes, "confidence", "part"]
    assert len(frame) == len(good) and sorted(frame["part"].unique()) == [1, 2]
    assert len(read_pseudo_csv(pseudo, cfg.classes)) == len(good)
    # a second round from one (semi-supervised style) run dir, with the reference's part flags and a cap
    run_dir = root / "supervised" / "cnn4-32x64"
    args = ["--part1-model-dir", str(run_dir), "--part1-infer-path", str(root / "eval1"), "--part2-model-dir",
            str(run_dir), "--part2-infer-path", str(root / "eval2"), "--output", str(tmp_path / "round2"),
            "--threshold", "0", "--cap-per-class", "1", "--verbose", "0"]
    assert main_for("pseudo", args) == 0
    round2 = pd.read_csv(tmp_path / "round2" / "pseudo.csv")
    cells = list(zip(round2["part"], round2[cfg.classes].to_numpy().argmax(1)))
    assert len(cells) == len(set(cells)) and set(round2["part"]) == {1, 2}  # at most one per class in each part

    pred = tmp_path / "pred.csv"
    assert main_for("predict", ["--model-dir", str(run_dir), "--infer-path", str(root / "eval2"), "--output",
                                str(pred), "--probs", "--verbose", "0"]) == 0
    labels = pd.read_csv(pred)[["track"]].assign(label=cfg.classes[0])
    labels.to_csv(tmp_path / "labels.csv", index=False)
    assert main_for("evaluate", ["--pred", str(pred), "--labels", str(tmp_path / "labels.csv"),
                                 "--out", str(tmp_path / "eval")]) == 0
    assert (tmp_path / "eval" / "report.json").is_file() and (tmp_path / "eval" / "confusion_matrix.png").is_file()


def _predict_args(root, out, *extra):
    return ["--model-dir", str(root / "supervised"), "--infer-path", str(root / "eval1"), "--infer-path",
            str(root / "eval2"), "--output", str(out), "--probs", "--no-open-set", "--verbose", "0", *extra]


def test_tta_probabilities_equal_the_ensemble_and_evaluate_counts_hits(workspace, tmp_path):
    root, cfg, good, _ = workspace
    clips = [p for p in good if p.parent.name == "eval1"]  # unique track names
    out = tmp_path / "pred.csv"
    args = ["--model-dir", str(root / "supervised"), "--infer-path", str(root / "eval1"), "--output", str(out),
            "--probs", "--no-open-set", "--tta", "2", "--verbose", "0"]
    assert main_for("predict", args) == 0
    frame = pd.read_csv(out, keep_default_na=False).set_index("track")
    expected = Ensemble(root / "supervised", tta=2).predict(clips, progress=False).probs
    written = frame.loc[[p.name for p in clips], cfg.classes].to_numpy(dtype=float)
    np.testing.assert_allclose(written, expected, atol=1e-6)
    assert (frame.loc[[p.name for p in clips], "algorithm"].astype(int) == expected.argmax(1)).all()

    # labels: the predicted class for every other clip, another class for the rest
    predicted = frame.loc[[p.name for p in clips], "algorithm"].astype(int)
    labels = [cfg.classes[a if i % 2 == 0 else (a + 1) % len(cfg.classes)] for i, a in enumerate(predicted)]
    pd.DataFrame({"track": predicted.index, "label": labels}).to_csv(tmp_path / "labels.csv", index=False)
    assert main_for("evaluate", ["--pred", str(out), "--labels", str(tmp_path / "labels.csv"),
                                 "--out", str(tmp_path / "eval")]) == 0
    report = json.loads((tmp_path / "eval" / "report.json").read_text())
    pred_csv, labels_csv = pd.read_csv(out, keep_default_na=False), pd.read_csv(tmp_path / "labels.csv")
    joined = pred_csv[pred_csv["algorithm"] != ""].merge(labels_csv, on="track")
    hits = sum(cfg.classes[int(a)] == label for a, label in zip(joined["algorithm"], joined["label"]))
    assert len(joined) == len(clips) and hits == (len(clips) + 1) // 2
    assert report["acc"] == pytest.approx(hits / len(joined))


def test_interrupted_run_resumes_to_the_uninterrupted_result(workspace, tmp_path, monkeypatch, capsys):
    root, _, good, bad = workspace
    reference = tmp_path / "reference" / "pred.csv"
    assert main_for("predict", _predict_args(root, reference, "--tta", "2")) == 0

    out = tmp_path / "run" / "pred.csv"
    partial = out.with_name("pred.csv.partial")
    scored = []
    original = Ensemble.predict

    def predict_then_die(self, paths, progress=True):
        if scored:
            raise KeyboardInterrupt  # the second chunk never finishes
        scored.append(len(paths))
        return original(self, paths, progress)

    monkeypatch.setattr(Ensemble, "predict", predict_then_die)
    with pytest.raises(KeyboardInterrupt):
        main_for("predict", _predict_args(root, out, "--tta", "2", "--save-every", "4"))
    assert not out.exists() and partial.is_file()
    rows = partial.read_text().splitlines()
    assert len(rows) == 2 + 4 and rows[0].startswith("# voxtrace predict ")
    with partial.open("a") as fh:
        fh.write(f"{good[-1]},0.5,0.2")  # a row cut short by a kill
    monkeypatch.setattr(Ensemble, "predict", original)

    capsys.readouterr()
    assert main_for("predict", _predict_args(root, out, "--tta", "2")) == 2  # no silent restart over it
    assert "--resume" in capsys.readouterr().err and partial.is_file()
    assert main_for("predict", _predict_args(root, out, "--tta", "3", "--resume")) == 2
    assert "tta: 2 there, 3 now" in capsys.readouterr().err

    resumed = []
    monkeypatch.setattr(Ensemble, "predict", lambda self, paths, progress=True: resumed.extend(paths)
                        or original(self, paths, progress))
    assert main_for("predict", _predict_args(root, out, "--tta", "2", "--resume")) == 0
    assert len(resumed) == len(good) + len(bad) - 4
    assert out.read_bytes() == reference.read_bytes()
    assert (out.parent / "answer.zip").is_file() and not partial.exists()


@pytest.mark.slow
def test_killed_subprocess_resumes(workspace, tmp_path):
    """SIGKILL a `predict.py` process once it has saved rows; --resume completes it to the same CSV."""
    root, _, good, bad = workspace
    reference = tmp_path / "reference" / "pred.csv"
    assert main_for("predict", _predict_args(root, reference)) == 0
    out = tmp_path / "run" / "pred.csv"
    partial = out.with_name("pred.csv.partial")
    proc = subprocess.Popen([sys.executable, "predict.py", *_predict_args(root, out, "--save-every", "1")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            if partial.is_file() and len(partial.read_bytes().splitlines()) >= 2 + 2:
                break
            time.sleep(0.05)
        assert proc.poll() is None, "predict.py finished before it could be killed"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    kept = len(partial.read_bytes().splitlines()) - 2
    assert 2 <= kept < len(good) + len(bad) and not out.exists()
    assert main_for("predict", _predict_args(root, out, "--resume")) == 0
    assert out.read_bytes() == reference.read_bytes()
