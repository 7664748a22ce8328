"""tf.data pipelines: modes, order, exactly-once, weights, unreadable files, windows and distribution."""

import logging
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import soundfile as sf
import tensorflow as tf

from voxtrace.config import Config
from voxtrace.data.pipeline import build_dataset, crop_or_pad

SR = 16000
NUM_FILES = 7


def _tone(n, amplitude):
    return (amplitude * np.sin(2 * np.pi * 250 * np.arange(n) / SR)).astype(np.float32)


def _amplitude_ids(waves):
    """Files are tones of amplitude 0.05 * (i + 1): recover i from a window's peak."""
    return np.rint(np.abs(np.asarray(waves)).max(axis=1) / 0.05).astype(int) - 1


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("clips")
    paths = []
    for i in range(NUM_FILES):
        path = root / f"clip{i}.wav"
        sf.write(path, _tone(int(SR * (0.4 + 0.3 * i)), 0.05 * (i + 1)), SR, subtype="FLOAT")
        paths.append(str(path))
    return paths


@pytest.fixture(scope="module")
def bad_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("bad") / "broken.wav"
    path.write_bytes(b"RIFF\x00\x00\x00\x00WAVEnot really audio")
    return str(path)


def _cfg(**augment):
    return Config.from_dict({"audio": {"duration": 1.0, "pad_mode": "constant", "crop_mode": "random"},
                             "train": {"batch_size": 3}, "augment": augment})


def _labels(n, classes=6):
    return np.eye(classes, dtype=np.float32)[np.arange(n) % classes]


def test_valid_mode_keeps_order_and_yields_each_file_once(corpus):
    weights = np.linspace(0.5, 2.0, NUM_FILES).astype(np.float32)
    ds = build_dataset(corpus, _labels(NUM_FILES), _cfg(), mode="valid", sample_weights=weights)
    waves, targets, got_weights = (np.concatenate(parts) for parts in zip(*[(x, y, w) for x, y, w in ds]))
    assert waves.shape == (NUM_FILES, SR) and waves.dtype == np.float32
    np.testing.assert_array_equal(_amplitude_ids(waves), np.arange(NUM_FILES))
    np.testing.assert_array_equal(targets, _labels(NUM_FILES))
    np.testing.assert_allclose(got_weights, weights)
    again = np.concatenate([x for x, _, _ in ds])
    np.testing.assert_array_equal(again, waves)  # deterministic, no augmentation
    cached = np.concatenate([x for x, _, _ in build_dataset(corpus, _labels(NUM_FILES), _cfg(), "valid", cache=True)])
    np.testing.assert_array_equal(cached, waves)


def test_valid_mode_gives_unreadable_file_zero_weight(corpus, bad_file, caplog):
    paths = corpus[:2] + [bad_file] + corpus[2:3]
    with caplog.at_level(logging.WARNING, logger="voxtrace.data"):
        batches = list(build_dataset(paths, _labels(4), _cfg(), mode="valid", batch_size=4))
    (waves, _, weights), = batches
    np.testing.assert_array_equal(weights.numpy(), [1, 1, 0, 1])
    assert not np.any(waves.numpy()[2])
    assert "broken.wav" in caplog.text


def test_train_mode_shapes_repeat_skips_bad_files_and_mixes(corpus, bad_file, caplog):
    cfg = _cfg(mixup_prob=1.0, cutmix_prob=0.0, audio_augment_prob=1.0, gn_prob=1.0)
    paths = corpus + [bad_file]
    with caplog.at_level(logging.WARNING, logger="voxtrace.data"):
        batches = list(build_dataset(paths, _labels(len(paths)), cfg, mode="train", shuffle_seed=1).take(6))
    assert "broken.wav" in caplog.text
    for waves, targets, weights in batches:
        assert waves.shape == (3, SR) and targets.shape == (3, 6) and weights.shape == (3,)
        np.testing.assert_allclose(targets.numpy().sum(axis=1), 1.0, atol=1e-6)
    assert any(np.sort(t.numpy(), axis=1)[:, -2].max() > 0 for _, t, _ in batches)  # soft labels


