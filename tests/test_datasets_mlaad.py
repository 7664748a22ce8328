"""MLAAD source tracing: the reader on a copy of MLAAD v5 and the session's protocols (known systems, OOD ones
scored as unknown, attribution by model_name or architecture, bad rows by line), and one fast `--debug`
train + predict + evaluate through configs/mlaad-sourcetracing.yaml."""

import warnings

import numpy as np
import pandas as pd
import pytest

from fixtures_datasets import MLAAD_SYSTEMS, read_report_table, run_debug_pipeline, write_config, write_mlaad
from voxtrace.config import Config, ConfigError
from voxtrace.data.datasets.mlaad import main as mlaad_main
from voxtrace.data.datasets.mlaad import mlaad_known_classes, read_mlaad
from voxtrace.data.manifest import MANIFEST_COLUMNS, read_manifest
from voxtrace.evaluation.metrics import detection_auroc, equal_error_rate, fpr_at_tpr
from voxtrace.evaluation.reports import evaluate_split

KNOWN = ["suno/bark", "tts_models/de/thorsten/tacotron2-DDC", "tts_models/en/ljspeech/vits"]
OOD = "tts_models/fr/css10/vits"


def test_train_dev_eval_and_ood(tmp_path):
    mlaad, protocols = write_mlaad(tmp_path)
    train = read_mlaad(mlaad, protocols, "train")
    assert list(train.columns) == MANIFEST_COLUMNS
    assert sorted(train["label"].unique()) == KNOWN and len(train) == 6
    assert train["group"].iloc[0] == "m_ailabs_en_0.wav"  # the source utterance from meta.csv
    dev = read_mlaad(mlaad, protocols, "dev", conditions=True)
    assert (dev.loc[dev["system"] == OOD, "label"] == "unknown").all()
    assert (dev.loc[dev["system"] != OOD, "label"] == dev.loc[dev["system"] != OOD, "system"]).all()
    assert set(dev["language"]) == {"en", "de", "fr"} and set(dev["architecture"]) == {"vits", "tacotron2", "bark"}
    evaluation = read_mlaad(mlaad, protocols, "eval")
    assert (evaluation["label"] == "unknown").sum() == 2
    with pytest.raises(ConfigError, match="unknown_class"):
        read_mlaad(mlaad, protocols, "dev", unknown_class=None)


def test_attribution_by_architecture(tmp_path):
    mlaad, protocols = write_mlaad(tmp_path)
    dev = read_mlaad(mlaad, protocols, "dev", attribute_by="architecture", conditions=True)
    # the French VITS system is new, but its architecture is known: it is attributed, not rejected
    assert set(dev["label"]) == {"vits", "tacotron2", "bark"}
    assert mlaad_known_classes(mlaad, protocols, "architecture") == ["bark", "tacotron2", "vits"]
    assert mlaad_known_classes(mlaad, protocols) == KNOWN


def test_bad_protocol_rows_are_named_by_line(tmp_path):
    mlaad, protocols = write_mlaad(tmp_path)
    train_csv = protocols / "train.csv"
    first = train_csv.read_text().splitlines()[1]
    with open(train_csv, "a") as fh:
        fh.write(first + "\n")  # line 8: listed again
        fh.write("fake/en/gone/gone_0001.wav,tts_models/en/ljspeech/vits\n")  # line 9: no audio, no meta row
    with pytest.warns(UserWarning) as caught:
        train = read_mlaad(mlaad, protocols, "train")
    messages = [str(w.message) for w in caught]
    assert any(f"{train_csv}:8" in m and f"{train_csv}:2" in m for m in messages)
    assert any(f"{train_csv}:9" in m and "gone_0001.wav" in m for m in messages)
    assert len(train) == 6
    with pytest.warns(UserWarning, match=f"{train_csv}:9: no architecture"):
        read_mlaad(mlaad, protocols, "train", attribute_by="architecture")


def test_config_and_class_line(tmp_path, capsys):
    mlaad, protocols = write_mlaad(tmp_path)
    cfg = Config.load(write_config(tmp_path, "mlaad-sourcetracing.yaml", {"root": str(mlaad),
                                                                           "protocols": str(protocols)}))
    assert set(KNOWN) <= set(cfg.classes) and cfg.unknown_class == "unknown"
    assert len(read_manifest(cfg, "valid")) == 5  # valid = dev: 3 known + 2 OOD clips
    assert mlaad_main([str(mlaad), str(protocols)]) == 0
    line = capsys.readouterr().out.strip()
    assert line == 'classes: ["' + '", "'.join(KNOWN) + '", "unknown"]'
    narrow = Config.from_dict({**cfg.to_dict(), "classes": ["suno/bark", "unknown"]})
    with pytest.raises(ConfigError, match="python -m voxtrace.data.datasets.mlaad"):
        read_manifest(narrow, "train")


def test_evaluation_as_the_protocol_intends(tmp_path):
    """Known systems: closed-set accuracy and macro-F1; OOD systems: EER, AUROC and FPR95 of the unknown score."""
    mlaad, protocols = write_mlaad(tmp_path)
    classes = KNOWN + ["unknown"]
    cfg = Config.load(write_config(tmp_path, "mlaad-sourcetracing.yaml",
                                   {"root": str(mlaad), "protocols": str(protocols)}, classes=classes))
    dev = read_mlaad(mlaad, protocols, "dev", conditions=True)
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(4), size=len(dev))
    truth = dev["label"].map(classes.index).to_numpy()
    probs[np.arange(len(dev))[truth < 3], truth[truth < 3]] += 1.0  # known clips lean to their system
    probs /= probs.sum(axis=1, keepdims=True)
    pred = pd.DataFrame(probs, columns=classes).assign(track=dev["track"].to_numpy(), algorithm=probs.argmax(1))
    pred.to_csv(tmp_path / "pred.csv", index=False)
    report = evaluate_split(tmp_path / "pred.csv", cfg, "dev", unknown_score="maxprob")
    section = report["open_set"]
    is_ood = truth == 3
    score = 1.0 - probs[:, :3].max(axis=1)
    assert section["auroc"] == pytest.approx(detection_auroc(is_ood, score))
    assert section["fpr_at_95_tpr"] == pytest.approx(fpr_at_tpr(is_ood, score, 0.95))
    assert section["eer"] == pytest.approx(equal_error_rate(is_ood, score)[0])
    closed = probs[:, :3].argmax(axis=1)
    assert section["known_acc"] == pytest.approx(np.mean(closed[~is_ood] == truth[~is_ood]))
    assert section["known_acc"] == 1.0 and section["known_f1"] == 1.0
    per_system = pd.read_csv(tmp_path / "per_system.csv").set_index("system")
    assert set(per_system.index) == set(MLAAD_SYSTEMS) and per_system.loc[OOD, "n"] == 2
    assert (tmp_path / "det_curve.png").is_file()


def test_debug_train_predict_evaluate(tmp_path):
    mlaad, protocols = write_mlaad(tmp_path)
    cfg = write_config(tmp_path, "mlaad-sourcetracing.yaml", {"root": str(mlaad), "protocols": str(protocols)},
                       classes=KNOWN + ["unknown"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        report = run_debug_pipeline(cfg, mlaad / "fake", tmp_path / "out", split="eval")
    assert report["n_scored"] == 5 and report["open_set"]["n_unknown"] == 2
    assert 0.0 <= report["open_set"]["auroc"] <= 1.0 and 0.0 <= report["open_set"]["known_f1"] <= 1.0
    assert len(read_report_table(tmp_path / "out", "per_system")) == 4
