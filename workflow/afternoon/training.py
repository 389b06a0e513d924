"""Train one architecture on one dataset: the model, its history, its metrics, its MLflow run.

`train()` is the whole recipe; `train_job()` adds the files and tracking around it for a
Snakemake job. Both run in one process per job, so TensorFlow is configured once per process.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path

import numpy as np

from afternoon.errors import AfternoonError, ConfigError
from afternoon.runtime import configure_tensorflow

log = logging.getLogger("afternoon.training")


class TrainingDiverged(AfternoonError):
    """The loss became NaN or infinite."""


# --- Input pipeline --------------------------------------------------------------------------


def make_dataset(
    tf, x: np.ndarray, y: np.ndarray, batch_size: int, *, shuffle: bool, seed: int, threads: int
):
    """Batches of uint8 images (the model rescales them), reshuffled every epoch when training.

    Shuffles sample *indices* and gathers whole batches from in-memory tensors: one gather per
    batch instead of one element per image through the shuffle buffer (that per-element path is
    slower than Keras' own NumPy feeding for small models).
    """
    images, labels = tf.constant(x), tf.constant(y)
    indices = tf.data.Dataset.range(len(x))
    if shuffle:
        indices = indices.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
    dataset = indices.batch(batch_size).map(
        lambda batch: (tf.gather(images, batch), tf.gather(labels, batch)),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True,
    )
    options = tf.data.Options()
    options.threading.private_threadpool_size = threads
    return dataset.prefetch(tf.data.AUTOTUNE).with_options(options)


# --- Callbacks -------------------------------------------------------------------------------


def _callbacks(tf, spec: dict, has_validation: bool, tensorboard_dir: Path | None, on_epoch):
    keras = tf.keras

    class EpochRecorder(keras.callbacks.Callback):
        """Times each epoch, stops on a NaN loss (naming the epoch), forwards metrics."""

        def on_epoch_begin(self, epoch, logs=None):
            self.started = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            logs = dict(logs or {})
            logs["epoch_time_s"] = time.perf_counter() - self.started
            if not math.isfinite(logs.get("loss", 0.0)):
                raise TrainingDiverged(
                    f"{spec['name']} on {spec['dataset']}: loss became {logs['loss']} at epoch "
                    f"{epoch + 1}; lower the learning rate or check the data"
                )
            if on_epoch:
                on_epoch(epoch + 1, logs)

    callbacks = [EpochRecorder()]
    stopping = spec.get("early_stopping")
    if stopping:
        monitor = stopping.get("monitor", "val_loss" if has_validation else "loss")
        if monitor.startswith("val_") and not has_validation:
            raise ConfigError(
                f"architecture {spec['name']!r}, early_stopping.monitor: {monitor!r} needs a "
                "validation split (data.validation_fraction > 0)"
            )
        callbacks.append(
            keras.callbacks.EarlyStopping(
                monitor=monitor,
                patience=stopping.get("patience", 3),
                min_delta=stopping.get("min_delta", 0.0),
                restore_best_weights=stopping.get("restore_best_weights", True),
            )
        )
    if tensorboard_dir is not None:
        callbacks.append(keras.callbacks.TensorBoard(log_dir=str(tensorboard_dir), profile_batch=0))
    return callbacks


# --- Training --------------------------------------------------------------------------------


def train(
    spec: dict,
    data: dict,
    *,
    threads: int = 2,
    tensorboard_dir: Path | None = None,
    on_epoch=None,
    verbose: int = 2,
    distributed=None,
):
    """Build and fit the model of ``spec`` on ``data`` (arrays of a preprocessed npz).

    Returns (model, history rows, summary). ``on_epoch(epoch, logs)`` is called after each epoch.
    ``distributed``: this process's rank of a data-parallel job (``afternoon.distributed``), or
    None for one process; it shards the data, wraps the optimizer and adds its callbacks.
    """
    from afternoon.config import architecture_of
    from afternoon.models import build_model, count_params

    tf = configure_tensorflow(threads, spec["seed"], spec.get("deterministic", True))
    has_validation = len(data["x_val"]) > 0
    model = build_model(
        architecture_of(spec),
        data["x_train"].shape[1:],
        num_classes=int(spec.get("num_classes", 10)),
        seed=spec["seed"],
        mixed_precision=spec.get("precision", "float32"),
    )
    batch_size = spec["batch_size"]
    x_train, y_train = data["x_train"], data["y_train"]
    callbacks = []
    if distributed is not None:
        # Horovod: this rank's shard, the distributed optimizer, broadcast/average/warm-up.
        x_train, y_train = distributed.shard(x_train, y_train)
        distributed.compile(model)
        callbacks = distributed.callbacks(steps_per_epoch=math.ceil(len(x_train) / batch_size))
    train_data = make_dataset(
        tf,
        x_train,
        y_train,
        batch_size,
        shuffle=True,
        seed=spec["seed"],
        threads=threads,
    )
    val_data = None
    if has_validation:
        val_data = make_dataset(
            tf,
            data["x_val"],
            data["y_val"],
            batch_size,
            shuffle=False,
            seed=spec["seed"],
            threads=threads,
        )
    rows: list[dict] = []

    def record(epoch, logs):
        rows.append({"epoch": epoch, **{k: float(v) for k, v in logs.items()}})
        if on_epoch:
            on_epoch(epoch, logs)

    started = time.perf_counter()
    model.fit(
        train_data,
        epochs=spec["epochs"],
        validation_data=val_data,
        callbacks=callbacks + _callbacks(tf, spec, has_validation, tensorboard_dir, record),
        verbose=verbose,
    )
    summary = _summary(spec, rows, time.perf_counter() - started, len(data["x_train"]))
    summary["parameters"] = count_params(model)
    if distributed is not None:
        # Horovod: same weights on every rank, or fail (checksums allgathered).
        summary.update(distributed.finalize(model))
    return model, rows, summary


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


# --- One Snakemake job: files and tracking around train() --------------------------------------


def train_job(
    spec: dict,
    npz: Path,
    card: Path,
    out_dir: Path,
    tracking_marker: Path,
    threads: int,
    context: dict | None = None,
) -> dict:
    """Train, then write model.keras, history.csv, metrics.json, run.json (each atomically).

    A distributed job (``spec["distributed"]``, one process per rank): every rank trains, rank 0
    alone writes the files and the job's one MLflow run.
    """
    import pandas as pd

    from afternoon import distributed, tracking
    from afternoon.fileio import atomic_path, read_json, sha256_file, write_json_atomic
    from afternoon.preprocess import load_npz

    # Horovod: None for one process; else hvd.init() and this rank's share of the threads.
    dist = distributed.start(spec, threads)
    data = load_npz(npz)
    dataset_card = read_json(card)
    spec = {**spec, "num_classes": len(dataset_card["class_names"])}
    if dist is not None and not dist.is_root:  # Horovod: the other ranks only train.
        return train(spec, data, threads=dist.threads, verbose=0, distributed=dist)[2]
    marker = read_json(tracking_marker)
    uri = tracking.resolve_tracking_uri(
        marker["tracking_uri"], tracking_marker.with_name("mlflow.db")
    )
    tags = tracking.provenance_tags(
        Path(__file__).resolve().parents[2],
        extra={
            "config_hash": tracking.config_hash(spec),
            "dataset_sha256": dataset_card.get("npz_sha256", "unknown"),
            "architecture": spec["name"],
            "dataset": spec["dataset"],
            **(dist.tags() if dist else {"world_size": "1"}),
            **(context or {}),
        },
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    run_name = f"{spec['name']}@{spec['dataset']}"
    with tracking.RunLogger.start(uri, marker["experiment"], run_name, spec, tags) as run:
        tracking.write_run_record(out_dir / "run.json", run.run_id, uri, marker["experiment"])
        model, rows, summary = train(
            spec,
            data,
            threads=dist.threads if dist else threads,
            tensorboard_dir=out_dir / "tensorboard",
            on_epoch=lambda epoch, logs: run.log_metrics(logs, step=epoch),
            distributed=dist,
        )
        with atomic_path(out_dir / "model.keras") as tmp:
            model.save(tmp)
        with atomic_path(out_dir / "history.csv") as tmp:
            pd.DataFrame(rows).to_csv(tmp, index=False)
        summary.update(run_id=run.run_id, model_sha256=sha256_file(out_dir / "model.keras"))
        run.log_metrics({k: v for k, v in summary.items() if isinstance(v, int | float)})
        for name in ("model.keras", "history.csv"):
            run.log_artifact(out_dir / name)
        write_json_atomic(out_dir / "metrics.json", summary)
        run.log_artifact(out_dir / "metrics.json")
    log.info(
        "%s: %d epochs, final %s",
        run_name,
        summary["epochs_run"],
        {k: round(v, 4) for k, v in summary.items() if k.startswith("final_")},
    )
    return summary
