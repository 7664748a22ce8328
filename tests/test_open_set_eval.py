"""Open-set evaluation: unknown-class figures of `voxtrace evaluate` against hand counts (sklearn as the AUROC
reference), and the open-set scores (maxprob, energy, kNN, Mahalanobis) on synthetic embeddings."""

import json

import numpy as np
import pandas as pd
import pytest
from fixtures_inference import write_clips
from scipy.spatial.distance import cdist, mahalanobis
from sklearn.metrics import roc_auc_score

from voxtrace.cli import main
from voxtrace.config import ATTRIBUTION_CLASSES, Config
from voxtrace.evaluation.metrics import detection_auroc, fpr_at_tpr
from voxtrace.evaluation.reports import evaluate_files

def _benchmark_module(name: str):
    """A module of benchmarks/, loaded from its file."""
    import importlib.util
    import sys
    from pathlib import Path

    folder = Path(__file__).parents[1] / "benchmarks"
    sys.path.insert(0, str(folder))
    spec = importlib.util.spec_from_file_location(name, folder / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_scores = _benchmark_module("open_set_scores")
calibrate_rejection = _scores.calibrate_rejection
checkpoint_features = _scores.checkpoint_features
compare_open_set_scores = _scores.compare_open_set_scores
fit_embedding_reference = _scores.fit_embedding_reference
knn_confidence = _scores.knn_confidence
mahalanobis_confidence = _scores.mahalanobis_confidence
open_set_confidences = _scores.open_set_confidences

CLASSES = list(ATTRIBUTION_CLASSES)  # espeak clustergen diphone hts vits unknown
U = CLASSES.index("unknown")

# track, true, predicted, P(unknown), top known probability (at `predicted`, else at `true` when it is known),
# detect_id, engine, perturbations, speaker
CLIPS = [
    ("t0", 0, 0, 0.05, 0.90, 1, "espeak", "", "espeak/en"),
    ("t1", 1, 1, 0.30, 0.60, 1, "flite", "speex(8kbps)+clip(0.3)", "flite/slt"),
    ("t2", 2, 5, 0.60, 0.15, 1, "festival", "clip(0.5)", "festival/kal"),
    ("t3", 4, 4, 0.10, 0.85, 1, "piper", "speex(6kbps)", "piper/amy"),
    ("t4", 5, 5, 0.80, 0.15, 0, "human", "", "human/spk1"),
    ("t5", 5, 0, 0.20, 0.70, 0, "human", "clip(0.2)", "human/spk2"),
    ("t6", 5, 5, 0.90, 0.05, 1, "world", "", "world/x"),
    ("t7", 5, 3, 0.40, 0.50, 1, "world", "speex(8kbps)", "world/x"),
    ("t8", 5, 5, 0.70, 0.20, 1, "codec2", "", "codec2/y"),
    ("t9", 3, 3, 0.05, 0.90, 1, "festival", "", "festival/hts1"),
]
TRAIN_SPEAKERS = ["espeak/en", "festival/kal", "human/spk2", "festival/hts1"]


def _probs(true, pred, p_unknown, top_known):
    row = np.zeros(len(CLASSES))
    top = pred if pred != U else true if true != U else 0
    others = [c for c in range(U) if c != top]
    row[others] = (1.0 - p_unknown - top_known) / len(others)
    row[top], row[U] = top_known, p_unknown
    return row


def _write_frames(folder, with_probs=True):
    pred = pd.DataFrame({"track": [c[0] for c in CLIPS] + ["t10"], "algorithm": [c[2] for c in CLIPS] + [-1]})
    if with_probs:
        probs = np.vstack([_probs(*c[1:5]) for c in CLIPS] + [np.full(len(CLASSES), np.nan)])
        pred[CLASSES] = probs
    pred.to_csv(folder / "pred.csv", index=False)
    pd.DataFrame({"track": [c[0] for c in CLIPS] + ["t10"], "algorithm": [c[1] for c in CLIPS] + [U]}).to_csv(
        folder / "labels.csv", index=False)
    meta = pd.DataFrame({
        "track": [c[0] for c in CLIPS], "split": "eval_part3", "class_id": [c[1] for c in CLIPS],
        "engine": [c[6] for c in CLIPS], "detect_id": [c[5] for c in CLIPS],
        "perturbations": [c[7] for c in CLIPS], "speaker": [c[8] for c in CLIPS],
    })
    train = pd.DataFrame({"track": [f"tr{i}" for i in range(4)], "split": "train", "class_id": [0, 2, 5, 3],
                          "engine": ["espeak", "festival", "human", "festival"], "detect_id": [1, 1, 0, 1],
                          "perturbations": "", "speaker": TRAIN_SPEAKERS})
    pd.concat([train, meta]).to_csv(folder / "metadata.csv", index=False)


def test_detection_auroc_matches_sklearn_and_hand_count():
    # 3 positives x 2 negatives: 0.9 beats both, 0.5 beats 0.2 and ties 0.5, 0.1 beats none -> 3.5 / 6
    assert detection_auroc([1, 1, 1, 0, 0], [0.9, 0.5, 0.1, 0.5, 0.2]) == pytest.approx(3.5 / 6)
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 200)
    scores = np.round(rng.normal(labels * 0.7, 1.0), 1)  # rounding makes ties
    assert detection_auroc(labels, scores) == pytest.approx(roc_auc_score(labels, scores))
    assert np.isnan(detection_auroc([1, 1], [0.2, 0.3]))
    with_nan = np.append(scores, np.nan)
    assert detection_auroc(np.append(labels, 1), with_nan) == pytest.approx(roc_auc_score(labels, scores))


