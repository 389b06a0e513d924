"""Train one architecture on one dataset: the model, its history, its summary metrics.

`train()` is the whole recipe, resumable from an epoch checkpoint; the train stage
(``afternoon.stages.train``) adds the files, checkpoint and MLflow run around it. Both run in one
process per job, so TensorFlow is configured once per process.
"""

from __future__ import annotations

import logging
from functools import partial
from pathlib import Path

import numpy as np

from afternoon.runtime import configure_tensorflow
from afternoon.training.checkpoint import CheckpointState
from afternoon.training.precision import NO_BF16, job_precision_of

log = logging.getLogger(__name__)

# Training steps per call into TensorFlow when the recipe does not say (one-process jobs; the
# distributed backends recompile with 1): the same arithmetic, the same weights, with Python's
# per-step cost (callbacks, the step function's dispatch) paid once per this many steps. The
# epoch's last call runs the steps that are left.
STEPS_PER_EXECUTION = 50


# --- Input pipeline --------------------------------------------------------------------------


def epoch_orders(n: int, seed: int, epochs: range) -> np.ndarray:
    """The sample order of each epoch in ``epochs``: a permutation drawn from (seed, epoch), so
    epoch e sees the same batches whether or not the job was stopped and resumed before it."""
    return np.stack([np.random.default_rng([seed, epoch]).permutation(n) for epoch in epochs])


PREFETCH_BATCHES = 4  # a few batches ahead of the training loop, gathered in the background


def make_dataset(
    tf,
    x: np.ndarray,
    y: np.ndarray,
    batch_size: int,
    *,
    shuffle: bool,
    seed: int,
    threads: int,
    epochs: range = range(1),
):
    """Batches of uint8 images (the model rescales them).

    Training (``shuffle``): one pass per epoch of ``epochs``, each in ``epoch_orders``' order, as
    one stream (``fit`` must be given ``steps_per_epoch``). Otherwise one pass in order.
    Shuffles sample *indices* and gathers whole batches from in-memory tensors: one gather per
    batch instead of one element per image through a shuffle buffer (that per-element path is
    slower than Keras' own NumPy feeding for small models).
    """
    images, labels = tf.constant(x), tf.constant(y)
    if shuffle:
        orders = tf.data.Dataset.from_tensor_slices(epoch_orders(len(x), seed, epochs))
        batches = orders.flat_map(
            lambda order: tf.data.Dataset.from_tensor_slices(order).batch(batch_size)
        )
    else:
        batches = tf.data.Dataset.range(len(x)).batch(batch_size)
    dataset = batches.map(
        lambda batch: (tf.gather(images, batch), tf.gather(labels, batch)),
        num_parallel_calls=threads,
        deterministic=True,
    )
    options = tf.data.Options()
    options.threading.private_threadpool_size = threads
    # No autotuning: a gather per batch needs none, and its model thread held up the deletion of
    # fit()'s iterator, the job's end, by up to its 60 s optimisation period (BENCHMARKS.md).
    options.autotune.enabled = False
    return dataset.prefetch(PREFETCH_BATCHES).with_options(options)


# --- Callbacks (training.callbacks: imported once TensorFlow is configured) -------------------


def _callbacks(spec: dict, tensorboard_dir: Path | None, on_epoch):
    """The job's own callbacks (the process's come first) and its early stopping, if any."""
    from afternoon.training.callbacks import EpochRecorder, ResumableEarlyStopping

    stopper = None
    if spec.get("early_stopping"):
        # Every key filled in (config.job_spec); a val_ monitor only where there is a validation
        # split (the dry run refuses one without: checks.check_jobs).
        stopper = ResumableEarlyStopping(**spec["early_stopping"])
    callbacks = [EpochRecorder(spec, on_epoch)] + ([stopper] if stopper else [])
    if tensorboard_dir is not None:
        import tf_keras as keras

        # Weight histograms every epoch, as the seeds' TensorBoard callback (histogram_freq=1).
        board = keras.callbacks.TensorBoard(str(tensorboard_dir), histogram_freq=1, profile_batch=0)
        callbacks.append(board)
    return callbacks, stopper


def _resume(tf, model, checkpointer, resume: CheckpointState, stopper) -> None:
    """Put ``model`` (and early stopping) where the checkpoint ``resume`` left them."""
    checkpointer.restore(tf, model, resume)
    if stopper is not None and resume.early_stopping:
        stopper.resumed = resume.early_stopping
        stopper.resumed_weights = checkpointer.best_weights(resume)
        if resume.stopped and stopper.restore_best_weights and stopper.resumed_weights:
            model.set_weights(stopper.resumed_weights)  # what on_train_end would have done
    log.info("resuming %s from the checkpoint of epoch %d", checkpointer.directory, resume.epoch)


# --- Training --------------------------------------------------------------------------------


