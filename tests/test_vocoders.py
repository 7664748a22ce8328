import numpy as np
import pytest

from voxtrace.data.corpus import vocoders

SR = 16000


def vowel_like(seconds: float = 1.5, f0: float = 140.0) -> np.ndarray:
    """A voiced, formant-shaped signal with vibrato and a pause: harmonics of f0 weighted by two resonances."""
    t = np.arange(int(seconds * SR)) / SR
    phase = 2 * np.pi * np.cumsum(f0 * (1 + 0.08 * np.sin(2 * np.pi * 5 * t))) / SR
    x = sum(np.sin(k * phase) * (np.exp(-((f0 * k - 700) / 200) ** 2) +
                                               0.5 * np.exp(-((f0 * k - 1800) / 300) ** 2)) for k in range(1, 40))
    x[int(0.6 * SR): int(0.8 * SR)] = 0.0
    return (0.3 * x / np.abs(x).max()).astype(np.float32)


def band_energies(x: np.ndarray, edges=(0, 500, 1000, 1500, 2000, 3000, 4000, 6000, 8000)) -> np.ndarray:
    power = np.abs(np.fft.rfft(x)) ** 2
    freqs = np.fft.rfftfreq(len(x), 1 / SR)
    return np.array([power[(freqs >= a) & (freqs < b)].sum() for a, b in zip(edges[:-1], edges[1:])])


@pytest.mark.parametrize("name", sorted(vocoders.VOCODERS))
def test_vocoders_resynthesise_the_envelope_not_the_waveform(name):
    x = vowel_like()
    y, description = vocoders.VOCODERS[name](x, np.random.default_rng(0), SR)
    again, _ = vocoders.VOCODERS[name](x, np.random.default_rng(0), SR)
    assert y.shape == x.shape and y.dtype == np.float32 and np.all(np.isfinite(y))
    np.testing.assert_allclose(y, again, atol=1e-6)  # a seed reproduces the clip
    assert description.startswith(f"{name}(")
    assert np.sqrt(np.mean(y**2)) == pytest.approx(np.sqrt(np.mean(x**2)), rel=0.05)
    # the spectral envelope survives (log band energies follow the input's) ...
    ex, ey = np.log10(band_energies(x) + 1e-9), np.log10(band_energies(y) + 1e-9)
    assert np.corrcoef(ex, ey)[0, 1] > 0.7, (ex.round(1), ey.round(1))
    # ... the waveform does not: it is a resynthesis
    assert abs(np.corrcoef(x, y)[0, 1]) < 0.98


def test_unavailable_vocoders_are_left_out(monkeypatch):
    def broken(x, rng, sr):
        raise RuntimeError("the WORLD vocoder needs the PyPI package pyworld")

    monkeypatch.setitem(vocoders.VOCODERS, "world", broken)
    assert vocoders.available_vocoders(["world", "codec2"]) == ["codec2"]


def test_lpc_filters_are_made_stable_with_the_same_response_shape():
    """A pole outside the unit circle (an LPC fit on a clipped frame can give one) is reflected inside: the
    all-pole filter stays bounded and its magnitude response keeps its shape (a constant factor apart)."""
    from scipy import signal

    from voxtrace.data.corpus.vocoders import _stable

    unstable = np.poly([1.25, 0.6 + 0.3j, 0.6 - 0.3j])
    stable = _stable(unstable)
    assert np.abs(np.roots(stable)).max() < 1.0
    np.testing.assert_allclose(np.sort_complex(np.roots(stable)), np.sort_complex([0.8, 0.6 + 0.3j, 0.6 - 0.3j]))
    _, h_unstable = signal.freqz([1.0], unstable, worN=64)
    _, h_stable = signal.freqz([1.0], stable, worN=64)
    ratio = np.abs(h_stable) / np.abs(h_unstable)
    np.testing.assert_allclose(ratio, ratio[0], rtol=1e-9)
    already = np.poly([0.5, -0.3])
    np.testing.assert_array_equal(_stable(already), already)
