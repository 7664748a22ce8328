"""The shifted view of the validation clips: the re-finishing itself against hand-derived values, the copies on
disk, out-of-fold rows in both views equal to each fold model on the copies, and ensemble weights fitted on
both views."""

from __future__ import annotations

import dataclasses

import keras
import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from voxtrace.config import Config, ConfigError, ShiftConfig
from voxtrace.data.shift import clean_view, habit_shift, shifted_copies
from voxtrace.inference.ensemble import fit_member_weights, join_on_path

SR = 16000


def _shift(**values) -> ShiftConfig:
    return dataclasses.replace(ShiftConfig(enabled=True), **values)


def test_edges_and_level_are_exact_and_the_speech_is_kept():
    """No rate change, no crop: 0.25 s of floor noise each side, the speech unchanged in shape, the peak at -6 dBFS."""
    x = 0.3 * np.sin(2 * np.pi * 440 * np.arange(SR) / SR).astype(np.float32)
    shift = _shift(rate_prob=0.0, crop_prob=0.0, edge_s=[0.25, 0.25], floor_dbfs=[-90.0, -90.0],
                   peak_dbfs=[-6.0, -6.0])
    y = habit_shift(x, np.random.default_rng(0), SR, shift)
    edge = int(0.25 * SR)
    assert len(y) == len(x) + 2 * edge
    assert np.abs(y).max() == pytest.approx(10 ** (-6 / 20), rel=1e-6)
    gain = 10 ** (-6 / 20) / 0.3  # the speech's peak (0.3; the floor is far below it) -> -6 dBFS
    np.testing.assert_allclose(y[edge: edge + len(x)], x * gain, atol=1e-5)
    floor = np.sqrt(np.mean(np.square(np.concatenate([y[:edge], y[-edge:]]))))
    assert floor == pytest.approx(10 ** (-90 / 20) * gain, rel=0.05)


def test_rate_and_crop_change_the_length_as_drawn():
    x = np.random.default_rng(1).uniform(-0.5, 0.5, 3 * SR).astype(np.float32)
    twice = _shift(rate_prob=1.0, rate=[2.0, 2.0], crop_prob=0.0, edge_s=[0.0, 0.0])
    assert len(habit_shift(x, np.random.default_rng(0), SR, twice)) == pytest.approx(1.5 * SR, abs=2)
    cropped = _shift(rate_prob=0.0, crop_prob=1.0, min_s=1.0, edge_s=[0.0, 0.0])
    lengths = {len(habit_shift(x, np.random.default_rng(seed), SR, cropped)) for seed in range(8)}
    assert len(lengths) > 1 and all(SR <= n <= 3 * SR for n in lengths)


def test_copies_are_written_once_per_clip_and_a_bad_file_is_reported(tmp_path):
    rng = np.random.default_rng(2)
    paths = []
    for i in range(3):
        paths.append(tmp_path / f"clip{i}.wav")
        sf.write(paths[-1], rng.uniform(-0.3, 0.3, SR).astype(np.float32), SR)
    (tmp_path / "bad.wav").write_bytes(b"not audio")
    clips = [str(p) for p in paths] + [str(tmp_path / "bad.wav")]
    copies, errors = shifted_copies(clips, tmp_path / "shifted", _shift(), seed=3, sample_rate=SR, progress=False)
    assert sorted(copies) == sorted(str(p) for p in paths) and list(errors) == [str(tmp_path / "bad.wav")]
    waves = {p: sf.read(c)[0] for p, c in copies.items()}
    assert len({len(w) for w in waves.values()}) > 1  # each clip draws its own habits
    mtimes = {p: (tmp_path / "shifted" / c.rsplit("/", 1)[1]).stat().st_mtime_ns for p, c in copies.items()}
    again, _ = shifted_copies(clips, tmp_path / "shifted", _shift(), seed=3, sample_rate=SR, progress=False)
    assert again == copies
    assert {p: (tmp_path / "shifted" / c.rsplit("/", 1)[1]).stat().st_mtime_ns for p, c in again.items()} == mtimes


def test_bad_shift_ranges_name_their_key():
    with pytest.raises(ConfigError, match="train.oof_shift.peak_dbfs"):
        Config.load(None, ["train.oof_shift.peak_dbfs=[-1, -30]"])
    with pytest.raises(ConfigError, match="train.oof_shift.rate_prob"):
        Config.load(None, ["train.oof_shift.rate_prob=1.5"])


