"""Backend ``horovod``: one process per rank, started by an MPI launcher (optional: Horovod 0.28.1).

An architecture trains this way when its zoo entry (or a per-dataset override) says so::

    distributed: {backend: horovod, ranks: 2, scale_lr: true, warmup_epochs: 1}

The Snakemake rule then starts ``python -m afternoon.cli train`` under ``mpirun -n 2`` (locally)
or ``srun --mpi=pmix -n 2`` (Slurm); ``horovodrun -np 2 --gloo`` works as well. Every rank runs the
same ``training.train()``; the ``Horovod`` object below is the only difference, in the house style
of Horovod's ``tensorflow2_keras_mnist.py`` (every distributed line is marked ``# Horovod:``):

- ``hvd.init()``; each rank gets ``threads // size`` of the job's cores and, on a GPU node, its
  own GPU (local rank; round-robin when the ranks outnumber the GPUs);
- each rank trains on its own shard of the training set (strided by rank, equal sizes, so every
  rank runs the same number of steps), and validates on the whole validation split;
- the optimizer (``common.scaled_optimizer``: legacy tf_keras Adam/SGD) has its learning rate
  multiplied by the number of ranks (``scale_lr``), warmed up over ``warmup_epochs``
  (``training.callbacks.LearningRateWarmup``, Horovod's formula) and is wrapped in
  ``hvd.DistributedOptimizer``
  (gradients averaged over the ranks at every step);
- rank 0's weights are broadcast before the first step, epoch metrics are averaged over ranks;
- at the end, batch-norm moving statistics (which each rank keeps for its own shard) are averaged,
  and a sha256 of every rank's weights is allgathered: different weights fail the job
  (``RanksDiverged``). That is what catches Horovod silently not averaging gradients (it happens
  under Keras 3, where its DistributedOptimizer stops working without an error);
- only rank 0 writes files, TensorBoard logs and the (single) MLflow run.

Horovod 0.28.1 is optional (``pip install horovod==0.28.1``, built against this TensorFlow, with
MPI and Gloo); nothing here imports it before a distributed job starts.
"""

from __future__ import annotations

import os
import socket

import numpy as np

from afternoon.distributed import common
from afternoon.errors import AfternoonError, ConfigError, horovod_unavailable


def _import_horovod():
    """``horovod.tensorflow.keras``, patched for tf_keras; a one-line error when unavailable."""
    import tensorflow as tf

    if not tf.keras.__name__.startswith("tf_keras"):  # its optimizer silently stops averaging
        raise ConfigError(
            f"Horovod 0.28.1 needs Keras 2 (tf_keras), but tf.keras is {tf.keras.__name__} "
            f"(Keras {getattr(tf.keras, '__version__', '?')}): set TF_USE_LEGACY_KERAS=1 "
            "before TensorFlow loads"
        )
    try:
        import horovod.tensorflow.keras as hvd
    except ImportError as err:
        raise AfternoonError(horovod_unavailable(str(err))) from None
    # Horovod: its Keras modules do `from keras import backend as K`, and `keras` is Keras 3 even
    # when TF_USE_LEGACY_KERAS=1 makes tf.keras Keras 2 (tf_keras); MetricAverageCallback then
    # fails with "module 'keras.backend' has no attribute 'constant'". Give them tf_keras' backend.
    hvd.K = hvd.callbacks.K = tf.keras.backend
    return hvd


