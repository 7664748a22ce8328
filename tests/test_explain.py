"""Saliency (integrated gradients, Grad-CAM), the explain command and generator fingerprints."""

from __future__ import annotations

import argparse

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from fixtures_serve import SR, espeak_clips, save_tiny_run, tiny_cfg


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from voxtrace.explain import SaliencyModel
    from voxtrace.inference.checkpoints import load_checkpoint

    root = tmp_path_factory.mktemp("explain")
    ckpt, cfg = save_tiny_run(root / "models")
    clips = espeak_clips(root / "clips", count=2)
    return {"root": root, "cfg": cfg, "smodel": SaliencyModel(load_checkpoint(ckpt)), "clips": clips}


def window_of(tiny, k=0):
    from voxtrace.data.audio import load_audio
    from voxtrace.explain import loudest_window

    x = load_audio(tiny["clips"][k], sample_rate=SR)
    return loudest_window(x, tiny["smodel"].num_samples)


def test_frontend_split_reproduces_the_model(tiny):
    smodel, window = tiny["smodel"], window_of(tiny)
    image = smodel.image(window)
    assert tuple(image.shape) == (1, 32, 64, 3)
    np.testing.assert_allclose(smodel.classify(image).numpy(), smodel.model(window[None]).numpy(), atol=1e-5)


def test_integrated_gradients_completeness_on_the_checkpoint(tiny):
    from voxtrace.explain import black_baseline, integrated_gradients

    smodel = tiny["smodel"]
    image = smodel.image(window_of(tiny))
    gaps = smodel.classify(image)[0].numpy() - smodel.classify(black_baseline(image))[0].numpy()
    k = int(np.argmax(np.abs(gaps)))  # the class whose score the baseline moves most
    assert abs(gaps[k]) > 0.02  # large against the tolerance below, so zero attributions cannot pass
    attributions = integrated_gradients(smodel, image, k, steps=64)
    assert attributions.shape == (32, 64, 3)
    assert attributions.sum() == pytest.approx(gaps[k], rel=0.05)
    assert np.mean(attributions != 0) > 0.5


def test_grad_cam_of_the_checkpoint_is_a_unit_map(tiny):
    from voxtrace.explain import grad_cam

    smodel = tiny["smodel"]
    image = smodel.image(window_of(tiny, 1))
    top = int(np.argmax(smodel.classify(image)[0].numpy()))
    cam = grad_cam(smodel, image, class_index=top)
    assert cam.shape == (32, 64)
    assert cam.min() >= 0.0 and cam.max() == pytest.approx(1.0)
    assert cam.std() > 0.05  # a map, not a constant


ROWS, COLS = slice(8, 16), slice(40, 56)  # the bright patch: frequency rows 8-15, time columns 40-55 of 32x64


def brightness_model(pool: int = 1, weight: float = 8.0):
    """A toy waveform -> front-end -> backbone -> softmax model whose answers are known by hand.

    The backbone sums the image's channels (a 1x1 convolution, linear so the path of integrated gradients has
    no kink), optionally average-pools `pool`x`pool`, then averages: class 0's logit is `weight` times that
    mean, class 1's is minus it. On a non-negative image, bright pixels are evidence for class 0 only.
    """
    import keras

    from voxtrace.explain import SaliencyModel
    from voxtrace.features import build_frontend

    cfg = tiny_cfg()
    inputs = keras.Input((cfg.num_samples,))
    x = keras.layers.Conv2D(1, 1, use_bias=False, kernel_initializer="ones")(
        build_frontend(cfg)(inputs))
    if pool > 1:
        x = keras.layers.AveragePooling2D(pool)(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    head = keras.layers.Dense(2, activation="softmax", bias_initializer="zeros",
                              kernel_initializer=keras.initializers.Constant([[weight, -weight]]))
    return SaliencyModel(keras.Model(inputs, head(x)))


def patch_image(background=0.0, bright=2.0):
    """`[1, 32, 64, 3]`: `background` everywhere, `bright` on the patch."""
    image = np.full((1, 32, 64, 3), background, np.float32)
    image[0, ROWS, COLS] = bright
    return image


def patch_mask(margin: int = 0) -> np.ndarray:
    mask = np.zeros((32, 64), bool)
    mask[ROWS.start - margin : ROWS.stop + margin, COLS.start - margin : COLS.stop + margin] = True
    return mask


def test_grad_cam_is_the_bright_patch_on_a_known_model():
    from voxtrace.explain import grad_cam

    image, inside = patch_image(), patch_mask()
    # full-resolution feature map: the map is the sum of channels / its peak, i.e. exactly the patch
    cam = grad_cam(brightness_model(pool=1), image, class_index=0)
    np.testing.assert_allclose(cam, inside.astype(np.float32), atol=1e-6)
    # a 4x coarser feature map, upsampled: the peak is on the patch and nothing lands far from it
    cam = grad_cam(brightness_model(pool=4), image, class_index=0)
    assert cam.max() == pytest.approx(1.0) and inside[np.unravel_index(cam.argmax(), cam.shape)]
    assert cam[patch_mask(margin=-2)].min() == pytest.approx(1.0)
    np.testing.assert_allclose(cam[~patch_mask(margin=4)], 0.0, atol=1e-6)
    assert cam[inside].sum() > 0.8 * cam.sum()
    # the bright patch is evidence against class 1: no region supports it
    np.testing.assert_array_equal(grad_cam(brightness_model(pool=1), image, class_index=1), 0.0)


def test_integrated_gradients_completeness_on_a_known_model():
    from voxtrace.explain import black_baseline, integrated_gradients

    smodel, image, inside = brightness_model(), patch_image(), patch_mask()
    score, base = (float(smodel.classify(x)[0, 0]) for x in (image, black_baseline(image)))
    # by hand: the mean of the channel sum is 3 * 2 on 128 of 2048 pixels for the image, 0 for the baseline
    assert score == pytest.approx(1 / (1 + np.exp(-2 * 8.0 * 6 * 128 / 2048)), rel=1e-5)
    assert base == pytest.approx(0.5, rel=1e-5)
    attributions = integrated_gradients(smodel, image, 0, steps=64)
    assert attributions.sum() == pytest.approx(score - base, rel=1e-4)
    # the baseline equals the image off the patch, so all of the credit goes to the patch, shared equally
    np.testing.assert_array_equal(attributions[~inside], 0.0)
    np.testing.assert_allclose(attributions[inside], attributions.sum() / (inside.sum() * 3), rtol=1e-4)
    assert integrated_gradients(smodel, image, 1, steps=64).sum() == pytest.approx(base - score, rel=1e-4)


def test_grad_cam_refuses_a_backbone_without_feature_map():
    import keras

    from voxtrace.explain import SaliencyModel, grad_cam
    from voxtrace.features import build_frontend

    cfg = tiny_cfg()
    inputs = keras.Input((cfg.num_samples,))
    pooled = keras.layers.GlobalAveragePooling2D()(build_frontend(cfg)(inputs))
    model = keras.Model(inputs, keras.layers.Dense(cfg.num_classes, activation="softmax")(pooled))
    smodel = SaliencyModel(model)
    with pytest.raises(ValueError, match="4-D feature map"):
        grad_cam(smodel, smodel.image(np.zeros(cfg.num_samples, np.float32)), 0)


def test_saliency_model_needs_a_frontend():
    import keras

    from voxtrace.explain import SaliencyModel

    inputs = keras.Input((100,))
    with pytest.raises(ValueError, match="front-end"):
        SaliencyModel(keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(inputs)))


