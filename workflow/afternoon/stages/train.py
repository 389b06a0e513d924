"""Stage train: one architecture on one dataset, tracked as one MLflow run (``training.train``
with the files, checkpoint and run around it).

The outputs (model, history, metrics, and run.json last) are each written atomically, so a job
stopped early (SIGTERM at a Slurm time limit, SIGKILL) leaves none of them complete: only its
checkpoint directory (``afternoon.training.checkpoint``), from which the next attempt resumes,
into the
same MLflow run. A tracking store that is down does not stop training: the run is recorded as
pending (``afternoon.cli sync-tracking``).

A distributed job (``spec["distributed"]``, ``afternoon.distributed``): every worker (or rank)
trains, the chief (worker 0) alone writes the files, the checkpoint and the job's one MLflow run.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import shutil
import tempfile
import time
from pathlib import Path

from afternoon import distributed, tracking
from afternoon.distributed.common import weights_sha256
from afternoon.errors import Terminated, TrainingDiverged
from afternoon.fileio import atomic_path, read_json, write_json_atomic
from afternoon.layout import TRAIN_FILES
from afternoon.npz import load_npz
from afternoon.report import costs
from afternoon.training.checkpoint import Checkpointer, CheckpointState
from afternoon.training.loop import train

log = logging.getLogger(__name__)


def train_job(
    spec: dict,
    npz: Path,
    card: Path,
    tracking_marker: Path,
    outputs: dict[str, Path],
    threads: int,
    context: dict | None = None,
) -> dict:
    """Train ``spec`` on the dataset ``npz``/``card``; write ``outputs`` (the names of
    ``layout.TRAIN_FILES``, plus ``tensorboard`` and ``checkpoint`` folders); returns the
    summary metrics. ``context``: extra MLflow tags."""
    started = time.perf_counter()  # the cost's wall clock (afternoon.report.costs)
    # Distributed: the strategy or hvd.init(), this worker's share of the threads.
    process = distributed.start(spec, threads)
    data = load_npz(npz)
    dataset_card = read_json(card)
    spec = {**spec, "num_classes": len(dataset_card["class_names"])}
    fingerprint = {
        "spec": tracking.config_hash(spec),
        "data": dataset_card.get("npz_sha256"),
        "ranks": process.size,
    }
    checkpointer = Checkpointer(outputs["checkpoint"], fingerprint, writer=process.is_root,
                                collective=process.collective_saves)  # fmt: skip
    # Distributed: the chief reads the checkpoint state; every worker resumes from that epoch.
    resumed = checkpointer.load() if process.is_root else None
    state = process.broadcast(dataclasses.asdict(resumed) if resumed else None, name="resume")
    checkpointer.resumed = resumed = CheckpointState(**state) if state else None
    if not process.is_root:  # Distributed: the other workers only train.
        # Their TensorBoard callback writes to a scratch folder: it must run all the same, since
        # under a tf.distribute strategy its weight histograms read the batch-norm statistics
        # (sync-on-read variables), and each such read is a collective the chief's reads match.
        with tempfile.TemporaryDirectory(prefix="afternoon-tensorboard-") as scratch:
            return train(spec, data, process, tensorboard_dir=Path(scratch),
                         checkpointer=checkpointer)[2]  # fmt: skip

    marker = read_json(tracking_marker)
    uri = tracking.resolve_tracking_uri(marker["tracking_uri"])
    device = costs.device_of(threads, process.size)
    tags = tracking.provenance_tags(
        extra={
            "config_hash": tracking.config_hash(spec),
            "dataset_sha256": dataset_card.get("npz_sha256", "unknown"),
            "architecture": spec["name"],
            "dataset": spec["dataset"],
            "replicate": spec.get("replicate", 0),  # config replicates: seed + replicate
            "device": device["name"],
            "device_kind": device["kind"],
            **process.tags(),
            **(context or {}),
        },
    )
    for path in outputs.values():  # an unwritable results tree fails now, not after training
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    run_name = tracking.run_name(spec)
    if resumed and resumed.run_id:
        opened = tracking.RunLogger.reopen(uri, resumed.run_id, offline_ok=True)
    else:
        opened = tracking.RunLogger.start(
            uri, marker["experiment"], run_name, spec, tags, offline_ok=True
        )
    tracked_before = not resumed or resumed.tracking_complete
    try:
        with opened as run:
            checkpointer.run_id = run.run_id
            checkpointer.tracking_complete = tracked_before and not run.degraded
            model, rows, summary = train(
                spec,
                data,
                process,
                tensorboard_dir=Path(outputs["tensorboard"]),
                on_epoch=lambda epoch, logs: run.log_metrics(logs, step=epoch),
                checkpointer=checkpointer,
            )
            # Earlier (stopped) attempts' epochs count too; their start-up does not.
            earlier = sum(row["epoch_time_s"] for row in resumed.rows) if resumed else 0.0
            summary.update(costs.run_cost(device, time.perf_counter() - started + earlier))
            summary["device"] = device["name"]
            # auto precision is decided on the node that trains: the run says what and why.
            run.set_tags({key: summary[key] for key in ("precision", "precision_reason")})
            _write_outputs(outputs, model, rows, summary, run)
    except TrainingDiverged:
        # Resuming would diverge again: keep neither the checkpoint nor TensorBoard's events.
        checkpointer.clear()
        shutil.rmtree(outputs["tensorboard"], ignore_errors=True)
        raise
    except Terminated as err:
        saved = checkpointer.load()
        kept = f"the checkpoint of epoch {saved.epoch}" if saved else "no checkpoint yet"
        raise Terminated(
            f"{run_name}: {err}; {kept} in {checkpointer.directory}: run again to resume"
        ) from None
    complete = tracked_before and not run.degraded
    tags["weights_sha256"] = summary["weights_sha256"]  # sync-tracking sets it where it is missing
    tracking.write_run_record(outputs["run"], run.run_id, uri, marker["experiment"],
                              params=spec, tags=tags, complete=complete)  # fmt: skip
    checkpointer.clear()
    if not complete:  # the run logger already warned (once) when it was this attempt's failure
        reason = run.failure or "an earlier attempt of this job could not reach the tracking store"
        tracking.record_pending(tracking_marker, Path(outputs["run"]).parent, "train", reason)
        if not run.degraded:
            log.warning("%s: %s: its MLflow run lacks epochs (sync-tracking)", run_name, reason)
    log.info(
        "%s: %d epochs, final %s",
        run_name,
        summary["epochs_run"],
        {k: round(v, 4) for k, v in summary.items() if k.startswith("final_")},
    )
    return summary


def _write_outputs(outputs: dict[str, Path], model, rows: list, summary: dict, run) -> None:
    """The model, history and metrics (atomically), logged as the run's artifacts. The
    metrics hold ``weights_sha256``, the digest of the trained weights (not of the .keras file,
    which records when it was saved), also the run's MLflow tag: a rerun with the same spec,
    seed and data on the same software shows the same one."""
    import pandas as pd

    with atomic_path(outputs["model"]) as tmp:
        model.save(tmp)
    with atomic_path(outputs["history"]) as tmp:
        pd.DataFrame(rows).to_csv(tmp, index=False)
    summary.update(run_id=run.run_id, weights_sha256=weights_sha256(model.get_weights()))
    run.set_tags({"weights_sha256": summary["weights_sha256"]})
    run.log_metrics({k: v for k, v in summary.items() if isinstance(v, int | float)})
    for name in ("model", "history"):
        run.log_artifact(outputs[name])
    write_json_atomic(outputs["metrics"], summary)
    run.log_artifact(outputs["metrics"])


def main(args: argparse.Namespace) -> None:
    names = [*TRAIN_FILES, "tensorboard", "checkpoint"]
    outputs = {name: Path(getattr(args, name)) for name in names}
    tags = dict(tag.split("=", 1) for tag in args.tag)
    train_job(json.loads(args.spec), Path(args.npz), Path(args.card), Path(args.tracking), outputs,
              threads=args.threads, context=tags)  # fmt: skip
