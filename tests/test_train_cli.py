"""`python train.py` end to end on tiny corpora: outputs and their scores against scikit-learn, pseudo-labels in
the training set, learning a separable toy task, SIGKILL + --resume (same weights as an uninterrupted run),
and flag / config errors."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sklearn import metrics as skm

from fixtures_training import make_corpus, make_tone_noise_corpus, tone_noise_overrides, train_flags
from voxtrace.cli import main_for

REPO = Path(__file__).resolve().parents[1]
RUN_NAME = "cnn4-32x64"


def _command(tmp_path: Path) -> list[str]:
    return [sys.executable, str(REPO / "train.py")]


def _env():
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", MPLBACKEND="Agg", CUDA_VISIBLE_DEVICES="")
    env.pop("TF_CONFIG", None)
    return env


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return make_corpus(tmp_path_factory.mktemp("corpus"))


def _train(tmp_path, flags, timeout=500):
    proc = subprocess.run(_command(tmp_path) + flags, cwd=tmp_path, env=_env(), capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


def test_kfold_run_writes_every_output(tmp_path, corpus):
    import keras

    import voxtrace.features  # noqa: F401  (registers the front-end layers the checkpoint holds)

    out = tmp_path / "runs"
    stdout = _train(tmp_path, train_flags(corpus, out) + ["--selected-folds", "0", "1"])
    run = out / RUN_NAME
    assert f"outputs: {run}" in stdout
    for rel in ["ckpt/fold-0.keras", "ckpt/fold-1.keras", "ckpt/state/fold-0.npz", "cfg/config.yaml",
                "csv/oof.csv", "csv/history_fold-0.csv", "csv/history_fold-1.csv", "csv/report_fold-0.csv",
                "csv/report_oof.csv", "score/fold-0.json", "score/fold-1.json", "score/overall.json",
                "plots/confusion_matrix.png", "plots/history_fold-0.png", "plots/lr_schedule.png"]:
        assert (run / rel).is_file(), rel
    assert not list(run.rglob("*.partial*"))
    assert list((run / "logs" / "fold-0").glob("events.out.tfevents.*"))  # TensorBoard scalars

    oof = pd.read_csv(run / "csv" / "oof.csv")
    assert list(oof.columns) == ["path", "track", "label", "fold", "view", "espeak", "unknown"]
    assert set(oof["fold"]) == {0, 1} and set(oof["view"]) == {"clean"}  # train.oof_shift is off by default
    np.testing.assert_allclose(oof[["espeak", "unknown"]].sum(axis=1), 1.0, atol=1e-4)
    groups = pd.read_csv(corpus).set_index("path")["group"]
    fold_groups = [set(groups[oof.loc[oof["fold"] == k, "path"]]) for k in (0, 1)]
    assert fold_groups[0] and fold_groups[1] and not fold_groups[0] & fold_groups[1]

    overall = json.loads((run / "score" / "overall.json").read_text())
    assert overall.pop("folds") == [0, 1]
    assert overall == pytest.approx(_sklearn_scores(oof))
    for k in (0, 1):
        fold = json.loads((run / "score" / f"fold-{k}.json").read_text())
        assert {m: fold[m] for m in ("acc", "precision", "recall", "f1", "auc")} == pytest.approx(
            _sklearn_scores(oof[oof["fold"] == k]), nan_ok=True)
        assert fold["best_epoch"] in (0, 1) and fold["num_valid"] == (oof["fold"] == k).sum()
    history = pd.read_csv(run / "csv" / "history_fold-0.csv")
    assert list(history["epoch"]) == [0, 1] and {"loss", "val_loss", "val_acc", "val_f1", "lr"} <= set(history)

    model = keras.saving.load_model(run / "ckpt" / "fold-0.keras", safe_mode=True)
    probs = model.predict(np.zeros((2, 8000), "float32"), verbose=0)
    assert probs.shape == (2, 2)
    cfg_text = (run / "cfg" / "config.yaml").read_text()
    assert "cnn4" in cfg_text and "epochs: 2" in cfg_text


def _sklearn_scores(oof: pd.DataFrame) -> dict:
    """acc, macro precision / recall / F1 and ROC AUC of the `unknown` probability, from oof.csv rows."""
    y_true = (oof["label"] == "unknown").to_numpy()
    y_pred = (oof["unknown"] > oof["espeak"]).to_numpy()
    p, r, f, _ = skm.precision_recall_fscore_support(y_true, y_pred, average="macro", zero_division=0)
    auc = skm.roc_auc_score(y_true, oof["unknown"]) if len(set(y_true)) == 2 else float("nan")
    return {"acc": skm.accuracy_score(y_true, y_pred), "precision": p, "recall": r, "f1": f, "auc": auc}


def test_all_data_with_pseudo_labels(tmp_path, corpus):
    clips = sorted(Path(corpus).parent.rglob("*.wav"))
    extra = tmp_path / "unlabelled"
    extra.mkdir()
    rows = []
    for i, src in enumerate(clips[:3] + clips[-3:]):
        dst = extra / f"u{i}.wav"
        dst.write_bytes(src.read_bytes())
        rows.append({"path": str(dst), "espeak": 0.7 if i < 3 else 0.2, "unknown": 0.3 if i < 3 else 0.8})
    pseudo = tmp_path / "pseudo.csv"
    pd.DataFrame(rows).to_csv(pseudo, index=False)
    out = tmp_path / "runs"
    stdout = _train(tmp_path, train_flags(corpus, out, epochs=1) + [
        "--all-data", "--pseudo", "1", "--pseudo_csv", str(pseudo), "--set", "data.pseudo_weight=0.5"])
    assert "+ 6 pseudo-labelled" in stdout
    run = out / RUN_NAME
    assert (run / "ckpt" / "model.keras").is_file() and not (run / "csv" / "oof.csv").exists()
    assert list(pd.read_csv(run / "csv" / "history_all.csv")["epoch"]) == [0]

    # the training set is every labelled clip plus every pseudo-labelled one, with its soft label and weight
    trained = pd.read_csv(run / "csv" / "train_all.csv")
    labelled = pd.read_csv(corpus)
    assert sorted(trained.loc[trained["source"] == "labelled", "path"]) == sorted(labelled["path"])
    mixed_in = trained[trained["source"] == "pseudo"].set_index("path")
    expected = pd.DataFrame(rows).set_index("path")
    assert sorted(mixed_in.index) == sorted(expected.index)
    np.testing.assert_allclose(mixed_in.loc[expected.index, ["espeak", "unknown"]], expected, atol=1e-6)
    np.testing.assert_allclose(mixed_in["weight"], 0.5)
    assert f"train {len(labelled) + len(rows)}" in stdout  # the fold line counts what the pipeline was given


def test_separable_toy_task_is_learnt(tmp_path):
    """Pure tones vs white noise, 24 clips, 3 folds: the out-of-fold predictions (every clip held out once) get
    at most one clip wrong, against the 50 % of chance."""
    corpus = make_tone_noise_corpus(tmp_path / "corpus", clips_per_class=12)
    out = tmp_path / "runs"
    flags = [flag for item in tone_noise_overrides(corpus, out, epochs=3) for flag in ("--set", item)]
    _train(tmp_path, flags + ["--set", "train.steps_per_epoch=8", "--selected-folds", "0", "1", "2"])
    oof = pd.read_csv(out / RUN_NAME / "csv" / "oof.csv")
    assert len(oof) == 24 and set(oof["fold"]) == {0, 1, 2}
    predicted = np.where(oof["tone"] > oof["noise"], "tone", "noise")
    accuracy = float((predicted == oof["label"]).mean())
    assert accuracy >= 23 / 24, oof  # measured 23 or 24 of 24 (runs differ: threads, no train.deterministic)


def _state_epochs(path: Path):
    if not path.is_file():
        return 0
    with np.load(path) as data:
        return json.loads(str(data["meta"]))["epochs_done"]


def _state_arrays(path: Path) -> dict:
    with np.load(path) as data:
        return {k: data[k] for k in data.files if k != "meta"}


def test_sigkill_mid_epoch_then_resume(tmp_path, corpus):
    """Killed during epoch 2 and resumed, a deterministic run with augmentation on ends with the model and optimizer
    state of an uninterrupted one (trained alongside)."""
    augment = ["--set", "augment.enabled=true", "--set", "augment.audio_augment_prob=1.0", "--set",
               "augment.noise_snr_prob=0.5", "--set", "augment.codec_prob=0.0", "--set", "augment.reverb_prob=0.0",
               "--set", "augment.mixup_prob=0.5", "--set", "train.deterministic=true"]
    out, whole = tmp_path / "runs", tmp_path / "uninterrupted"
    flags = train_flags(corpus, out, epochs=3, steps=20) + ["--selected-folds", "0"] + augment
    state = out / RUN_NAME / "ckpt" / "state" / "fold-0.npz"
    log = tmp_path / "uninterrupted.log"
    with open(log, "w") as log_file:
        uninterrupted = subprocess.Popen(_command(tmp_path) + train_flags(corpus, whole, epochs=3, steps=20)
                                         + ["--selected-folds", "0"] + augment, cwd=tmp_path, env=_env(),
                                         stdout=log_file, stderr=subprocess.STDOUT)
    proc = subprocess.Popen(_command(tmp_path) + flags, cwd=tmp_path, env=_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 400
        while _state_epochs(state) < 1:
            assert proc.poll() is None, "training ended before its first epoch was saved"
            assert time.time() < deadline
            time.sleep(0.05)
        time.sleep(0.3)  # into the second epoch
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        done = _state_epochs(state)  # the state file is whole: it loads
        assert 1 <= done < 3
        assert not (out / RUN_NAME / "ckpt" / "fold-0.keras").exists()

        stdout = _train(tmp_path, flags + ["--resume"])
        assert f"{done} epochs done" in stdout
        ran = [int(k) for k in re.findall(r"^Epoch (\d+)/3$", stdout, flags=re.MULTILINE)]
        assert ran == list(range(done + 1, 4)), ran  # only the epochs left, not a restart
        history = pd.read_csv(out / RUN_NAME / "csv" / "history_fold-0.csv")
        assert list(history["epoch"]) == [0, 1, 2]
        assert _state_epochs(state) == 3
        assert (out / RUN_NAME / "ckpt" / "fold-0.keras").is_file()
        assert uninterrupted.wait(timeout=500) == 0, log.read_text()[-3000:]
    finally:
        for process in (proc, uninterrupted):
            if process.poll() is None:
                process.kill()
    expected, resumed = _state_arrays(whole / RUN_NAME / "ckpt" / "state" / "fold-0.npz"), _state_arrays(state)
    assert expected.keys() == resumed.keys()
    for key in expected:
        np.testing.assert_allclose(resumed[key], expected[key], rtol=1e-6, atol=1e-7, err_msg=key)


def test_one_state_file_for_several_folds_is_refused(tmp_path, corpus, capsys):
    state = tmp_path / "fold-0.npz"
    state.write_bytes(b"")
    out = tmp_path / "runs"
    argv = train_flags(corpus, out) + ["--selected-folds", "0", "1", "--resume", str(state)]
    assert main_for("train", argv) == 2
    err = capsys.readouterr().err
    assert f"--resume {state} is the training state of one fold, but 2 folds are selected" in err
    assert not out.exists()


@pytest.mark.parametrize("argv, key", [
    (["--img-size", "32"], "features.img_size"),
    (["--loss", "Hinge"], "train.loss"),
    (["--strategy", "quantum"], "train.strategy"),
    (["--set", "train.no_such_key=1"], "train.no_such_key"),
    (["--set", "train.epochs=zero"], "train.epochs"),
    (["--selected-folds", "7"], "data.selected_folds"),
    (["--pseudo", "1"], "data.pseudo_csv"),
    (["--model-name", "EfficientNetB9"], "model.name"),
    (["--set", "train.lr_max=.nan"], "train.lr_max"),
    (["--set", "train.epochs=.inf"], "train.epochs"),
    (["--set", "augment.snr_db=[10, -.inf]"], "augment.snr_db[1]"),
    (["--seed", "-1"], "seed"),
    (["--set", "infer.batch_size=0"], "infer.batch_size"),
    (["--set", "train.lr_min=0.5"], "train.lr_min"),
    (["--set", "data.selected_folds=[]"], "data.selected_folds"),
    (["--selected-folds", "1", "1"], "data.selected_folds"),
    (["--seeds", "1", "2", "--resume", "fold-0.npz"], "--resume"),
    (["--resume", "absent/fold-0.npz"], "absent/fold-0.npz"),
])
def test_bad_flags_exit_2_naming_the_key(argv, key, capsys, tmp_path):
    assert main_for("train", argv + ["--output-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert key in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err  # one line, no traceback
    assert not any(tmp_path.iterdir())  # refused before any work: no run folder


def test_unparsable_flag_is_an_argparse_error(capsys):
    with pytest.raises(SystemExit) as err:
        main_for("train", ["--epochs", "many"])
    assert err.value.code == 2


def test_flags_map_to_config_overrides():
    import argparse

    from voxtrace.commands.train import add_arguments, config_overrides

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["--model", "cnn4", "--img-size", "64", "128", "--batch", "16", "--all-data",
                              "--debug", "--pseudo_csv", "p.csv", "--set", "train.lr_max=1e-5"])
    overrides = config_overrides(args)
    assert 'model.name="cnn4"' in overrides and "features.img_size=[64, 128]" in overrides
    assert "train.batch_size=16" in overrides and "data.all_data=true" in overrides and "debug=true" in overrides
    assert overrides[-1] == "train.lr_max=1e-5"
    assert not any(o.startswith("train.epochs") for o in overrides)  # not given: the YAML value stays
    assert "data.pseudo_csv=null" in config_overrides(parser.parse_args(["--pseudo-csv", "p.csv", "--pseudo", "0"]))
