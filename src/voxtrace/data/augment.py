"""Train-time waveform augmentation as tf.data-friendly functions.

Three families, each knob a probability in `cfg.augment`:

* waveform (the reference's): behind the `audio_augment_prob` gate, time shift (`timeshift_prob`), time
  reversal (`timereverse_prob`) and Gaussian noise (`gn_prob`) -- cheap TF ops;
* voice (`pitch_prob`, `formant_prob`, `speed_prob`) and channel (`reverb_prob`, `noise_snr_prob` at
  `snr_db`, `bandlimit_prob`, `codec_prob`: MP3 6-32 kbps, telephone, mu-law or a resampling chain) --
  the numpy functions of `voxtrace.data.perturb`, called through `tf.numpy_function` only when one fires;
* batch: mixup and cutmix along the waveform's time axis, with soft labels and mixed sample weights.

Every random draw is stateless (`RandomStream`): a function given a `seed` ([2] integers) returns the same
result in any process, in any order and under any parallelism, which is what lets a resumed training run
continue the exact augmentation stream of an interrupted one. Without a seed, one is drawn from TensorFlow's
global random stream.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from voxtrace.data import perturb

# (probability key, perturbation) in the order a clip meets them: speaker, room, microphone, line, codec.
PERTURBATIONS = ("pitch", "formant", "speed", "reverb", "noise", "bandlimit", "codec")
_PROB_KEYS = {
    "pitch": "pitch_prob",
    "formant": "formant_prob",
    "speed": "speed_prob",
    "reverb": "reverb_prob",
    "noise": "noise_snr_prob",
    "bandlimit": "bandlimit_prob",
    "codec": "codec_prob",
}
CODECS = ("mp3", "telephone", "mu_law", "resample")
RESAMPLE_CHAINS = ((8000,), (11025,), (12000,), (22050, 8000))
GN_STD = (0.0025, 0.025)  # Gaussian noise std, relative to the clip's RMS


class RandomStream:
    """Stateless random draws from one seed: the k-th draw uses the seed with k folded in.

    Args:
        seed: [2] integers (a tensor is fine); None draws one from TensorFlow's global random stream.
    """

    def __init__(self, seed=None):
        if seed is None:
            seed = tf.random.uniform([2], 0, 2**31 - 1, dtype=tf.int64)
        self.seed = tf.cast(seed, tf.int64)
        self._draws = 0

    def next_seed(self) -> tf.Tensor:
        """A fresh [2] seed: for a sub-stream, or for a stateless op of one's own."""
        self._draws += 1
        return tf.random.experimental.stateless_fold_in(self.seed, self._draws)

    def uniform(self, shape=(), low=0.0, high=1.0, dtype=tf.float32) -> tf.Tensor:
        return tf.random.stateless_uniform(shape, self.next_seed(), low, high, dtype=dtype)

    def normal(self, shape) -> tf.Tensor:
        return tf.random.stateless_normal(shape, self.next_seed())

    def beta(self, shape, alpha: float) -> tf.Tensor:
        """Beta(alpha, alpha) samples from two gamma draws."""
        a = tf.random.stateless_gamma(shape, self.next_seed(), alpha)
        b = tf.random.stateless_gamma(shape, self.next_seed(), alpha)
        return a / tf.maximum(a + b, 1e-12)


def waveform_augment(x, augment, seed=None) -> tf.Tensor:
    """The reference's waveform knobs on one clip [N], behind the `audio_augment_prob` gate (TF ops only)."""
    x = tf.convert_to_tensor(x, tf.float32)
    if not augment.enabled or augment.audio_augment_prob == 0.0:
        return x
    rng = RandomStream(seed)

    def apply(x):
        n = tf.shape(x)[0]
        if augment.timeshift_prob > 0:
            shift = rng.uniform([], -n + 1, tf.maximum(n, 1), dtype=tf.int32)
            x = tf.cond(rng.uniform() < augment.timeshift_prob, lambda: tf.roll(x, shift, axis=0), lambda: x)
        if augment.timereverse_prob > 0:
            x = tf.cond(rng.uniform() < augment.timereverse_prob, lambda: tf.reverse(x, axis=[0]), lambda: x)
        if augment.gn_prob > 0:
            rms = tf.sqrt(tf.reduce_mean(tf.square(x)) + 1e-12)
            std = rng.uniform((), *GN_STD) * tf.maximum(rms, 1e-3)
            noisy = x + rng.normal(tf.shape(x)) * std
            x = tf.cond(rng.uniform() < augment.gn_prob, lambda: noisy, lambda: x)
        return x

    return tf.cond(rng.uniform() < augment.audio_augment_prob, lambda: apply(x), lambda: x)