def run_command(module, argv) -> int:
    parser = argparse.ArgumentParser()
    module.add_arguments(parser)
    return module.run(parser.parse_args(argv))


def test_explain_command_writes_one_png_per_file_and_reports_bad_ones(tiny, tmp_path, capsys):
    from voxtrace.commands import explain

    bad = tmp_path / "broken.wav"
    bad.write_bytes(b"not audio at all" * 10)
    clips = [str(p) for p in tiny["clips"]]
    out = tmp_path / "out"
    code = run_command(explain, ["--model-dir", str(tiny["root"] / "models"), clips[0], str(bad), clips[1],
                                 "--out", str(out), "--method", "both", "--steps", "8"])
    assert code == 1
    assert "broken.wav" in capsys.readouterr().err
    written = sorted(p.name for p in out.glob("*.png"))
    assert written == ["espeak_00.png", "espeak_01.png"]
    assert all((out / name).read_bytes()[:4] == b"\x89PNG" for name in written)


def noise_clip(path, seed, lowpass: bool):
    """White noise, or noise low-passed by a moving average (little energy above ~2 kHz)."""
    x = np.random.default_rng(seed).standard_normal(SR).astype(np.float32) * 0.1
    if lowpass:
        x = np.convolve(x, np.ones(8) / 8, mode="same").astype(np.float32)
    sf.write(path, x, SR)
    return path


def test_fingerprints_separate_bright_and_dull_generators(tmp_path):
    from voxtrace.explain import class_fingerprints, labelled_files

    classes = ["bright", "dull", "unused"]
    for k in range(3):
        (tmp_path / "bright").mkdir(exist_ok=True)
        (tmp_path / "dull").mkdir(exist_ok=True)
        noise_clip(tmp_path / "bright" / f"b{k}.wav", k, lowpass=False)
        noise_clip(tmp_path / "dull" / f"d{k}.wav", 10 + k, lowpass=True)
    (tmp_path / "dull" / "broken.wav").write_bytes(b"")
    paths, labels, order = labelled_files(tmp_path, classes)
    assert order == ["bright", "dull"]
    prints = class_fingerprints(paths, labels, order, n_fft=256, hop_length=128, progress=False)
    assert prints.classes == ["bright", "dull"] and prints.counts == [3, 3]
    assert list(prints.errors) == [str(tmp_path / "dull" / "broken.wav")]
    high = prints.freqs_hz > 4000
    bright, dull = prints.mean_db
    assert bright[high].mean() > dull[high].mean() + 10  # the moving average removes the highs
    assert abs(bright[~high].mean() - dull[~high].mean()) < abs(bright[high].mean() - dull[high].mean())


def test_fingerprints_command_with_labels_csv(tmp_path, capsys):
    from voxtrace.commands import fingerprints

    data = tmp_path / "train"
    data.mkdir()
    rows = []
    for k in range(4):
        noise_clip(data / f"clip{k}.wav", k, lowpass=k % 2 == 1)
        rows.append({"track": f"clip{k}.wav", "algorithm": k % 2})
    out = tmp_path / "fp.png"
    pd.DataFrame(rows + [{"track": "missing.wav", "algorithm": 1}]).to_csv(data / "labels.csv", index=False)
    code = run_command(fingerprints, ["--data", str(data), "--out", str(out), "--cfg", str(tmp_path / "none.yaml")])
    assert code == 0
    assert out.read_bytes()[:4] == b"\x89PNG"
    table = pd.read_csv(out.with_suffix(".csv"))
    assert list(table.columns) == ["freq_hz", "espeak", "clustergen"]  # ids 0 and 1 of the base classes
    captured = capsys.readouterr()
    assert "espeak=2" in captured.out and "missing.wav" in captured.err
