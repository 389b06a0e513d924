"""The Keras callbacks of a training job, as module-level classes.

- ``EpochRecorder``: times each epoch, logs the schedule's rate, stops on a NaN loss.
- ``ResumableEarlyStopping``: Keras' EarlyStopping whose counters survive a stop and resume.
- ``EpochCheckpoint``: saves the job's state (``checkpoint.Checkpointer``) at an epoch's end.
- ``LearningRateWarmup``: Goyal et al.'s gradual warm-up of a data-parallel job (every backend).
- ``AverageStatistics``: a data-parallel job's batch-norm statistics averaged, SIGTERM obeyed.
- ``ProfiledSteps``: a TensorBoard profile of exactly the steps of ``training.profile_batches``.

Importing this module imports TensorFlow's Keras 2 (``tf_keras``): only the TensorFlow side of
a job (``training.loop``, the distributed backends) imports it, once TensorFlow is configured.
"""

from __future__ import annotations

import logging
import math
import time

import tensorflow as tf
import tf_keras as keras

from afternoon.errors import TrainingDiverged
from afternoon.training.checkpoint import CheckpointState
from afternoon.training.schedules import learning_rate_now

log = logging.getLogger(__name__)


class EpochRecorder(keras.callbacks.Callback):
    """Times each epoch, stops on a NaN loss (naming the epoch), forwards the epoch's metrics
    to ``on_epoch(epoch, logs)`` (epochs counted from 1)."""

    def __init__(self, spec: dict, on_epoch=None):
        super().__init__()
        self.spec, self.on_epoch = spec, on_epoch

    def on_epoch_begin(self, epoch, logs=None):
        self.started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        logs = dict(logs or {})
        logs["epoch_time_s"] = time.perf_counter() - self.started
        if self.spec.get("schedule"):  # the rate the last step of this epoch used
            optimizer = self.model.optimizer
            logs["lr"] = learning_rate_now(optimizer, step=optimizer.iterations - 1)
        if not math.isfinite(logs.get("loss", 0.0)):
            raise TrainingDiverged(
                f"{self.spec['name']} on {self.spec['dataset']}: loss became {logs['loss']} at "
                f"epoch {epoch + 1}; lower the learning rate or check the data"
            )
        if self.on_epoch:
            self.on_epoch(epoch + 1, logs)


class ResumableEarlyStopping(keras.callbacks.EarlyStopping):
    """Keras' EarlyStopping whose counters (and best weights) survive a stop and resume: set
    ``resumed`` (its ``state()`` at the checkpoint) and ``resumed_weights`` before ``fit``."""

    resumed: dict | None = None
    resumed_weights: list | None = None

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        if self.resumed:
            self.wait, self.best = self.resumed["wait"], self.resumed["best"]
            self.best_epoch, self.best_weights = self.resumed["best_epoch"], self.resumed_weights

    def state(self) -> dict:
        return {"wait": self.wait, "best": float(self.best), "best_epoch": self.best_epoch}


class EpochCheckpoint(keras.callbacks.Callback):
    """Saves the job's state at the end of an epoch (every one, unless they are so short that
    saving would cost more than 5 % of the time: the chief decides for every worker); runs
    last. ``rows``: the history so far (the list ``train`` appends to)."""

    def __init__(self, tf, checkpointer, rows: list, stopper, process):
        super().__init__()
        self.tf, self.checkpointer, self.rows = tf, checkpointer, rows
        self.stopper, self.process = stopper, process

    def on_epoch_end(self, epoch, logs=None):
        state = CheckpointState(epoch + 1, self.rows, stopped=bool(self.model.stop_training))
        if self.stopper is not None:
            state.early_stopping = self.stopper.state()
        best = self.stopper.best_weights if self.stopper is not None else None
        if self.process.agree(self.checkpointer.due() or self.model.stop_training):
            self.checkpointer.save(self.tf, self.model, state, best_weights=best)


