"""Optimizers: Adam, AdamW, SGD (Nesterov momentum) and Rectified Adam, wrapped for loss scaling when the
dtype policy is `mixed_float16`."""

from __future__ import annotations

import keras
from keras import ops

from voxtrace.vocabulary import OPTIMIZERS


@keras.saving.register_keras_serializable(package="voxtrace")
class RectifiedAdam(keras.optimizers.Optimizer):
    """Rectified Adam (Liu et al., 2020): Adam whose adaptive step is switched on, and rectified, only once
    the variance of the adaptive rate is tractable; before that it takes SGD-with-momentum steps.

    Args:
        learning_rate: a float or a `LearningRateSchedule`.
        beta_1, beta_2, epsilon: as Adam.
        sma_threshold: the length of the approximated simple moving average above which the adaptive,
            rectified step is used (4 in the paper, 5 in common implementations).
        **kwargs: the base optimizer's arguments (`weight_decay`, `clipnorm`, ...).
    """

    def __init__(self, learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-7, sma_threshold=5.0,
                 name="rectified_adam", **kwargs):
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self.sma_threshold = sma_threshold

    def build(self, var_list):
        if self.built:
            return
        super().build(var_list)
        self._momentums, self._velocities = self.add_optimizer_variables(var_list, ["momentum", "velocity"])

    def update_step(self, gradient, variable, learning_rate):
        dtype = variable.dtype
        lr = ops.cast(learning_rate, dtype)
        gradient = ops.cast(gradient, dtype)
        step = ops.cast(self.iterations + 1, dtype)
        beta_1 = ops.cast(self.beta_1, dtype)
        beta_2 = ops.cast(self.beta_2, dtype)
        beta_1_power = ops.power(beta_1, step)
        beta_2_power = ops.power(beta_2, step)
        m = self._momentums[self._get_variable_index(variable)]
        v = self._velocities[self._get_variable_index(variable)]
        self.assign(m, beta_1 * m + (1.0 - beta_1) * gradient)
        self.assign(v, beta_2 * v + (1.0 - beta_2) * ops.square(gradient))
        m_hat = m / (1.0 - beta_1_power)
        sma_inf = 2.0 / (1.0 - beta_2) - 1.0
        sma_t = sma_inf - 2.0 * step * beta_2_power / (1.0 - beta_2_power)
        rect = ops.sqrt(
            ops.maximum((sma_t - 4.0) * (sma_t - 2.0) * sma_inf, 0.0)
            / ((sma_inf - 4.0) * (sma_inf - 2.0) * sma_t)
        )
        v_hat = ops.sqrt(v / (1.0 - beta_2_power))
        adaptive = rect * m_hat / (v_hat + ops.cast(self.epsilon, dtype))
        update = ops.where(sma_t >= ops.cast(self.sma_threshold, dtype), adaptive, m_hat)
        self.assign_sub(variable, lr * update)

    def get_config(self):
        config = super().get_config()
        config.update({"beta_1": self.beta_1, "beta_2": self.beta_2, "epsilon": self.epsilon,
                       "sma_threshold": self.sma_threshold})
        return config


def build_optimizer(cfg, learning_rate) -> keras.optimizers.Optimizer:
    """The optimizer named by `cfg.train.optimizer`; a `LossScaleOptimizer` around it under `mixed_float16`.

    Build it inside `strategy.scope()` so its variables are mirrored like the model's.
    """
    t = cfg.train
    if t.optimizer == "Adam":
        optimizer = keras.optimizers.Adam(learning_rate=learning_rate)
    elif t.optimizer == "AdamW":
        optimizer = keras.optimizers.AdamW(learning_rate=learning_rate, weight_decay=t.weight_decay)
    elif t.optimizer == "SGD":
        optimizer = keras.optimizers.SGD(learning_rate=learning_rate, momentum=0.9, nesterov=True)
    elif t.optimizer == "RectifiedAdam":
        optimizer = RectifiedAdam(learning_rate=learning_rate)
    else:
        raise ValueError(f"train.optimizer must be one of {list(OPTIMIZERS)}. Received: train.optimizer={t.optimizer!r}")
    if keras.config.dtype_policy().name == "mixed_float16":
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    return optimizer


def agc_clip_factor(cfg) -> float | None:
    """`cfg.train.agc_clip`, or the backbone's own default when it is unset (NFNets: 0.01, as their paper)."""
    from voxtrace.models import get_entry

    if cfg.train.agc_clip is not None:
        return cfg.train.agc_clip or None
    return get_entry(cfg.model.name).agc_clip
