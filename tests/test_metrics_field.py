"""The detection metrics of the field (minDCF, actDCF, CLLR, DET curves) against hand-computed values and
against the formulas of the ASVspoof 5 evaluation package, written out here independently."""

import math

import numpy as np
import pandas as pd
import pytest

from voxtrace.evaluation.metrics import (
    act_dcf,
    bayes_threshold,
    cllr,
    det_curve,
    equal_error_rate,
    llr_from_posterior,
    min_dcf,
)
from voxtrace.evaluation.reports import evaluate_frames, format_report

# bona fide (positive) scores 3, 2, 0.5 and spoof scores 1, -1, -2
LABELS = np.array([1, 1, 1, 0, 0, 0], dtype=bool)
SCORES = np.array([3.0, 2.0, 0.5, 1.0, -1.0, -2.0])


# ---- the ASVspoof 5 evaluation package's formulas (calculate_modules.py), restated ---------------------------
def asvspoof5_det(target, nontarget):
    """Miss and false-alarm rates after rejecting the k lowest scores, k = 0..n (its compute_det_curve)."""
    scores = np.concatenate([target, nontarget])
    is_target = np.concatenate([np.ones(len(target)), np.zeros(len(nontarget))])
    order = np.argsort(scores, kind="mergesort")
    rejected_targets = np.cumsum(is_target[order])
    n = np.arange(1, len(scores) + 1)
    frr = np.concatenate([[0.0], rejected_targets / len(target)])
    far = np.concatenate([[1.0], (len(nontarget) - (n - rejected_targets)) / len(nontarget)])
    return frr, far


def asvspoof5_min_dcf(target, nontarget, p_spoof=0.05, c_miss=1.0, c_fa=10.0):
    frr, far = asvspoof5_det(target, nontarget)
    p_target = 1.0 - p_spoof
    best = min(c_miss * frr[i] * p_target + c_fa * far[i] * (1.0 - p_target) for i in range(len(frr)))
    return best / min(c_miss * p_target, c_fa * (1.0 - p_target))


def asvspoof5_act_dcf(target, nontarget, p_spoof=0.05, c_miss=1.0, c_fa=10.0):
    beta = c_miss * (1.0 - p_spoof) / (c_fa * p_spoof)
    threshold = -math.log(beta)
    rate_miss = np.sum(target < threshold) / target.size
    rate_fa = np.sum(nontarget >= threshold) / nontarget.size
    cost = c_miss * (1.0 - p_spoof) * rate_miss + c_fa * p_spoof * rate_fa
    return cost / min(c_fa * p_spoof, c_miss * (1.0 - p_spoof))


def asvspoof5_cllr(target, nontarget):
    def neg_log_sigmoid(x):
        return np.log1p(np.exp(-x))

    return 0.5 * (np.mean(neg_log_sigmoid(target)) + np.mean(neg_log_sigmoid(-nontarget))) / math.log(2)


# ---- hand-computed -----------------------------------------------------------------------------------------
def test_det_curve_by_hand():
    miss, false_alarm, thresholds = det_curve(LABELS, SCORES)
    np.testing.assert_allclose(thresholds, [-2, -1, 0.5, 1, 2, 3, np.inf])
    np.testing.assert_allclose(miss, [0, 0, 0, 1 / 3, 1 / 3, 2 / 3, 1])
    np.testing.assert_allclose(false_alarm, [1, 2 / 3, 1 / 3, 1 / 3, 0, 0, 0])


def test_det_curve_ties_move_together():
    miss, false_alarm, thresholds = det_curve([1, 0, 1, 0], [0.5, 0.5, 0.9, 0.1])
    np.testing.assert_allclose(thresholds, [0.1, 0.5, 0.9, np.inf])
    np.testing.assert_allclose(miss, [0, 0, 0.5, 1])
    np.testing.assert_allclose(false_alarm, [1, 0.5, 0, 0])


def test_min_dcf_by_hand():
    # costs 0.95 * miss + 0.5 * false alarm over the curve's points; the lowest, 0.5 / 3 at (0, 1/3), over
    # min(0.95, 0.5) = 0.5
    assert min_dcf(LABELS, SCORES) == pytest.approx(1 / 3)
    # equal priors and costs: min over (miss + fa) / 2 / 0.5 = 1/3 at (0, 1/3) or (1/3, 0)
    assert min_dcf(LABELS, SCORES, p_target=0.5, c_miss=1, c_fa=1) == pytest.approx(1 / 3)
    assert min_dcf([1, 1, 0, 0], [0.9, 0.8, 0.2, 0.1]) == 0.0
    assert math.isnan(min_dcf([1, 1], [0.2, 0.4]))


def test_act_dcf_by_hand():
    assert bayes_threshold() == pytest.approx(math.log(0.5 / 0.95))  # -0.6419
    # threshold -0.642: no bona fide below it, one spoof of three (score 1) at or above: 10 * 0.05 / 3 / 0.5
    assert act_dcf(LABELS, SCORES) == pytest.approx(1 / 3)
    # shifting every score by +1 leaves minDCF and lets two spoofs (2, 0) through: 0.5 * 2/3 / 0.5; by +2 all three
    assert act_dcf(LABELS, SCORES + 1) == pytest.approx(2 / 3)
    assert act_dcf(LABELS, SCORES + 2) == pytest.approx(1.0)
    assert min_dcf(LABELS, SCORES + 1) == pytest.approx(min_dcf(LABELS, SCORES))


