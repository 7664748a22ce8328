"""The web app's model side: the ensemble of a model dir, kept loaded and shared by all requests.

Scores come from `voxtrace.inference.ensemble.Ensemble` in resident mode (the same windows, TTA, weights,
aggregation and open-set rule as `voxtrace predict`); the clip comes in decoded by the caller, outside the
lock, so a slow decoder never holds up the models. One lock serialises the TensorFlow work, so concurrent
requests each get their own, correct answer.
"""

from __future__ import annotations

import os
import threading

import numpy as np


class Attributor:
    """Attribute one decoded clip with the whole ensemble, and explain it with the first checkpoint."""

    def __init__(self, model_dir: str | os.PathLike, weights=None, open_set: bool | None = None,
                 batch_size: int = 8, saliency_steps: int = 16):
        from voxtrace.inference.checkpoints import discover_runs
        from voxtrace.inference.decision import decision_settings, load_or_fit_decision
        from voxtrace.inference.ensemble import Ensemble
        from voxtrace.inference.open_set import load_or_calibrate
        from voxtrace.inference.settings import infer_settings

        settings = infer_settings(discover_runs(model_dir)[0].cfg, open_set=open_set)
        # a fixed batch size, so each model's predict function is traced once
        self.ensemble = Ensemble(model_dir, agg=settings.agg, weights=weights, tta=settings.tta,
                                 batch_size=int(batch_size), resident=True)
        if settings.open_set:
            self.ensemble.open_set = load_or_calibrate(self.ensemble, settings.score, settings.target_tpr)
        self.ensemble.decision = load_or_fit_decision(self.ensemble, decision_settings(self.ensemble.cfg))
        self.saliency_steps = int(saliency_steps)
        first = self.ensemble.models(self.ensemble.members[0])[0]
        for run in self.ensemble.members[1:]:
            self.ensemble.models(run)  # load every member now, not on the first request
        self.explainer = None  # an exported model has no gradients to explain with
        if not self.ensemble.members[0].exported:
            from voxtrace.explain.saliency import SaliencyModel

            try:
                self.explainer = SaliencyModel(first)
            except ValueError:  # a model without a voxtrace front-end still predicts, unexplained
                pass
        self._lock = threading.Lock()

    @property
    def runs(self):
        return self.ensemble.members

    @property
    def classes(self) -> list[str]:
        return self.ensemble.classes

    @property
    def cfg(self):
        """The first member's config (sample rate, class list, infer defaults)."""
        return self.runs[0].cfg

    @property
    def num_checkpoints(self) -> int:
        return sum(len(run.checkpoints) for run in self.runs)

    @property
    def sample_rates(self) -> list[int]:
        """The rates `predict` needs the clip decoded at (one per distinct member sample rate)."""
        return sorted({run.cfg.audio.sample_rate for run in self.runs})

    def predict(self, waveforms: dict[int, np.ndarray], name: str = "clip") -> tuple[np.ndarray, int]:
        """`(probabilities [C], label index)` of one clip decoded at each of `sample_rates` (`{rate: x}`): the
        label is the top class or, under the open-set rule, the unknown class. Raises ValueError if the clip
        cannot be scored."""
        with self._lock:
            probs = self.ensemble.predict_clip(waveforms, name)
        label, _ = self.ensemble.labels(probs[None])
        return probs, int(label[0])

    def explain(self, x: np.ndarray, class_index: int) -> tuple[str, dict] | None:
        """`(method, saliency_maps(...))` of the loudest window of waveform `x` for `class_index`.

        Grad-CAM where the backbone has a convolutional feature map, else integrated gradients; None when
        the first checkpoint has no voxtrace front-end to explain.
        """
        from voxtrace.explain.saliency import loudest_window, saliency_maps

        if self.explainer is None:
            return None
        window = loudest_window(x, self.explainer.num_samples, self.cfg.audio.window_hop)
        with self._lock:
            try:
                return "gradcam", saliency_maps(self.explainer, window, ("gradcam",), class_index)
            except ValueError:
                return "ig", saliency_maps(self.explainer, window, ("ig",), class_index, steps=self.saliency_steps)


def display_spectrogram(x: np.ndarray, cfg, n_mels: int = 128, frames: int = 512) -> np.ndarray:
    """The whole clip's log-mel spectrogram in dB, `[n_mels, <= frames]`, with the STFT settings of `cfg`."""
    import tensorflow as tf

    from voxtrace.features import build_frontend

    display_cfg = cfg.replace(features__kind="logmel", features__img_size=[n_mels, frames])
    layer = build_frontend(display_cfg, name="display_logmel")
    return layer.spectrogram_db(tf.constant(np.asarray(x, np.float32)[None]))[0].numpy()
