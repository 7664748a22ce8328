"""Saliency of a checkpoint's decision w.r.t. the spectrogram image its front-end computes.

A voxtrace model is `waveform -> front-end (image [B, H, W, 3]) -> SpecAugment -> backbone -> head`.
`SaliencyModel` splits a loaded model at the front-end's output, so attributions live on the image the
backbone sees (frequency upwards, time to the right):

- `integrated_gradients`: path-integrated gradients from a black baseline (every pixel at the image's
  darkest value, i.e. silence at the `top_db` floor) to the image, trapezoidal rule over `steps` points.
  Completeness: the attributions sum to `f(image) - f(baseline)` up to the integration error.
- `grad_cam`: class-score gradients pooled over the backbone's last 4-D feature map weight its channels;
  the ReLU of the weighted sum, upsampled to the image and scaled to [0, 1]. CNN backbones only.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

METHODS = ("ig", "gradcam")


class SaliencyModel:
    """A loaded waveform -> probabilities model split at its front-end: `frontend` and `classify(image)`."""

    def __init__(self, model):
        import keras

        from voxtrace.features import Frontend

        frontends = [layer for layer in model.layers if isinstance(layer, Frontend)]
        if len(frontends) != 1:
            raise ValueError(
                f"model {model.name!r} must hold exactly one voxtrace front-end layer (waveform -> image); "
                f"found {len(frontends)} among layers {[layer.name for layer in model.layers]}"
            )
        self.model = model
        self.frontend = frontends[0]
        self.num_samples = int(model.inputs[0].shape[-1])
        self.classifier = keras.Model(self.frontend.output, model.output, name=f"{model.name}_from_image")
        self._after = model.layers[model.layers.index(self.frontend) + 1 :]

    def image(self, waveform) -> tf.Tensor:
        """The front-end image `[1, H, W, 3]` of one window (`[num_samples]` float32)."""
        x = np.asarray(waveform, dtype=np.float32).reshape(1, -1)
        if x.shape[1] != self.num_samples:
            raise ValueError(f"the model takes windows of {self.num_samples} samples. Received: {x.shape[1]} samples")
        return self.frontend(tf.constant(x))

    def classify(self, images) -> tf.Tensor:
        """Probabilities `[B, C]` of images `[B, H, W, 3]`."""
        return self.classifier(images, training=False)

    def features_and_probs(self, images) -> tuple[tf.Tensor, tf.Tensor]:
        """`(last 4-D feature map, probabilities)` of images, running the layers after the front-end in order.

        Raises ValueError when no layer after the front-end outputs a 4-D map (a sequence backbone) or when
        the model is not a chain (the chained output then differs from the model's own).
        """
        x, feature_map = images, None
        for layer in self._after:
            x = layer(x, training=False)
            if len(x.shape) == 4:
                feature_map = x
        if feature_map is None or feature_map is images:
            raise ValueError(
                f"Grad-CAM needs a convolutional backbone with a 4-D feature map; model {self.model.name!r} has "
                f"none after its front-end (layers: {[layer.name for layer in self._after]}). Use method='ig'."
            )
        reference = self.classify(images)
        if not np.allclose(x.numpy(), reference.numpy(), atol=1e-4):
            raise ValueError(
                f"model {self.model.name!r} is not a chain of layers after its front-end; Grad-CAM cannot locate "
                "its feature map. Use method='ig'."
            )
        return feature_map, x


def black_baseline(image) -> tf.Tensor:
    """The image with every pixel at its darkest value (silence at the spectrogram floor)."""
    return tf.fill(tf.shape(image), tf.reduce_min(image))


def integrated_gradients(smodel: SaliencyModel, image, class_index: int, steps: int = 32, baseline=None,
                         batch_size: int = 16) -> np.ndarray:
    """Integrated gradients of `P(class_index)` w.r.t. `image` `[1, H, W, 3]`: an array of shape `[H, W, 3]`.

    `baseline` defaults to `black_baseline(image)`; `steps` is the number of trapezoid intervals.
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1. Received: steps={steps}")
    image = tf.convert_to_tensor(image, tf.float32)
    baseline = black_baseline(image) if baseline is None else tf.convert_to_tensor(baseline, tf.float32)
    if baseline.shape != image.shape:
        raise ValueError(f"baseline shape {baseline.shape} differs from the image shape {image.shape}")
    alphas = tf.linspace(0.0, 1.0, steps + 1)
    weights = np.full(steps + 1, 1.0 / steps, dtype=np.float32)
    weights[[0, -1]] *= 0.5  # trapezoidal rule
    total = tf.zeros(image.shape[1:], tf.float32)
    for start in range(0, steps + 1, batch_size):
        a = alphas[start : start + batch_size][:, None, None, None]
        path = baseline + a * (image - baseline)
        with tf.GradientTape() as tape:
            tape.watch(path)
            score = smodel.classify(path)[:, class_index]
        grads = tape.gradient(score, path)
        w = tf.constant(weights[start : start + batch_size])[:, None, None, None]
        total += tf.reduce_sum(grads * w, axis=0)
    return ((image - baseline)[0] * total).numpy()


def grad_cam(smodel: SaliencyModel, image, class_index: int) -> np.ndarray:
    """Grad-CAM of `P(class_index)` on the backbone's last feature map: `[H, W]` in [0, 1]."""
    image = tf.convert_to_tensor(image, tf.float32)
    with tf.GradientTape() as tape:
        tape.watch(image)  # records the forward pass, so the feature map's gradient can be taken
        feature_map, probs = smodel.features_and_probs(image)
        score = probs[:, class_index]
    grads = tape.gradient(score, feature_map)
    channel_weights = tf.reduce_mean(grads, axis=[1, 2], keepdims=True)
    cam = tf.nn.relu(tf.reduce_sum(channel_weights * feature_map, axis=-1, keepdims=True))
    cam = tf.image.resize(cam, image.shape[1:3], method="bilinear")[0, :, :, 0].numpy()
    peak = float(cam.max())
    return cam / peak if peak > 0 else np.zeros_like(cam)


def attribution_heatmap(attributions: np.ndarray, percentile: float = 99.0) -> np.ndarray:
    """`[H, W]` in [0, 1] from `[H, W, C]` attributions: |sum over channels| scaled by its `percentile`."""
    magnitude = np.abs(np.asarray(attributions).sum(axis=-1))
    top = float(np.percentile(magnitude, percentile))
    return np.clip(magnitude / top, 0.0, 1.0) if top > 0 else np.zeros_like(magnitude)


def loudest_window(x: np.ndarray, num_samples: int, hop_fraction: float = 0.5) -> np.ndarray:
    """The window of `num_samples` (on the prediction grid, short clips zero-padded) with the highest energy."""
    from voxtrace.inference.windows import frame_windows

    windows = frame_windows(x, num_samples, hop_fraction)
    return windows[int(np.argmax(np.square(windows).mean(axis=1)))]


def saliency_maps(smodel: SaliencyModel, waveform, methods=METHODS, class_index: int | None = None,
                  steps: int = 32) -> dict:
    """Explain one window: `{"image": [H, W], "probs": [C], "class_index": k, "<method>": [H, W] in [0, 1]}`.

    `class_index` defaults to the model's top class for this window.
    """
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"saliency methods must be among {list(METHODS)}. Received: {unknown}")
    image = smodel.image(waveform)
    probs = smodel.classify(image)[0].numpy()
    k = int(np.argmax(probs)) if class_index is None else int(class_index)
    if not 0 <= k < probs.shape[0]:
        raise ValueError(f"class_index must be within [0, {probs.shape[0] - 1}]. Received: class_index={k}")
    out = {"image": image[0, :, :, 0].numpy(), "probs": probs, "class_index": k}
    if "ig" in methods:
        out["ig"] = attribution_heatmap(integrated_gradients(smodel, image, k, steps=steps))
    if "gradcam" in methods:
        out["gradcam"] = grad_cam(smodel, image, k)
    return out
