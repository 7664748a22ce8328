"""Front-ends, SpecAugment, plots and the feature/augment config checks."""

import os
import shutil
import subprocess

import keras
import librosa
import numpy as np
import pytest
import pywt
import tensorflow as tf

from voxtrace.config import Config, ConfigError
from voxtrace.features import (
    FRONTENDS,
    LFCC,
    MFCC,
    LogMelSpectrogram,
    SpecAugment,
    STFTSpectrogram,
    WaveletPacket,
    build_frontend,
)
from voxtrace.features.frontends import WAVELETS, mel_filterbank
from voxtrace.features.plots import plot_spec_batch

SR = 16000


@pytest.fixture(scope="module")
def speech(tmp_path_factory):
    """Three seconds of real synthesized speech (espeak-ng), resampled to 16 kHz."""
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed")
    path = tmp_path_factory.mktemp("speech") / "speech.wav"
    text = "Synthetic speech attribution needs clean spectrograms of every generator we know."
    subprocess.run(["espeak-ng", "-w", str(path), text], check=True, capture_output=True)
    y, _ = librosa.load(path, sr=SR)
    return librosa.util.fix_length(y, size=3 * SR).astype(np.float32)


@pytest.mark.parametrize(
    "params",
    [
        dict(n_fft=2048, win_length=2048, window="hann", fmin=20.0, fmax=8000.0, top_db=80.0, img=(128, 256)),
        dict(n_fft=512, win_length=400, window="hamming", fmin=50.0, fmax=7600.0, top_db=60.0, img=(64, 300)),
        dict(n_fft=256, win_length=256, window="hann", fmin=20.0, fmax=8000.0, top_db=80.0, img=(64, 128)),  # demo
    ],
)
def test_logmel_matches_librosa_before_resizing(speech, params):
    params = dict(params)
    img = params.pop("img")
    layer = LogMelSpectrogram(SR, img, **params)
    hop = layer.hop_for(len(speech))
    ours = layer.spectrogram_db(speech[None]).numpy()[0]
    mel = librosa.feature.melspectrogram(
        y=speech, sr=SR, n_fft=params["n_fft"], hop_length=hop, win_length=params["win_length"],
        window=params["window"], n_mels=img[0], fmin=params["fmin"], fmax=params["fmax"], htk=False, norm="slaney",
    )
    ref = librosa.power_to_db(mel, ref=np.max, top_db=params["top_db"])
    assert ours.shape == ref.shape
    assert ours.shape[1] <= img[1]
    assert ref.min() == -params["top_db"] and ref.max() == 0.0  # the comparison spans the whole dB range
    # float32 round-off is largest in the quietest bins: measured max 8e-4 dB, mean 1e-5 dB (README)
    assert np.abs(ours - ref).max() < 1e-3
    assert np.abs(ours - ref).mean() < 2e-5
    # the image is that spectrogram resized to exactly [H, W]
    assert layer(speech[None]).shape == (1, *img, 3)


def test_mel_filterbank_is_slaney():
    ref = librosa.filters.mel(sr=SR, n_fft=1024, n_mels=80, fmin=30.0, fmax=7000.0, htk=False, norm="slaney")
    np.testing.assert_allclose(mel_filterbank(SR, 1024, 80, 30.0, 7000.0), ref.T, atol=1e-6)


def reference_power(x, n_fft, win_length, hop, window):
    """|STFT|^2 [bins, frames] by scipy in float64: centred frames over zero padding, the periodic window of
    `win_length` centred in `n_fft`."""
    import scipy.signal

    win = scipy.signal.get_window(window, win_length, fftbins=True)
    left = (n_fft - win_length) // 2
    win = np.pad(win, (left, n_fft - win_length - left))
    _, _, spec = scipy.signal.stft(x.astype(np.float64), window=win, nperseg=n_fft, noverlap=n_fft - hop,
                                   boundary="zeros", padded=False, detrend=False, scaling="spectrum")
    return np.abs(spec * win.sum()) ** 2  # undo scipy's 1 / sum(window) scaling


