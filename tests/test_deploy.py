"""Deployment: `voxtrace predict` and `voxtrace serve` run an exported ensemble without TensorFlow or Keras
(an import hook refuses them; ONNX Runtime and LiteRT run the exports) and give what the Keras checkpoints
give (windows, TTA, weights, aggregation and the open-set rule)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fixtures_inference import tiny_model
from fixtures_serve import espeak_clips, save_tiny_run
import voxtrace
from voxtrace.cli import main
from voxtrace.inference.checkpoints import discover_runs, load_checkpoint
from voxtrace.inference.runtime import DEFAULT_BATCH, ExportedModel

ROOT = Path(__file__).resolve().parents[1]
WEIGHTS = ["a/run=1", "b/run=0.5"]
SAME_VOXTRACE = {**os.environ, "PYTHONPATH": str(Path(voxtrace.__file__).parents[1])}  # for subprocesses

# Runs argv[1:] as `voxtrace` with tensorflow, keras and tf_keras unimportable, then scores every clip of
# the --infer-path folder with the web app's `Attributor` and prints its answers as one JSON line.
TF_FREE = textwrap.dedent("""
    import json, sys
    from pathlib import Path

    BLOCKED = {"tensorflow", "keras", "tf_keras"}

    class Refuse:
        def find_spec(self, name, path=None, target=None):
            if name.partition(".")[0] in BLOCKED:
                raise ModuleNotFoundError(f"No module named {name!r} (refused: the deployment path needs none)")
            return None

    sys.meta_path.insert(0, Refuse())
    from voxtrace.cli import main
    assert main(sys.argv[1:]) == 0

    from voxtrace.data.audio import load_audio
    from voxtrace.serve.engine import Attributor

    argv = sys.argv[1:]
    model_dir, clips = argv[argv.index("--model-dir") + 1], argv[argv.index("--infer-path") + 1]
    weights = [item for item in argv[argv.index("--weights") + 1:] if "=" in item]
    attributor = Attributor(model_dir, weights=weights, open_set=True)
    rate = attributor.cfg.audio.sample_rate
    answers = {}
    for clip in sorted(Path(clips).glob("*.wav")):
        probs, label = attributor.predict({rate: load_audio(clip, rate)}, clip.name)
        answers[clip.name] = {"probs": probs.tolist(), "label": label}
    from fastapi.testclient import TestClient
    from voxtrace.serve import create_app

    client = TestClient(create_app(model_dir, weights=weights, open_set=True), base_url="http://127.0.0.1:7860")
    with open(clip, "rb") as fh:  # the last clip, through the web app with its pictures asked for
        response = client.post("/api/predict", params={"images": True}, files={"file": (clip.name, fh)})
    loaded = sorted(BLOCKED & {m.partition(".")[0] for m in sys.modules})
    print("ANSWERS " + json.dumps({"answers": answers, "loaded": loaded, "status": response.status_code,
                                   "web": response.json()}))
