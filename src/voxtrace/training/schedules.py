"""Learning-rate schedules: linear warm-up, sustain, then exponential / cosine / step decay down to a floor.

The shape follows the reference: `lr_start -> lr_max` over `lr_ramp_ep` epochs, `lr_max` for `lr_sus_ep`
epochs, then decay towards `lr_min`. Every rate in the config is per sample and multiplied by the global batch
size. The schedule is evaluated per optimizer step (fractional epochs), so warm-up is smooth.
"""

from __future__ import annotations

import math

import keras
from keras import ops

from voxtrace.vocabulary import SCHEDULERS


@keras.saving.register_keras_serializable(package="voxtrace")
class WarmupDecay(keras.optimizers.schedules.LearningRateSchedule):
    """Warm-up, sustain and decay, evaluated at `step / steps_per_epoch` epochs.

    Args:
        lr_start, lr_max, lr_min: rates at step 0, at the end of warm-up, and the floor of the decay.
        ramp_epochs, sustain_epochs: warm-up and sustain lengths in epochs.
        decay: the exp / step decay factor per epoch (step: per 2 epochs, as the reference).
        kind: "exp" | "cosine" | "step" | "constant".
        epochs: total epochs (the cosine reaches `lr_min` at the last one).
        steps_per_epoch: optimizer steps in one epoch.
    """

    def __init__(self, lr_start, lr_max, lr_min, ramp_epochs, sustain_epochs, decay, kind, epochs,
                 steps_per_epoch):
        if kind not in SCHEDULERS:
            raise ValueError(f"train.scheduler must be one of {list(SCHEDULERS)}. Received: train.scheduler={kind!r}")
        if steps_per_epoch < 1:
            raise ValueError(f"steps_per_epoch must be >= 1. Received: steps_per_epoch={steps_per_epoch}")
        self.lr_start = float(lr_start)
        self.lr_max = float(lr_max)
        self.lr_min = float(lr_min)
        self.ramp_epochs = int(ramp_epochs)
        self.sustain_epochs = int(sustain_epochs)
        self.decay = float(decay)
        self.kind = kind
        self.epochs = int(epochs)
        self.steps_per_epoch = int(steps_per_epoch)

    def __call__(self, step):
        epoch = ops.cast(step, "float32") / float(self.steps_per_epoch)
        ramp = float(self.ramp_epochs)
        plateau_end = float(self.ramp_epochs + self.sustain_epochs)
        if self.ramp_epochs > 0:
            warm = self.lr_start + (self.lr_max - self.lr_start) * epoch / ramp
        else:
            warm = ops.convert_to_tensor(self.lr_max)
        since = ops.maximum(epoch - plateau_end, 0.0)
        if self.kind == "exp":
            decayed = (self.lr_max - self.lr_min) * ops.power(self.decay, since) + self.lr_min
        elif self.kind == "cosine":
            span = max(float(self.epochs) - plateau_end, 1.0)
            phase = math.pi * ops.minimum(since / span, 1.0)
            decayed = (self.lr_max - self.lr_min) * 0.5 * (1.0 + ops.cos(phase)) + self.lr_min
        elif self.kind == "step":
            decayed = ops.maximum(self.lr_max * ops.power(self.decay, ops.floor(since / 2.0)), self.lr_min)
        else:
            decayed = ops.convert_to_tensor(self.lr_max)
        lr = ops.where(epoch < ramp, warm, ops.where(epoch < plateau_end, self.lr_max, decayed))
        return ops.cast(lr, "float32")

    def get_config(self):
        return {
            "lr_start": self.lr_start, "lr_max": self.lr_max, "lr_min": self.lr_min,
            "ramp_epochs": self.ramp_epochs, "sustain_epochs": self.sustain_epochs, "decay": self.decay,
            "kind": self.kind, "epochs": self.epochs, "steps_per_epoch": self.steps_per_epoch,
        }


def build_schedule(cfg, steps_per_epoch: int, global_batch_size: int | None = None) -> WarmupDecay:
    """The schedule of `cfg.train`, with `lr_start/lr_max/lr_min` scaled by the global batch size."""
    t = cfg.train
    scale = global_batch_size or t.batch_size
    return WarmupDecay(
        lr_start=t.lr_start * scale,
        lr_max=t.lr_max * scale,
        lr_min=t.lr_min * scale,
        ramp_epochs=t.lr_ramp_ep,
        sustain_epochs=t.lr_sus_ep,
        decay=t.lr_decay,
        kind=t.scheduler,
        epochs=t.epochs,
        steps_per_epoch=steps_per_epoch,
    )