def reference_db(power, top_db):
    """10 log10 relative to the maximum, floored `top_db` below it (amin 1e-10, as librosa)."""
    db = 10.0 * np.log10(np.maximum(power, 1e-10))
    return np.maximum(db - db.max(), -top_db)


STFT_PARAMS = [
    dict(n_fft=512, win_length=400, window="hamming", img=(64, 200)),
    dict(n_fft=1024, win_length=1024, window="hann", img=(128, 301)),
    dict(n_fft=256, win_length=256, window="hann", img=(32, 64)),
]


@pytest.mark.parametrize("params", STFT_PARAMS)
def test_stft_matches_a_scipy_reference(speech, params):
    params = dict(params)
    img = params.pop("img")
    layer = STFTSpectrogram(SR, img, top_db=80.0, normalize=None, **params)
    hop = layer.hop_for(len(speech))
    ours = layer.features(speech[None]).numpy()[0]
    ref = reference_db(reference_power(speech, params["n_fft"], params["win_length"], hop, params["window"]), 80.0)
    assert ours.shape == ref.shape == (params["n_fft"] // 2 + 1, 1 + len(speech) // hop)
    assert ref.min() == -80.0
    assert np.abs(ours - ref).max() < 5e-3  # measured 2.3e-3 dB: float32 round-off near the floor


def linear_triangles(n_fft, n_filters, fmin, fmax):
    """[n_filters, bins]: triangles on linearly spaced edges, each scaled to unit area (2 / base width)."""
    freqs = np.fft.rfftfreq(n_fft, 1 / SR)
    edges = np.linspace(fmin, fmax, n_filters + 2)
    bank = np.zeros((n_filters, freqs.size))
    for m in range(n_filters):
        low, centre, high = edges[m : m + 3]
        rising, falling = (freqs - low) / (centre - low), (high - freqs) / (high - centre)
        bank[m] = np.clip(np.minimum(rising, falling), 0.0, None) * 2.0 / (high - low)
    return bank


@pytest.mark.parametrize("params", STFT_PARAMS[:2])
def test_lfcc_matches_a_numpy_reference(speech, params):
    import scipy.fft

    params = dict(params)
    img = params.pop("img")
    layer = LFCC(SR, img, fmin=30.0, fmax=7800.0, n_filters=40, n_coeffs=20, top_db=80.0, normalize=None, **params)
    hop = layer.hop_for(len(speech))
    energies = linear_triangles(params["n_fft"], 40, 30.0, 7800.0) @ reference_power(
        speech, params["n_fft"], params["win_length"], hop, params["window"])
    ref = scipy.fft.dct(reference_db(energies, 80.0), type=2, norm="ortho", axis=0)[:20]
    ours = layer.features(speech[None]).numpy()[0]
    assert ours.shape == ref.shape == (20, 1 + len(speech) // hop)
    np.testing.assert_allclose(ours, ref, atol=1e-3)  # coefficients up to ~500: measured 2e-4
    assert np.abs(ref[1:]).max() > 10.0  # the cepstra carry spectral shape, not only the mean level


TINY = dict(sample_rate=SR, img_size=(32, 40))
TINY_KWARGS = {
    "logmel": dict(n_fft=256),
    "stft": dict(n_fft=256),
    "mfcc": dict(n_fft=256, n_coeffs=13),
    "lfcc": dict(n_fft=256, n_coeffs=13),
    "wavelet": dict(level=5, wavelet="db2"),
}


@pytest.mark.parametrize("kind", sorted(FRONTENDS))
def test_every_frontend_shape_dtype_and_normalization(kind):
    x = np.random.default_rng(0).normal(0, 0.1, (3, 8000)).astype(np.float32)
    out = FRONTENDS[kind](**TINY, **TINY_KWARGS[kind])(x).numpy()
    assert out.shape == (3, 32, 40, 3) and out.dtype == np.float32
    assert np.all(np.isfinite(out))
    np.testing.assert_allclose(out.mean(axis=(1, 2, 3)), 0.0, atol=1e-4)
    np.testing.assert_allclose(out.std(axis=(1, 2, 3)), 1.0, atol=1e-3)
    np.testing.assert_array_equal(out[..., 0], out[..., 2])


@pytest.mark.parametrize("kind", sorted(FRONTENDS))
def test_every_frontend_survives_save_and_safe_load(kind, tmp_path):
    layer = FRONTENDS[kind](**TINY, **TINY_KWARGS[kind], normalize="minmax")
    inputs = keras.Input((8000,))
    features = layer(inputs)
    outputs = keras.layers.Dense(2)(keras.layers.GlobalAveragePooling2D()(features))
    model = keras.Model(inputs, outputs)
    x = np.random.default_rng(1).normal(0, 0.1, (2, 8000)).astype(np.float32)
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    np.testing.assert_array_equal(model.predict(x, verbose=0), loaded.predict(x, verbose=0))
    restored = type(layer).from_config(layer.get_config())
    assert restored.get_config() == layer.get_config()


@pytest.mark.parametrize("wavelet", WAVELETS)
def test_wavelet_packets_equal_pywavelets_in_frequency_order(wavelet):
    x = np.random.default_rng(3).normal(0, 0.1, (2, 2048)).astype(np.float32)
    level = 4
    packets = WaveletPacket(SR, (32, 32), wavelet=wavelet, level=level).packets(x).numpy()
    for sample, ours in zip(x, packets):
        tree = pywt.WaveletPacket(sample.astype(np.float64), wavelet, mode="periodization", maxlevel=level)
        ref = np.stack([node.data for node in tree.get_level(level, order="freq")])
        assert ours.shape == ref.shape == (16, 128)
        np.testing.assert_allclose(ours, ref, atol=1e-5)


def test_wavelet_packets_of_short_signals_wrap_like_pywavelets():
    x = np.random.default_rng(4).normal(0, 0.1, (1, 32)).astype(np.float32)  # last level: 2 samples, 8 taps
    ours = WaveletPacket(SR, (32, 32), wavelet="db4", level=4).packets(x).numpy()[0]
    tree = pywt.WaveletPacket(x[0].astype(np.float64), "db4", mode="periodization", maxlevel=4)
    np.testing.assert_allclose(ours, np.stack([n.data for n in tree.get_level(4, order="freq")]), atol=1e-5)


def test_wavelet_packets_keep_energy_and_order_tones_by_frequency():
    t = np.arange(16384) / SR
    for freq in (700.0, 3100.0, 6300.0):
        tone = np.sin(2 * np.pi * freq * t).astype(np.float32)
        for wavelet in ("haar", "db4"):
            packets = WaveletPacket(SR, (64, 64), wavelet=wavelet, level=5).packets(tone[None]).numpy()[0]
            assert packets.shape == (32, 512)
            np.testing.assert_allclose((packets**2).sum(), (tone**2).sum(), rtol=1e-4)
            assert np.argmax((packets**2).sum(axis=1)) == int(freq / (SR / 2) * 32)


def test_wavelet_packet_refuses_an_unknown_wavelet():
    with pytest.raises(ValueError, match="sym5"):
        WaveletPacket(SR, (32, 32), wavelet="sym5")


def test_cepstral_frontends_are_dct_of_log_filterbank():
    x = np.random.default_rng(2).normal(0, 0.1, (1, 8000)).astype(np.float32)
    mfcc = MFCC(**TINY, n_fft=256, n_coeffs=32, normalize=None, top_db=None)
    logmel = LogMelSpectrogram(**TINY, n_fft=256, n_mels=32, top_db=None, normalize=None)
    ceps = mfcc.features(x).numpy()[0]
    db = logmel.spectrogram_db(x).numpy()[0]
    import scipy.fft

    np.testing.assert_allclose(ceps[1:], scipy.fft.dct(db, type=2, norm="ortho", axis=0)[1:], atol=2e-3)
    assert LFCC(**TINY, n_fft=256, n_coeffs=13).features(x).shape[1] == 13


def test_build_frontend_dispatches_on_kind():
    for kind, cls in FRONTENDS.items():
        cfg = Config.from_dict({"features": {"kind": kind, "img_size": [64, 96], "n_fft": 512, "win_length": 400,
                                             "wavelet_level": 6}})
        layer = build_frontend(cfg)
        assert type(layer) is cls and layer.img_size == (64, 96) and layer.normalize == "standard"
    cfg = Config.from_dict({"features": {"normalize": False, "fmax": 7000.0}})
    layer = build_frontend(cfg)
    assert isinstance(layer, LogMelSpectrogram) and layer.normalize is None and layer.fmax == 7000.0
    assert isinstance(build_frontend(cfg.replace(features__kind="stft")), STFTSpectrogram)


def _images(batch=4):
    return tf.random.stateless_normal([batch, 32, 48, 3], seed=[1, 2])


def test_spec_augment_is_identity_at_inference():
    layer = SpecAugment(spec_augment_prob=1.0, mask_prob=1.0, freq_mask=8, time_mask=16, hflip=1.0, jc_prob=1.0)
    images = _images()
    np.testing.assert_array_equal(layer(images).numpy(), images.numpy())
    np.testing.assert_array_equal(layer(images, training=False).numpy(), images.numpy())


def test_spec_augment_changes_images_in_training():
    images = _images()
    for kwargs in (dict(mask_prob=1.0, freq_mask=8, time_mask=16), dict(mask_prob=0.0, hflip=1.0),
                   dict(mask_prob=0.0, vflip=1.0), dict(mask_prob=0.0, jc_prob=1.0, jc_quality=(20, 30))):
        layer = SpecAugment(spec_augment_prob=1.0, seed=3, **kwargs)
        out = layer(images, training=True).numpy()
        assert out.shape == images.shape and out.dtype == np.float32
        assert all(not np.array_equal(out[k], images.numpy()[k]) for k in range(4)), kwargs
    flipped = SpecAugment(spec_augment_prob=1.0, mask_prob=0.0, hflip=1.0)(images, training=True)
    np.testing.assert_array_equal(flipped.numpy(), images.numpy()[:, :, ::-1])


def test_spec_augment_from_config_and_round_trip():
    cfg = Config().augment
    layer = SpecAugment.from_config_section(cfg, seed=1)
    assert layer.spec_augment_prob == cfg.spec_augment_prob and layer.time_mask == cfg.time_mask
    assert SpecAugment.from_config(layer.get_config()).get_config() == layer.get_config()
    assert {**SpecAugment(cfg).get_config(), "name": "x"} == {**SpecAugment.from_config_section(cfg).get_config(),
                                                              "name": "x"}
    cfg.enabled = False
    off = SpecAugment.from_config_section(cfg)
    np.testing.assert_array_equal(off(_images(), training=True).numpy(), _images().numpy())
    with pytest.raises(ValueError, match="mask_prob"):
        SpecAugment(mask_prob=1.5)


@pytest.mark.parametrize(
    "override, key",
    [
        ({"features": {"fmax": 9000.0}}, "features.fmax"),
        ({"augment": {"gn_prob": -0.1}}, "augment.gn_prob"),
        ({"augment": {"codec_prob": 1.5}}, "augment.codec_prob"),
        ({"features": {"img_size": [16, 256]}}, "features.img_size[0]"),
        ({"features": {"kind": "mfcc", "img_size": [32, 64], "n_coeffs": 40}}, "features.n_coeffs"),
        ({"features": {"norm": "zscore"}}, "features.norm"),
        ({"features": {"wavelet": "sym5"}}, "features.wavelet"),
        ({"features": {"kind": "wavelet", "wavelet_level": 14}, "audio": {"duration": 0.5}}, "features.wavelet_level"),
    ],
)
def test_config_range_errors_name_the_key(override, key):
    with pytest.raises(ConfigError, match=key.replace("[", r"\[").replace("]", r"\]")):
        Config.from_dict(override)


def test_plot_spec_batch_writes_png(tmp_path):
    images = SpecAugment(spec_augment_prob=1.0, mask_prob=1.0)(_images(5), training=True).numpy()
    labels = np.eye(3)[[0, 1, 2, 0, 1]] * 0.7 + 0.1
    path = tmp_path / "plots" / "spec_batch.png"
    plot_spec_batch(images, labels, ["a", "b", "c"], path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in path.parent.iterdir()] == ["spec_batch.png"]
    assert os.path.getsize(path) > 1000
