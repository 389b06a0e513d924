"""Backends ``mirrored`` and ``multi_worker``: TensorFlow's own data parallelism (tf.distribute).

- ``mirrored``: one process, ``MirroredStrategy`` over the node's GPUs (one replica each); on a
  node without a GPU, one replica on the CPU, and the job says so (a log line, the MLflow tag
  ``afternoon.devices``).
- ``multi_worker``: one process per worker, ``MultiWorkerMirroredStrategy`` (collective
  all-reduce over gRPC); the cluster comes from ``cluster.resolver`` (Slurm or TF_CONFIG).

The guarantees are Horovod's (``horovod.py``), from the same pieces (``common``): each worker
trains on its own shard (``common.shard``), ``batch_size`` is per replica (the global batch is
batch_size x replicas), the learning rate is scaled by the number of replicas with the same
warm-up, metrics are averaged over all replicas (Keras does it under a strategy), batch-norm
moving statistics are averaged after every epoch, every worker's weights are checksummed at the
end (different weights fail the job) and only the chief (worker 0) writes files, TensorBoard
events and the MLflow run. A checkpoint is written by every worker at once (reading the
strategy's variables is a collective); the chief's goes to the job's checkpoint folder, the
others' to a scratch folder they remove.
"""

from __future__ import annotations

import json
import logging
import os
import signal

import numpy as np

from afternoon.distributed import cluster, common
from afternoon.runtime import configure_tensorflow

log = logging.getLogger(__name__)


