"""Ensemble math, windowed prediction, bad files, checkpoints, pseudo-labels, open-set rejection, submissions."""

import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from fixtures_inference import DURATION, save_run, tiny_cfg, write_bad_files, write_clips
from voxtrace.data.audio import load_audio
from voxtrace.inference.checkpoints import discover_runs
from voxtrace.inference.ensemble import Aggregator, Ensemble, aggregate, parse_weights
from voxtrace.evaluation.metrics import confidence_scores
from voxtrace.inference.open_set import apply_open_set, calibrate_threshold, load_or_calibrate
from voxtrace.inference.windows import frame_windows
from voxtrace.inference.predictor import predict_files
from voxtrace.inference.pseudo import read_pseudo_csv, select_pseudo_labels
from voxtrace.inference.submission import prediction_frame, write_answer_zip

P1 = np.array([[0.6, 0.3, 0.1], [0.2, 0.2, 0.6]])
P2 = np.array([[0.2, 0.7, 0.1], [0.4, 0.4, 0.2]])


def test_mean_and_weighted_mean():
    np.testing.assert_allclose(aggregate([P1, P2]), (P1 + P2) / 2, rtol=1e-6)
    np.testing.assert_allclose(aggregate([P1, P2], weights=[3, 1]), (3 * P1 + P2) / 4, rtol=1e-6)


def test_geometric_mean_is_renormalized():
    expected = np.sqrt(P1 * P2)
    expected /= expected.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(aggregate([P1, P2], "geometric"), expected, rtol=1e-5)


def test_max_and_nan_members_skipped():
    expected = np.maximum(P1, P2)
    np.testing.assert_allclose(aggregate([P1, P2], "max"), expected / expected.sum(1, keepdims=True), rtol=1e-6)
    failed = P2.copy()
    failed[1] = np.nan
    out = aggregate([P1, failed])
    np.testing.assert_allclose(out[1], P1[1], rtol=1e-6)
    assert np.isnan(aggregate([failed])[1]).all()
    with pytest.raises(ValueError, match="agg='max' takes no weights"):
        Aggregator("max").add(P1, 2.0)


def test_folds_then_models(tmp_path):
    """Model A's two folds are averaged first, then A and B with weights 1 and 3."""
    cfg = tiny_cfg()
    models_a = save_run(tmp_path / "runs" / "A", cfg, folds=(0, 1), seed=1)
    models_b = save_run(tmp_path / "runs" / "B", cfg, folds=(0,), seed=2)
    clips = write_clips(tmp_path / "audio", n=3)
    ens = Ensemble(tmp_path / "runs", weights=["B=3"])
    result = ens.predict(clips, progress=False)
    fold = [predict_files(m, cfg, clips, progress=False)[0] for m in models_a + models_b]
    model_a = (fold[0] + fold[1]) / 2
    np.testing.assert_allclose(result.per_model["A"], model_a, rtol=1e-5)
    np.testing.assert_allclose(result.probs, (model_a + 3 * fold[2]) / 4, rtol=1e-5)


@pytest.mark.parametrize("free_ram, resident", [(10**12, True), (10**3, False)])
def test_models_stay_loaded_between_calls_when_they_fit_in_ram(tmp_path, monkeypatch, free_ram, resident):
    """`predict` scores a folder chunk by chunk: checkpoints that fit in a tenth of free RAM are loaded once;
    otherwise each call loads and releases them (one run in memory at a time). The scores are the same."""
    from voxtrace.inference import ensemble as ensemble_module

    save_run(tmp_path / "runs" / "A", tiny_cfg(), folds=(0, 1), seed=1)
    clips = write_clips(tmp_path / "audio", n=3)
    monkeypatch.setattr("voxtrace.inference.predictor.available_memory_bytes", lambda: free_ram)
    loads = []
    real_load = ensemble_module.load_checkpoint
    monkeypatch.setattr(ensemble_module, "load_checkpoint", lambda path: loads.append(path) or real_load(path))
    ens = Ensemble(tmp_path / "runs")
    assert ens.resident is resident
    first, second = ens.predict(clips[:2], progress=False), ens.predict(clips[2:], progress=False)
    assert len(loads) == (2 if resident else 4)
    whole = Ensemble(tmp_path / "runs", resident=False).predict(clips, progress=False)
    np.testing.assert_allclose(np.concatenate([first.probs, second.probs]), whole.probs, rtol=1e-5)