class Horovod(common.SingleProcess):
    """One rank of a Horovod job: what ``training.train()`` asks of a distributed run."""

    backend = "horovod"

    def __init__(self, spec: dict, job_threads: int):
        from afternoon.runtime import configure_tensorflow

        self.settings, self.optimizer = spec["distributed"], spec["optimizer"]
        self.hvd = hvd = _import_horovod()
        import horovod.tensorflow as collectives  # allgather_object: not in the Keras module

        self.collectives = collectives
        # Horovod: initialize Horovod.
        hvd.init()
        self.size, self.rank, self.local_rank = hvd.size(), hvd.rank(), hvd.local_rank()
        wanted = self.settings["ranks"]
        if self.size != wanted:
            how = "a single process" if self.size == 1 else f"{self.size} processes"
            raise ConfigError(
                f"architecture {spec['name']!r} trains on {wanted} ranks (distributed.ranks) but "
                f"was started as {how}: start it with `mpirun -n {wanted}`, "
                f"`srun --mpi=pmix -n {wanted}` or `horovodrun -np {wanted}`"
            )
        # Horovod: pin GPU to be used to process local rank (one GPU per process; ranks share
        # them round-robin when there are fewer). No GPU: nothing to do.
        import tensorflow as tf

        gpus = tf.config.experimental.list_physical_devices("GPU")
        for gpu in gpus:
            tf.config.experimental.set_memory_growth(gpu, True)
        if gpus:
            tf.config.experimental.set_visible_devices(gpus[self.local_rank % len(gpus)], "GPU")
        # Horovod: the job's cores are shared by its ranks (TF's thread pools are sized from it).
        self.threads = max(1, job_threads // self.size)
        # Before the first collective (a TensorFlow op): the thread pools are fixed by then.
        configure_tensorflow(self.threads, spec["seed"], spec["deterministic"])
        where = {"host": socket.gethostname(), "local_rank": self.local_rank, "pid": os.getpid()}
        # Horovod: where each rank runs, for the MLflow run (every rank must take part).
        self.placement = self.collectives.allgather_object(where, name="afternoon.placement")
        self.learning_rate: float | None = None

    def tags(self) -> dict:
        """MLflow tags of the job's single run: world size and where each rank ran."""
        ranks = ",".join(f"{i}@{p['host']}" for i, p in enumerate(self.placement))
        controller = "mpi" if self.hvd.mpi_enabled() else "gloo"
        return {
            "backend": self.backend,
            "world_size": str(self.size),
            "horovod_ranks": ranks,
            "horovod_controller": controller,
            "threads_per_rank": str(self.threads),
        }

    def broadcast(self, obj, name: str):
        """Rank 0's ``obj`` (any picklable value) on every rank."""
        # Horovod: rank 0 decides, e.g. the checkpoint (epoch) every rank resumes from.
        return self.collectives.broadcast_object(obj, root_rank=0, name=name)

    def shard(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """This rank's part of the training set (``common.shard``)."""
        # Horovod: shard the training data by rank, deterministically.
        return common.shard(x, y, self.rank, self.size)

    def _optimizer(self):
        """The spec's optimizer (legacy tf_keras), learning rate scaled by size, averaged."""
        # Horovod: adjust learning rate based on number of ranks.
        optimizer, self.learning_rate = common.scaled_optimizer(
            self.optimizer, self.size, self.settings["scale_lr"]
        )
        # Horovod: add Horovod DistributedOptimizer (averages gradients over ranks every step).
        return self.hvd.DistributedOptimizer(optimizer)

    def compile(self, model) -> None:
        """Recompile ``model`` (built by models.build_model) with the distributed optimizer; same
        loss and metrics as build_model."""
        model.compile(self._optimizer(), loss=model.loss, metrics=["accuracy"])

    def broadcast_variables(self, model) -> None:
        """Rank 0's weights and optimizer state on every rank, before the first step: a resumed
        job (every rank restored rank 0's checkpoint; this makes sure)."""
        # Horovod: broadcast the restored variables from rank 0 to all other processes, now.
        # (BroadcastGlobalVariablesCallback would do it after the first batch, overwriting
        # the other ranks' batch-norm statistics of that batch: not what an uninterrupted
        # run does at that epoch.)
        self.collectives.broadcast_variables(model.variables, root_rank=0)
        self.collectives.broadcast_variables(model.optimizer.variables(), root_rank=0)

    def callbacks(self, steps_per_epoch: int, resumed: bool = False) -> list:
        """Callbacks that go before all others (they change the logs the others read)."""
        from afternoon.training.callbacks import AverageStatistics, LearningRateWarmup

        hvd = self.hvd
        callbacks = []
        if not resumed:
            # Horovod: broadcast initial variable states from rank 0 to all other processes.
            # This is necessary to ensure consistent initialization of all workers when
            # training is started with random weights.
            callbacks.append(hvd.callbacks.BroadcastGlobalVariablesCallback(0))
        # Horovod: average metrics among workers at the end of every epoch.
        # Note: this callback must be in the list before the ReduceLROnPlateau,
        # TensorBoard or other metrics-based callbacks.
        callbacks.append(hvd.callbacks.MetricAverageCallback())
        callbacks.append(AverageStatistics(self))
        warmup = self.settings["warmup_epochs"]
        if self.settings["scale_lr"] and warmup > 0:
            # Horovod: using `lr = 1.0 * hvd.size()` from the very beginning leads to worse final
            # accuracy. Scale the learning rate `lr = 1.0` ---> `lr = 1.0 * hvd.size()` during
            # the first warmup_epochs epochs.
            # (LearningRateWarmup: Horovod's LearningRateWarmupCallback, for every backend.)
            callbacks.append(
                LearningRateWarmup(self.learning_rate, self.size, warmup, steps_per_epoch)
            )
        return callbacks

    def average_statistics(self, model) -> None:
        """Give every rank the mean of the ranks' batch-norm moving statistics (each rank updates
        them from its own shard: they are not gradients). Done after every epoch, so a
        checkpoint (rank 0's) holds what every rank holds, and a resumed job matches an
        uninterrupted one; the moving averages are affine in their state, so averaging every
        epoch gives the mean that averaging once at the end would."""
        import tensorflow as tf

        for variable in model.non_trainable_variables:
            if variable.dtype.is_floating:
                # Horovod: average the ranks' moving statistics.
                name = f"afternoon.stats.{variable.name}"
                tensor = tf.convert_to_tensor(variable)
                variable.assign(self.collectives.allreduce(tensor, name=name))

    def finalize(self, model) -> dict:
        """Average the ranks' batch-norm statistics, then check that every rank holds the same
        weights (sha256 allgathered); returns what metrics.json records about the ranks."""
        from afternoon.training.models import build_optimizer

        self.average_statistics(model)
        digest = common.weights_sha256(model.get_weights())
        # Horovod: every rank's weight checksum, on every rank.
        checksums = self.collectives.allgather_object(digest, name="afternoon.checksums")
        common.check_identical(
            checksums,
            "Horovod did not average the gradients "
            "(tf.keras must be Keras 2: TF_USE_LEGACY_KERAS=1)",
        )
        # Horovod's optimizer class lives in module horovod._keras: a model saved with it does not
        # load without Horovod (evaluation). Save it as a one-process run would (its optimizer's
        # state, of no use to evaluation, is not kept).
        model.compile(build_optimizer(self.optimizer), loss=model.loss, metrics=["accuracy"])
        return {
            "backend": self.backend,
            "world_size": self.size,
            "threads_per_rank": self.threads,
            "learning_rate": self.learning_rate,
            "rank_weight_sha256": checksums,
            "ranks_identical": True,
        }
