import numpy as np
import pytest

from fixtures_data import tone
from voxtrace.data import perturb

SR = 16000


def speech_like(seconds=1.0, seed=0):
    """Harmonics of a 150 Hz voice with a syllable-rate envelope: energy across the band, like speech."""
    t = np.arange(int(seconds * SR)) / SR
    x = sum(np.sin(2 * np.pi * 150 * k * t) / k for k in range(1, 40) if 150 * k < 7500)
    x = x * (0.6 + 0.4 * np.sin(2 * np.pi * 4 * t)) + 0.01 * np.random.default_rng(seed).standard_normal(t.size)
    return (0.2 * x / np.abs(x).max()).astype(np.float32)


def band_energy(x, low, high):
    spectrum = np.abs(np.fft.rfft(x)) ** 2
    freqs = np.fft.rfftfreq(len(x), 1 / SR)
    return spectrum[(freqs >= low) & (freqs < high)].sum() / spectrum.sum()


def rms(x):
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))


def peak_hz(x):
    return np.argmax(np.abs(np.fft.rfft(x * np.hanning(len(x))))) * SR / len(x)


ALL = {
    "add_noise": lambda x, r: perturb.add_noise(x, 20.0, r, "pink"),
    "reverberate": lambda x, r: perturb.reverberate(x, r, SR),
    "mp3_roundtrip": lambda x, r: perturb.mp3_roundtrip(x, 8, SR),
    "telephone": lambda x, r: perturb.telephone(x, SR),
    "mu_law": lambda x, r: perturb.mu_law(x),
    "bandlimit": lambda x, r: perturb.bandlimit(x, SR, 300, 3400),
    "resample_chain": lambda x, r: perturb.resample_chain(x, SR, [8000, 11025]),
    "pitch_shift": lambda x, r: perturb.pitch_shift(x, SR, 2.0),
    "speed": lambda x, r: perturb.speed(x, 1.1),
    "formant_warp": lambda x, r: perturb.formant_warp(x, SR, 1.1),
    **{f"channel_{name}": (lambda name: lambda x, r: perturb.apply_channels(x, [name], r, SR)[0])(name)
       for name in perturb.CHANNEL_FAMILIES},
}


@pytest.mark.parametrize("name", sorted(ALL))
@pytest.mark.parametrize("n", [16000, 12345])
def test_shape_and_dtype_are_preserved(name, n):
    x = speech_like(1.0)[:n]
    y = ALL[name](x, np.random.default_rng(0))
    assert y.shape == x.shape and y.dtype == np.float32 and np.all(np.isfinite(y))


def test_rejects_non_1d():
    with pytest.raises(ValueError, match="1-D"):
        perturb.mu_law(np.zeros((2, 100)))


@pytest.mark.parametrize("snr", [10.0, 20.0, 30.0])
@pytest.mark.parametrize("color", perturb.NOISE_COLORS)
def test_add_noise_hits_the_snr(snr, color):
    x = speech_like(1.0)
    y = perturb.add_noise(x, snr, np.random.default_rng(1), color)
    measured = 20 * np.log10(rms(x) / rms(y - x))
    assert measured == pytest.approx(snr, abs=0.05)


def test_noise_colors_tilt_the_spectrum():
    rng = np.random.default_rng(0)
    low = {c: band_energy(perturb.colored_noise(32000, rng, c), 0, 500) for c in perturb.NOISE_COLORS}
    assert low["white"] < 0.1 < low["pink"] < low["brown"]
    with pytest.raises(ValueError, match="color"):
        perturb.add_noise(speech_like(), 10, rng, "purple")


def test_noise_on_silence_keeps_silence():
    assert not perturb.add_noise(np.zeros(1000, np.float32), 10, np.random.default_rng(0)).any()


def test_reverb_keeps_level_is_seeded_and_smears():
    x = np.zeros(16000, np.float32)
    x[1000] = 1.0
    a = perturb.reverberate(x, np.random.default_rng(3), SR, rt60=0.5)
    b = perturb.reverberate(x, np.random.default_rng(3), SR, rt60=0.5)
    c = perturb.reverberate(x, np.random.default_rng(4), SR, rt60=0.5)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
    assert rms(a) == pytest.approx(rms(x), rel=1e-3)
    tail = np.abs(a[1000 + 800: 1000 + 8000])  # 50-500 ms after the click
    assert tail.max() > 1e-3 and np.abs(a[:1000]).max() < 1e-6  # causal
    short = perturb.reverberate(x, np.random.default_rng(3), SR, rt60=0.2)
    assert np.sum(np.square(short[1000 + 4000:])) < np.sum(np.square(a[1000 + 4000:]))


