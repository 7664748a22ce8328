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


def mann_whitney_auc(positive_scores, negative_scores) -> float:
    """P(a positive outscores a negative), ties counting one half, by counting every pair."""
    pos, neg = np.asarray(positive_scores)[:, None], np.asarray(negative_scores)[None, :]
    return float(((pos > neg) + 0.5 * (pos == neg)).mean())


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_scores_equal_counts_from_the_confusion_matrix(seed):
    rng = np.random.default_rng(seed)
    classes = ["a", "b", "c", "d", "e"]  # "e" is never true nor predicted: left out of the macro averages
    y_true = rng.integers(0, 4, 60)
    probs = rng.dirichlet(np.ones(5), 60)
    probs[:, 4] = 0.0
    probs[y_true == 1, 1] += 0.5  # some skill, so the scores are not all near chance
    probs /= probs.sum(axis=1, keepdims=True)
    y_pred = probs.argmax(axis=1)
    counts = np.zeros((5, 5))
    np.add.at(counts, (y_true, y_pred), 1)
    tp, predicted, actual = np.diag(counts), counts.sum(axis=0), counts.sum(axis=1)
    present = (predicted + actual) > 0
    precision = np.divide(tp, predicted, out=np.zeros(5), where=predicted > 0)
    recall = np.divide(tp, actual, out=np.zeros(5), where=actual > 0)
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros(5), where=precision + recall > 0)
    pairs = [(j, k) for j in range(4) for k in range(4) if j != k]  # one-vs-one over the classes in the labels
    sub = probs[:, :4] / probs[:, :4].sum(axis=1, keepdims=True)
    auc = np.mean([mann_whitney_auc(sub[y_true == j, j], sub[y_true == k, j]) for j, k in pairs])

    scores = classification_scores(y_true, probs, classes)
    assert scores["acc"] == pytest.approx(tp.sum() / 60)
    assert scores["precision"] == pytest.approx(precision[present].mean())
    assert scores["recall"] == pytest.approx(recall[present].mean())
    assert scores["f1"] == pytest.approx(f1[present].mean())
    assert scores["auc"] == pytest.approx(auc)
    report = per_class_report(y_true, y_pred, classes)
    np.testing.assert_allclose(report["f1"][:5], f1)
    assert report["support"].tolist() == [*actual.astype(int), 60]
    assert report["predicted"].tolist()[:5] == predicted.astype(int).tolist()


def test_eer_of_two_gaussians_is_the_analytic_crossing():
    from scipy.stats import norm

    rng = np.random.default_rng(0)
    bonafide, spoof = rng.normal(2.0, 1.0, 20000), rng.normal(0.0, 1.0, 20000)
    eer, threshold = equal_error_rate(np.r_[np.ones(20000), np.zeros(20000)], np.r_[bonafide, spoof])
    # unit-variance classes two apart cross half-way: both error rates are Phi(-1) at the threshold 1
    assert eer == pytest.approx(norm.cdf(-1.0), abs=0.01)
    assert threshold == pytest.approx(1.0, abs=0.05)
    assert (bonafide < threshold).mean() == pytest.approx(eer, abs=1e-3)
    assert (spoof >= threshold).mean() == pytest.approx(eer, abs=1e-3)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_eer_is_where_misses_meet_false_alarms(seed):
    rng = np.random.default_rng(seed)
    n_pos, n_neg = rng.integers(5, 40, 2)
    scores = np.r_[rng.normal(1.0, 1.0, n_pos), rng.normal(0.0, 1.0, n_neg)]
    is_positive = np.r_[np.ones(n_pos, bool), np.zeros(n_neg, bool)]
    eer, threshold = equal_error_rate(is_positive, scores)
    cuts = np.r_[np.sort(scores), np.inf]
    miss = np.array([(scores[is_positive] < t).mean() for t in cuts])
    false_alarm = np.array([(scores[~is_positive] >= t).mean() for t in cuts])
    # the crossing lies between the best threshold's two error rates, within one clip's step of each
    best = int(np.argmin(np.maximum(miss, false_alarm)))
    step = 1.0 / min(n_pos, n_neg)
    assert min(miss[best], false_alarm[best]) - 1e-9 <= eer <= max(miss[best], false_alarm[best]) + 1e-9
    assert abs((scores[is_positive] < threshold).mean() - eer) <= step + 1e-9
    assert abs((scores[~is_positive] >= threshold).mean() - eer) <= step + 1e-9
