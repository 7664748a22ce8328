"""The web app's model side: every checkpoint of a model dir, loaded once and shared by all requests.

Scores follow `voxtrace.inference.ensemble.Ensemble` (windows and TTA of `predict_models`, folds aggregated
into one score per model, models into the ensemble score, with `infer.agg` of the first run), but the models
stay in memory between requests instead of being loaded per call, and the clip comes in decoded (by the
caller, outside the lock, so a slow decoder never holds up the models). One lock serialises the TensorFlow
work, so concurrent requests each get their own, correct answer.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np


class Attributor:
    """Attribute one decoded clip with the whole ensemble, and explain it with the first checkpoint."""

    def __init__(self, model_dir: str | os.PathLike, batch_size: int = 8, saliency_steps: int = 16):
        from voxtrace.explain.saliency import SaliencyModel
        from voxtrace.inference.checkpoints import discover_runs, load_checkpoint

        self.runs = discover_runs(model_dir)
        self.classes = list(self.runs[0].cfg.classes)
        self.models = [[load_checkpoint(path) for path in run.checkpoints] for run in self.runs]
        self.agg = self.cfg.infer.agg
        self.batch_size = int(batch_size)  # fixed, so each model's predict function is traced once
        self.saliency_steps = int(saliency_steps)
        try:
            self.explainer = SaliencyModel(self.models[0][0])
        except ValueError:  # a model without a voxtrace front-end still predicts, unexplained
            self.explainer = None
        self._lock = threading.Lock()

    @property
    def cfg(self):
        """The first run's config (sample rate, class list, infer defaults)."""
        return self.runs[0].cfg

    @property
    def num_checkpoints(self) -> int:
        return sum(len(models) for models in self.models)

    @property
    def sample_rates(self) -> list[int]:
        """The rates `predict` needs the clip decoded at (one per distinct run sample rate)."""
        return sorted({run.cfg.audio.sample_rate for run in self.runs})

    def predict(self, waveforms: dict[int, np.ndarray], workdir: str | os.PathLike) -> np.ndarray:
        """Ensemble probabilities `[C]` of one clip, given decoded at each of `sample_rates` (`{rate: x}`).

        The predictor reads files: the clip goes to it as float WAVs written to `workdir` beforehand (exact
        samples, read back in milliseconds), so no upload is decoded while the models are held. Raises
        ValueError if the clip cannot be scored.
        """
        from voxtrace.data.audio import save_wav
        from voxtrace.inference.ensemble import aggregate
        from voxtrace.inference.predictor import predict_models

        clips = {rate: Path(workdir) / f"clip-{rate}.wav" for rate in waveforms}
        for rate, x in waveforms.items():
            save_wav(clips[rate], x, rate, subtype="FLOAT")
        per_model = []
        with self._lock:
            for run, models in zip(self.runs, self.models):
                fold_probs, errors = predict_models(
                    models, run.cfg, [clips[run.cfg.audio.sample_rate]], batch_size=self.batch_size,
                    tta=run.cfg.infer.tta, progress=False,
                )
                if errors:
                    raise ValueError(next(iter(errors.values())))
                per_model.append(aggregate(fold_probs, self.agg))
        return aggregate(per_model, self.agg)[0]

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
