"""SP Cup 2022 with the reference's external corpora as the unknown class: each source's layout and speakers,
the per-source switches and cap, and a `--debug` train + predict + evaluate through configs/sp22-part1.yaml."""

import json
import warnings

import pandas as pd
import pytest

from fixtures_data import write_audio, write_spcup22
from fixtures_datasets import run_debug_pipeline, write_config
from voxtrace.config import Config, ConfigError, ExternalData, load_paths
from voxtrace.data.datasets.external import cap_round_robin, read_external, read_spcup22_external
from voxtrace.data.manifest import read_manifest

EXTERNAL_KEYS = {
    "LJ_DATA_DIR": "./data/ljspeech-sr16k-dataset/",
    "VCTK_DATA_DIR": "./data/vctk-sr16k-dataset/",
    "LIBRI_DATA_DIR": "./data/librispeech-small-dataset/",
    "SYNTHETIC_DATA_DIR": "./data/aps22-synthetic-dataset/",
}


def write_external(root):
    """The four external folders of the reference's PATHS.json, with their corpora's own layouts."""
    data = root / "data"
    for i in range(3):
        write_audio(data / "ljspeech-sr16k-dataset" / "wavs" / f"LJ001-000{i + 1}.wav", seconds=0.6, seed=i)
    for speaker in ("p225", "p226"):
        for i in range(2):
            write_audio(data / "vctk-sr16k-dataset" / "wav48" / speaker / f"{speaker}_00{i + 1}.wav", seconds=0.6,
                        seed=i)
    write_audio(data / "vctk-sr16k-dataset" / "s5_001.wav", seconds=0.6)  # no speaker folder: the name says
    for speaker, chapter in (("19", "198"), ("26", "495")):
        for i in range(2):
            name = f"{speaker}-{chapter}-{i:04d}.flac"
            write_audio(data / "librispeech-small-dataset" / "train-clean-100" / speaker / chapter / name,
                        seconds=0.6, seed=i)
    for generator in ("waveglow", "melgan"):
        for i in range(2):
            write_audio(data / "aps22-synthetic-dataset" / generator / f"{i}.wav", seconds=0.6, seed=i)
    paths_json = root / "PATHS.json"
    entries = json.loads(paths_json.read_text())
    paths_json.write_text(json.dumps({**entries, **EXTERNAL_KEYS}))
    return paths_json


def test_each_source_and_its_speakers(tmp_path):
    write_spcup22(tmp_path)
    paths = load_paths(write_external(tmp_path))
    lj = read_external(paths, "lj", "unknown")
    assert list(lj["track"]) == ["LJ001-0001.wav", "LJ001-0002.wav", "LJ001-0003.wav"]
    assert set(lj["group"]) == {"lj:LJ"} and set(lj["label"]) == {"unknown"} and set(lj["source"]) == {"lj"}
    vctk = read_external(paths, "vctk", "unknown")
    assert sorted(vctk["group"]) == ["vctk:p225", "vctk:p225", "vctk:p226", "vctk:p226", "vctk:s5"]
    libri = read_external(paths, "libri", "unknown")
    assert sorted(libri["group"]) == ["libri:19", "libri:19", "libri:26", "libri:26"]
    synthetic = read_external(paths, "synthetic", "unknown")
    assert sorted(set(synthetic["group"])) == ["synthetic:melgan", "synthetic:waveglow"]


def test_switches_cap_and_missing_folder(tmp_path):
    write_spcup22(tmp_path)
    paths = load_paths(write_external(tmp_path))
    frame = read_spcup22_external(paths, ExternalData(vctk=True, libri=True, max_files=2), "unknown", seed=1)
    assert sorted(frame["source"]) == ["libri", "libri", "vctk", "vctk"]
    # round-robin over speakers: a cap of two takes one clip of each of two speakers, never two of one
    assert frame.groupby("source")["group"].nunique().to_dict() == {"libri": 2, "vctk": 2}
    assert read_spcup22_external(paths, ExternalData(), "unknown").empty
    with pytest.raises(ConfigError, match="unknown_class"):
        read_spcup22_external(paths, ExternalData(lj=True), None)
    del paths["SYNTHETIC_DATA_DIR"]
    with pytest.raises(FileNotFoundError, match="SYNTHETIC_DATA_DIR"):
        read_spcup22_external(paths, ExternalData(synthetic=True), "unknown")


def test_cap_round_robin_by_hand():
    frame = pd.DataFrame({"group": ["a"] * 5 + ["b", "c"], "path": list("1234567")})
    kept = cap_round_robin(frame, 4, seed=0)
    assert sorted(kept["group"]) == ["a", "a", "b", "c"]
    assert cap_round_robin(frame, None, seed=0).equals(frame)


def test_read_manifest_mixes_them_in_as_unknown(tmp_path):
    write_spcup22(tmp_path)
    paths_json = write_external(tmp_path)
    cfg = Config.load("configs/sp22-part1.yaml", [f"data.paths_json={paths_json}", "data.external.libri=false",
                                                  "data.external.max_files=2"])
    frame = read_manifest(cfg, "train")
    sources = frame["source"].value_counts().to_dict()
    assert sources == {"spcup22-train": 15, "spcup22-unseen": 3, "lj": 2, "vctk": 2, "synthetic": 2}
    assert (frame.loc[frame["source"].isin(["lj", "vctk", "synthetic"]), "label"] == "algo_5").all()
    with pytest.raises(ConfigError, match="data.external.flac"):
        Config.load("configs/sp22-part1.yaml", ["data.external.flac=true"])


@pytest.mark.slow
def test_debug_train_predict_evaluate(tmp_path):
    write_spcup22(tmp_path)
    paths_json = write_external(tmp_path)
    eval_dir = load_paths(paths_json)["TEST1_DATA_DIR"]
    pd.DataFrame({"track": ["t0.wav", "t1.wav", "t2.wav"], "algorithm": [0, 5, 2]}).to_csv(
        f"{eval_dir}/labels_eval_part1.csv", index=False)
    cfg = write_config(tmp_path, "sp22-part1.yaml", {"paths_json": str(paths_json)},
                       model={"pretrain": None})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        report = run_debug_pipeline(cfg, eval_dir, tmp_path / "out", split="eval_part1")
    assert report["n_scored"] == 3 and report["open_set"]["n_unknown"] == 1
