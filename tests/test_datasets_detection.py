"""In-the-Wild, ASVspoof 2021 LA / DF and ASVspoof 5 readers on copies of their exact layouts, bad protocol rows
reported by file and line, and `--debug` train + predict + evaluate through each config."""

import warnings

import numpy as np
import pandas as pd
import pytest

from fixtures_data import write_asvspoof19_la
from fixtures_datasets import (
    read_report_table,
    run_debug_pipeline,
    write_asvspoof5,
    write_asvspoof21,
    write_config,
    write_in_the_wild,
    write_paths_json,
)
from voxtrace.config import Config
from voxtrace.data.datasets.detection import read_asvspoof5, read_asvspoof21, read_in_the_wild
from voxtrace.data.manifest import MANIFEST_COLUMNS, read_manifest
from voxtrace.vocabulary import DATASETS
from voxtrace.evaluation.metrics import equal_error_rate


def _messages(caught):
    return [str(w.message) for w in caught]


def test_every_dataset_name_is_a_config_choice():
    for name in DATASETS:
        Config.from_dict({"data": {"dataset": name}})


def test_in_the_wild(tmp_path):
    folder = write_in_the_wild(tmp_path)
    with pytest.warns(UserWarning) as caught:
        frame = read_in_the_wild(tmp_path)  # the folder holding release_in_the_wild/ works too
    messages = _messages(caught)
    meta = folder / "meta.csv"
    assert any(f"{meta}:10" in m and "'fake'" in m for m in messages)  # the unknown spelling, by line
    assert any(f"{meta}:11" in m and "first at" in m and f"{meta}:5" in m for m in messages)  # 3.wav again
    assert any(f"{meta}:12" in m and "9.wav" in m for m in messages)  # listed, not on disk
    assert list(frame.columns) == MANIFEST_COLUMNS
    assert list(frame["track"]) == [f"{i}.wav" for i in range(8)]
    assert list(frame["label"]) == ["spoof", "bonafide"] * 4
    assert list(frame["group"]) == ["Alec Guinness"] * 4 + ["Barack Obama"] * 4
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        unchecked = read_in_the_wild(folder, check=False)  # audio not opened: the missing file stays
    assert unchecked["track"].tolist() == frame["track"].tolist() + ["9.wav"]


def test_asvspoof21_la_subsets_and_conditions(tmp_path):
    root = write_asvspoof21(tmp_path, "LA")
    with pytest.warns(UserWarning, match="LA_E_1000009.flac"):
        frame = read_asvspoof21(root, "LA", "eval", conditions=True)
    assert list(frame["track"]) == [f"LA_E_100000{i}.flac" for i in range(1, 7)]
    assert list(frame["label"]) == ["bonafide", "spoof", "bonafide", "spoof", "spoof", "bonafide"]
    assert list(frame["attack"]) == ["bonafide", "A07", "bonafide", "A08", "A07", "bonafide"]
    assert list(frame["codec"]) == ["none", "alaw", "alaw", "none", "alaw", "none"]
    assert list(frame["transmission"])[:3] == ["-", "ita_tx", "ita_tx"]
    assert list(frame["group"])[:2] == ["LA_0009", "LA_0009"]
    assert list(read_asvspoof21(root, "LA", "progress", check=False)["track"]) == ["LA_E_1000007.flac"]
    assert list(read_asvspoof21(root, "LA", "hidden_track", check=False)["label"]) == ["bonafide"]
    assert len(read_asvspoof21(root, "LA", "all", check=False)) == 9  # the missing file's row included
    with pytest.raises(ValueError, match="split"):
        read_asvspoof21(root, "LA", "test")


def test_asvspoof21_df_reads_the_long_rows(tmp_path):
    root = write_asvspoof21(tmp_path, "DF")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        frame = read_asvspoof21(root, "DF", "eval", conditions=True)
    assert len(frame) == 6
    assert list(frame["corpus"]) == ["asvspoof", "vcc2020", "asvspoof", "vcc2020", "asvspoof", "vcc2020"]
    assert list(frame["vocoder"])[:2] == ["traditional_vocoder", "neural_vocoder_nonautoregressive"]
    assert list(frame["attack"])[:3] == ["A14", "Task1-team20", "bonafide"]


def test_asvspoof21_train_is_asvspoof2019_la(tmp_path):
    write_asvspoof19_la(tmp_path / "LA19", "train")
    paths_json = write_paths_json(tmp_path, {"ASVSPOOF19_LA_DIR": tmp_path / "LA19"})
    frame = read_asvspoof21(tmp_path, "LA", "train", paths_json=paths_json)
    assert list(frame["label"]) == ["bonafide", "spoof", "bonafide", "spoof"]
    with pytest.raises(FileNotFoundError, match="ASVSPOOF19_LA_DIR"):
        read_asvspoof21(tmp_path, "DF", "dev", paths_json=tmp_path / "none.json")


def test_asvspoof5_protocol_columns(tmp_path):
    root = write_asvspoof5(tmp_path)
    train = read_asvspoof5(root, "train", conditions=True)
    assert list(train["track"]) == [f"T_000000000{i}.flac" for i in range(4)]
    assert list(train["label"]) == ["spoof", "bonafide", "spoof", "bonafide"]
    assert list(train["attack"]) == ["A05", "bonafide", "A01", "bonafide"]
    assert list(train["group"]) == ["T_4850", "T_4850", "T_1138", "T_1138"]
    evaluation = read_asvspoof5(root, "eval", conditions=True)
    assert list(evaluation["codec"]) == ["C01", "-", "C01", "-", "C08", "C08"]
    assert list(evaluation["codec_q"]) == ["1", "0", "3", "0", "2", "5"]
    with pytest.raises(FileNotFoundError, match="ASVspoof5.dev.track_1.tsv"):
        read_asvspoof5(root, "dev")