def apply_perturbations(x: np.ndarray, flags, seed: int, sample_rate: int, snr_db=(10.0, 30.0)) -> np.ndarray:
    """Apply the perturbations whose `flags` (aligned with `PERTURBATIONS`) are set; numpy, shape-preserving."""
    rng = np.random.default_rng(int(seed))
    x = np.asarray(x, dtype=np.float32)
    nyquist = sample_rate / 2
    for name, on in zip(PERTURBATIONS, np.asarray(flags, dtype=bool)):
        if not on or x.size == 0:
            continue
        if name == "pitch":
            x = perturb.pitch_shift(x, sample_rate, float(rng.uniform(-3.0, 3.0)))
        elif name == "formant":
            x = perturb.formant_warp(x, sample_rate, float(rng.uniform(0.88, 1.12)))
        elif name == "speed":
            x = perturb.speed(x, float(rng.uniform(0.9, 1.1)))
        elif name == "reverb":
            x = perturb.reverberate(x, rng, sample_rate)
        elif name == "noise":
            color = str(rng.choice(perturb.TRAIN_NOISE_COLORS))
            x = perturb.add_noise(x, float(rng.uniform(*snr_db)), rng, color=color)
        elif name == "bandlimit":
            high = float(rng.uniform(min(3000.0, 0.4 * nyquist), 0.95 * nyquist))
            x = perturb.bandlimit(x, sample_rate, float(rng.uniform(50.0, 400.0)), high)
        elif name == "codec":
            codec = CODECS[int(rng.integers(len(CODECS)))]
            if codec == "mp3":
                x = perturb.mp3_roundtrip(x, float(rng.uniform(6.0, 32.0)), sample_rate)
            elif codec == "telephone":
                x = perturb.telephone(x, sample_rate)
            elif codec == "mu_law":
                x = perturb.mu_law(x)
            else:
                x = perturb.resample_chain(x, sample_rate, RESAMPLE_CHAINS[int(rng.integers(len(RESAMPLE_CHAINS)))])
    return np.asarray(x, dtype=np.float32)


def perturb_augment(x, augment, sample_rate: int, seed=None) -> tf.Tensor:
    """Voice and channel perturbations of one clip [N], each with its own probability (numpy via TF)."""
    x = tf.convert_to_tensor(x, tf.float32)
    probs = [float(getattr(augment, _PROB_KEYS[name])) for name in PERTURBATIONS]
    if not augment.enabled or max(probs) == 0.0:
        return x
    rng = RandomStream(seed)
    flags = rng.uniform([len(probs)]) < tf.constant(probs)
    seed = rng.uniform([], 0, 2**31 - 1, dtype=tf.int64)
    snr_db = tuple(float(v) for v in augment.snr_db)

    def run(x, flags, seed):
        return apply_perturbations(x, flags, seed, sample_rate, snr_db)

    def perturbed():
        y = tf.numpy_function(run, [x, flags, seed], tf.float32, stateful=False)
        return tf.reshape(y, tf.shape(x))

    out = tf.cond(tf.reduce_any(flags), perturbed, lambda: x)
    out.set_shape(x.shape)
    return out


def augment_waveform(x, augment, sample_rate: int, seed=None) -> tf.Tensor:
    """All per-clip augmentation: voice and channel perturbations, then the reference's waveform knobs."""
    rng = RandomStream(seed)
    return waveform_augment(perturb_augment(x, augment, sample_rate, rng.next_seed()), augment, rng.next_seed())


def mixup(waves, targets, weights, alpha: float = 2.5, prob: float = 0.5, seed=None):
    """With probability `prob` per batch, blend each clip with its neighbour (roll by one): lam ~ Beta(alpha, alpha)
    per clip, applied to waveforms, soft targets and sample weights alike."""
    if prob == 0.0 or alpha <= 0.0:
        return waves, targets, weights
    rng = RandomStream(seed)

    def mixed():
        lam = rng.beta(tf.shape(waves)[:1], alpha)
        lam_w, lam_t = lam[:, None], lam[:, None]
        return (lam_w * waves + (1 - lam_w) * tf.roll(waves, 1, axis=0),
                lam_t * targets + (1 - lam_t) * tf.roll(targets, 1, axis=0),
                lam * weights + (1 - lam) * tf.roll(weights, 1, axis=0))

    return tf.cond(rng.uniform() < prob, mixed, lambda: (waves, targets, weights))


def cutmix(waves, targets, weights, alpha: float = 2.5, prob: float = 0.5, seed=None):
    """With probability `prob` per batch, paste a random time span of the neighbouring clip into each clip; the
    span's length is (1 - lam) N with lam ~ Beta(alpha, alpha), and targets / weights mix by the kept fraction."""
    if prob == 0.0 or alpha <= 0.0:
        return waves, targets, weights
    rng = RandomStream(seed)

    def mixed():
        batch, n = tf.shape(waves)[0], tf.shape(waves)[1]
        lam = rng.beta([batch], alpha)
        span = tf.cast(tf.round((1.0 - lam) * tf.cast(n, tf.float32)), tf.int32)
        start = tf.cast(rng.uniform([batch]) * tf.cast(n - span + 1, tf.float32), tf.int32)
        start = tf.minimum(start, n - span)
        pos = tf.range(n)[None, :]
        inside = tf.logical_and(pos >= start[:, None], pos < (start + span)[:, None])
        kept = 1.0 - tf.cast(span, tf.float32) / tf.cast(n, tf.float32)
        return (tf.where(inside, tf.roll(waves, 1, axis=0), waves),
                kept[:, None] * targets + (1 - kept[:, None]) * tf.roll(targets, 1, axis=0),
                kept * weights + (1 - kept) * tf.roll(weights, 1, axis=0))

    return tf.cond(rng.uniform() < prob, mixed, lambda: (waves, targets, weights))


def batch_augment(waves, targets, weights, augment, seed=None):
    """Mixup then cutmix on a batch, as configured in `augment`."""
    if not augment.enabled:
        return waves, targets, weights
    rng = RandomStream(seed)
    waves, targets, weights = mixup(waves, targets, weights, augment.mixup_alpha, augment.mixup_prob,
                                    rng.next_seed())
    return cutmix(waves, targets, weights, augment.cutmix_alpha, augment.cutmix_prob, rng.next_seed())