def test_rir_decays_by_60_db_over_rt60():
    rir = perturb.room_impulse_response(np.random.default_rng(0), SR, rt60=0.4)
    assert len(rir) == int(0.4 * SR) and np.sum(rir**2) == pytest.approx(1.0, rel=1e-5)
    early, late = rms(rir[800:1600]), rms(rir[-800:])
    assert 20 * np.log10(early / late) > 35


@pytest.mark.parametrize("kbps", [6, 7, 8])
def test_low_bitrate_mp3_is_8k_lame_and_aligned(kbps):
    x = speech_like(2.0)
    y = perturb.mp3_roundtrip(x, kbps, SR)
    assert band_energy(y, 4100, 8000) < 1e-3 < band_energy(x, 4100, 8000)
    assert np.corrcoef(perturb.bandlimit(x, SR, None, 3500), y)[0, 1] > 0.8  # no codec delay left
    np.testing.assert_array_equal(y, perturb.mp3_roundtrip(x, 8, SR))  # 6 and 7 kbps encode at 8


def test_higher_bitrate_mp3_is_closer():
    x = speech_like(2.0)
    low = np.corrcoef(x, perturb.mp3_roundtrip(x, 8, SR))[0, 1]
    high = np.corrcoef(x, perturb.mp3_roundtrip(x, 64, SR))[0, 1]
    assert high > 0.98 and high > low


def test_telephone_band():
    x = speech_like(1.0)
    y = perturb.telephone(x, SR)
    assert band_energy(y, 4000, 8000) < 1e-4
    assert band_energy(y, 0, 200) < 0.3 * band_energy(x, 0, 200)
    assert np.corrcoef(perturb.bandlimit(x, SR, 300, 3400), y)[0, 1] > 0.9


def test_mu_law_quantises_mildly():
    x = tone(0.5)
    y = perturb.mu_law(x)
    assert 0 < np.max(np.abs(y - x)) < 0.02
    assert len(np.unique(y)) <= 256


def test_bandlimit_variants():
    x = speech_like(1.0)
    low = perturb.bandlimit(x, SR, None, 2000)
    assert band_energy(low, 2500, 8000) < 1e-3
    high = perturb.bandlimit(x, SR, 1000, None)
    assert band_energy(high, 0, 700) < 1e-2
    np.testing.assert_array_equal(perturb.bandlimit(x, SR, 0, SR / 2), x)
    with pytest.raises(ValueError, match="low_hz"):
        perturb.bandlimit(x, SR, 3000, 1000)


def test_resample_chain_loses_the_top_band():
    x = speech_like(1.0)
    y = perturb.resample_chain(x, SR, [8000])
    assert band_energy(y, 4100, 8000) < 1e-4 < band_energy(x, 4100, 8000)
    assert np.corrcoef(perturb.bandlimit(x, SR, None, 3800), y)[0, 1] > 0.99


def test_speed_is_a_tape_speed_change():
    x = tone(1.0, freq=400.0)
    y = perturb.speed(x, 2.0)
    assert peak_hz(y[:7000]) == pytest.approx(800, abs=5)
    assert not y[8200:].any()  # the rest is padding
    assert peak_hz(perturb.speed(x, 0.5)) == pytest.approx(200, abs=5)
    with pytest.raises(ValueError, match="factor"):
        perturb.speed(x, 0)


def test_pitch_shift_moves_the_pitch_not_the_tempo():
    x = tone(1.0, freq=440.0)
    y = perturb.pitch_shift(x, SR, 2.0)
    assert peak_hz(y[2000:14000]) == pytest.approx(440 * 2 ** (2 / 12), abs=6)
    assert rms(y[:8000]) > 0.1 and rms(y[8000:]) > 0.1


