"""Tiny copies of the field's data set layouts (exact file names, separators, headers and label spellings),
and a `--debug` train + predict + evaluate run over one of them."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import yaml

from fixtures_data import write_audio

REPO = Path(__file__).resolve().parents[1]
SECONDS = 0.6


def write_paths_json(root: Path, entries: dict) -> Path:
    path = root / "PATHS.json"
    path.write_text(json.dumps({k: str(v) for k, v in entries.items()}))
    return path


def write_in_the_wild(root: Path) -> Path:
    """`release_in_the_wild/` with meta.csv (file,speaker,label; `spoof` / `bona-fide`), eight clips of two
    speakers, then three bad rows: an unknown label, a file listed twice, a file that is not there."""
    folder = root / "release_in_the_wild"
    rows = []
    for i in range(8):
        speaker = "Alec Guinness" if i < 4 else "Barack Obama"
        label = "bona-fide" if i % 2 else "spoof"
        write_audio(folder / f"{i}.wav", seconds=SECONDS, seed=i, freq=300 + 60 * i)
        rows.append(f"{i}.wav,{speaker},{label}")
    write_audio(folder / "8.wav", seconds=SECONDS, seed=8)
    rows += ["8.wav,Barack Obama,fake", "3.wav,Alec Guinness,bona-fide", "9.wav,Barack Obama,spoof"]
    (folder / "meta.csv").write_text("file,speaker,label\n" + "\n".join(rows) + "\n")
    return folder


ASVSPOOF21_LA_ROWS = [  # speaker trial codec transmission attack key trim subset
    "LA_0009 LA_E_1000001 none - - bonafide notrim eval",
    "LA_0009 LA_E_1000002 alaw ita_tx A07 spoof notrim eval",
    "LA_0010 LA_E_1000003 alaw ita_tx - bonafide notrim eval",
    "LA_0010 LA_E_1000004 none - A08 spoof notrim eval",
    "LA_0011 LA_E_1000005 alaw ita_tx A07 spoof notrim eval",
    "LA_0011 LA_E_1000006 none - - bonafide notrim eval",
    "LA_0012 LA_E_1000007 g722 loc_tx A09 spoof notrim progress",
    "LA_0012 LA_E_1000008 g722 loc_tx - bonafide notrim hidden_track",
]
ASVSPOOF21_DF_ROWS = [  # speaker trial codec source attack key trim subset vocoder + 4 task / team fields
    "LA_0023 DF_E_2000011 nocodec asvspoof A14 spoof notrim eval traditional_vocoder - - - -",
    "TEF2 DF_E_2000013 low_m4a vcc2020 Task1-team20 spoof notrim eval neural_vocoder_nonautoregressive Task1 team20 FF E",
    "LA_0031 DF_E_2000020 nocodec asvspoof - bonafide notrim eval bonafide - - - -",
    "TGF1 DF_E_2000024 mp3m4a vcc2020 - bonafide notrim eval bonafide - - - -",
    "LA_0031 DF_E_2000025 low_m4a asvspoof - bonafide notrim eval bonafide - - - -",
    "TGF1 DF_E_2000026 mp3m4a vcc2020 Task2-team12 spoof notrim eval traditional_vocoder Task2 team12 FF G",
]


def write_asvspoof21(root: Path, track: str) -> Path:
    """`ASVspoof2021_{track}_eval/flac/` and `{track}-keys-full/keys/{track}/CM/trial_metadata.txt`, plus a
    key row whose audio is missing."""
    rows = ASVSPOOF21_LA_ROWS if track == "LA" else ASVSPOOF21_DF_ROWS
    for i, row in enumerate(rows):
        write_audio(root / f"ASVspoof2021_{track}_eval" / "flac" / f"{row.split()[1]}.flac", seconds=SECONDS,
                    seed=i, freq=250 + 70 * i)
    keys = root / f"{track}-keys-full" / "keys" / track / "CM"
    keys.mkdir(parents=True, exist_ok=True)
    missing = rows[0].replace(rows[0].split()[1], rows[0].split()[1][:-1] + "9")
    (keys / "trial_metadata.txt").write_text("\n".join(rows + [missing]) + "\n")
    return root


ASVSPOOF5_ROWS = {  # SPEAKER_ID FLAC_FILE_NAME SPEAKER_GENDER CODEC CODEC_Q CODEC_SEED ATTACK_TAG ATTACK_LABEL KEY TMP
    "train": ["T_4850 T_0000000000 F - - - AC3 A05 spoof -",
              "T_4850 T_0000000001 F - - - - bonafide bonafide -",
              "T_1138 T_0000000002 M - - - AC1 A01 spoof -",
              "T_1138 T_0000000003 M - - - - bonafide bonafide -"],
    "eval": ["E_0001 E_0000000000 F C01 1 0 AC2 A17 spoof -",
             "E_0001 E_0000000001 F - 0 - - bonafide bonafide -",
             "E_0002 E_0000000002 M C01 3 1 - bonafide bonafide -",
             "E_0002 E_0000000003 M - 0 - AC3 A18 spoof -",
             "E_0003 E_0000000004 F C08 2 2 AC2 A17 spoof -",
             "E_0003 E_0000000005 F C08 5 3 - bonafide bonafide -"],
}


def write_asvspoof5(root: Path) -> Path:
    """`ASVspoof5_protocols/ASVspoof5.{train,eval.track_1}.tsv`, `flac_T/`, `flac_E_eval/`."""
    protocols = root / "ASVspoof5_protocols"
    protocols.mkdir(parents=True, exist_ok=True)
    for split, name, folder in (("train", "ASVspoof5.train.tsv", "flac_T"),
                                ("eval", "ASVspoof5.eval.track_1.tsv", "flac_E_eval")):
        for i, row in enumerate(ASVSPOOF5_ROWS[split]):
            write_audio(root / folder / f"{row.split()[1]}.flac", seconds=SECONDS, seed=i, freq=200 + 90 * i)
        (protocols / name).write_text("\n".join(ASVSPOOF5_ROWS[split]) + "\n")
    return root


MLAAD_SYSTEMS = {  # model_name -> (language, architecture)
    "tts_models/en/ljspeech/vits": ("en", "vits"),
    "tts_models/de/thorsten/tacotron2-DDC": ("de", "tacotron2"),
    "suno/bark": ("en", "bark"),
    "tts_models/fr/css10/vits": ("fr", "vits"),  # absent from train.csv: out-of-distribution
}


def write_mlaad(root: Path, per_system: int = 4) -> tuple[Path, Path]:
    """MLAAD v5 (`fake/<lang>/<system>/` with a `|`-separated meta.csv each) and the source-tracing protocols
    (`train.csv`, `dev.csv`, `eval.csv`: path,model_name); returns (MLAAD root, protocol folder)."""
    mlaad, protocols = root / "MLAADv5", root / "mlaad4sourcetracing"
    protocols.mkdir(parents=True, exist_ok=True)
    rows = {"train": [], "dev": [], "eval": []}
    for k, (system, (language, architecture)) in enumerate(MLAAD_SYSTEMS.items()):
        folder = Path("fake") / language / system.replace("/", "_")
        meta = ["path|original_file|language|is_original_language|duration|training_data|model_name|architecture"
                "|transcript"]
        for i in range(per_system):
            rel = folder / f"{system.replace('/', '_')}_{i:04d}.wav"
            write_audio(mlaad / rel, seconds=SECONDS, seed=10 * k + i, freq=220 + 40 * k + 5 * i)
            meta.append(f"./{rel}|m_ailabs_{language}_{i}.wav|{language}|True|{SECONDS}|M-AILABS|{system}"
                        f"|{architecture}|a \"quoted\", text {i}")
            split = "eval" if k == 3 and i % 2 else "dev" if k == 3 else ("train", "train", "dev", "eval")[i]
            rows[split].append(f"{rel},{system}")
        (mlaad / folder / "meta.csv").write_text("\n".join(meta) + "\n")
    for split, lines in rows.items():
        (protocols / f"{split}.csv").write_text("path,model_name\n" + "\n".join(lines) + "\n")
    return mlaad, protocols


def write_config(tmp_path: Path, base: str, data: dict, **top) -> Path:
    """A YAML config extending `configs/<base>` with the fixture's `data` keys and top-level keys."""
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump({"base": str(REPO / "configs" / base), **top, "data": data}))
    return path