def test_fpr_at_95_tpr_hand_count():
    # 20 positives scored 1..20: 95 % of them is 19, so the threshold is 2 (19 score >= 2);
    # negatives 0.5, 1.5, 2, 3, 25: three of five score >= 2
    positives = np.arange(1, 21, dtype=float)
    negatives = np.array([0.5, 1.5, 2.0, 3.0, 25.0])
    is_positive = np.r_[np.ones(20), np.zeros(5)]
    assert fpr_at_tpr(is_positive, np.r_[positives, negatives], 0.95) == pytest.approx(3 / 5)
    # at 100 % the threshold drops to 1: four of five negatives score >= 1
    assert fpr_at_tpr(is_positive, np.r_[positives, negatives], 1.0) == pytest.approx(4 / 5)
    with pytest.raises(ValueError, match="tpr"):
        fpr_at_tpr(is_positive, np.r_[positives, negatives], 0.0)


def test_evaluate_reports_open_set_figures(tmp_path):
    _write_frames(tmp_path)
    report = evaluate_files(tmp_path / "pred.csv", tmp_path / "labels.csv", tmp_path / "metadata.csv",
                            out_dir=tmp_path / "eval")
    assert report["n_scored"] == 10 and report["n_failed"] == 1
    assert report["acc"] == pytest.approx(7 / 10)
    section = report["open_set"]
    # true unknown t4..t8, predicted unknown t2 t4 t6 t8: precision 3/4, recall 3/5, F1 2/3
    assert section["n_unknown"] == 5 and section["n_known"] == 5
    assert section["unknown_precision"] == pytest.approx(3 / 4)
    assert section["unknown_recall"] == pytest.approx(3 / 5)
    assert section["unknown_f1"] == pytest.approx(2 / 3)
    assert section["unknown_recall_by_origin"] == {"human": {"n": 2, "recall": 0.5},
                                                   "synthetic": {"n": 3, "recall": pytest.approx(2 / 3)}}
    assert section["unknown_recall_by_engine"] == {"codec2": {"n": 1, "recall": 1.0},
                                                   "human": {"n": 2, "recall": 0.5},
                                                   "world": {"n": 2, "recall": 0.5}}
    # P(unknown): positives .8 .2 .9 .4 .7, negatives .05 .3 .6 .1 .05 -> 22 of 25 pairs ordered right
    is_unknown = [c[1] == U for c in CLIPS]
    p_unknown = [c[3] for c in CLIPS]
    assert section["score"] == "unknown_prob"
    assert section["auroc"] == pytest.approx(22 / 25)
    assert section["auroc"] == pytest.approx(roc_auc_score(is_unknown, p_unknown))
    # every positive flagged at threshold .2: negatives .3 and .6 are flagged too
    assert section["fpr_at_95_tpr"] == pytest.approx(2 / 5)
    # channel families: clean t0 t4 t6 t8 t9 all right; speex t1 t3 (right) t7; clip t1 (right) t2 t5
    families = report["per_perturbation"]
    assert {k: (v["n"], v["acc"]) for k, v in families.items()} == {
        "clean": (5, 1.0), "clip": (3, pytest.approx(1 / 3)), "speex": (3, pytest.approx(2 / 3))}
    # voices seen in training: t0 t2 t5 t9 (2 right); held out: t1 t3 t4 t6 t7 t8 (5 right)
    assert {k: (v["n"], v["acc"]) for k, v in report["per_voice"].items()} == {
        "seen": (4, 0.5), "held_out": (6, pytest.approx(5 / 6))}
    saved = json.loads((tmp_path / "eval" / "report.json").read_text())
    assert saved["open_set"]["auroc"] == pytest.approx(22 / 25)
    markdown = (tmp_path / "eval" / "report.md").read_text()
    assert "| 0.7500 | 0.6000 | 0.6667 | 0.8800 | 0.4000 |" in markdown  # unknown P, R, F1, AUROC, FPR@95TPR
    assert "| engine: world | 2 | 0.5000 |" in markdown and "| origin: human | 2 | 0.5000 |" in markdown
    assert "| clip | 3 | 0.3333 |" in markdown and "| held_out | 6 | 0.8333 |" in markdown
    assert pd.read_csv(tmp_path / "eval" / "per_voice.csv")["voice"].tolist() == ["seen", "held_out"]