def test_parse_weights_refuses_unknown_name(tmp_path):
    save_run(tmp_path / "runs" / "A", tiny_cfg())
    runs = discover_runs(tmp_path / "runs")
    assert parse_weights(["tiny=0.5"], runs) == {"A": 0.5}
    with pytest.raises(ValueError, match="nosuch"):
        parse_weights(["nosuch=1"], runs)


def test_long_file_is_the_mean_over_windows(tmp_path):
    cfg = tiny_cfg()
    (model,) = save_run(tmp_path / "run", cfg)
    clip = write_clips(tmp_path / "audio", n=1, seconds=(1.3, 1.3))[0]
    probs, errors = predict_files(model, cfg, [clip], batch_size=3, progress=False)
    windows = frame_windows(load_audio(clip), cfg.num_samples, cfg.audio.window_hop)
    assert len(windows) == 10  # 1.3 s in 0.25 s windows every 0.125 s: 1 + ceil((1.3 - 0.25) / 0.125)
    np.testing.assert_allclose(probs[0], model.predict(windows, verbose=0).mean(axis=0), rtol=1e-5)
    assert errors == {}
    max_cfg = cfg.replace(audio__window_agg="max")
    probs_max, _ = predict_files(model, max_cfg, [clip], batch_size=4, progress=False)
    np.testing.assert_allclose(probs_max[0], model.predict(windows, verbose=0).max(axis=0), rtol=1e-5)


def test_tta_pass_zero_is_deterministic(tmp_path):
    cfg = tiny_cfg()
    (model,) = save_run(tmp_path / "run", cfg)
    clips = write_clips(tmp_path / "audio", n=2)
    a, _ = predict_files(model, cfg, clips, tta=3, progress=False)
    b, _ = predict_files(model, cfg, clips, tta=3, progress=False)
    one, _ = predict_files(model, cfg, clips, tta=1, progress=False)
    np.testing.assert_allclose(a, b)
    assert not np.allclose(a, one)


def test_bad_files_get_nan_rows_and_errors(tmp_path):
    cfg = tiny_cfg()
    (model,) = save_run(tmp_path / "run", cfg)
    good = write_clips(tmp_path / "audio", n=3)
    bad = write_bad_files(tmp_path / "audio")
    paths = sorted(good + list(bad.values()))
    probs, errors = predict_files(model, cfg, paths, batch_size=2, progress=False)
    assert set(errors) == {str(p) for p in bad.values()}
    assert "empty" in errors[str(bad["empty"])]
    for i, p in enumerate(paths):
        assert np.isfinite(probs[i]).all() == (p in good)


def test_empty_model_dir_and_class_mismatch_refused(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="empty"):
        discover_runs(tmp_path / "empty")
    save_run(tmp_path / "runs" / "abc", tiny_cfg(("a", "b", "c")))
    save_run(tmp_path / "runs" / "abd", tiny_cfg(("a", "b", "d")))
    with pytest.raises(ValueError, match=r"abc.*\['a', 'b', 'c'\].*abd.*\['a', 'b', 'd'\]"):
        discover_runs(tmp_path / "runs")


