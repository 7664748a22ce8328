"""`voxtrace train --seeds ... --sweep ...`: planning and validation before any run, one folder per setting x
seed, failed runs reported while the others finish, and the mean ± std table."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fixtures_training import make_corpus, train_flags
from voxtrace.cli import main_for
from voxtrace.config import Config, ConfigError
from voxtrace.training.sweep import plan_runs, read_sweep, run_sweep, setting_label

RUN_NAME = "cnn4-32x64"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return make_corpus(tmp_path_factory.mktemp("corpus"))


def _sweep_file(tmp_path, text):
    path = tmp_path / "sweep.yaml"
    path.write_text(text)
    return str(path)


def _flags(corpus, out):
    return train_flags(corpus, out, epochs=1, steps=2) + ["--verbose", "0"]


def test_two_seeds_two_values_run_end_to_end(tmp_path, corpus):
    out = tmp_path / "sweep"
    sweep = _sweep_file(tmp_path, "model.num_features: [8, 16]\n")
    assert main_for("train", _flags(corpus, out) + ["--seeds", "0", "1", "--sweep", sweep]) == 0

    scores = {}
    for features in (8, 16):
        for seed in (0, 1):
            run = out / f"model.num_features={features}-seed{seed}" / RUN_NAME
            assert (run / "ckpt" / "fold-0.keras").is_file()
            saved = Config.load(run / "cfg" / "config.yaml")
            assert (saved.seed, saved.model.num_features) == (seed, features)
            scores[features, seed] = json.loads((run / "score" / "overall.json").read_text())

    table = pd.read_csv(out / "sweep.csv")
    assert list(table["setting"]) == ["model.num_features=8", "model.num_features=16"]
    assert list(table["runs"]) == [2, 2] and list(table["failed"]) == [0, 0]
    for _, row in table.iterrows():
        features = int(row["model.num_features"])
        for metric in ("acc", "f1", "auc"):
            values = [scores[features, s][metric] for s in (0, 1)]
            assert row[f"{metric}_mean"] == pytest.approx(np.mean(values))
            assert row[f"{metric}_std"] == pytest.approx(np.std(values, ddof=1))
    markdown = (out / "sweep.md").read_text()
    assert "| model.num_features=16 | 0 1 | 2 | 0 |" in markdown and "±" in markdown
    assert len(pd.read_csv(out / "sweep_runs.csv")) == 4
    assert not list(out.rglob("*.partial*"))


@pytest.mark.parametrize("text, expected", [
    ("model.num_features: [8]\naugment.mixup_prob: [0.0, 1.5]\n", r"augment\.mixup_prob=1\.5"),
    ("model.name: [cnn4, cnn5]\n", r"model\.name.*'cnn5'"),
    ("model.name: [rawnet2_tiny]\n", r"features\.kind=raw.*features\.kind='logmel'"),
    ("augment.mixup_probability: [0.5]\n", r"unknown config key augment\.mixup_probability"),
    ("model.num_features: 8\n", r"model\.num_features must be a non-empty list.*model\.num_features=8"),
    ("seed: [1, 2]\n", r"seed cannot be swept.*--seeds"),
])
def test_invalid_sweep_fails_before_any_run(tmp_path, corpus, capsys, text, expected):
    out = tmp_path / "sweep"
    sweep = _sweep_file(tmp_path, text)
    assert main_for("train", _flags(corpus, out) + ["--seeds", "0", "1", "--sweep", sweep]) == 2
    err = capsys.readouterr().err
    assert "config error" in err
    import re

    assert re.search(expected, err), err
    assert not out.exists()  # nothing ran


def test_a_failed_run_is_reported_and_the_others_finish(tmp_path, corpus, capsys):
    broken = tmp_path / "broken.weights.h5"
    broken.write_bytes(b"not an HDF5 file")
    out = tmp_path / "sweep"
    sweep = _sweep_file(tmp_path, f"model.pretrain: [null, {broken}]\n")
    assert main_for("train", _flags(corpus, out) + ["--seeds", "0", "--sweep", sweep]) == 1
    stdout = capsys.readouterr().out
    assert f"failed (model.pretrain={str(broken)!r}, seed=0)" in stdout
    runs = pd.read_csv(out / "sweep_runs.csv", keep_default_na=False)
    assert list(runs["status"]) == ["ok", "failed"]
    assert "PretrainError" in runs["error"][1] and str(broken) in runs["error"][1]
    assert (out / "model.pretrain=null-seed0" / RUN_NAME / "score" / "overall.json").is_file()
    table = pd.read_csv(out / "sweep.csv")
    assert list(table["runs"]) == [1, 0] and list(table["failed"]) == [0, 1]
    assert np.isnan(table["acc_mean"][1]) and not np.isnan(table["acc_mean"][0])


def test_seeds_alone_suffix_the_output_dir_and_table_logic(tmp_path):
    """Fast: the planner's folders and seeds, and the table from known overall scores (training stubbed)."""
    cfg = Config.from_dict({"output_dir": str(tmp_path / "exp"), "model": {"name": "cnn4"},
                            "features": {"img_size": [32, 64]}})
    planned = plan_runs(cfg, {}, [3, 4])
    assert [p.cfg.output_dir for p in planned] == [str(tmp_path / "exp-seed3"), str(tmp_path / "exp-seed4")]
    assert [p.cfg.seed for p in planned] == [3, 4]

    acc = {("resnet18", 0): 0.5, ("resnet18", 1): 0.7, ("cnn4", 0): 0.9}

    def fake_train(run_cfg):
        key = (run_cfg.model.name, run_cfg.seed)
        if key not in acc:
            raise RuntimeError("out of memory")
        score = Path(run_cfg.output_dir) / run_cfg.run_name / "score"
        score.mkdir(parents=True)
        shifted = {"acc": acc[key] - 0.1, "f1": acc[key] / 4, "auc": 0.9}  # train.oof_shift's view
        (score / "overall.json").write_text(json.dumps({"acc": acc[key], "f1": acc[key] / 2, "auc": 1.0,
                                                        "shifted": shifted}))

    result = run_sweep(cfg, {"model.name": ["cnn4", "resnet18"]}, [0, 1], train_fn=fake_train)
    assert [(r.setting, r.seed, m) for r, m in result.failed] == [({"model.name": "cnn4"}, 1,
                                                                    "RuntimeError: out of memory")]
    table = result.table.set_index("setting")
    assert table.loc["model.name=resnet18", "acc_mean"] == pytest.approx(0.6)
    assert table.loc["model.name=resnet18", "acc_std"] == pytest.approx(np.std([0.5, 0.7], ddof=1))
    assert table.loc["model.name=cnn4", "acc_mean"] == pytest.approx(0.9)
    assert np.isnan(table.loc["model.name=cnn4", "acc_std"])  # one finished run: no spread
    assert table.loc["model.name=resnet18", "shifted_acc_mean"] == pytest.approx(0.5)
    assert table.loc["model.name=cnn4", "shifted_f1_mean"] == pytest.approx(0.9 / 4)
    markdown = (tmp_path / "exp" / "sweep.md").read_text()
    assert "| setting | seeds | runs | failed | acc | f1 | auc | shifted acc | shifted f1 | shifted auc |" in markdown
    assert ("| model.name=resnet18 | 0 1 | 2 | 0 | 0.6000 ± 0.1414 | 0.3000 ± 0.0707 | 1.0000 ± 0.0000 | "
            "0.5000 ± 0.1414 | 0.1500 ± 0.0354 | 0.9000 ± 0.0000 |") in markdown
    assert "| model.name=cnn4 | 0 1 | 1 | 1 | 0.9000 | 0.4500 | 1.0000 | 0.8000 | 0.2250 | 0.9000 |" in markdown


def test_sweep_file_and_labels(tmp_path):
    with pytest.raises(ConfigError, match="sweep file not found"):
        read_sweep(tmp_path / "missing.yaml")
    assert read_sweep(_sweep_file(tmp_path, "features.img_size: [[32, 64], [64, 128]]\n")) == {
        "features.img_size": [[32, 64], [64, 128]]}
    assert setting_label({"features.img_size": [32, 64], "model.pretrain": "/w/a b.h5"}) == \
        "features.img_size=32x64,model.pretrain=-w-a-b.h5"
    cfg = Config.from_dict({"output_dir": str(tmp_path), "model": {"name": "cnn4"}})
    with pytest.raises(ConfigError, match="would share the output folder"):
        plan_runs(cfg, {"model.pretrain": ["/w/a b.h5", "/w/a-b.h5"]}, [0])
    with pytest.raises(ConfigError, match="distinct"):
        plan_runs(cfg, {}, [1, 1])