def test_evaluate_cli_maxprob_score_and_refusal(tmp_path, capsys):
    _write_frames(tmp_path)
    args = ["evaluate", "--pred", str(tmp_path / "pred.csv"), "--labels", str(tmp_path / "labels.csv"),
            "--metadata", str(tmp_path / "metadata.csv"), "--out", str(tmp_path / "eval")]
    assert main(args + ["--unknown-score", "maxprob"]) == 0
    section = json.loads((tmp_path / "eval" / "report.json").read_text())["open_set"]
    # 1 - top known: positives .85 .3 .95 .5 .8, negatives .1 .4 .85 .15 .1 -> 20.5 of 25 (one tie)
    scores = [1 - c[4] for c in CLIPS]
    assert section["score"] == "maxprob"
    assert section["auroc"] == pytest.approx(20.5 / 25)
    assert section["auroc"] == pytest.approx(roc_auc_score([c[1] == U for c in CLIPS], scores))
    assert section["fpr_at_95_tpr"] == pytest.approx(2 / 5)  # threshold .3: negatives .4 and .85
    assert "open set (unknown: 5 clips, known: 5)" in capsys.readouterr().out
    assert main(args + ["--unknown-score", "energy"]) == 2
    assert "unknown_score must be one of ['unknown_prob', 'maxprob']" in capsys.readouterr().err


def test_evaluate_without_probabilities_notes_the_omission(tmp_path):
    _write_frames(tmp_path, with_probs=False)
    report = evaluate_files(tmp_path / "pred.csv", tmp_path / "labels.csv", out_dir=tmp_path / "eval",
                            classes=CLASSES)
    section = report["open_set"]
    assert "auroc" not in section and section["unknown_f1"] == pytest.approx(2 / 3)
    assert any("--probs" in note for note in section["notes"])
    assert any("detect_id" in note for note in section["notes"])
    assert "per_voice" not in report


# ---- open-set scores on synthetic embeddings ------------------------------------------------------------------
def _clusters(rng, n, centre, spread=0.3):
    return centre + spread * rng.standard_normal((n, len(centre)))