def test_pseudo_threshold_and_cap(tmp_path):
    probs = np.array([[0.7, 0.3], [0.9, 0.1], [0.55, 0.45], [0.2, 0.8], [np.nan, np.nan], [0.65, 0.35]])
    paths = [f"/x/f{i}.wav" for i in range(6)]
    frame = select_pseudo_labels(paths, probs, ["a", "b"], threshold=0.6)
    assert frame["track"].tolist() == ["f1.wav", "f0.wav", "f5.wav", "f3.wav"]
    capped = select_pseudo_labels(paths, probs, ["a", "b"], threshold=0.6, cap_per_class=2)
    assert capped["track"].tolist() == ["f1.wav", "f0.wav", "f3.wav"]
    np.testing.assert_allclose(capped["confidence"], [0.9, 0.7, 0.8])
    per_part = select_pseudo_labels(paths, probs, ["a", "b"], threshold=0.6, cap_per_class=1, parts=[1, 2, 1, 1, 1, 1])
    assert per_part["track"].tolist() == ["f1.wav", "f0.wav", "f3.wav"]  # the best "a" of part 2 and of part 1
    capped.to_csv(tmp_path / "pseudo.csv", index=False)
    back = read_pseudo_csv(tmp_path / "pseudo.csv", ["a", "b"])
    assert list(back.columns) == ["path", "track", "a", "b"]
    per_part.to_csv(tmp_path / "parts.csv", index=False)
    assert read_pseudo_csv(tmp_path / "parts.csv", ["a", "b"], parts=[2])["track"].tolist() == ["f1.wav"]
    with pytest.raises(ValueError, match=r"pseudo\.csv has no `part` column"):
        read_pseudo_csv(tmp_path / "pseudo.csv", ["a", "b"], parts=[1])
    with pytest.raises(ValueError, match=r"\['a', 'b'\].*\['a', 'c'\]"):
        read_pseudo_csv(tmp_path / "pseudo.csv", ["a", "c"])


def test_open_set_calibration_picks_the_quantile():
    # 10 correct known clips with top probabilities 0.50..0.95, one wrong clip, one unknown-labelled clip
    top = np.linspace(0.5, 0.95, 10)
    probs = np.stack([top, 1 - top, np.zeros(10)], axis=1)
    probs = np.vstack([probs, [0.2, 0.8, 0.0], [0.9, 0.1, 0.0]])
    labels = [0] * 10 + [0, 2]
    threshold = calibrate_threshold(probs, labels, ["a", "b", "unk"], "unk", "maxprob", target_tpr=0.8)
    assert threshold == pytest.approx(0.60)  # floor(0.2 * 10) = 2 -> third lowest score, 8 of 10 kept
    pred, rejected = apply_open_set(probs, threshold, ["a", "b", "unk"], "unk")
    assert rejected[:10].sum() == 2 and pred[0] == 2 and pred[2] == 0
    energy = confidence_scores(np.array([[0.9, 0.05, 0.05], [0.34, 0.33, 0.33]]), "energy")
    assert energy[0] > energy[1]


def test_open_set_threshold_saved_and_reused(tmp_path):
    cfg = tiny_cfg()
    save_run(tmp_path / "runs" / "A", cfg)
    rng = np.random.default_rng(0)
    probs = rng.dirichlet([1, 1, 1], size=20)
    oof = pd.DataFrame({"path": [f"/d/{i}.wav" for i in range(20)], "track": [f"{i}.wav" for i in range(20)],
                        "label": [cfg.classes[i] for i in probs.argmax(1)], "fold": 0})
    oof[cfg.classes] = probs
    (tmp_path / "runs" / "A" / "csv").mkdir()
    oof.to_csv(tmp_path / "runs" / "A" / "csv" / "oof.csv", index=False)
    ens = Ensemble(tmp_path / "runs")
    state = load_or_calibrate(ens, "maxprob", 0.9)
    known = probs.argmax(1) != 2
    assert state["threshold"] == pytest.approx(np.sort(probs[known].max(1))[int(0.1 * known.sum())])
    assert (tmp_path / "runs" / "open_set.json").is_file()
    (tmp_path / "runs" / "A" / "csv" / "oof.csv").unlink()
    assert load_or_calibrate(ens, "maxprob", 0.9)["threshold"] == state["threshold"]  # reused, not recomputed