def _oof(view_probs: dict, labels) -> pd.DataFrame:
    rows = []
    for view, probs in view_probs.items():
        rows.append(pd.DataFrame({"path": [f"c{i}" for i in range(len(labels))], "view": view,
                                  "label": [["a", "b"][k] for k in labels], "a": probs[:, 0], "b": probs[:, 1]}))
    return pd.concat(rows, ignore_index=True)


def test_weights_fitted_on_both_views_drop_a_member_that_fails_the_shifted_one():
    """Member `habits` is right on every clean clip and wrong on every shifted one; `method` is right on 80 % of
    both. On the clean view alone `habits` gets the casting weight; on both views `method` does (below a weight of
    0.5 `habits` changes no decision)."""
    labels = np.arange(40) % 2
    right = np.eye(2)[labels] * 0.8 + 0.1
    wrong = np.eye(2)[1 - labels] * 0.8 + 0.1
    method = np.where((np.arange(40) % 5 == 0)[:, None], wrong, right)
    habits = _oof({"clean": right, "shifted": wrong}, labels)
    steady = _oof({"clean": method, "shifted": method}, labels)
    clean_only, _ = fit_member_weights({"habits": clean_view(habits), "method": clean_view(steady)}, ["a", "b"])
    both, table = fit_member_weights({"habits": habits, "method": steady}, ["a", "b"])
    assert clean_only["habits"] > 0.5  # it decides every clean clip where the two disagree
    assert both["habits"] < 0.5 and table.iloc[0]["f1"] == pytest.approx(0.8)  # `method` decides them all


def test_frames_join_on_path_and_view_or_on_the_clean_rows():
    labels = np.array([0, 1, 0])
    viewed = _oof({"clean": np.eye(2)[labels], "shifted": np.eye(2)[1 - labels]}, labels)
    plain = clean_view(viewed).drop(columns="view").iloc[::-1]
    a, b = join_on_path([viewed, viewed.iloc[::-1]], ["x", "y"])
    assert len(a) == 6 and a.index.equals(b.index) and (a["a"] == b["a"]).all()
    a, b = join_on_path([viewed, plain], ["x", "y"])
    assert list(a.index) == ["c0", "c1", "c2"] and (a["a"].to_numpy() == b["a"].to_numpy()).all()


@pytest.mark.parametrize("head", ["dense", "logistic"])
def test_out_of_fold_rows_of_the_shifted_view_are_each_fold_model_on_the_copies(head, tmp_path):
    """Both views in csv/oof.csv; the shifted rows are what each fold's checkpoint predicts for the shifted copies
    of its held-out clips (a CNN trained end to end, and a frozen head scored from cached features)."""
    from fixtures_training import make_tone_noise_corpus, tone_noise_overrides

    from voxtrace.inference.predictor import predict_files
    from voxtrace.training.trainer import shifted_paths, train

    corpus = make_tone_noise_corpus(tmp_path / "corpus", clips_per_class=6)
    overrides = tone_noise_overrides(corpus, tmp_path / "run", epochs=1) + [
        "train.oof_shift.enabled=true", "train.oof_shift.min_s=0.3", f"model.head.cache_dir={tmp_path / 'cache'}"]
    if head == "logistic":
        overrides += ["model.head.kind=logistic", "model.head.save=folds", "audio.window_agg=geometric"]
    cfg = Config.load(None, overrides)
    result = train(cfg)
    oof = pd.read_csv(f"{result['run_dir']}/csv/oof.csv")
    clean, shifted = oof[oof["view"] == "clean"], oof[oof["view"] == "shifted"]
    assert len(clean) and sorted(clean["path"]) == sorted(shifted["path"])
    assert "shifted" in result["overall"]
    copies, errors = shifted_paths(cfg, list(shifted["path"]), progress=False)
    assert not errors and all(str(tmp_path / "cache" / "shifted") in c for c in copies.values())
    for fold in sorted(shifted["fold"].unique()):
        held = shifted[shifted["fold"] == fold]
        model = keras.saving.load_model(f"{result['run_dir']}/ckpt/fold-{fold}.keras")
        probs, errors = predict_files(model, cfg, [copies[p] for p in held["path"]], progress=False)
        assert not errors
        np.testing.assert_allclose(probs, held[["tone", "noise"]].to_numpy(), atol=1e-4)
    assert not np.allclose(clean.sort_values("path")[["tone", "noise"]].to_numpy(),
                           shifted.sort_values("path")[["tone", "noise"]].to_numpy(), atol=1e-4)