@pytest.fixture(scope="module")
def synthetic():
    """Classes a, b around orthogonal centres; unknown clips from a third centre, confidently called `a`."""
    rng = np.random.default_rng(1)
    classes = ["a", "b", "unknown"]
    centre = 3.0 * np.eye(8)

    def part(n_known, n_unknown):
        x = np.vstack([_clusters(rng, n_known, centre[0]), _clusters(rng, n_known, centre[1]),
                       _clusters(rng, n_unknown, centre[2])])
        labels = np.r_[np.zeros(n_known), np.ones(n_known), np.full(n_unknown, 2)].astype(int)
        probs = np.tile([0.9, 0.05, 0.05], (len(x), 1))
        probs[labels == 1] = [0.05, 0.9, 0.05]
        return {"embeddings": x, "probs": probs, "labels": labels}

    return classes, part(100, 30), part(60, 0), part(50, 50)


def test_embedding_scores_match_direct_formulas(synthetic):
    classes, train, _, test = synthetic
    reference = fit_embedding_reference(train["embeddings"], train["labels"], classes, "unknown", shrinkage=0.0)
    known = train["embeddings"][train["labels"] != 2]
    distances = np.sort(cdist(test["embeddings"], known, "cosine"), axis=1)
    assert knn_confidence(test["embeddings"], reference, k=5) == pytest.approx(-distances[:, 4])
    groups = [known[train["labels"][train["labels"] != 2] == c] for c in (0, 1)]
    pooled = sum((len(g) - 1) * np.cov(g, rowvar=False) for g in groups) / (len(known) - 2)
    inverse = np.linalg.inv(pooled)
    expected = [-min(mahalanobis(x, g.mean(0), inverse) ** 2 for g in groups) for x in test["embeddings"][:20]]
    assert mahalanobis_confidence(test["embeddings"][:20], reference) == pytest.approx(expected, rel=1e-6)


def test_energy_and_maxprob_scores():
    logits = np.array([[2.0, 0.0, 9.0], [0.0, 0.0, -5.0]])
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    scores = open_set_confidences({"probs": probs, "logits": logits}, ["a", "b", "unknown"], "unknown")
    assert scores["energy"] == pytest.approx([np.log(np.exp(2) + 1), np.log(2)])
    assert scores["maxprob"] == pytest.approx(probs[:, :2].max(1))  # the unknown column is left out
    # without logits, energy uses the zero-mean log-probabilities; with no unknown class it is -mean(log p)
    plain = open_set_confidences({"probs": probs}, ["a", "b", "c"], None)
    assert plain["energy"] == pytest.approx(-np.log(probs).mean(1))
    assert set(plain) == {"maxprob", "energy"}  # no embeddings: no distance scores


def test_calibrate_rejection_keeps_the_target_share_of_known_clips():
    confidence = np.r_[np.linspace(0.1, 1.0, 10), 0.0, 0.05]
    labels = [0] * 5 + [1] * 5 + [2, 2]  # the two unknown-labelled clips do not count
    # 10 known scores .1 .. 1.0, keep 80 %: floor(0.2 * 10) = 2 -> the third lowest, 0.3
    assert calibrate_rejection(confidence, labels, ["a", "b", "unknown"], "unknown", 0.8) == pytest.approx(0.3)
    with pytest.raises(ValueError, match="no clip of a known class"):
        calibrate_rejection([0.5], [2], ["a", "b", "unknown"], "unknown")


def test_embedding_scores_find_the_outlier_cluster_maxprob_cannot(synthetic):
    classes, train, calibration, test = synthetic
    reference = fit_embedding_reference(train["embeddings"], train["labels"], classes, "unknown")
    table = compare_open_set_scores(test, calibration, classes, "unknown", reference, target_tpr=0.95, k=5)
    table = table.set_index("score")
    assert table.index.tolist() == ["maxprob", "energy", "knn", "mahalanobis"]
    for name in ("knn", "mahalanobis"):
        assert table.loc[name, "auroc"] == pytest.approx(1.0)
        assert table.loc[name, "fpr_at_95_tpr"] == pytest.approx(0.0)
        assert table.loc[name, "unknown_recall"] == pytest.approx(1.0)
        assert 0.85 <= table.loc[name, "known_kept"] <= 1.0
        assert table.loc[name, "unknown_f1"] > 0.9
    # the unknown clips look exactly like confident `a` clips to the probabilities
    assert table.loc["maxprob", "auroc"] == pytest.approx(0.5)
    assert table.loc["maxprob", "fpr_at_95_tpr"] == pytest.approx(1.0)
    assert table.loc["maxprob", "unknown_f1"] == pytest.approx(0.0)


