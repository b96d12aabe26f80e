"""Learning-rate schedules with linear warm-up, as serialisable Keras schedules.

The learning rate is a pure function of the optimizer's step counter
(``optimizer.iterations``), which the checkpoint stores, so a resumed run is
at exactly the same point of its schedule.
"""

from __future__ import annotations

import math

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="ffem")
class WarmupDecay(keras.optimizers.schedules.LearningRateSchedule):
    """``base_lr`` after a linear warm-up, then one of five decays.

    Step ``t`` (0-based optimizer updates) → learning rate (float32 scalar):

    - warm-up, ``t < warmup_steps``: ``base_lr · (t + 1) / warmup_steps``;
    - then, with ``p = (t - warmup_steps) / (total_steps - warmup_steps)`` in [0, 1]:
      ``constant``: ``base_lr``;
      ``cosine`` (Loshchilov & Hutter 2017, no restarts): ``min_lr + (base_lr - min_lr)·(1 + cos πp)/2``;
      ``poly``: ``min_lr + (base_lr - min_lr)·(1 - p)^power``;
      ``step``: ``base_lr · factor^(number of boundaries ≤ t)`` (boundaries in steps),
      or with ``every`` > 0 ``base_lr · factor^⌊t / every⌋`` (a boundary every
      ``every`` steps: EE488B's ×0.9 every 5 epochs);
      ``exponential``: ``base_lr · factor^(t / every)``, the exponent floored when
      ``staircase`` (``tf.keras`` ``ExponentialDecay``, the FFEM seed's schedule).
    """

    def __init__(
        self,
        base_lr: float,
        total_steps: int,
        warmup_steps: int = 0,
        decay: str = "constant",
        boundaries: tuple[int, ...] | list[int] = (),
        factor: float = 0.1,
        power: float = 1.0,
        min_lr: float = 0.0,
        every: int = 0,
        staircase: bool = True,
    ):
        if decay not in ("constant", "cosine", "poly", "step", "exponential"):
            raise ValueError(f"unknown decay {decay!r}")
        if decay == "exponential" and every < 1:
            raise ValueError("the exponential decay needs every >= 1 step")
        self.base_lr = float(base_lr)
        self.total_steps = int(total_steps)
        self.warmup_steps = int(warmup_steps)
        self.decay = decay
        self.boundaries = [int(b) for b in boundaries]
        self.factor = float(factor)
        self.power = float(power)
        self.min_lr = float(min_lr)
        self.every = int(every)
        self.staircase = bool(staircase)

    def __call__(self, step):
        t = ops.cast(step, "float32")
        warmup = float(self.warmup_steps)
        span = float(max(self.total_steps - self.warmup_steps, 1))
        progress = ops.clip((t - warmup) / span, 0.0, 1.0)
        base, floor = self.base_lr, self.min_lr
        if self.decay == "cosine":
            lr = floor + (base - floor) * 0.5 * (1.0 + ops.cos(math.pi * progress))
        elif self.decay == "poly":
            lr = floor + (base - floor) * ops.power(1.0 - progress, self.power)
        elif self.decay == "step" and self.every > 0:
            lr = base * ops.power(self.factor, ops.floor(t / float(self.every)))
        elif self.decay == "exponential":
            exponent = t / float(self.every)
            lr = base * ops.power(self.factor, ops.floor(exponent) if self.staircase else exponent)
        elif self.decay == "step" and self.boundaries:
            passed = ops.sum(ops.cast(t >= ops.convert_to_tensor(self.boundaries, "float32"), "float32"))
            lr = base * ops.power(self.factor, passed)
        else:
            lr = ops.convert_to_tensor(base, "float32")
        if self.warmup_steps > 0:
            lr = ops.where(t < warmup, base * (t + 1.0) / warmup, lr)
        return ops.cast(lr, "float32")

    def get_config(self) -> dict:
        return {
            "base_lr": self.base_lr,
            "total_steps": self.total_steps,
            "warmup_steps": self.warmup_steps,
            "decay": self.decay,
            "boundaries": list(self.boundaries),
            "factor": self.factor,
            "power": self.power,
            "min_lr": self.min_lr,
            "every": self.every,
            "staircase": self.staircase,
        }