def test_train_mode_shuffles_and_sees_every_file(corpus):
    # train.deterministic: parallel decoding keeps the stream's order, so the first pass is exactly one epoch
    cfg = _cfg(enabled=False).replace(train__deterministic=True)
    ds = build_dataset(corpus, _labels(NUM_FILES), cfg, mode="train", batch_size=1, shuffle_seed=3)
    first_epochs = [int(np.argmax(y)) for _, y, _ in ds.take(2 * NUM_FILES)]
    epoch = [int(i) for i in _amplitude_ids(np.concatenate([x for x, _, _ in ds.take(NUM_FILES)]))]
    assert sorted(epoch) == list(range(NUM_FILES))
    assert epoch != list(range(NUM_FILES))
    assert first_epochs[:NUM_FILES] != first_epochs[NUM_FILES:]  # reshuffled every epoch


def test_crop_or_pad_modes():
    x = np.arange(1, 11, dtype=np.float32)
    np.testing.assert_array_equal(crop_or_pad(x, 4, crop_mode="start"), [1, 2, 3, 4])
    np.testing.assert_array_equal(crop_or_pad(x, 4, crop_mode="center"), [4, 5, 6, 7])
    np.testing.assert_array_equal(crop_or_pad(x, 4, crop_mode="random"), [4, 5, 6, 7])  # centre outside training
    crops = {tuple(crop_or_pad(x, 4, crop_mode="random", training=True).numpy()) for _ in range(30)}
    assert len(crops) > 1 and all(c == tuple(range(int(c[0]), int(c[0]) + 4)) for c in crops)
    y = np.array([1, 2, 3], np.float32)
    np.testing.assert_array_equal(crop_or_pad(y, 8, pad_mode="constant"), [1, 2, 3, 0, 0, 0, 0, 0])
    np.testing.assert_array_equal(crop_or_pad(y, 8, pad_mode="reflect"), [1, 2, 3, 3, 2, 1, 1, 2])
    padded = {tuple(crop_or_pad(y, 6, pad_mode="constant", training=True).numpy()) for _ in range(30)}
    assert len(padded) > 1 and all(sorted(p)[-3:] == [1, 2, 3] for p in padded)
    assert crop_or_pad(np.zeros([0], np.float32), 5, pad_mode="reflect").shape == (5,)
    with pytest.raises(ValueError, match="pad_mode"):
        crop_or_pad(x, 4, pad_mode="wrap")


def test_bad_arguments_are_named(corpus):
    with pytest.raises(ValueError, match="labels"):
        build_dataset(corpus, _labels(NUM_FILES, classes=3), _cfg(), mode="valid")
    with pytest.raises(ValueError, match="mode"):
        build_dataset(corpus, _labels(NUM_FILES), _cfg(), mode="test")
    with pytest.raises(ValueError, match="sample_weights"):
        build_dataset(corpus, _labels(NUM_FILES), _cfg(), mode="train", sample_weights=[1.0])


def test_mirrored_strategy_sees_every_valid_element_once(corpus):
    """Two logical CPUs must be configured before TF starts, so this runs in a fresh interpreter."""
    script = textwrap.dedent(f"""
        import numpy as np, tensorflow as tf
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        from voxtrace.config import Config
        from voxtrace.data.pipeline import build_dataset
        paths = {corpus!r}
        cfg = Config.from_dict({{"audio": {{"duration": 1.0}}}})
        labels = np.eye(6, dtype=np.float32)[np.arange(len(paths)) % 6]
        strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
        ds = build_dataset(paths, labels, cfg, mode="valid", batch_size=4)
        assert ds.options().experimental_distribute.auto_shard_policy == tf.data.experimental.AutoShardPolicy.DATA
        seen, per_replica = [], [0, 0]
        for x, y, w in strategy.experimental_distribute_dataset(ds):
            for k, part in enumerate(strategy.experimental_local_results(x)):
                per_replica[k] += len(part)
                seen.extend(np.rint(np.abs(part.numpy()).max(axis=1) / 0.05).astype(int) - 1)
        assert min(per_replica) > 0, per_replica
        print("SEEN", sorted(int(s) for s in seen))
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"SEEN {list(range(NUM_FILES))}" in result.stdout
