"""predict.py / generate_pseudo.py / voxtrace evaluate end to end on tiny saved `build_classifier` models."""

import zipfile

import numpy as np
import pandas as pd
import pytest

from fixtures_inference import save_run, tiny_cfg, write_bad_files, write_clips
from voxtrace.cli import main_for
from voxtrace.config import Config
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