def test_checkpoint_features_are_the_penultimate_layer(tmp_path):
    import keras

    from voxtrace.data.audio import load_audio
    from voxtrace.inference.windows import frame_windows
    from voxtrace.inference.checkpoints import load_checkpoint
    from voxtrace.inference.predictor import predict_files
    from voxtrace.models import build_classifier

    cfg = Config.from_dict({"model": {"name": "cnn4", "num_features": 16}, "features": {"img_size": [32, 64]},
                            "audio": {"duration": 0.25}, "infer": {"batch_size": 4}})
    build_classifier(cfg).save(tmp_path / "model.keras")
    paths = write_clips(tmp_path / "clips", n=3, seconds=(0.1, 0.2))  # one window each
    features = checkpoint_features(tmp_path / "model.keras", cfg, paths)
    model = load_checkpoint(tmp_path / "model.keras")
    probs, errors = predict_files(model, cfg, paths, progress=False)
    assert features["embeddings"].shape == (3, 16) and not errors and not features["errors"]
    assert features["probs"] == pytest.approx(probs, abs=1e-5)
    softmax = np.exp(features["logits"]) / np.exp(features["logits"]).sum(1, keepdims=True)
    assert softmax == pytest.approx(probs, abs=1e-5)
    head = keras.Model(model.inputs, model.get_layer("head_dense").output)
    windows = np.concatenate([frame_windows(load_audio(p, cfg.audio.sample_rate), cfg.num_samples,
                                            cfg.audio.window_hop, cfg.audio.pad_mode) for p in paths])
    assert len(windows) == len(paths)
    assert features["embeddings"] == pytest.approx(head.predict_on_batch(windows), abs=1e-4)


def test_open_set_benchmark_on_a_tiny_corpus(tmp_path, capsys):
    from voxtrace.models import build_classifier

    benchmark = _benchmark_module("open_set")
    cfg = Config.from_dict({"model": {"name": "cnn4", "num_features": 8}, "features": {"img_size": [32, 64]},
                            "audio": {"duration": 0.25}, "infer": {"batch_size": 8}})
    run = tmp_path / "runs" / "cnn4-32x64"
    (run / "ckpt").mkdir(parents=True)
    build_classifier(cfg).save(run / "ckpt" / "model.keras")
    cfg.save(run / "cfg" / "config.yaml")
    rows = []
    for split, class_ids in (("train", [0, 1, 2, 3, 4, 5] * 2), ("eval_part1", [0, 1, 2, 3, 4, 0, 1, 2]),
                             ("eval_part3", [5] * 4)):
        paths = write_clips(tmp_path / "data" / split, n=len(class_ids), seconds=(0.1, 0.3), seed=len(rows))
        rows += [{"track": p.name, "split": split, "class_id": c} for p, c in zip(paths, class_ids)]
    pd.DataFrame(rows).to_csv(tmp_path / "data" / "metadata.csv", index=False)
    table = benchmark.main(["--model-dir", str(tmp_path / "runs"), "--data", str(tmp_path / "data"), "--k", "3"])
    out = capsys.readouterr().out
    # eval_part3 is all unknown: every other known clip of eval_part1 (4 of 8) becomes its known side
    assert "4 known clips of eval_part1 join it" in out
    assert "reference: 10 clips, calibration: 4 clips, test: 8 clips" in out
    assert table["score"].tolist() == ["maxprob", "energy", "knn", "mahalanobis"]
    assert table["auroc"].between(0, 1).all() and table["fpr_at_95_tpr"].between(0, 1).all()
    rows = table.set_index("score")
    best = rows["fpr_at_95_tpr"].idxmin()
    assert out.strip().splitlines()[-1].startswith("headline: fpr95_ratio=")
    assert f"({best} {rows.loc[best, 'fpr_at_95_tpr']:.3f} / maxprob {rows.loc['maxprob', 'fpr_at_95_tpr']:.3f})" in out
