"""Data-parallel training: which process objects a training job gets.

An architecture trains data-parallel when its zoo entry (or a per-dataset override) says so::

    distributed: {backend: multi_worker, ranks: 2, scale_lr: true, warmup_epochs: 1}

Backends (each a module): ``mirrored`` and ``multi_worker`` (``strategies``: TensorFlow's own
MirroredStrategy / MultiWorkerMirroredStrategy, ``cluster`` and ``launch`` start and connect the
workers), ``horovod`` (``horovod``: optional, Horovod 0.28.1 under an MPI launcher). What they
share (the one-process job, shards, the scaled optimizer, the warm-up, the weight check) is in
``common``. ``training.train()`` is the same for all of them; nothing here imports TensorFlow or
Horovod before a job starts.
"""

from __future__ import annotations

from afternoon.distributed.common import SingleProcess

__all__ = ["SingleProcess", "start"]


def start(spec: dict, job_threads: int):
    """This process's part of the job: a ``strategies.Strategy`` (mirrored, multi_worker), a
    ``horovod.Horovod`` rank (after ``hvd.init()``), or ``SingleProcess``. The spec's
    ``distributed`` has every key filled in (``config.job_spec``); none: one process."""
    settings = spec.get("distributed")
    backend = settings["backend"] if settings else None
    if backend in ("mirrored", "multi_worker"):
        from afternoon.distributed.strategies import Strategy

        return Strategy(spec, job_threads, backend)
    if backend == "horovod" and settings["ranks"] > 1:
        from afternoon.distributed.horovod import Horovod

        return Horovod(spec, job_threads)
    return SingleProcess(job_threads)
