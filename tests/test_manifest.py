import json
import os
import warnings

import pandas as pd
import pytest

from fixtures_data import write_asvspoof19_la, write_audio, write_spcup22
from voxtrace.config import ATTRIBUTION_CLASSES, Config, ConfigError, load_paths
from voxtrace.data.manifest import (
    MANIFEST_COLUMNS,
    read_asvspoof19_la,
    read_csv_manifest,
    read_demo,
    read_folder_per_class,
    read_manifest,
    read_spcup22,
)


def check_frame(frame):
    assert list(frame.columns) == MANIFEST_COLUMNS
    assert all(os.path.isabs(p) and os.path.isfile(p) for p in frame["path"])
    assert (frame["track"] == frame["path"].map(os.path.basename)).all()


def test_reference_paths_json_keys():
    with open(os.path.join(os.path.dirname(__file__), "..", "PATHS.json")) as fh:
        keys = set(json.load(fh))
    assert {"TRAIN_DATA_DIR", "UNSEEN_DATA_DIR", "TEST1_DATA_DIR", "TEST2_DATA_DIR", "LJ_DATA_DIR", "VCTK_DATA_DIR",
            "LIBRI_DATA_DIR", "SYNTHETIC_DATA_DIR", "PSEUDO_DATA_DIR", "DEMO_DATA_DIR", "ASVSPOOF19_LA_DIR"} <= keys


def test_spcup22_parts(tmp_path):
    paths = load_paths(write_spcup22(tmp_path))
    train = read_spcup22(paths, "train")
    check_frame(train)
    assert len(train) == 15 and sorted(train["label"].unique()) == sorted(ATTRIBUTION_CLASSES[:5])
    assert train.loc[train["track"] == "0003aa.wav", "label"].item() == "hts"
    assert (train["source"] == "spcup22-train").all() and train["group"].is_unique
    unseen = read_spcup22(paths, "unseen")
    assert (unseen["label"] == "unknown").all() and len(unseen) == 3
    part1 = read_spcup22(paths, "eval_part1")
    check_frame(part1)
    assert part1["label"].isna().all() and list(part1["track"]) == ["t0.wav", "t1.wav", "t2.wav"]
    with pytest.raises(ValueError, match="part"):
        read_spcup22(paths, "test")


def test_spcup22_eval_labels_beside_the_folder(tmp_path):
    paths = load_paths(write_spcup22(tmp_path))
    folder = paths["TEST2_DATA_DIR"]
    pd.DataFrame({"track": ["t0.wav", "t1.wav", "t2.wav"], "algorithm": [0, 4, 5]}).to_csv(
        os.path.join(os.path.dirname(folder.rstrip("/")), "labels_eval_part2.csv"), index=False)
    part2 = read_spcup22(paths, "eval_part2")
    assert list(part2["label"]) == ["espeak", "vits", "unknown"]


def test_spcup22_missing_folder_names_the_key(tmp_path):
    paths = load_paths(write_spcup22(tmp_path))
    paths["UNSEEN_DATA_DIR"] = str(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="UNSEEN_DATA_DIR"):
        read_spcup22(paths, "unseen")
    with pytest.raises(FileNotFoundError, match="TEST1_DATA_DIR"):
        read_spcup22({}, "eval_part1")


def test_unreadable_files_are_reported_and_good_ones_kept(tmp_path):
    paths = load_paths(write_spcup22(tmp_path))
    train = paths["TRAIN_DATA_DIR"]
    open(os.path.join(train, "0001aa.wav"), "w").close()  # zero bytes
    os.remove(os.path.join(train, "0002aa.wav"))  # listed in labels.csv, gone from disk
    write_audio(tmp_path / "x.wav", seconds=0.05).replace(os.path.join(train, "0003aa.wav"))
    ogg = write_audio(tmp_path / "y.ogg", seconds=2.0)
    ogg.write_bytes(ogg.read_bytes()[:3000])
    ogg.replace(os.path.join(train, "0004aa.wav"))  # truncated, and named .wav
    with pytest.warns(UserWarning) as caught:
        frame = read_spcup22(paths, "train")
    messages = [str(w.message) for w in caught]
    assert any("0001aa.wav" in m and "0 bytes" in m for m in messages)
    assert any("0002aa.wav" in m for m in messages)
    assert any("0003aa.wav" in m and "too short" in m for m in messages)
    assert any("0004aa.wav" in m and "corrupted or truncated" in m for m in messages)
    assert len(messages) == 4 and len(frame) == 11
    assert not {"0001aa.wav", "0002aa.wav", "0003aa.wav", "0004aa.wav"} & set(frame["track"])


