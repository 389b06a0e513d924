"""A job's tracking on disk: run.json (its MLflow run, params, tags, whether tracking completed)
and the ledger of runs whose tracking is pending (``<tracking marker's dir>/pending/*.json``),
which ``afternoon.cli sync-tracking`` re-logs once the tracking server is back."""

from __future__ import annotations

import hashlib
import logging
import re
import socket
import time
from pathlib import Path

from afternoon.errors import DataFormatError
from afternoon.fileio import read_json, write_json_atomic
from afternoon.layout import PENDING
from afternoon.tracking.provenance import redact, strip_credentials

log = logging.getLogger(__name__)

STAGES = ("train", "evaluate")
SYNC_HINT = "python -m afternoon.cli sync-tracking --results RESULTS"


def write_run_record(
    path: Path,
    run_id: str | None,
    uri: str,
    experiment: str,
    *,
    params: dict | None = None,
    tags: dict | None = None,
    complete: bool = True,
) -> None:
    """The job's pointer to its MLflow run (URI without credentials), written atomically.

    ``params`` (the job's spec) and ``tags`` let ``sync-tracking`` re-log the run from disk;
    ``complete`` is False when tracking failed (``run_id`` is then None if no run was created).
    """
    record = dict(run_id=run_id, tracking_uri=strip_credentials(uri), experiment=experiment)
    record["complete"] = bool(complete)
    if params is not None:
        record["params"] = params
    if tags is not None:
        record["tags"] = tags
    write_json_atomic(path, record)


def read_run_record(path: Path) -> dict:
    """run.json as a dict; ``complete`` defaults to True (records of older jobs)."""
    record = read_json(path)
    if not isinstance(record, dict):
        raise DataFormatError(f"{path}: not a run record (not a JSON object)")
    record.setdefault("complete", True)
    for key in ("run_id", "tracking_uri", "experiment"):
        value = record.get(key)
        if not (isinstance(value, str) or (key == "run_id" and value is None)):
            raise DataFormatError(f"{path}: not a run record (no {key!r})")
    if record["run_id"] is None and record["complete"] is not False:
        raise DataFormatError(f"{path}: not a run record (no 'run_id')")
    return record


def pending_dir(marker: Path) -> Path:
    """Where the ledger of pending runs lives: beside the tracking marker."""
    return Path(marker).parent / PENDING


def record_pending(
    marker: Path, run_dir: Path, stage: str, reason: str, *, eval_dir: Path | None = None
) -> Path:
    """Note (atomically) that ``stage`` of the job in ``run_dir`` is missing from tracking."""
    if stage not in STAGES:
        raise ValueError(f"stage {stage!r} is not one of {', '.join(STAGES)}")
    run_dir = Path(run_dir).resolve()
    key = hashlib.sha256(str(run_dir).encode()).hexdigest()[:10]
    name = re.sub(r"[^\w.-]", "_", f"{stage}-{run_dir.parent.name}-{run_dir.name}-{key}.json")
    entry = dict(run_dir=str(run_dir), stage=stage, reason=redact(reason))
    if eval_dir is not None:
        entry["eval_dir"] = str(Path(eval_dir).resolve())
    entry.update(host=socket.gethostname(), recorded=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    path = pending_dir(marker) / name
    write_json_atomic(path, entry)
    log.info(f"{stage} of {run_dir} queued for `{SYNC_HINT}` ({path.name})")
    return path


def pending_entries(marker: Path) -> list[tuple[Path, dict]]:
    """(path, entry) for each ledger entry, oldest name first; unreadable ones raise."""
    paths = sorted(pending_dir(marker).glob("*.json")) if pending_dir(marker).is_dir() else []
    entries = [(path, read_json(path)) for path in paths]
    for path, entry in entries:
        if not (isinstance(entry, dict) and isinstance(entry.get("run_dir"), str)):
            raise DataFormatError(f"{path}: not a pending-tracking entry (no 'run_dir')")
    return entries


def logged_eval_metrics(metrics: dict) -> dict:
    """The evaluation metrics (evaluate's metrics.json) that go to the training job's run."""
    return {key: value for key, value in metrics.items() if key != "n_test"}
