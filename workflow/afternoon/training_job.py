"""One Snakemake training job: the files, checkpoint and MLflow run around ``training.train``.

``train_job`` writes model.keras, history.csv, metrics.json and, last, run.json, each atomically,
so a job stopped early (SIGTERM at a Slurm time limit, SIGKILL) leaves none of them complete:
only its ``checkpoint/`` (``afternoon.checkpoint``), from which the next attempt resumes.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from afternoon.training import TrainingDiverged, train

log = logging.getLogger("afternoon.training")


def train_job(
    spec: dict,
    npz: Path,
    card: Path,
    out_dir: Path,
    tracking_marker: Path,
    threads: int,
    context: dict | None = None,
) -> dict:
    """Train, then write model.keras, history.csv, metrics.json and, last, run.json (each
    atomically): a job stopped early leaves none of them complete, only its ``checkpoint/``,
    from which the next attempt resumes (into the same MLflow run).

    A distributed job (``spec["distributed"]``, one process per rank): every rank trains, rank 0
    alone writes the files, the checkpoint and the job's one MLflow run. A tracking store that is
    down does not stop training: the run is recorded as pending (``afternoon.cli sync-tracking``).
    """
    from afternoon import distributed
    from afternoon.checkpoint import Checkpointer
    from afternoon.fileio import read_json
    from afternoon.preprocess import load_npz

    # Horovod: None for one process; else hvd.init() and this rank's share of the threads.
    dist = distributed.start(spec, threads)
    data = load_npz(npz)
    dataset_card = read_json(card)
    spec = {**spec, "num_classes": len(dataset_card["class_names"])}
    fingerprint = _fingerprint(spec, dataset_card, dist)
    is_root = dist is None or dist.is_root
    checkpointer = Checkpointer(out_dir / "checkpoint", fingerprint, writer=is_root)
    resume = checkpointer.load() if is_root else None
    if dist is not None:
        # Horovod: rank 0 read the checkpoint state; every rank resumes from the same epoch.
        resume = dist.broadcast(resume, name="afternoon.resume")
    if not is_root:  # Horovod: the other ranks only train.
        kwargs = dict(verbose=0, distributed=dist, checkpointer=checkpointer, resume=resume)
        return train(spec, data, threads=dist.threads, **kwargs)[2]
    return _train_and_track(spec, data, dataset_card, out_dir, tracking_marker, threads, context,
                            dist=dist, checkpointer=checkpointer, resume=resume)  # fmt: skip


def _fingerprint(spec: dict, dataset_card: dict, dist) -> dict:
    """What a checkpoint must have been written for, to be resumed from."""
    from afternoon.tracking import config_hash

    world = dist.size if dist is not None else 1
    return {"spec": config_hash(spec), "data": dataset_card.get("npz_sha256"), "ranks": world}


def _train_and_track(
    spec, data, dataset_card, out_dir, tracking_marker, threads, context, *, dist, checkpointer,
    resume
):  # fmt: skip
    """Rank 0 (or the only process): the MLflow run around ``train``, then the output files."""
    from afternoon import tracking
    from afternoon.fileio import read_json

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
    if resume and resume.get("run_id"):
        opened = tracking.RunLogger.reopen(uri, resume["run_id"], offline_ok=True)
    else:
        opened = tracking.RunLogger.start(
            uri, marker["experiment"], run_name, spec, tags, offline_ok=True
        )
    tracked_before = not resume or resume.get("tracking_complete", True)
    try:
        with opened as run:
            model, rows, summary = train(
                spec,
                data,
                threads=dist.threads if dist else threads,
                tensorboard_dir=out_dir / "tensorboard",
                on_epoch=lambda epoch, logs: run.log_metrics(logs, step=epoch),
                distributed=dist,
                checkpointer=checkpointer,
                resume=resume,
                state={
                    "run_id": run.run_id,
                    "tracking_complete": tracked_before and not run.degraded,
                },
            )
            _write_outputs(out_dir, model, rows, summary, run)
    except TrainingDiverged:
        # Resuming would diverge again: keep neither the checkpoint nor TensorBoard's events.
        checkpointer.clear()
        shutil.rmtree(out_dir / "tensorboard", ignore_errors=True)
        raise
    except tracking.Terminated as err:
        saved = checkpointer.load()
        kept = f"the checkpoint of epoch {saved['epoch']}" if saved else "no checkpoint yet"
        raise tracking.Terminated(
            f"{run_name}: {err}; {kept} in {checkpointer.directory}: run again to resume"
        ) from None
    complete = tracked_before and not run.degraded
    tracking.write_run_record(out_dir / "run.json", run.run_id, uri, marker["experiment"],
                              params=spec, tags=tags, complete=complete)  # fmt: skip
    checkpointer.clear()
    if not complete:  # the run logger already warned (once) when it was this attempt's failure
        reason = run.failure or "an earlier attempt of this job could not reach the tracking store"
        tracking.record_pending(tracking_marker, out_dir, "train", reason)
        if not run.degraded:
            log.warning("%s: %s: its MLflow run lacks epochs (sync-tracking)", run_name, reason)
    log.info(
        "%s: %d epochs, final %s",
        run_name,
        summary["epochs_run"],
        {k: round(v, 4) for k, v in summary.items() if k.startswith("final_")},
    )
    return summary


def _write_outputs(out_dir: Path, model, rows: list, summary: dict, run) -> None:
    """model.keras, history.csv, metrics.json (atomically), logged as the run's artifacts."""
    import pandas as pd

    from afternoon.fileio import atomic_path, sha256_file, write_json_atomic

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
