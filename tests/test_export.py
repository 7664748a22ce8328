"""`voxtrace export`: SavedModel, TFLite and ONNX exports of a raw-waveform and a spectrogram checkpoint give
the Keras probabilities on real speech, carry their manifest and config, and a broken checkpoint is reported
while the others export."""

import json
import subprocess

import numpy as np
import pytest

from test_models_extra import save_untrained_runs
from voxtrace.cli import main
from voxtrace.config import Config
from voxtrace.inference.checkpoints import discover_runs, load_checkpoint
from voxtrace.inference.export import ExportedModel, export_checkpoints, load_exported_ensemble
from voxtrace.inference.predictor import predict_files



@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("models")
    save_untrained_runs(folder, duration=0.5)
    return folder


@pytest.fixture(scope="module")
def runs(model_dir):
    """The run names: a log-mel cnn4, then a raw-waveform rawnet2_tiny."""
    return [run.name for run in discover_runs(model_dir)]


@pytest.fixture(scope="module")
def speech(tmp_path_factory):
    """Three espeak-ng clips (about 1 s each, longer than the 0.5 s model window)."""
    folder = tmp_path_factory.mktemp("speech")
    paths = []
    for i, (voice, text) in enumerate([("en-us", "the quick brown fox"), ("en-gb", "seven green trees"),
                                       ("en-us+f3", "open the door please")]):
        path = folder / f"clip{i}.wav"
        subprocess.run(["espeak-ng", "-v", voice, "-w", str(path), text], check=True)
        paths.append(path)
    return paths


@pytest.mark.parametrize("fmt", ["savedmodel", "tflite", "onnx"])
def test_exports_match_keras_on_speech(fmt, model_dir, runs, speech, tmp_path):
    out = tmp_path / fmt
    assert main(["export", "--model-dir", str(model_dir), "--format", fmt, "--out", str(out)]) == 0

    ensemble = json.loads((out / "manifest.json").read_text())
    assert ensemble["format"] == fmt and ensemble["classes"] == ["a", "b", "c"] and not ensemble["failed"]
    assert [m["path"] for m in ensemble["members"]] == [f"{run}/fold-0" for run in runs]
    exported = load_exported_ensemble(out)
    for run, model in zip(runs, exported):
        cfg = Config.load(model_dir / run / "cfg" / "config.yaml")
        manifest = model.manifest
        assert manifest["input"]["shape"][1] == cfg.num_samples == 8000
        assert manifest["classes"] == cfg.classes and manifest["features_kind"] == cfg.features.kind
        assert Config.load(model.folder / manifest["config"]).to_dict() == cfg.to_dict()
        assert (model.folder / manifest["file"]).exists()

        keras_probs, errors = predict_files(load_checkpoint(model_dir / run / "ckpt" / "fold-0.keras"), cfg, speech,
                                            batch_size=3, progress=False)
        export_probs, export_errors = predict_files(model, cfg, speech, batch_size=3, progress=False)
        assert not errors and not export_errors
        np.testing.assert_allclose(export_probs, keras_probs, atol=1e-4)
        assert np.ptp(keras_probs[:, 0]) > 0  # the clips give different outputs: the comparison means something


def test_fixed_batch_exports_are_fed_in_chunks(model_dir, runs, tmp_path):
    """A raw model's GRU needs a fixed batch in TFLite: 5 windows go through a batch-2 export as 2 + 2 + 1."""
    out = tmp_path / "tflite"
    export_checkpoints(model_dir / runs[1], "tflite", out=out, batch_size=2, progress=False)
    model = ExportedModel.load(out / runs[1] / "fold-0")
    assert model.manifest["input"]["shape"] == [2, 8000]
    waves = np.random.default_rng(0).uniform(-0.5, 0.5, (5, 8000)).astype("float32")
    expected = load_checkpoint(model_dir / runs[1] / "ckpt" / "fold-0.keras").predict_on_batch(waves)
    np.testing.assert_allclose(model.predict_on_batch(waves), expected, atol=1e-4)


def test_a_broken_checkpoint_is_reported_and_the_others_export(model_dir, runs, tmp_path, capsys):
    models = tmp_path / "models"
    good = models / runs[0]
    (good / "ckpt").mkdir(parents=True)
    (good / "cfg").mkdir()
    (good / "ckpt" / "fold-0.keras").write_bytes((model_dir / runs[0] / "ckpt" / "fold-0.keras").read_bytes())
    (good / "cfg" / "config.yaml").write_text((model_dir / runs[0] / "cfg" / "config.yaml").read_text())
    (good / "ckpt" / "fold-1.keras").write_bytes(b"truncated")
    out = tmp_path / "export"
    assert main(["export", "--model-dir", str(models), "--format", "savedmodel", "--out", str(out)]) == 1
    assert "FAILED: " in capsys.readouterr().out
    ensemble = json.loads((out / "manifest.json").read_text())
    assert [m["fold"] for m in ensemble["members"]] == [0]
    assert list(ensemble["failed"]) == [str(good / "ckpt" / "fold-1.keras")]
    assert "cannot load checkpoint" in ensemble["failed"][str(good / "ckpt" / "fold-1.keras")]
    assert not list(out.rglob(".export.*"))