def test_cllr_by_hand():
    assert cllr([1, 0], [0.0, 0.0]) == pytest.approx(1.0)  # llr 0 everywhere: one bit
    # llr ln 3 for the bona fide and -ln 3 for the spoof: log2(1 + 1/3) each
    assert cllr([1, 0], [math.log(3), -math.log(3)]) == pytest.approx(math.log2(4 / 3))
    assert cllr([1, 0], [50.0, -50.0]) == pytest.approx(0.0, abs=1e-20)
    assert math.isnan(cllr([0, 0], [1.0, 2.0]))


def test_llr_from_posterior():
    np.testing.assert_allclose(llr_from_posterior([0.75, 0.5, 0.2]), [math.log(3), 0.0, math.log(0.25)])
    assert llr_from_posterior([0.5], prior=0.2)[0] == pytest.approx(-math.log(0.25))
    assert np.isfinite(llr_from_posterior([0.0, 1.0])).all()


# ---- against the ASVspoof 5 package's formulas ---------------------------------------------------------------
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_against_asvspoof5_formulas(seed):
    rng = np.random.default_rng(seed)
    target, nontarget = rng.normal(1.5, 1.2, 300), rng.normal(-1.0, 1.5, 700)
    labels = np.r_[np.ones(300, bool), np.zeros(700, bool)]
    scores = np.r_[target, nontarget]
    assert min_dcf(labels, scores) == pytest.approx(asvspoof5_min_dcf(target, nontarget), abs=1e-12)
    assert min_dcf(labels, scores, 0.5, 1, 1) == pytest.approx(asvspoof5_min_dcf(target, nontarget, 0.5, 1, 1))
    assert act_dcf(labels, scores) == pytest.approx(asvspoof5_act_dcf(target, nontarget), abs=1e-12)
    assert cllr(labels, scores) == pytest.approx(asvspoof5_cllr(target, nontarget), rel=1e-12)
    frr, far = asvspoof5_det(target, nontarget)  # distinct scores: the same curve point by point
    miss, false_alarm, _ = det_curve(labels, scores)
    np.testing.assert_allclose(miss, frr)
    np.testing.assert_allclose(false_alarm, far)
    eer, _ = equal_error_rate(labels, scores)
    assert np.min(np.abs(miss - false_alarm)) <= 1.0 / 300 and min(frr.max(), 1) >= eer >= 0


# ---- the report of the detect task ---------------------------------------------------------------------------
def test_detect_report_has_the_field_metrics_and_per_attack_eer():
    tracks = [f"t{i}.flac" for i in range(8)]
    p_bona = np.array([0.9, 0.8, 0.6, 0.3, 0.7, 0.2, 0.1, 0.4])
    labels = ["bonafide"] * 4 + ["spoof"] * 4
    pred = pd.DataFrame({"track": tracks, "algorithm": (p_bona < 0.5).astype(int), "bonafide": p_bona,
                         "spoof": 1 - p_bona})
    meta = pd.DataFrame({"track": tracks, "attack": ["bonafide"] * 4 + ["A07", "A07", "A08", "A08"],
                         "codec": ["none", "alaw", "none", "alaw", "none", "alaw", "none", "alaw"]})
    report, tables, _, _ = evaluate_frames(pred, pd.DataFrame({"track": tracks, "label": labels}),
                                           ["bonafide", "spoof"], meta, unknown_class=None)
    is_bona = np.array(labels) == "bonafide"
    llrs = np.log(p_bona / (1 - p_bona))
    assert report["eer"] == pytest.approx(equal_error_rate(is_bona, p_bona)[0])
    assert report["min_dcf"] == pytest.approx(asvspoof5_min_dcf(p_bona[is_bona], p_bona[~is_bona]))
    assert report["act_dcf"] == pytest.approx(asvspoof5_act_dcf(llrs[is_bona], llrs[~is_bona]))
    assert report["cllr"] == pytest.approx(asvspoof5_cllr(llrs[is_bona], llrs[~is_bona]))
    # A07 (0.7, 0.2) against every bona fide clip; A08 (0.1, 0.4) likewise; a codec on its own clips
    a07 = is_bona | np.isin(np.arange(8), [4, 5])
    assert report["per_attack"]["A07"]["eer"] == pytest.approx(equal_error_rate(is_bona[a07], p_bona[a07])[0])
    # A08: spoofs 0.1 and 0.4 against bona fide 0.9, 0.8, 0.6, 0.3: above 0.4 the bona fide 0.3 is missed
    # (miss 1/4, false alarm 0), at 0.3 the spoof 0.4 passes (miss 0, false alarm 1/2); the ROC crosses at 1/4
    assert report["per_attack"]["A08"]["eer"] == pytest.approx(0.25)
    alaw = np.arange(8) % 2 == 1
    assert report["per_codec"]["alaw"]["eer"] == pytest.approx(equal_error_rate(is_bona[alaw], p_bona[alaw])[0])
    assert report["per_attack"]["bonafide"]["n"] == 4
    assert set(tables) >= {"per_attack", "per_codec", "det_curve", "per_class"}
    text = format_report(report)
    assert "min_dcf" in text and "cllr" in text and "| A07 |" in text
