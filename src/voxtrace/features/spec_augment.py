"""SpecAugment for spectrogram images inside the model: masking, flips and JPEG-style compression.

Active only when called with `training=True`; the identity otherwise, so a saved model predicts cleanly.
Every decision is drawn per sample.
"""

from __future__ import annotations

import keras
import tensorflow as tf


def section_kwargs(augment) -> dict:
    """SpecAugment arguments from a `cfg.augment` section; every probability is zero when it is not enabled."""
    scale = 1.0 if augment.enabled else 0.0
    return dict(spec_augment_prob=augment.spec_augment_prob * scale, mask_prob=augment.mask_prob,
                freq_mask=augment.freq_mask, time_mask=augment.time_mask, hflip=0.5 * scale * augment.hflip,
                vflip=0.5 * scale * augment.vflip, jc_prob=augment.jc_prob * scale,
                jc_quality=list(augment.jc_quality))


@keras.saving.register_keras_serializable(package="voxtrace")
class SpecAugment(keras.layers.Layer):
    """Random time/frequency masks, flips and JPEG compression of [B, H, W, C] images (training only).

    Build it from plain arguments or from a config section: `SpecAugment(cfg.augment)`.

    Args:
        spec_augment_prob: probability that a sample is augmented at all.
        mask_prob: probability of one frequency mask and one time mask (given augmentation).
        freq_mask, time_mask: largest mask width in rows (frequency) and columns (time); masked cells get
            the sample's mean.
        hflip, vflip: probability of flipping time / frequency (a bool means 0.5 / 0).
        jc_prob: probability of JPEG compression at a quality drawn from `jc_quality` = [low, high].
        seed: seed of the layer's random stream.
    """

    def __init__(self, spec_augment_prob=0.8, mask_prob=0.75, freq_mask=8, time_mask=32, hflip=0.0, vflip=0.0,
                 jc_prob=0.0, jc_quality=(85, 95), seed=None, **kwargs):
        if hasattr(spec_augment_prob, "spec_augment_prob"):  # SpecAugment(cfg.augment)
            settings = section_kwargs(spec_augment_prob)
            spec_augment_prob, mask_prob, freq_mask, time_mask = (settings[k] for k in (
                "spec_augment_prob", "mask_prob", "freq_mask", "time_mask"))
            hflip, vflip, jc_prob, jc_quality = (settings[k] for k in ("hflip", "vflip", "jc_prob", "jc_quality"))
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.spec_augment_prob = float(spec_augment_prob)
        self.mask_prob = float(mask_prob)
        self.freq_mask, self.time_mask = int(freq_mask), int(time_mask)
        self.hflip = 0.5 if hflip is True else float(hflip)
        self.vflip = 0.5 if vflip is True else float(vflip)
        self.jc_prob = float(jc_prob)
        self.jc_quality = [int(q) for q in jc_quality]
        for key in ("spec_augment_prob", "mask_prob", "hflip", "vflip", "jc_prob"):
            if not 0.0 <= getattr(self, key) <= 1.0:
                raise ValueError(f"{key} must be within [0, 1]. Received: {key}={getattr(self, key)!r}")
        if self.freq_mask < 0 or self.time_mask < 0:
            raise ValueError(f"mask widths must be >= 0. Received: freq_mask={freq_mask}, time_mask={time_mask}")
        if not 0 <= self.jc_quality[0] <= self.jc_quality[1] <= 100:
            raise ValueError(f"jc_quality must be [low, high] within 0..100. Received: jc_quality={jc_quality!r}")
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        # JPEG encoding is a CPU op without an XLA kernel.
        self.supports_jit = self.jc_prob == 0.0

    @classmethod
    def from_config_section(cls, augment, seed=None, **kwargs) -> "SpecAugment":
        """Build from `cfg.augment` (same as `SpecAugment(cfg.augment)`)."""
        return cls(**section_kwargs(augment), seed=seed, **kwargs)

    def _uniform(self, shape):
        return keras.random.uniform(shape, seed=self.seed_generator)

    def call(self, images, training=None):
        if not training or self.spec_augment_prob == 0.0:
            return images
        images = tf.convert_to_tensor(images)
        shape = tf.shape(images)
        batch, height, width = shape[0], shape[1], shape[2]
        active = self._uniform([batch]) < self.spec_augment_prob

        def per_sample(flags):  # [B] bool -> [B, 1, 1, 1]
            return tf.reshape(tf.logical_and(active, flags), [-1, 1, 1, 1])

        out = images
        if self.mask_prob > 0 and (self.freq_mask > 0 or self.time_mask > 0):
            masked = per_sample(self._uniform([batch]) < self.mask_prob)
            keep = tf.logical_and(self._band_keep(batch, height, self.freq_mask)[:, :, None, None],
                                  self._band_keep(batch, width, self.time_mask)[:, None, :, None])
            fill = tf.reduce_mean(images, axis=[1, 2, 3], keepdims=True)
            out = tf.where(tf.logical_or(keep, tf.logical_not(masked)), out, fill)
        if self.hflip > 0:
            out = tf.where(per_sample(self._uniform([batch]) < self.hflip), tf.reverse(out, axis=[2]), out)
        if self.vflip > 0:
            out = tf.where(per_sample(self._uniform([batch]) < self.vflip), tf.reverse(out, axis=[1]), out)
        if self.jc_prob > 0:
            out = tf.where(per_sample(self._uniform([batch]) < self.jc_prob), self._jpeg(out), out)
        return out

    def _band_keep(self, batch, size, max_width):
        """[B, size] bool: False inside one random band of width in [0, max_width) per sample."""
        if max_width == 0:
            return tf.ones([batch, size], tf.bool)
        width = tf.cast(self._uniform([batch]) * tf.cast(tf.minimum(max_width, size), tf.float32), tf.int32)
        start = tf.cast(self._uniform([batch]) * tf.cast(size - width + 1, tf.float32), tf.int32)
        start = tf.minimum(start, size - width)
        pos = tf.range(size)[None, :]
        return tf.logical_or(pos < start[:, None], pos >= (start + width)[:, None])

    def _jpeg(self, images):
        """JPEG round trip of each image at a random quality; pixel range restored afterwards."""
        low = tf.reduce_min(images, axis=[1, 2, 3], keepdims=True)
        high = tf.reduce_max(images, axis=[1, 2, 3], keepdims=True)
        unit = (images - low) / tf.maximum(high - low, 1e-6)
        channels = images.shape[-1]
        rgb = unit if channels == 3 else tf.tile(unit[..., :1], [1, 1, 1, 3])
        q_low, q_high = self.jc_quality
        quality = tf.cast(self._uniform([tf.shape(images)[0]]) * (q_high - q_low + 1), tf.int32) + q_low
        quality = tf.minimum(quality, q_high)

        def one(args):
            image, q = args
            return tf.image.adjust_jpeg_quality(image, q)

        compressed = tf.map_fn(one, (rgb, quality), fn_output_signature=tf.float32)
        compressed = compressed if channels == 3 else compressed[..., :channels]
        compressed = tf.ensure_shape(compressed, images.shape)
        return compressed * (high - low) + low

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(spec_augment_prob=self.spec_augment_prob, mask_prob=self.mask_prob,
                      freq_mask=self.freq_mask, time_mask=self.time_mask, hflip=self.hflip, vflip=self.vflip,
                      jc_prob=self.jc_prob, jc_quality=list(self.jc_quality), seed=self.seed)
        return config