def test_asvspoof19_la(tmp_path):
    root = write_asvspoof19_la(tmp_path / "LA", "dev")
    frame = read_asvspoof19_la(root, "dev")
    check_frame(frame)
    assert list(frame["label"]) == ["bonafide", "spoof", "bonafide", "spoof"]
    assert list(frame["group"]) == ["LA_0079", "LA_0079", "LA_0080", "LA_0080"]
    assert list(frame["source"]) == ["bonafide", "A01", "bonafide", "A04"]
    with pytest.raises(FileNotFoundError, match="ASVspoof2019.LA.cm.train.trn.txt"):
        read_asvspoof19_la(root, "train")
    with pytest.raises(ValueError, match="partition"):
        read_asvspoof19_la(root, "valid")


def test_folder_per_class(tmp_path):
    for name in ["A_real/spk1/x.wav", "A_real/spk2/y.flac", "B_gen/z.wav", "C_other/w.wav"]:
        write_audio(tmp_path / name)
    frame = read_folder_per_class(tmp_path)
    check_frame(frame)
    assert list(frame["label"]) == ["A_real", "A_real", "B_gen", "C_other"]
    assert list(frame["group"]) == ["A_real/spk1", "A_real/spk2", "B_gen", "C_other"]
    with pytest.warns(UserWarning, match="C_other"):
        mapped = read_folder_per_class(tmp_path, class_map={"A_real": "bonafide", "B_gen": "spoof"})
    assert list(mapped["label"]) == ["bonafide", "bonafide", "spoof"]
    assert list(mapped["source"]) == ["A_real", "A_real", "B_gen"]


def test_csv_manifest(tmp_path):
    write_audio(tmp_path / "audio" / "a.wav")
    write_audio(tmp_path / "b.flac")
    absolute = write_audio(tmp_path / "elsewhere" / "c.wav")
    csv = tmp_path / "lists" / "m.csv"
    csv.parent.mkdir()
    csv.write_text(f"path,label,group\n../audio/a.wav,vits,g1\n../b.flac,,g2\n{absolute},espeak,g1\n")
    frame = read_csv_manifest(csv)
    check_frame(frame)
    assert list(frame["track"]) == ["a.wav", "b.flac", "c.wav"]
    assert frame["label"].iloc[0] == "vits" and pd.isna(frame["label"].iloc[1])
    assert list(frame["group"]) == ["g1", "g2", "g1"] and (frame["source"] == "m").all()
    csv.write_text("path,label\n../audio/a.wav,4\n")
    assert read_csv_manifest(csv, classes=ATTRIBUTION_CLASSES)["label"].item() == "vits"
    with pytest.raises(ValueError, match="class id"):
        read_csv_manifest(csv)
    csv.write_text("file,label\nx.wav,0\n")
    with pytest.raises(ValueError, match="path"):
        read_csv_manifest(csv)


def write_demo(root):
    rows = []
    for split, folder in [("train", "train"), ("eval_part1", "eval_part1")]:
        for i, (cls, engine, speaker) in enumerate([("espeak", "espeak", "espeak:en-us"),
                                                    ("unknown", "human", "hedgewars/Pirate"),
                                                    ("unknown", "griffinlim", "hedgewars/Pirate")]):
            track = f"{split[:2]}{i:030x}.wav"
            write_audio(root / folder / track)
            rows.append({"track": track, "split": split, "class_id": ATTRIBUTION_CLASSES.index(cls),
                         "class_name": cls, "engine": engine, "voice": "v", "speaker": speaker, "text_id": "",
                         "perturbations": "", "duration": 0.5, "detect_id": int(engine != "human"),
                         "detect_name": "bonafide" if engine == "human" else "spoof"})
    pd.DataFrame(rows).to_csv(root / "metadata.csv", index=False)
    return root


