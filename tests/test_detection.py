"""Bona fide vs spoof: class balancing, the calibrated decision threshold and its use by `predict`."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fixtures_inference import save_run, tiny_cfg, write_clips
from voxtrace.config import Config, ConfigError
from voxtrace.detect_demo import choose_weights
from voxtrace.inference.decision import (decide, detection_figures, fit_threshold, load_or_fit_decision,
                                         read_decision)
from voxtrace.training.balance import balance_rows, epoch_summary

# spoof (positive) and bona fide scores: between 0.4 and 0.6 one spoof (0.3) is missed and one bona fide
# clip (0.7) is flagged, 1 of 4 on each side, so the EER is 0.25; the ROC reaches it at threshold 0.6
SPOOF = [0.3, 0.6, 0.8, 0.9]
BONAFIDE = [0.1, 0.2, 0.4, 0.7]


def _scores():
    return np.array([True] * 4 + [False] * 4), np.array(SPOOF + BONAFIDE)


def test_eer_threshold_is_the_hand_computed_point():
    is_spoof, scores = _scores()
    assert fit_threshold(is_spoof, scores, "eer") == pytest.approx(0.6)
    figures = detection_figures(is_spoof, scores, 0.6)
    assert figures["eer"] == pytest.approx(0.25)
    assert figures["false_acceptance"] == pytest.approx(0.25)  # spoof 0.3 accepted as bona fide
    assert figures["false_rejection"] == pytest.approx(0.25)  # bona fide 0.7 called spoof
    assert figures["acc"] == pytest.approx(6 / 8) == figures["acc_at_eer_threshold"]


def test_far_threshold_lets_at_most_the_target_share_of_spoofs_through():
    is_spoof, scores = _scores()
    assert fit_threshold(is_spoof, scores, "far", 0.0) == pytest.approx(0.3)  # every spoof flagged
    assert fit_threshold(is_spoof, scores, "far", 0.25) == pytest.approx(0.6)  # one of four below
    assert fit_threshold(is_spoof, scores, "far", 0.5) == pytest.approx(0.8)
    with pytest.raises(ValueError, match="both classes"):
        fit_threshold([True, True], [0.1, 0.2], "eer")


def test_decide_thresholds_the_positive_class_and_keeps_failed_rows():
    probs = np.array([[0.45, 0.55], [0.3, 0.7], [np.nan, np.nan], [0.9, 0.1]])
    decision = {"threshold": 0.6, "positive": "spoof"}
    assert decide(probs, decision, ["bonafide", "spoof"]).tolist() == [0, 1, -1, 0]  # argmax would say 1 for row 0


def test_balanced_epoch_counts():
    rows = pd.DataFrame({"path": [f"{i}.wav" for i in range(8)], "label": ["bonafide"] * 2 + ["spoof"] * 6})
    weighted = balance_rows(rows, "weights", seed=0)
    assert weighted["path"].tolist() == rows["path"].tolist()
    assert weighted["weight"].tolist() == pytest.approx([2.0] * 2 + [8 / 12] * 6)  # n / (k * n_class)
    assert epoch_summary(weighted["label"], weighted["weight"], "weights") == (
        "data.balance=weights: an epoch sees bonafide 2 clips (loss weight 4.0), spoof 6 clips (loss weight 4.0)")
    resampled = balance_rows(rows, "resample", seed=0)
    assert resampled["label"].value_counts().to_dict() == {"bonafide": 6, "spoof": 6}
    assert resampled["path"].value_counts().loc[["0.wav", "1.wav"]].tolist() == [3, 3]  # whole copies
    assert set(resampled["path"]) == set(rows["path"]) and (resampled["weight"] == 1).all()
    odd = pd.DataFrame({"path": [f"{i}.wav" for i in range(7)], "label": ["bonafide"] * 2 + ["spoof"] * 5})
    assert balance_rows(odd, "resample", seed=0)["label"].value_counts().to_dict() == {"bonafide": 5, "spoof": 5}
    for setting in (True, "undersample"):
        assert balance_rows(rows, setting, seed=0)["label"].value_counts().to_dict() == {"bonafide": 2, "spoof": 2}
    assert balance_rows(rows, False, seed=0)["weight"].tolist() == [1.0] * 8


def test_balance_and_decision_config_keys():
    detect = ["task=detect", "classes=[bonafide, spoof]", "unknown_class=null"]
    for value, expected in (("weights", "weights"), ("resample", "resample"), ("true", True), ("false", False)):
        assert Config.load(None, detect + [f"data.balance={value}"]).data.balance == expected
    with pytest.raises(ConfigError, match="data.balance"):
        Config.load(None, detect + ["data.balance=oversample"])
    with pytest.raises(ConfigError, match="infer.decision.rule"):
        Config.load(None, ["infer.decision.rule=eer"])  # six classes: no spoof score to threshold
    assert Config.load(None, detect + ["infer.decision.rule=far"]).infer.decision.target_far == 0.01


def test_member_weights_follow_the_out_of_fold_eer():
    is_spoof, scores = _scores()
    frame = pd.DataFrame({"path": [f"{i}.wav" for i in range(8)],
                          "label": np.where(is_spoof, "spoof", "bonafide")})
    noisy = frame.assign(spoof=scores, bonafide=1 - scores)
    clean = frame.assign(spoof=is_spoof * 0.8 + 0.1, bonafide=0.9 - is_spoof * 0.8)
    weights, table = choose_weights({"noisy": noisy, "clean": clean}, ["bonafide", "spoof"], "spoof", step=0.5)
    assert weights == {"noisy": 0.0, "clean": 1.0}
    assert len(table) == 3 and table["oof_eer"].iloc[0] == 0.0


def test_demo_stages_are_redone_when_their_inputs_change(tmp_path):
    """A finished stage is forgotten when the inputs recorded for it change (a member's resolved config, the
    checkpoints and weights a prediction used), and kept while they do not."""
    from voxtrace.detect_demo import renew_when_changed
    from voxtrace.recipes.stages import Stages

    stages = Stages(tmp_path)
    for name in ("predict-a", "evaluate-a", "train-x"):
        stages.mark(name, "voxtrace verb {}", 1)
    renew_when_changed(stages, "predict", {"fold-0.keras": 1}, ["predict-a", "evaluate-a"])  # first record: unknown
    assert not stages.done("predict-a") and not stages.done("evaluate-a") and stages.done("train-x")
    stages.mark("predict-a", "voxtrace verb {}", 1)
    renew_when_changed(stages, "predict", {"fold-0.keras": 1}, ["predict-a"])
    assert stages.done("predict-a")
    renew_when_changed(stages, "predict", {"fold-0.keras": 2}, ["predict-a"])
    assert not stages.done("predict-a")


def test_predict_labels_with_the_saved_threshold(tmp_path):
    from voxtrace.cli import main
    from voxtrace.inference.ensemble import Ensemble

    cfg = tiny_cfg(classes=("bonafide", "spoof")).replace(
        task="detect", unknown_class=None, infer__decision__rule="far", infer__decision__target_far=0.0)
    runs = tmp_path / "runs"
    save_run(runs / "A", cfg)
    clips = write_clips(tmp_path / "clips", n=6)
    spoof = Ensemble(runs).predict(clips, progress=False).probs[:, 1]
    threshold = float(np.median(spoof))  # half the clips on each side
    # out-of-fold scores whose lowest spoof score is the median: the `far` rule at 0 puts the threshold there
    oof = pd.DataFrame({"path": [f"/d/{i}.wav" for i in range(4)], "track": [f"{i}.wav" for i in range(4)],
                        "label": ["spoof", "spoof", "bonafide", "bonafide"], "fold": 0,
                        "bonafide": [1 - threshold, 0.0, 1.0, 1.0], "spoof": [threshold, 1.0, 0.0, 0.0]})
    (runs / "A" / "csv").mkdir()
    oof.to_csv(runs / "A" / "csv" / "oof.csv", index=False)

    out = tmp_path / "pred.csv"
    assert main(["predict", "--model-dir", str(runs), "--infer-path", str(tmp_path / "clips"), "--output", str(out),
                 "--probs", "--no-zip"]) == 0
    saved = read_decision(runs)
    assert saved["threshold"] == pytest.approx(threshold) and saved["rule"] == "far"
    pred = pd.read_csv(out)
    assert (pred["algorithm"] == (pred["spoof"] >= threshold).astype(int)).all()
    assert 0 < pred["algorithm"].sum() < len(pred)

    (runs / "A" / "csv" / "oof.csv").unlink()  # the saved decision is reused, not refitted
    assert load_or_fit_decision(Ensemble(runs), cfg.infer.decision)["threshold"] == saved["threshold"]

    labels = tmp_path / "labels.csv"
    pd.DataFrame({"track": pred["track"], "algorithm": [1, 0] * 3}).to_csv(labels, index=False)
    assert main(["evaluate", "--pred", str(out), "--labels", str(labels), "--decision", str(runs),
                 "--out", str(tmp_path / "report")]) == 0
    import json

    figures = json.loads((tmp_path / "report" / "detection.json").read_text())
    expected_acc = np.mean((pred["spoof"] >= threshold).astype(int).to_numpy() == np.array([1, 0] * 3))
    assert figures["acc"] == pytest.approx(expected_acc) and figures["threshold"] == pytest.approx(threshold)
    assert Path(figures["pred"]) == out
