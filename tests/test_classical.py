import librosa
import numpy as np
import pytest
import soundfile as sf

from voxtrace.baselines import classical

SR = 16000


def clips(folder, n_per_class: int, seed: int) -> tuple[list, list]:
    """Class 0: harmonic tones at random pitch; class 1: white noise. Easy to tell apart by their cepstra."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths, labels = [], []
    t = np.arange(SR) / SR
    for i in range(n_per_class):
        f0 = rng.uniform(100, 300)
        tone = sum(np.sin(2 * np.pi * f0 * k * t) / k for k in range(1, 6))
        for label, x in ((0, 0.2 * tone / np.abs(tone).max()), (1, 0.1 * rng.standard_normal(SR))):
            path = folder / f"{label}_{i}.wav"
            sf.write(path, x.astype(np.float32), SR)
            paths.append(path)
            labels.append(label)
    return paths, labels


def test_baseline_separates_tones_from_noise_with_few_clips(tmp_path):
    paths, labels = clips(tmp_path / "train", 3, seed=0)  # three per class: three calibration folds
    model = classical.fit(paths, labels)
    test_paths, test_labels = clips(tmp_path / "test", 4, seed=1)
    probs, errors = classical.predict_proba(model, test_paths, num_classes=2)
    assert errors == {} and np.allclose(probs.sum(1), 1.0, atol=1e-5)
    assert (probs.argmax(1) == np.array(test_labels)).all()


def test_baseline_refuses_a_class_of_one_clip(tmp_path):
    paths, labels = clips(tmp_path / "train", 1, seed=0)
    with pytest.raises(ValueError, match="smallest class has 1"):
        classical.fit(paths, labels)


def test_cepstral_statistics_equal_librosa_mfcc_and_central_difference_deltas():
    wave = (0.1 * np.random.default_rng(5).standard_normal(SR // 2)).astype(np.float32)
    stats = classical.cepstral_statistics(wave, SR).reshape(2, 4, classical.N_CEPS)  # (mel, linear) x 4 stats
    mel = librosa.feature.melspectrogram(y=wave, sr=SR, n_fft=512, hop_length=160, window=np.hanning(512),
                                         center=False, n_mels=40, htk=True, norm=None, power=2.0)
    mfcc = librosa.feature.mfcc(S=np.log(mel + 1e-10), n_mfcc=classical.N_CEPS)
    ends = mfcc[:, 1:2] - mfcc[:, :1], mfcc[:, -1:] - mfcc[:, -2:-1]  # one-sided at the clip's ends
    delta = np.concatenate([ends[0], mfcc[:, 2:] - mfcc[:, :-2], ends[1]], axis=1) / 2
    reference = [mfcc.mean(1), mfcc.std(1), delta.mean(1), delta.std(1)]
    for ours, ref in zip(stats[0], reference):
        np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-4)


def test_linear_bands_equal_the_front_end_triangles_without_area_normalisation():
    from voxtrace.features.frontends import triangular_filterbank

    _, linear = classical.filterbanks(SR)
    edges = np.linspace(0.0, SR / 2, classical.N_FILTERS + 2)
    np.testing.assert_allclose(linear, triangular_filterbank(edges, SR, classical.N_FFT, area_norm=False).T, atol=1e-6)