def train(
    spec: dict, data: dict, process, *, tensorboard_dir=None, on_epoch=None, checkpointer=None
):
    """Build and fit the model of ``spec`` on ``data`` (arrays of a preprocessed npz).

    Returns (model, history rows, summary). ``process``: this process's part of the job
    (``distributed.start``: one process, a tf.distribute worker or a Horovod rank: its shard of
    the data, its optimizer and callbacks, its threads). ``on_epoch(epoch, logs)`` is called
    after each epoch.
    ``checkpointer`` (``afternoon.training.checkpoint``): saved after every epoch; training
    continues from
    its ``resumed`` state, if it has one.
    """
    from afternoon.training.models import build_model, count_params

    tf = configure_tensorflow(process.threads, spec["seed"], spec["deterministic"])
    batch_size, epochs = spec["batch_size"], spec["epochs"]
    # Distributed: this worker's shard.
    x_train, y_train = process.shard(data["x_train"], data["y_train"])
    steps = process.steps_per_epoch(len(x_train), batch_size)
    precision, why = job_precision_of(tf, spec["precision"])  # auto: bf16 hardware or not
    level = logging.WARNING if NO_BF16 in why else logging.INFO
    log.log(level, "%s: precision %s (%s)", spec["name"], precision, why)
    with process.scope():  # a tf.distribute strategy's variables are made in its scope
        model = build_model(
            spec,
            data["x_train"].shape[1:],
            num_classes=int(spec["num_classes"]),
            seed=spec["seed"],
            mixed_precision=precision,
            steps_per_epoch=steps,
            steps_per_execution=spec.get("steps_per_execution") or STEPS_PER_EXECUTION,
        )
    resume = checkpointer.resumed if checkpointer is not None else None
    # Distributed: the scaled optimizer, broadcast/average/warm-up (steps_per_execution 1).
    process.compile(model)
    callbacks = process.callbacks(steps_per_epoch=steps, resumed=resume is not None)
    rows: list[dict] = list(resume.rows) if resume else []

    def record(epoch, logs):
        rows.append({"epoch": epoch, **{k: float(v) for k, v in logs.items()}})
        if on_epoch:
            on_epoch(epoch, logs)

    more, stopper = _callbacks(spec, tensorboard_dir, record)
    callbacks += more
    first_epoch = resume.epoch if resume else 0
    if resume:
        with process.scope():
            _resume(tf, model, checkpointer, resume, stopper)
        process.broadcast_variables(model)  # Horovod: rank 0's restored state everywhere.
    if checkpointer is not None:
        from afternoon.training.callbacks import EpochCheckpoint

        callbacks.append(EpochCheckpoint(tf, checkpointer, rows, stopper, process))
    if first_epoch < epochs and not (resume and resume.stopped):
        verbose = 2 if process.is_root else 0
        fit_epochs = range(first_epoch, epochs)
        train_arrays = (x_train, y_train, steps)
        _fit(tf, model, spec, data, train_arrays, fit_epochs, callbacks, process, verbose)
    # Every epoch's time, those of an earlier (stopped) attempt included.
    train_time = sum(row["epoch_time_s"] for row in rows)
    summary = _summary(spec, rows, train_time, len(data["x_train"]))
    summary["parameters"] = count_params(model)
    summary.update(precision=precision, precision_reason=why)
    summary["resumed_from_epoch"] = first_epoch
    # Distributed: same weights on every worker, or fail (checksums gathered).
    summary.update(process.finalize(model))
    return process.exportable(model, {**spec, "precision": precision}), rows, summary


def _fit(tf, model, spec, data, train_arrays, epochs: range, callbacks, process, verbose) -> None:
    """``model.fit`` over ``epochs`` (a resumed job starts past 0), validating every epoch."""
    batch_size, seed, threads = spec["batch_size"], spec["seed"], process.threads
    x_train, y_train, steps = train_arrays
    train_data = process.distribute(
        partial(
            make_dataset,
            tf,
            x_train,
            y_train,
            batch_size,
            shuffle=True,
            seed=seed,
            threads=threads,
            epochs=epochs,
        )
    )
    val_data, val_steps = None, None
    if len(data["x_val"]) > 0:  # every worker validates on the whole validation split
        val_data = process.distribute(
            partial(
                make_dataset,
                tf,
                data["x_val"],
                data["y_val"],
                batch_size,
                shuffle=False,
                seed=seed,
                threads=threads,
            )
        )
        val_steps = process.steps_per_epoch(len(data["x_val"]), batch_size)
    model.fit(
        train_data,
        epochs=epochs.stop,
        initial_epoch=epochs.start,
        steps_per_epoch=steps,
        validation_data=val_data,
        validation_steps=val_steps,
        callbacks=callbacks,
        verbose=verbose,
    )


def _summary(spec: dict, rows: list[dict], train_time: float, n_train: int) -> dict:
    """Final and best-epoch metrics, and timings, from the per-epoch rows."""
    last = rows[-1]
    monitor = "val_loss" if "val_loss" in last else "loss"
    best = min(rows, key=lambda row: row[monitor])
    epoch_times = [row["epoch_time_s"] for row in rows]
    summary = {
        "architecture": spec["name"],
        "dataset": spec["dataset"],
        "epochs_planned": spec["epochs"],
        "epochs_run": len(rows),
        "best_epoch": best["epoch"],
        "train_time_s": train_time,
        "time_per_epoch_s": float(np.mean(epoch_times)),
        "train_samples_per_s": n_train / float(np.median(epoch_times)),
    }
    for key, value in last.items():
        if key not in ("epoch", "epoch_time_s"):
            summary[f"final_{key}"] = value
    return summary
