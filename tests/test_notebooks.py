"""The training and inference walkthroughs execute end to end on a tiny real corpus, so they never rot."""

import json
import os
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from voxtrace.data.corpus import build_demo_corpus

ROOT = Path(__file__).resolve().parent.parent
TINY = ["model.name=cnn4", "features.img_size=[32, 64]", "audio.duration=1.0", "train.epochs=1", "train.batch_size=8",
        "data.folds=2", "augment.pitch_prob=0.0", "augment.formant_prob=0.0"]


def _execute(name: str, env: dict) -> nbformat.NotebookNode:
    nb = nbformat.read(ROOT / "notebooks" / name, as_version=4)
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}}).execute()
    finally:
        for k, v in old.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
    return nb


def test_training_then_inference_walkthrough(tmp_path):
    data = build_demo_corpus(tmp_path / "corpus", per_class=4, eval_per_class=2, seed=0, jobs=2, cross_per_class=2)
    run = tmp_path / "run"
    env = {"VOXTRACE_DATA": str(data), "VOXTRACE_RUN": str(run), "VOXTRACE_OVERRIDES": json.dumps(TINY)}
    trained = _execute("train_walkthrough.ipynb", env)
    assert (run / "spec_batch.png").is_file()
    ckpts = sorted(run.glob("*/ckpt/fold-*.keras"))
    assert [c.name for c in ckpts] == ["fold-0.keras"]
    assert any("confusion_matrix.png" in str(o.get("text", "")) for c in trained.cells for o in c.get("outputs", []))

    infer = _execute("inference_walkthrough.ipynb", {**env, "VOXTRACE_MODEL_DIR": str(run)})
    pred = run / "pred_eval_part1.csv"
    assert pred.is_file() and len(pred.read_text().splitlines()) == 1 + 12  # 6 classes x 2 eval clips
    assert json.loads((run / "eval_part1" / "report.json").read_text())["n_scored"] == 12
    assert list((run / "explain").glob("*.png"))
    assert infer.cells[-1].outputs, "the saliency cell shows its figure"
