"""Learning-rate schedules of a job spec's ``schedule`` (its defaults filled in), per step.

cosine and one_cycle rise linearly to the optimizer's ``learning_rate`` (the peak) over a warm-up,
then fall along a half cosine to ``final_lr_fraction`` of the peak at the last step:

- cosine:    warm-up from near 0 over ``warmup_epochs`` (Goyal et al.'s gradual warm-up for large
             batches; 0: none), then the cosine decay (Loshchilov and Hutter, without restarts);
- one_cycle: Smith's one cycle: from peak / 25 over ``warmup_epochs`` (by default 30 % of the
             run: ``afternoon.defaults``).

step (PyTorch's StepLR stepped once an epoch) starts at the optimizer's ``learning_rate`` and
multiplies it by ``gamma`` every ``every_epochs`` epochs: epoch e (from 1) trains at
learning_rate x gamma ** ((e - 1) // every_epochs).

The step is the optimizer's ``iterations``, saved in every checkpoint: a resumed job goes on
along the same curve. Registered with Keras, so a saved model (its optimizer) loads anywhere
this module is imported (``evaluation.load_model`` does).
"""

from __future__ import annotations

import math

import tensorflow as tf

ONE_CYCLE_START = 1 / 25  # Smith's div_factor: the one cycle starts at peak / 25


@tf.keras.saving.register_keras_serializable(package="afternoon")
class WarmupCosine(tf.keras.optimizers.schedules.LearningRateSchedule):
    """Linear from ``start_fraction`` x peak to peak over ``warmup_steps``, then a half cosine
    to ``final_fraction`` x peak at ``total_steps``."""

    def __init__(self, peak, total_steps, warmup_steps, start_fraction, final_fraction):
        self.peak, self.total_steps, self.warmup_steps = peak, total_steps, warmup_steps
        self.start_fraction, self.final_fraction = start_fraction, final_fraction

    def __call__(self, step):
        step = tf.cast(step, tf.float32)
        warmup = float(max(self.warmup_steps, 1))
        rising = self.start_fraction + (1 - self.start_fraction) * (step + 1) / warmup
        progress = tf.clip_by_value(
            (step - self.warmup_steps) / float(max(self.total_steps - self.warmup_steps, 1)), 0, 1
        )
        falling = self.final_fraction + (1 - self.final_fraction) * 0.5 * (
            1 + tf.cos(math.pi * progress)
        )
        fraction = tf.where(step < self.warmup_steps, rising, falling)
        return self.peak * fraction

    def get_config(self):
        return {
            "peak": self.peak,
            "total_steps": self.total_steps,
            "warmup_steps": self.warmup_steps,
            "start_fraction": self.start_fraction,
            "final_fraction": self.final_fraction,
        }


@tf.keras.saving.register_keras_serializable(package="afternoon")
class StepDecay(tf.keras.optimizers.schedules.LearningRateSchedule):
    """``initial`` x ``gamma`` ** (step // ``step_size``): a staircase, ``step_size`` steps a
    stair."""

    def __init__(self, initial, gamma, step_size):
        self.initial, self.gamma, self.step_size = initial, gamma, step_size

    def __call__(self, step):
        stairs = tf.math.floordiv(tf.cast(step, tf.int64), int(self.step_size))
        return self.initial * tf.pow(float(self.gamma), tf.cast(stairs, tf.float32))

    def get_config(self):
        return {"initial": self.initial, "gamma": self.gamma, "step_size": self.step_size}


def schedule_of(spec: dict, peak: float, epochs: int, steps_per_epoch: int):
    """The schedule of a spec's ``schedule`` mapping (name, then warmup_epochs and
    final_lr_fraction, or step's gamma and every_epochs) for a run of ``epochs`` epochs."""
    if spec["name"] == "step":
        step_size = int(spec["every_epochs"]) * int(steps_per_epoch)
        return StepDecay(initial=float(peak), gamma=float(spec["gamma"]), step_size=step_size)
    return WarmupCosine(
        peak=float(peak),
        total_steps=int(epochs * steps_per_epoch),
        warmup_steps=int(round(min(spec["warmup_epochs"], epochs) * steps_per_epoch)),
        start_fraction=ONE_CYCLE_START if spec["name"] == "one_cycle" else 0.0,
        final_fraction=float(spec["final_lr_fraction"]),
    )


def learning_rate_now(optimizer, step=None) -> float:
    """The rate of the optimizer's step ``step`` (default: its next, ``iterations``)."""
    rate = optimizer.learning_rate
    if isinstance(rate, tf.keras.optimizers.schedules.LearningRateSchedule):
        rate = rate(optimizer.iterations if step is None else step)
    return float(tf.keras.backend.get_value(rate))