class Strategy(common.SingleProcess):
    """This process's part of a tf.distribute job (``backend``: mirrored or multi_worker)."""

    collective_saves = True

    def __init__(self, spec: dict, job_threads: int, backend: str):
        self.backend, self.spec = backend, spec
        self.settings = spec["distributed"]  # every key filled in (config.job_spec)
        if backend == "multi_worker":
            import tensorflow as tf

            resolver = cluster.resolver(tf)  # before TensorFlow sees the GPUs (CUDA_VISIBLE_...)
            workers = 1 if resolver is None else len(resolver.cluster_spec().as_dict()["worker"])
            cluster.check_world(spec["name"], self.settings["ranks"], workers)
            self.workers = workers
        else:
            resolver, self.workers = None, 1
        logging.getLogger("tensorflow").setLevel(logging.WARNING)  # a line per all-reduce
        self.threads = max(1, job_threads // self.workers)
        tf = configure_tensorflow(self.threads, spec["seed"], spec["deterministic"])
        gpus = tf.config.list_physical_devices("GPU")
        for gpu in gpus:
            tf.config.experimental.set_memory_growth(gpu, True)
        if backend == "mirrored":
            self.strategy = tf.distribute.MirroredStrategy()
            self.rank = 0
        else:
            Implementation = tf.distribute.experimental.CommunicationImplementation
            options = tf.distribute.experimental.CommunicationOptions(
                implementation=Implementation.NCCL if gpus else Implementation.RING
            )
            self.strategy = tf.distribute.MultiWorkerMirroredStrategy(
                cluster_resolver=resolver, communication_options=options
            )
            self.rank = self.strategy.cluster_resolver.task_id or 0
            # SIGTERM (a time limit, a preemption; TensorFlow's preemption notifier had taken it
            # and only records it): noted, and the job stops at the next epoch's start, every
            # worker at once (a worker that stopped alone would leave the others waiting in a
            # collective until their heartbeat timeout).
            self.signalled = None
            signal.signal(signal.SIGTERM, self._note_signal)
        self.tf = tf
        self.size = self.strategy.num_replicas_in_sync  # replicas: what the LR is scaled by
        self.local_replicas = self.size // self.workers
        devices = self.strategy.extended.worker_devices
        self.devices = ",".join(device.split("device:")[-1] for device in devices)
        if not gpus:
            log.info("%s: no GPU on this node, training on the CPU (%s)", backend, self.devices)
            self.devices += " (no GPU on this node)"
        self.learning_rate: float | None = None
        self._final_weights: list | None = None

    def tags(self) -> dict:
        config = json.loads(os.environ.get("TF_CONFIG", "{}"))
        addresses = config.get("cluster", {}).get("worker", [])
        if self.workers > 1 and not addresses:
            addresses = self.strategy.cluster_resolver.cluster_spec().as_dict()["worker"]
        return {
            "backend": self.backend,
            "world_size": str(self.size),
            "workers": str(self.workers),
            "devices": self.devices,
            "threads_per_worker": str(self.threads),
            **({"worker_addresses": ",".join(addresses)} if addresses else {}),
        }

    def scope(self):
        return self.strategy.scope()

    # --- Collectives: every worker calls them, in the same order ---------------------------

    def _gather(self, row: np.ndarray) -> np.ndarray:
        """Every worker's ``row`` (int64, the same length on all), stacked by worker index."""
        if self.workers == 1:
            return row[None]
        tf, k = self.tf, self.local_replicas
        table = np.zeros((self.workers, len(row)), np.int64)
        table[self.rank] = row

        def value(context):  # only one replica per worker contributes its row
            first = context.replica_id_in_sync_group % k == 0
            return tf.constant(table if first else np.zeros_like(table))

        values = self.strategy.experimental_distribute_values_from_function(value)
        return self.strategy.reduce(tf.distribute.ReduceOp.SUM, values, axis=None).numpy()

    def _gather_text(self, text: str) -> list[str]:
        data = np.frombuffer(text.encode(), np.uint8).astype(np.int64)
        length = int(self._gather(np.array([len(data)])).max())
        rows = self._gather(np.pad(data, (0, length - len(data))))
        return [bytes(r.astype(np.uint8)).rstrip(b"\0").decode() for r in rows]

    def broadcast(self, obj, name: str):
        """The chief's ``obj`` (a JSON value) on every worker."""
        return json.loads(self._gather_text(json.dumps(obj))[0])

    def agree(self, flag: bool) -> bool:
        return bool(self._gather(np.array([int(flag)]))[0, 0])

    # --- Training ---------------------------------------------------------------------------

    def shard(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """This worker's shard (``common.shard``); with several replicas per worker, whole
        steps only (each step takes a batch per replica, and epochs must not run into each
        other: the batches of epoch e are those of an uninterrupted run)."""
        x, y = common.shard(x, y, self.rank, self.workers)
        step = self.spec["batch_size"] * self.local_replicas
        if self.local_replicas > 1 and len(x) >= step:
            x, y = x[: len(x) // step * step], y[: len(y) // step * step]
        return x, y

    def steps_per_epoch(self, samples: int, batch_size: int) -> int:
        return max(1, -(-samples // batch_size) // self.local_replicas)

    def distribute(self, make_dataset):
        """Each worker's own dataset (its shard, per-replica batches), not re-sharded."""
        return self.strategy.distribute_datasets_from_function(lambda context: make_dataset())

    def compile(self, model) -> None:
        """Recompile ``model`` (built in ``scope()``) with the scaled legacy optimizer."""
        with self.scope():
            optimizer, self.learning_rate = common.scaled_optimizer(
                self.spec["optimizer"], self.size, self.settings["scale_lr"]
            )
            model.compile(optimizer, loss=model.loss, metrics=["accuracy"])

    def _note_signal(self, signum, frame) -> None:
        self.signalled = signum

    def callbacks(self, steps_per_epoch: int, resumed: bool = False) -> list:
        from afternoon.training.callbacks import AverageStatistics, LearningRateWarmup

        callbacks = [AverageStatistics(self)]
        warmup = self.settings["warmup_epochs"]
        if self.settings["scale_lr"] and warmup > 0 and self.size > 1:
            callbacks.append(
                LearningRateWarmup(self.learning_rate, self.size, warmup, steps_per_epoch)
            )
        return callbacks

    def stop_if_signalled(self) -> None:
        """Raise ``Terminated`` on every worker when any of them got SIGTERM (multi_worker)."""
        if self.backend == "mirrored":
            return  # one process: the run logger's own SIGTERM handler stops it at once
        signums = self._gather(np.array([self.signalled or 0]))[:, 0]
        if signums.any():
            from afternoon.errors import Terminated

            raise Terminated(f"{signal.Signals(int(signums.max())).name} received")

    def average_statistics(self, model) -> None:
        """Every replica's batch-norm moving statistics set to their mean over all replicas (a
        read of such a variable is that mean: an all-reduce), so a checkpoint holds what every
        replica holds and a resumed job matches an uninterrupted one (see horovod.py)."""
        for variable in model.non_trainable_variables:
            if variable.dtype.is_floating:
                variable.assign(variable.read_value())

    def finalize(self, model) -> dict:
        """Check that every worker holds the same weights (checksums gathered)."""
        self.average_statistics(model)
        self._final_weights = model.get_weights()
        digest = common.weights_sha256(self._final_weights)
        checksums = self._gather_text(digest) if self.workers > 1 else [digest]
        common.check_identical(checksums, f"{self.backend} did not keep the replicas in sync")
        return {
            "backend": self.backend,
            "world_size": self.size,
            "workers": self.workers,
            "threads_per_rank": self.threads,
            "learning_rate": self.learning_rate,
            "rank_weight_sha256": checksums,
            "ranks_identical": True,
        }

    def exportable(self, model, spec: dict):
        """The final weights in a one-process model (built outside the strategy, compiled as
        build_model compiles): what the chief saves, and what evaluation loads."""
        from afternoon.training.models import build_model

        plain = build_model(
            spec, model.input_shape[1:], num_classes=int(spec["num_classes"]),
            seed=spec["seed"], mixed_precision=spec["precision"],
        )  # fmt: skip
        plain.set_weights(self._final_weights)
        return plain
