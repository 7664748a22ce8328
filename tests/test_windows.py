"""The one windowing of inference (`voxtrace.inference.windows`), against the clip itself and the training
pipeline's own crop/pad."""

import numpy as np
import pytest

from voxtrace.config import Config
from voxtrace.data.pipeline import crop_or_pad
from voxtrace.inference.windows import file_rng, frame_windows, pad_window, tta_windows

SR = 16000


def test_windows_cover_a_long_clip_whole():
    long = np.random.default_rng(0).uniform(-0.5, 0.5, 10 * SR + 123).astype(np.float32)
    windows = frame_windows(long, SR, 0.5)
    assert windows.shape == (1 + int(np.ceil((len(long) - SR) / (SR // 2))), SR)
    for k, window in enumerate(windows):
        chunk = long[k * SR // 2 : k * SR // 2 + SR]
        np.testing.assert_array_equal(window[: len(chunk)], chunk)
        assert not np.any(window[len(chunk):])
    assert frame_windows(long[:SR], SR, 0.5).shape == (1, SR)  # exactly one window: no padded second one


@pytest.mark.parametrize("pad_mode", ["constant", "reflect", "random"])
@pytest.mark.parametrize("length", [0, 1, 3999, SR])
def test_a_short_clip_is_padded_as_the_training_pipeline_pads_outside_training(pad_mode, length):
    x = np.random.default_rng(length).uniform(-1, 1, length).astype(np.float32)
    reference = crop_or_pad(x, SR, pad_mode, "start", training=False).numpy()
    np.testing.assert_array_equal(frame_windows(x, SR, 0.5, pad_mode)[0], reference)
    np.testing.assert_array_equal(pad_window(x, SR, pad_mode), reference)


def test_bad_hop_or_pad_mode_is_refused_by_name():
    with pytest.raises(ValueError, match="hop_fraction"):
        frame_windows(np.zeros(10), 4, 0.0)
    with pytest.raises(ValueError, match="pad_mode"):
        pad_window(np.zeros(2), 4, "wrap")


def test_tta_passes_shift_the_grid_and_depend_on_the_file_name_only():
    cfg = Config.load(None, ["audio.duration=0.5", "audio.window_hop=0.5"])
    n, hop = cfg.num_samples, cfg.num_samples // 2
    x = np.arange(3 * n, dtype=np.float32)
    passes = tta_windows(x, cfg, 3, file_rng(cfg.seed, "/a/clip.wav"))
    np.testing.assert_array_equal(passes[0], frame_windows(x, n, 0.5))
    for windows in passes[1:]:
        shift = int(windows[0, 0])  # the samples are their own indices
        assert 0 <= shift < hop
        np.testing.assert_array_equal(windows, frame_windows(x[shift:], n, 0.5))
    again = tta_windows(x, cfg, 3, file_rng(cfg.seed, "/elsewhere/clip.wav"))
    for a, b in zip(passes, again):
        np.testing.assert_array_equal(a, b)