def run_debug_pipeline(cfg_yaml: Path, infer_path: Path, out: Path, split: str = "eval") -> dict:
    """`voxtrace train --debug` (cnn4 at 32x64 on 0.5 s windows), `predict --probs` over `infer_path` and
    `evaluate --cfg --split`; returns report.json."""
    from voxtrace.cli import main

    common = ["--set", "audio.duration=0.5", "--set", "features.n_fft=256", "--set", "features.win_length=256",
              "--set", "augment.enabled=false", "--set", "augment.freq_mask=4", "--set", "augment.time_mask=8"]
    assert main(["train", "--cfg", str(cfg_yaml), "--debug", "--model-name", "cnn4", "--img-size", "32x64",
                 "--batch-size", "4", "--output-dir", str(out / "runs"), "--verbose", "0", "--all-data",
                 *common]) == 0
    pred = out / "pred.csv"
    assert main(["predict", "--model-dir", str(out / "runs"), "--infer-path", str(infer_path), "--output",
                 str(pred), "--probs", "--no-zip", "--verbose", "0"]) == 0
    assert main(["evaluate", "--pred", str(pred), "--cfg", str(cfg_yaml), "--split", split,
                 "--out", str(out / "report")]) == 0
    return json.loads((out / "report" / "report.json").read_text())


def read_report_table(out: Path, name: str) -> pd.DataFrame:
    return pd.read_csv(out / "report" / f"{name}.csv")