class LearningRateWarmup(keras.callbacks.Callback):
    """Goyal et al.'s gradual warm-up, as Horovod's ``LearningRateWarmupCallback`` does it (same
    formula, same momentum correction), for every backend: over the first ``warmup_epochs`` the
    rate grows, batch by batch, from ``initial_lr / size`` to ``initial_lr``; the epoch's rate is
    logged as ``lr``."""

    restore_momentum = None

    def __init__(self, initial_lr: float, size: int, warmup_epochs: int, steps_per_epoch: int):
        super().__init__()
        self.initial_lr, self.size = initial_lr, size
        self.warmup_epochs, self.steps_per_epoch = warmup_epochs, steps_per_epoch

    def multiplier(self, epoch: float) -> float:
        epoch += 1.0 / self.steps_per_epoch  # round numbers at the end of each epoch
        return 1.0 / self.size * (epoch * (self.size - 1) / self.warmup_epochs + 1)

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_begin(self, batch, logs=None):
        if self.epoch >= self.warmup_epochs:
            return
        K, optimizer = keras.backend, self.model.optimizer
        old_lr = K.get_value(optimizer.lr)
        new_lr = self.initial_lr * self.multiplier(self.epoch + batch / self.steps_per_epoch)
        K.set_value(optimizer.lr, new_lr)
        if hasattr(optimizer, "momentum"):  # momentum correction
            self.restore_momentum = K.get_value(optimizer.momentum)
            K.set_value(optimizer.momentum, self.restore_momentum * new_lr / old_lr)

    def on_train_batch_end(self, batch, logs=None):
        if self.restore_momentum:
            keras.backend.set_value(self.model.optimizer.momentum, self.restore_momentum)
            self.restore_momentum = None

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["lr"] = float(keras.backend.get_value(self.model.optimizer.lr))


class AverageStatistics(keras.callbacks.Callback):
    """A data-parallel job's epoch boundaries: at an epoch's start, a stop that SIGTERM asked
    of any worker (``process.stop_if_signalled``); at its end, every worker's batch-norm moving
    statistics set to their mean (``process.average_statistics``)."""

    def __init__(self, process):
        super().__init__()
        self.process = process

    def on_epoch_begin(self, epoch, logs=None):
        self.process.stop_if_signalled()

    def on_epoch_end(self, epoch, logs=None):
        self.process.average_statistics(self.model)


class ProfiledSteps(keras.callbacks.Callback):
    """A TensorBoard profile of training steps ``first``..``last`` (counted from 1 in the first
    epoch this fit trains) into ``log_dir`` (``plugins/profile/<time>/<host>.xplane.pb``).

    Not Keras' ``TensorBoard(profile_batch=...)``: it counts calls into TensorFlow, each
    ``steps_per_execution`` steps (at most an epoch's), so its (2, 3) profiles steps 51 to 150 of
    a job at 50 steps a call; and it starts and stops the profiler inside a call's step marker
    (fit's ``Trace("train", step_num=...)``), so its profile lacks the first and last steps'.
    Here, in the first epoch, the call before ``first`` is cut to end at step ``first - 1``, steps
    ``first``..``last`` run one a call (the same arithmetic: tests/test_fast_recipes.py), then
    ``steps_per_execution`` a call again; the profiler runs from the end of step ``first - 1``
    (or the epoch's start) to the start of step ``last + 1`` (or the epoch's validation, or end):
    the profile holds exactly those steps, each with its marker. The model's
    ``steps_per_execution`` is set before each call, as Keras sets it for an epoch's last call.
    """

    def __init__(self, log_dir, first: int, last: int, steps_per_execution: int):
        super().__init__()
        self._supports_tf_logs = True  # the batch hooks read no logs: no sync per call
        self.log_dir, self.first, self.last = str(log_dir), first, last
        self.per_call, self.state = steps_per_execution, "waiting"  # -> profiling -> done

    def _before_call(self, step: int) -> None:
        """Before the call that starts at ``step`` (counted from 0 in the epoch)."""
        if step == self.first - 1 and self.state == "waiting":
            try:
                tf.profiler.experimental.start(self.log_dir)
                self.state = "profiling"
            except tf.errors.AlreadyExistsError as err:  # another profiler: no profile, go on
                log.warning("no profile of steps %d-%d: %s", self.first, self.last, err.message)
                self.state = "done"
        if step < self.first - 1:
            steps = min(self.per_call, self.first - 1 - step)
        else:
            steps = 1 if self.state == "profiling" and step < self.last else self.per_call
        self.model.steps_per_execution = steps

    def _stop(self) -> None:
        if self.state == "profiling":
            tf.profiler.experimental.stop()
        self.state = "done"

    def on_epoch_begin(self, epoch, logs=None):
        if self.state == "waiting":
            self._before_call(0)

    def on_train_batch_end(self, batch, logs=None):
        if self.state != "done":  # ``batch``: the call's last step
            self._before_call(batch + 1)

    def on_train_batch_begin(self, batch, logs=None):
        if batch == self.last:  # inside the next step's marker: the last step's is complete
            self._stop()

    def on_test_begin(self, logs=None):
        self._stop()  # step ``last`` ended the epoch: its validation is no part of the profile

    def on_epoch_end(self, epoch, logs=None):
        self._stop()