def test_formant_warp_moves_spectral_envelope():
    x = speech_like(1.0)

    def centroid(v):
        spectrum = np.abs(np.fft.rfft(v))
        return np.sum(spectrum * np.fft.rfftfreq(len(v), 1 / SR)) / spectrum.sum()

    up, down = perturb.formant_warp(x, SR, 1.15), perturb.formant_warp(x, SR, 0.85)
    assert centroid(down) < centroid(x) < centroid(up)
    np.testing.assert_array_equal(perturb.formant_warp(x, SR, 1.0), x)
    with pytest.raises(ValueError, match="alpha"):
        perturb.formant_warp(x, SR, -1)


def test_channel_families_are_split_between_training_and_held_out():
    train = set(perturb.TRAIN_CODECS) | set(perturb.TRAIN_ROOMS)
    held_out = set(perturb.HELD_OUT_CODECS) | set(perturb.HELD_OUT_IMPAIRMENTS)
    assert not train & held_out and train | held_out == set(perturb.CHANNEL_FAMILIES)
    assert "brown" not in perturb.TRAIN_NOISE_COLORS
    x = speech_like(1.0)
    a = perturb.apply_channels(x, ["clip", "speex"], np.random.default_rng(7), SR)
    b = perturb.apply_channels(x, ["clip", "speex"], np.random.default_rng(7), SR)
    np.testing.assert_array_equal(a[0], b[0])
    assert [d.split("(")[0] for d in a[1]] == ["clip", "speex"] and np.abs(a[0]).max() <= 0.99 + 1e-6


def _high_band_share(x, cutoff=4200.0):
    power = np.abs(np.fft.rfft(x)) ** 2
    return power[np.fft.rfftfreq(len(x), 1 / SR) >= cutoff].sum() / power.sum()


@pytest.mark.parametrize("codec,kbps,narrowband", [("gsm", None, True), ("g726", 24, True), ("codec2", 3200, True),
                                                   ("opus", 16, False), ("speex", 15, False), ("g722", None, False),
                                                   ("aac", 24, False)])
def test_codec_roundtrip_is_aligned_and_keeps_its_band(codec, kbps, narrowband):
    rng = np.random.default_rng(3)
    x = perturb.bandlimit(rng.standard_normal(SR).astype(np.float32) * 0.1, SR, 100.0, 7000.0)
    y = perturb.codec_roundtrip(x, codec, SR, kbps)
    assert y.shape == x.shape
    assert (_high_band_share(y) < 0.01) == narrowband, _high_band_share(y)
    if codec == "g726":  # a waveform coder: the decoded clip follows the input sample by sample
        low = perturb.bandlimit(x, SR, 100.0, 3400.0)
        assert np.corrcoef(perturb.bandlimit(y, SR, 100.0, 3400.0), low)[0, 1] > 0.9
    with pytest.raises(ValueError, match="codec must be one of"):
        perturb.codec_roundtrip(x, "amr", SR)


def test_impairments_hit_their_parameters():
    x = speech_like(1.0)
    clipped = perturb.clip_distortion(x, 0.3)
    assert np.abs(clipped).max() == pytest.approx(0.3 * np.abs(x).max(), rel=1e-6)
    lost = perturb.packet_loss(x, np.random.default_rng(0), SR, loss=0.2)
    frames = lost[: len(x) // 320 * 320].reshape(-1, 320)
    assert np.mean(~frames.any(axis=1)) == pytest.approx(0.2, abs=0.1)
    hummed = perturb.mains_hum(x, np.random.default_rng(0), SR, snr_db=15.0)
    assert 20 * np.log10(rms(x) / rms(hummed - x)) == pytest.approx(15.0, abs=0.05)
    spectrum = np.abs(np.fft.rfft(hummed - x))
    assert np.fft.rfftfreq(len(x), 1 / SR)[spectrum.argmax()] in (50.0, 60.0)


def test_mp3_decodes_with_ffmpeg_when_libsndfile_cannot(monkeypatch):
    import soundfile as sf

    x = speech_like(1.0)
    native = perturb.mp3_roundtrip(x, 8, SR)

    def no_mp3(*args, **kwargs):
        raise sf.LibsndfileError(1, prefix="no MP3 support: ")

    monkeypatch.setattr(sf, "read", no_mp3)
    fallback = perturb.mp3_roundtrip(x, 8, SR)
    assert fallback.shape == x.shape and np.corrcoef(native, fallback)[0, 1] > 0.95