def test_answer_zip_content(tmp_path):
    paths = [tmp_path / "b.wav", tmp_path / "a.wav", tmp_path / "c.wav"]
    probs = np.array([[0.1, 0.9], [0.8, 0.2], [np.nan, np.nan]])
    frame = prediction_frame(paths, probs, [1, 0, -1], {str(paths[2]): "empty file"}, ["x", "unk"], with_probs=True)
    assert frame.columns.tolist() == ["track", "algorithm", "x", "unk", "error"]
    assert frame["track"].tolist() == ["a.wav", "b.wav", "c.wav"]
    write_answer_zip(tmp_path, frame, fallback_class=1)
    with zipfile.ZipFile(tmp_path / "answer.zip") as archive:
        assert archive.namelist() == ["answer.txt"]
        assert archive.read("answer.txt").decode() == "a.wav,0\nb.wav,1\nc.wav,1\n"


def _noise_wav(path, seconds, rate=16000, seed=0):
    x = 0.3 * np.random.default_rng(seed).standard_normal(int(seconds * rate))
    sf.write(path, x.astype(np.float32), rate)
    return path


@pytest.mark.parametrize("tta", [1, 3])
def test_long_files_are_streamed_span_by_span_with_the_windows_of_the_whole_file(tmp_path, monkeypatch, tta):
    """Files over max_duration are read in bounded spans, and score exactly as when decoded whole."""
    import voxtrace.data.audio as audio_module

    cfg = tiny_cfg()
    (model,) = save_run(tmp_path / "run", cfg)
    (tmp_path / "audio").mkdir()
    # lengths around span and window boundaries (0.5 s spans hold 4 windows of 0.25 s every 0.125 s)
    paths = [_noise_wav(tmp_path / "audio" / f"n{i}.wav", s, seed=i) for i, s in enumerate([0.2, 2.0, 2.03, 3.1, 2.13])]
    whole, whole_errors = predict_files(model, cfg, paths, tta=tta, progress=False)
    reads = []
    original = audio_module.load_audio

    def spy(path, sample_rate=16000, offset=0.0, duration=None, **kwargs):
        reads.append((Path(path).name, duration))
        return original(path, sample_rate, offset, duration, **kwargs)

    monkeypatch.setattr(audio_module, "load_audio", spy)
    streamed, errors = predict_files(model, cfg, paths, tta=tta, progress=False, max_duration=0.5)
    assert errors == whole_errors == {}
    np.testing.assert_array_equal(streamed, whole)
    long_reads = [d for name, d in reads if name != "n0.wav"]
    assert long_reads and all(d is not None and d <= 0.5 + DURATION for d in long_reads)
    assert sum(1 for name, _ in reads if name == "n3.wav") == 6  # spans every 0.5 s, the last from 2.5 s to the end


def test_streamed_file_at_another_rate_matches_up_to_span_edges(tmp_path):
    cfg = tiny_cfg()
    (model,) = save_run(tmp_path / "run", cfg)
    path = _noise_wav(tmp_path / "hi.wav", 2.6, rate=44100)
    whole, _ = predict_files(model, cfg, [path], progress=False)
    streamed, _ = predict_files(model, cfg, [path], progress=False, max_duration=0.5)
    np.testing.assert_allclose(streamed, whole, atol=1e-3)


def test_tta_offsets_depend_on_the_file_not_on_its_neighbours(tmp_path):
    cfg = tiny_cfg()
    (model,) = save_run(tmp_path / "run", cfg)
    clips = write_clips(tmp_path / "audio", n=4, seconds=(0.3, 1.2))
    together, _ = predict_files(model, cfg, clips, tta=3, progress=False)
    alone, _ = predict_files(model, cfg, clips[2:3], tta=3, progress=False)
    np.testing.assert_array_equal(alone[0], together[2])
