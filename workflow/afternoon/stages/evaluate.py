"""Stage evaluate: score one trained model on its dataset's test split (``afternoon.evaluation``:
loss, accuracy, confusion matrix, per-class scores, the most confidently misclassified images,
inference throughput), then log the scores and figures to the training job's MLflow run.

A tracking outage (or a training run that was never tracked) does not fail the job: its files
are written all the same and the run is queued for ``sync-tracking``.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from afternoon.evaluation import evaluate_run
from afternoon.fileio import write_json_atomic
from afternoon.layout import EVAL_FILES, LOGGED_EVAL_FILES
from afternoon.report.costs import slurm_cost
from afternoon.tracking import RunLogger, read_run_record, record_pending, resolve_tracking_uri
from afternoon.tracking.records import SYNC_HINT, logged_eval_metrics

log = logging.getLogger(__name__)


def evaluate_job(
    model: Path,
    run_record: Path,
    npz: Path,
    card: Path,
    tracking_marker: Path,
    outputs: dict[str, Path],
    *,
    n_misclassified: int = 25,
    threads: int | None = None,
) -> dict:
    """Write ``outputs`` (``layout.EVAL_FILES``' names), then log them to the run ``run_record``
    names; returns the test metrics."""
    record = read_run_record(run_record)
    name = (record.get("params") or {}).get("name") or Path(model).stem
    title = f"{name} on {Path(npz).stem}"
    metrics = evaluate_run(model, npz, card, outputs, n_misclassified, threads, title=title)
    # Under Slurm the training job has ended by now: its accounting is its cost.
    if job_id := (record.get("tags") or {}).get("afternoon.slurm_job_id"):
        metrics.update(slurm_cost(job_id))
        write_json_atomic(outputs["metrics"], metrics)
    run_dir, eval_dir = Path(run_record).parent, Path(outputs["metrics"]).parent
    if record["run_id"] is None:
        why = f"{run_record} names no MLflow run (training was not tracked)"
        log.warning(f"{why}: evaluation metrics pending, for `{SYNC_HINT}`")
        record_pending(tracking_marker, run_dir, "evaluate", why, eval_dir=eval_dir)
        return metrics
    uri = resolve_tracking_uri(record["tracking_uri"])  # where the run was created
    run = RunLogger.resume(uri, record["run_id"], offline_ok=True)
    run.log_metrics(logged_eval_metrics(metrics))
    for name in LOGGED_EVAL_FILES:
        run.log_artifact(Path(outputs[name]), artifact_path="evaluation")
    if run.degraded:
        record_pending(tracking_marker, run_dir, "evaluate", run.failure, eval_dir=eval_dir)
    return metrics


def main(args: argparse.Namespace) -> None:
    outputs = {name: Path(getattr(args, name)) for name in EVAL_FILES}
    evaluate_job(
        Path(args.model),
        Path(args.run),
        Path(args.npz),
        Path(args.card),
        Path(args.tracking),
        outputs,
        n_misclassified=args.misclassified,
        threads=args.threads,
    )