""")


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """Two runs exported to ONNX and TFLite (a cnn4 with its log-mel front-end; a dense model), TTA 2 in
    their config, confident made-up out-of-fold scores for the open-set rule, and the prediction CSV of the
    Keras checkpoints."""
    root = tmp_path_factory.mktemp("deploy")
    models = root / "models"
    for seed, name in enumerate(("a", "b")):
        ckpt, cfg = save_tiny_run(models / name, seed=seed)
        cfg = cfg.replace(infer__tta=2, unknown_class="espeak")
        cfg.save(ckpt.parent.parent / "cfg" / "config.yaml")
        if name == "b":
            tiny_model(cfg, seed=seed).save(ckpt)
        probs = np.full((40, len(cfg.classes)), 0.01 / (len(cfg.classes) - 1))
        probs[np.arange(40), np.arange(40) % (len(cfg.classes) - 1)] = 0.99
        oof = pd.DataFrame(probs, columns=cfg.classes)
        oof.insert(0, "path", [f"/oof/clip{i}.wav" for i in range(40)])
        oof.insert(1, "label", [cfg.classes[k] for k in probs.argmax(axis=1)])
        (ckpt.parent.parent / "csv").mkdir()
        oof.to_csv(ckpt.parent.parent / "csv" / "oof.csv", index=False)
    clips = espeak_clips(root / "clips", count=4)
    for fmt in ("onnx", "tflite"):
        assert main(["export", "--model-dir", str(models), "--format", fmt, "--out", str(root / fmt)]) == 0
    keras_csv = root / "keras.csv"
    assert main(["predict", "--model-dir", str(models), "--infer-path", str(clips[0].parent), "--output",
                 str(keras_csv), "--probs", "--open-set", "--weights", *WEIGHTS, "--verbose", "0", "--no-zip"]) == 0
    return root, models, cfg, pd.read_csv(keras_csv).set_index("track")


@pytest.mark.parametrize("fmt", ["onnx", "tflite"])
def test_predict_and_serve_an_export_without_tensorflow(exported, fmt):
    root, models, cfg, keras_rows = exported
    out, csv = root / fmt, root / f"{fmt}.csv"
    done = subprocess.run(
        [sys.executable, "-c", TF_FREE, "predict", "--model-dir", str(out), "--infer-path", str(root / "clips"),
         "--output", str(csv), "--probs", "--open-set", "--verbose", "0", "--no-zip",
         "--weights", *WEIGHTS], capture_output=True, text=True, timeout=300, env=SAME_VOXTRACE)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(next(line for line in done.stdout.splitlines() if line.startswith("ANSWERS "))[8:])
    assert report["loaded"] == []

    rows = pd.read_csv(csv).set_index("track")
    assert list(rows.index) == list(keras_rows.index) and len(rows) == 4
    np.testing.assert_allclose(rows[cfg.classes].to_numpy(float), keras_rows[cfg.classes].to_numpy(float), atol=1e-4)
    assert (rows["algorithm"] == keras_rows["algorithm"]).all()
    rejected = keras_rows["algorithm"] != keras_rows[cfg.classes].to_numpy().argmax(axis=1)
    assert rejected.any(), "the open-set rule rejected no clip, so this test cannot tell it is applied"
    keras_rule = json.loads((models / "open_set.json").read_text())
    export_rule = json.loads((out / "open_set.json").read_text())
    assert export_rule["threshold"] == pytest.approx(keras_rule["threshold"])

    for track, answer in report["answers"].items():
        np.testing.assert_allclose(answer["probs"], keras_rows.loc[track, cfg.classes].to_numpy(float), atol=1e-4)
        assert answer["label"] == keras_rows.loc[track, "algorithm"]
    web = report["web"]
    assert report["status"] == 200, web
    np.testing.assert_allclose([web["probabilities"][c] for c in cfg.classes],
                               keras_rows.loc[web["filename"], cfg.classes].to_numpy(float), atol=1e-4)
    assert web["label"] == cfg.classes[keras_rows.loc[web["filename"], "algorithm"]]
    assert "spectrogram_png" not in web  # drawn with TensorFlow's front-end, absent here


def test_an_export_folder_is_a_model_dir_of_exported_runs(exported):
    root, models, cfg, _ = exported
    out = root / "onnx"
    keras_runs, runs = discover_runs(models), discover_runs(out)
    assert [r.name for r in runs] == [r.name for r in keras_runs] == ["a/run", "b/run"]
    assert all(r.exported for r in runs) and not any(r.exported for r in keras_runs)
    for run, keras_run in zip(runs, keras_runs):
        assert run.folds == keras_run.folds == [0]
        assert run.cfg.to_dict() == keras_run.cfg.to_dict()
        assert run.files.oof.read_text() == keras_run.files.oof.read_text()
    loaded = [load_checkpoint(run.checkpoints[0]) for run in runs]
    assert all(isinstance(model, ExportedModel) for model in loaded)
    assert [model.manifest["input"]["shape"][0] for model in loaded] == [None, None]  # RFFT included
    assert loaded[0].batch_size == DEFAULT_BATCH

    broken = root / "broken"
    broken.mkdir()
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["members"][0]["path"] = "a/run/fold-9"
    (broken / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(FileNotFoundError, match=r"lists member 'a/run/fold-9'.*fold-9 has no manifest.json"):
        discover_runs(broken)


@pytest.mark.slow
def test_a_fresh_venv_with_the_onnx_extra_predicts_an_export(exported, tmp_path):
    """`pip install voxtrace[onnx]` into a new virtual environment installs no TensorFlow or Keras, and its
    `voxtrace predict` scores an ONNX export as the Keras checkpoints do (about a minute with pip's cache)."""
    root, _, cfg, keras_rows = exported
    source = tmp_path / "voxtrace"  # a copy, so the build leaves nothing in the working tree
    shutil.copytree(ROOT / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for path in [ROOT / "pyproject.toml", ROOT / "README.md", *ROOT.glob("requirements*.txt")]:
        shutil.copy(path, source / path.name)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    pip = subprocess.run([str(python), "-m", "pip", "install", "--quiet", f"{source}[onnx]"],
                         capture_output=True, text=True, timeout=900)
    assert pip.returncode == 0, pip.stderr[-3000:]
    listed = subprocess.run([str(python), "-m", "pip", "list", "--format=json"], capture_output=True, text=True,
                            check=True)
    installed = {p["name"].lower().replace("_", "-") for p in json.loads(listed.stdout)}
    assert "onnxruntime" in installed and "voxtrace" in installed
    assert not installed & {"tensorflow", "tensorflow-cpu", "keras", "tf-keras"}

    csv = tmp_path / "venv.csv"
    done = subprocess.run([str(venv / "bin" / "voxtrace"), "predict", "--model-dir", str(root / "onnx"),
                           "--infer-path", str(root / "clips"), "--output", str(csv), "--probs", "--open-set",
                           "--verbose", "0", "--no-zip", "--weights", *WEIGHTS],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = pd.read_csv(csv).set_index("track")
    np.testing.assert_allclose(rows[cfg.classes].to_numpy(float), keras_rows[cfg.classes].to_numpy(float), atol=1e-4)
    assert (rows["algorithm"] == keras_rows["algorithm"]).all()