def test_demo_both_tasks(tmp_path):
    root = write_demo(tmp_path / "demo")
    frame = read_demo(root, "train")
    check_frame(frame)
    assert list(frame["label"]) == ["espeak", "unknown", "unknown"]
    assert list(frame["group"]) == ["espeak:en-us", "hedgewars/Pirate", "hedgewars/Pirate"]
    assert list(read_demo(root, "eval_part1", task="detect")["label"]) == ["spoof", "bonafide", "spoof"]
    with pytest.raises(FileNotFoundError, match="voxtrace corpus"):
        read_demo(tmp_path / "demo" / "train", "train")


def test_read_manifest_dispatch(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_spcup22(tmp_path)
    write_demo(tmp_path / "data" / "demo")
    entries = json.loads((tmp_path / "PATHS.json").read_text())
    entries.update({"DEMO_DATA_DIR": "./data/demo", "ASVSPOOF19_LA_DIR": "./data/LA"})
    (tmp_path / "PATHS.json").write_text(json.dumps(entries))

    demo = read_manifest(Config.from_dict({"data": {"dataset": "demo", "root": "DEMO_DATA_DIR"}}), "train")
    assert len(demo) == 3
    detect = Config.from_dict({"task": "detect", "classes": ["bonafide", "spoof"], "unknown_class": None,
                               "data": {"dataset": "demo", "root": "data/demo"}})
    assert set(read_manifest(detect, "eval_part1")["label"]) == {"bonafide", "spoof"}

    six = read_manifest(Config.from_dict({"data": {"dataset": "spcup22"}}), "train")
    assert len(six) == 18 and (six["label"] == "unknown").sum() == 3
    five = Config.from_dict({"classes": ATTRIBUTION_CLASSES[:5], "unknown_class": None,
                             "data": {"dataset": "spcup22"}})
    assert len(read_manifest(five, "train")) == 15
    assert read_manifest(five, "eval_part1")["label"].isna().all()

    with pytest.raises(FileNotFoundError, match="ASVSPOOF19_LA_DIR"):
        read_manifest(Config.from_dict({"data": {"dataset": "asvspoof19", "root": "ASVSPOOF19_LA_DIR"}}))
    write_asvspoof19_la(tmp_path / "data" / "LA", "train")
    with pytest.raises(ConfigError, match="bonafide"):  # detection labels under attribution classes
        read_manifest(Config.from_dict({"data": {"dataset": "asvspoof19", "root": "ASVSPOOF19_LA_DIR"}}))
    la = read_manifest(Config.from_dict({"task": "detect", "classes": ["bonafide", "spoof"], "unknown_class": None,
                                         "data": {"dataset": "asvspoof19", "root": "ASVSPOOF19_LA_DIR"}}))
    assert len(la) == 4
    with pytest.raises(FileNotFoundError, match="NO_SUCH_DIR"):
        read_manifest(Config.from_dict({"data": {"dataset": "folder", "root": "NO_SUCH_DIR"}}))

    capped = read_manifest(Config.from_dict({"data": {"dataset": "spcup22", "max_files": 1}}), "train")
    assert sorted(capped["label"]) == sorted(ATTRIBUTION_CLASSES)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        read_manifest(Config.from_dict({"data": {"dataset": "demo", "root": "data/demo"}}), "eval_part1")


def test_balance_classes_undersamples_every_label_to_the_rarest():
    import pandas as pd

    from voxtrace.data.manifest import balance_classes

    frame = pd.DataFrame({"label": ["spoof"] * 10 + ["bonafide"] * 3, "path": [f"f{i}.wav" for i in range(13)]})
    balanced = balance_classes(frame, seed=0)
    assert balanced["label"].value_counts().to_dict() == {"spoof": 3, "bonafide": 3}
    assert set(balanced["path"]) <= set(frame["path"])
    assert balanced.equals(balance_classes(frame, seed=0))
