"""Metrics on hand-checkable cases, EER, confusion PNG, and the evaluate report."""

import json

import numpy as np
import pandas as pd
import pytest

from voxtrace.evaluation.metrics import classification_scores, equal_error_rate, per_class_report
from voxtrace.evaluation.plots import plot_confusion_matrix
from voxtrace.evaluation.reports import evaluate_files, perturbation_names

CLASSES = ["a", "b", "c"]


def test_known_scores():
    # true a a b b c c ; predicted a b b b c a
    y_true = [0, 0, 1, 1, 2, 2]
    probs = np.eye(3)[[0, 1, 1, 1, 2, 0]] * 0.8 + 0.2 / 3
    scores = classification_scores(y_true, probs, CLASSES)
    assert scores["acc"] == pytest.approx(4 / 6)
    # precision a=1/2 b=2/3 c=1 ; recall a=1/2 b=1 c=1/2 ; f1 a=1/2 b=4/5 c=2/3
    assert scores["precision"] == pytest.approx((1 / 2 + 2 / 3 + 1) / 3)
    assert scores["recall"] == pytest.approx((1 / 2 + 1 + 1 / 2) / 3)
    assert scores["f1"] == pytest.approx((1 / 2 + 4 / 5 + 2 / 3) / 3)
    report = per_class_report(y_true, probs.argmax(1), CLASSES)
    assert report["f1"].tolist()[:3] == pytest.approx([1 / 2, 4 / 5, 2 / 3])
    assert report["support"].tolist() == [2, 2, 2, 6]


def test_auc_perfect_and_absent_class():
    probs = np.array([[0.8, 0.1, 0.1], [0.1, 0.8, 0.1], [0.7, 0.2, 0.1], [0.2, 0.7, 0.1]])
    scores = classification_scores([0, 1, 0, 1], probs, CLASSES)  # class c absent
    assert scores["auc"] == pytest.approx(1.0)
    single = classification_scores([0, 0], probs[:2], CLASSES)
    assert np.isnan(single["auc"])
    failed = probs.copy()
    failed[1] = np.nan
    assert classification_scores([0, 1, 0, 1], failed, CLASSES)["acc"] == pytest.approx(1.0)


def test_eer_toy_case():
    # bona fide scores 0.9 0.8 0.3, spoof 0.7 0.2 0.1: at 0.7 one of three misses and one of three false alarms
    eer, threshold = equal_error_rate([1, 1, 1, 0, 0, 0], [0.9, 0.8, 0.3, 0.7, 0.2, 0.1])
    assert eer == pytest.approx(1 / 3)
    assert threshold == pytest.approx(0.7)
    assert equal_error_rate([1, 1, 0, 0], [0.9, 0.8, 0.2, 0.1])[0] == pytest.approx(0.0)


def test_confusion_png_written(tmp_path):
    counts = plot_confusion_matrix([0, 0, 1, 2], [0, 1, 1, 2], CLASSES, tmp_path / "cm.png", title="t")
    assert counts.tolist() == [[1, 1, 0], [0, 1, 0], [0, 0, 1]]
    assert (tmp_path / "cm.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_perturbation_names():
    assert perturbation_names("noise:15dB+mp3") == ["mp3", "noise"]
    assert perturbation_names("reverb(rt60=0.66s)+noise(white,10.6dB)+mp3(8kbps)") == ["mp3", "noise", "reverb"]
    assert perturbation_names("") == ["clean"] and perturbation_names(np.nan) == ["clean"]


def test_evaluate_files_report(tmp_path):
    pred = pd.DataFrame({"track": ["t1", "t2", "t3", "t4", "t5", "extra"], "algorithm": [0, 1, 1, 2, None, 0],
                         "error": ["", "", "", "", "empty file", ""]})
    pred.to_csv(tmp_path / "pred.csv", index=False)
    pd.DataFrame({"track": ["t1", "t2", "t3", "t4", "t5", "nopred"],
                  "label": ["a", "b", "a", "c", "a", "b"]}).to_csv(tmp_path / "labels.csv", index=False)
    pd.DataFrame({"track": ["t1", "t2", "t3", "t4"],
                  "perturbations": ["", "noise:20dB", "noise:10dB+mp3", "mp3"]}).to_csv(
        tmp_path / "meta.csv", index=False)
    report = evaluate_files(tmp_path / "pred.csv", tmp_path / "labels.csv", tmp_path / "meta.csv",
                            out_dir=tmp_path / "eval", classes=CLASSES)
    assert report["n_scored"] == 4 and report["n_failed"] == 1
    assert report["acc"] == pytest.approx(0.75)
    assert report["missing_labels"] == {"count": 1, "examples": ["extra"]}
    assert report["missing_predictions"] == {"count": 1, "examples": ["nopred"]}
    assert report["per_perturbation"]["noise"]["n"] == 2 and report["per_perturbation"]["noise"]["acc"] == 0.5
    assert report["per_perturbation"]["mp3"]["acc"] == 0.5 and report["per_perturbation"]["clean"]["acc"] == 1.0
    saved = json.loads((tmp_path / "eval" / "report.json").read_text())
    assert saved["acc"] == pytest.approx(0.75) and saved["auc"] is None  # no probability columns
    for name in ("per_class.csv", "per_perturbation.csv", "confusion_matrix.png"):
        assert (tmp_path / "eval" / name).is_file()


def test_evaluate_detect_task_eer(tmp_path):
    pd.DataFrame({"track": ["x1", "x2", "x3", "x4"], "algorithm": [0, 0, 1, 1],
                  "bonafide": [0.9, 0.6, 0.4, 0.1], "spoof": [0.1, 0.4, 0.6, 0.9]}).to_csv(
        tmp_path / "p.csv", index=False)
    pd.DataFrame({"track": ["x1", "x2", "x3", "x4"],
                  "label": ["bonafide", "spoof", "bonafide", "spoof"]}).to_csv(tmp_path / "l.csv", index=False)
    report = evaluate_files(tmp_path / "p.csv", tmp_path / "l.csv")
    assert report["classes"] == ["bonafide", "spoof"]
    assert report["eer"] == pytest.approx(0.5) and report["auc"] == pytest.approx(0.75)