def test_asvspoof5_bad_rows_are_named_by_line(tmp_path):
    root = write_asvspoof5(tmp_path)
    protocol = root / "ASVspoof5_protocols" / "ASVspoof5.train.tsv"
    with open(protocol, "a") as fh:
        fh.write("T_4850 T_0000000000 F - - - AC3 A05 spoof -\n")  # line 5: listed again
        fh.write("T_4850 T_0000000009 F - - - AC3 A05 deepfake -\n")  # line 6: unknown key
        fh.write("T_4850 T_0000000010 F -\n")  # line 7: too few fields
    with pytest.warns(UserWarning) as caught:
        frame = read_asvspoof5(root, "train")
    messages = _messages(caught)
    assert any(f"{protocol}:5" in m and f"{protocol}:1" in m for m in messages)
    assert any(f"{protocol}:6" in m and "'deepfake'" in m for m in messages)
    assert any(f"{protocol}:7" in m and "fields" in m for m in messages)
    assert len(frame) == 4


def test_read_manifest_names_and_splits(tmp_path):
    write_asvspoof5(tmp_path / "a5")
    cfg = Config.from_dict({"task": "detect", "classes": ["bonafide", "spoof"], "unknown_class": None,
                            "data": {"dataset": "asvspoof5", "root": str(tmp_path / "a5")}})
    assert list(read_manifest(cfg, "test")["track"])[0] == "E_0000000000.flac"  # test = eval
    assert list(read_manifest(cfg, "eval", conditions=True).columns) == MANIFEST_COLUMNS + ["attack", "codec",
                                                                                             "codec_q"]


def test_evaluate_per_codec_eer_from_the_protocol(tmp_path):
    """`voxtrace evaluate --cfg --split` on fixed scores: EER per codec and per attack as computed by hand."""
    from voxtrace.cli import main

    root = write_asvspoof5(tmp_path / "a5")
    cfg = write_config(tmp_path, "asvspoof5.yaml", {"root": str(root)})
    p_bona = np.array([0.3, 0.9, 0.4, 0.2, 0.7, 0.6])  # E_0..E_5: spoof, bona, bona, spoof, spoof, bona
    pred = pd.DataFrame({"track": [f"E_000000000{i}.flac" for i in range(6)],
                         "algorithm": (p_bona < 0.5).astype(int), "bonafide": p_bona, "spoof": 1 - p_bona})
    pred.to_csv(tmp_path / "pred.csv", index=False)
    assert main(["evaluate", "--pred", str(tmp_path / "pred.csv"), "--cfg", str(cfg), "--split", "eval"]) == 0
    per_codec = pd.read_csv(tmp_path / "per_codec.csv").set_index("codec")
    # C01: spoof 0.3 vs bona fide 0.4: separated; C08: spoof 0.7 above bona fide 0.6: EER 1
    assert per_codec.loc["C01", "eer"] == 0.0 and per_codec.loc["C08", "eer"] == 1.0
    is_bona = np.array([0, 1, 1, 0, 0, 1], bool)
    a17 = is_bona | np.isin(np.arange(6), [0, 4])
    per_attack = pd.read_csv(tmp_path / "per_attack.csv").set_index("attack")
    assert per_attack.loc["A17", "eer"] == pytest.approx(equal_error_rate(is_bona[a17], p_bona[a17])[0])
    assert (tmp_path / "det_curve.png").stat().st_size > 1000


@pytest.mark.slow
@pytest.mark.parametrize("dataset", ["inthewild", "asvspoof21la", "asvspoof21df", "asvspoof5"])
def test_debug_train_predict_evaluate(tmp_path, dataset):
    if dataset == "inthewild":
        folder = write_in_the_wild(tmp_path / "itw")
        base, data, infer = "inthewild.yaml", {"root": str(folder)}, folder
    elif dataset == "asvspoof5":
        root = write_asvspoof5(tmp_path / "a5")
        base, data, infer = "asvspoof5.yaml", {"root": str(root)}, root / "flac_E_eval"
    else:
        track = dataset[-2:].upper()
        root = write_asvspoof21(tmp_path / "a21", track)
        for partition in ("train", "eval"):
            write_asvspoof19_la(tmp_path / "LA19", partition)
        paths_json = write_paths_json(tmp_path, {"ASVSPOOF19_LA_DIR": tmp_path / "LA19"})
        base = f"asvspoof21-{track.lower()}.yaml"
        data, infer = {"root": str(root), "paths_json": str(paths_json)}, root / f"ASVspoof2021_{track}_eval"
    cfg = write_config(tmp_path, base, data)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the fixtures' bad rows
        report = run_debug_pipeline(cfg, infer, tmp_path / "out")
    for key in ("eer", "min_dcf", "act_dcf", "cllr"):
        assert report[key] is None or 0.0 <= report[key]
    assert report["n_scored"] >= 6 and (tmp_path / "out" / "report" / "det_curve.png").is_file()
    if dataset != "inthewild":
        assert len(read_report_table(tmp_path / "out", "per_attack")) >= 3
