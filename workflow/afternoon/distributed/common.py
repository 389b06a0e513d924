"""What every way of training shares: the one-process job, the shard of a worker, the scaled
legacy optimizer, the learning-rate warm-up and the check that every worker ends with the same
weights. The backends (``horovod``, ``strategies``) are built from these pieces, so the global
batch, the learning-rate scaling and the warm-up are the same code whatever the backend."""

from __future__ import annotations

import contextlib
import hashlib

import numpy as np

from afternoon.errors import ConfigError, RanksDiverged

# Keys the legacy (Keras 2.10-style) optimizers take from the new ones' get_config().
_LEGACY_KEYS = ("learning_rate", "momentum", "nesterov", "beta_1", "beta_2", "epsilon", "amsgrad")
_LEGACY_KEYS += ("rho",)  # Adadelta's


class SingleProcess:
    """A job of one process: what ``training.train()`` asks of a run (see ``Horovod`` and
    ``strategies.Strategy``), with nothing to share: the data whole, build_model's optimizer, no
    extra callbacks."""

    size, rank, backend = 1, 0, "none"
    collective_saves = False  # does saving a checkpoint need every worker (checkpoint.py)?

    def __init__(self, job_threads: int):
        self.threads = job_threads

    @property
    def is_root(self) -> bool:
        """Worker (rank) 0 writes the outputs and the MLflow run; the others only train."""
        return self.rank == 0

    def tags(self) -> dict:
        return {"world_size": "1"}

    def scope(self):
        """Where the model is built (a tf.distribute strategy's scope; here: nowhere special)."""
        return contextlib.nullcontext()

    def broadcast(self, obj, name: str):
        return obj

    def agree(self, flag: bool) -> bool:
        """The chief's ``flag`` on every worker (e.g. whether to save a checkpoint now)."""
        return flag

    def shard(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return x, y

    def steps_per_epoch(self, samples: int, batch_size: int) -> int:
        return -(-samples // batch_size)

    def distribute(self, make_dataset):
        """The dataset ``make_dataset()`` builds, as ``fit`` takes it in this kind of job."""
        return make_dataset()

    def compile(self, model) -> None: ...

    def broadcast_variables(self, model) -> None: ...

    def callbacks(self, steps_per_epoch: int, resumed: bool = False) -> list:
        return []

    def stop_if_signalled(self) -> None:
        """Stop every worker at once when any got SIGTERM (one process: its own handler does)."""

    def finalize(self, model) -> dict:
        return {}

    def exportable(self, model, spec: dict):
        """``model`` as the outputs save it (a one-process model)."""
        return model


def shard(x: np.ndarray, y: np.ndarray, rank: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Worker ``rank``'s part of the training set: every size-th sample from the rank's offset,
    all shards the same length (at most size-1 samples dropped) so every worker runs as many
    steps (a worker with one more batch would wait forever for the others' gradients)."""
    per_rank = len(x) // size
    if per_rank == 0:
        raise ConfigError(f"{len(x)} training samples cannot be shared by {size} workers")
    take = slice(rank, per_rank * size, size)
    return x[take], y[take]


def scaled_optimizer(optimizer_spec: dict, size: int, scale_lr: bool):
    """The spec's optimizer as a legacy tf_keras optimizer, its learning rate multiplied by
    ``size`` (the number of replicas whose gradients are averaged) when ``scale_lr``; returns
    (optimizer, learning rate).

    Legacy, not tf_keras 2.18's default ("new") optimizers: the warm-up
    (``training.callbacks.LearningRateWarmup``)
    rescales ``optimizer.momentum`` with ``K.set_value`` and the new SGD keeps it as a Python
    float, baked into the compiled step ("'float' object has no attribute 'dtype'").
    """
    import tensorflow as tf

    from afternoon.training.models import build_optimizer

    new = build_optimizer(optimizer_spec)
    legacy = getattr(tf.keras.optimizers.legacy, type(new).__name__)
    kwargs = {key: value for key, value in new.get_config().items() if key in _LEGACY_KEYS}
    base = float(optimizer_spec["learning_rate"])  # the spec's (config.job_spec fills it in)
    learning_rate = base * size if scale_lr else base
    return legacy(**{**kwargs, "learning_rate": learning_rate}), learning_rate


def weights_sha256(weights: list) -> str:
    """One checksum of a model's weights (``model.get_weights()``)."""
    digest = hashlib.sha256()
    for array in weights:
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def check_identical(checksums: list[str], hint: str) -> None:
    """Fail (``RanksDiverged``) unless every worker's weight checksum is the same."""
    if len(set(checksums)) > 1:
        listed = ", ".join(f"rank {i}: {c[:12]}" for i, c in enumerate(checksums))
        raise RanksDiverged(
            f"the {len(checksums)} ranks ended training with different weights ({listed}): {hint}"
        )
