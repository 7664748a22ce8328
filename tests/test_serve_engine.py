"""The web app scores with the same inference path as `voxtrace predict`: weights, TTA, aggregation and the
open-set rule, checked against the prediction CSV of the command itself."""

import numpy as np
import pandas as pd
import pytest

from fixtures_serve import espeak_clips, save_tiny_run
from voxtrace.cli import main


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    """Two cnn4 runs (random init, TTA 2 in their config) with confident made-up out-of-fold scores, so that
    the calibrated open-set threshold rejects some of the untrained models' clips."""
    root = tmp_path_factory.mktemp("engine")
    for seed, name in enumerate(("a", "b")):
        ckpt, cfg = save_tiny_run(root / "models" / name, seed=seed)
        cfg = cfg.replace(infer__tta=2, unknown_class="espeak")  # not the untrained models' top class
        cfg.save(ckpt.parent.parent / "cfg" / "config.yaml")
        probs = np.full((40, len(cfg.classes)), 0.01 / (len(cfg.classes) - 1))
        probs[np.arange(40), np.arange(40) % (len(cfg.classes) - 1)] = 0.99  # every known class, 99 % sure
        oof = pd.DataFrame(probs, columns=cfg.classes)
        oof.insert(0, "path", [f"/oof/clip{i}.wav" for i in range(40)])
        oof.insert(1, "track", [f"clip{i}.wav" for i in range(40)])
        oof.insert(2, "label", [cfg.classes[k] for k in probs.argmax(axis=1)])
        oof.insert(3, "fold", 0)
        (ckpt.parent.parent / "csv").mkdir()
        oof.to_csv(ckpt.parent.parent / "csv" / "oof.csv", index=False)
    clips = espeak_clips(root / "clips", count=4)
    return root, cfg, clips


def test_the_web_app_gives_what_predict_writes(two_runs, tmp_path):
    from voxtrace.data.audio import load_audio
    from voxtrace.serve.engine import Attributor

    root, cfg, clips = two_runs
    weights = ["a/run=1", "b/run=0.25"]
    out = tmp_path / "pred.csv"
    assert main(["predict", "--model-dir", str(root / "models"), "--infer-path", str(clips[0].parent),
                 "--output", str(out), "--probs", "--open-set", "--weights", *weights, "--verbose", "0",
                 "--no-zip"]) == 0
    written = pd.read_csv(out).set_index("track")
    attributor = Attributor(root / "models", weights=weights, open_set=True)
    assert attributor.ensemble.tta == 2 and attributor.ensemble.open_set is not None
    rejected = 0
    for clip in clips:
        probs, label = attributor.predict({cfg.audio.sample_rate: load_audio(clip, cfg.audio.sample_rate)}, clip.name)
        np.testing.assert_allclose(probs, written.loc[clip.name, cfg.classes].to_numpy(float), atol=1e-5)
        assert label == written.loc[clip.name, "algorithm"]
        rejected += label != int(np.argmax(probs))
    assert rejected, "the open-set rule rejected no clip, so this test cannot tell it is applied"
    unweighted = Attributor(root / "models", open_set=False)
    first = {cfg.audio.sample_rate: load_audio(clips[0], cfg.audio.sample_rate)}
    assert not np.allclose(unweighted.predict(first, clips[0].name)[0],
                           written.loc[clips[0].name, cfg.classes].to_numpy(float), atol=1e-4)
