"""Re-log the runs whose tracking failed from the files their jobs left on disk:
``python -m afternoon.cli sync-tracking --results results``.

Each ledger entry (``records.record_pending``) names a run directory. Its run.json gives the
params, tags and MLflow run (if one was created); history.csv the per-epoch metrics (step =
epoch); metrics.json the summary; the evaluate job's folder (as its entry records it, else where
the results layout puts it) the evaluation. A run that exists
gets only what it lacks (no metric step twice), a missing one is created; either ends FINISHED.
run.json then names the run, with its mtime kept so that Snakemake reruns nothing.
"""

from __future__ import annotations

import contextlib
import csv
import fcntl
import logging
import os
import sys
import time
from pathlib import Path

from afternoon.errors import DataFormatError
from afternoon.fileio import read_json, write_json_atomic
from afternoon.layout import EVAL_FILES, LOGGED_EVAL_FILES, TRAIN_FILES, Layout
from afternoon.tracking.provenance import (
    first_line,
    flatten_params,
    redact,
    run_name,
    strip_credentials,
)
from afternoon.tracking.records import (
    logged_eval_metrics,
    pending_dir,
    pending_entries,
    read_run_record,
)
from afternoon.tracking.retries import is_transient, why, with_retries
from afternoon.tracking.runs import RunLogger, TrackingError
from afternoon.tracking.uris import resolve_tracking_uri

# What the train stage logs as artifacts (at the run's root), and the evaluate stage (under
# "evaluation/").
LOGGED_TRAIN_FILES = [TRAIN_FILES[name] for name in ("model", "history", "metrics")]
LOGGED_FILES = [EVAL_FILES[name] for name in LOGGED_EVAL_FILES]


def sync_tracking(results: Path, marker: Path | None = None) -> list[str]:
    """Sync every pending run; one line per run on stdout. Returns the run ids synced.

    Raises TrackingError (entries kept) if the store is unreachable or a run could not be synced.
    """
    layout = Layout(str(results))
    marker = Path(marker) if marker else Path(layout.tracking_marker())
    with _exclusive(pending_dir(marker)), _quiet_mlflow():
        runs: dict[str, list[tuple[Path, dict]]] = {}
        for path, entry in pending_entries(marker):
            runs.setdefault(entry["run_dir"], []).append((path, entry))
        if not runs:
            print(f"nothing to sync: no pending runs in {pending_dir(marker)}")
            return []
        uri = _tracking_uri(marker, layout)
        synced, failed = [], 0
        for run_dir, entries in runs.items():
            stamps = {path: path.stat().st_mtime_ns for path, _ in entries}
            if not Path(run_dir).is_dir():
                _drop(stamps)
                print(f"dropped {run_dir}: no longer on disk", flush=True)
                continue
            try:
                run_id, line = sync_run(
                    uri, Path(run_dir), _eval_dir(layout, Path(run_dir), entries)
                )
            except Exception as err:
                if is_transient(err):
                    left = f"{len(runs) - len(synced)} run(s) still pending"
                    where = f"{left} in {pending_dir(marker)}"
                    raise TrackingError(
                        f"tracking store {redact(uri)!r} unreachable ({why(err)}); {where}"
                    ) from err
                print(f"afternoon: sync-tracking: {run_dir}: {first_line(err)}", file=sys.stderr)
                failed += 1
                continue
            _drop(stamps)
            synced.append(run_id)
            print(line, flush=True)
    if failed:
        raise TrackingError(f"{failed} of {len(runs)} pending runs not synced (above)")
    return synced


def _drop(stamps: dict[Path, int]) -> None:
    """Delete ledger entries, but not one that a job rewrote meanwhile (the next sync's)."""
    for path, mtime in stamps.items():
        with contextlib.suppress(FileNotFoundError):
            if path.stat().st_mtime_ns == mtime:
                path.unlink()


@contextlib.contextmanager
def _exclusive(pending: Path):
    """One sync at a time per results tree (two would both create the missing runs)."""
    pending.mkdir(parents=True, exist_ok=True)
    with open(pending / ".sync.lock", "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise TrackingError(f"another sync-tracking is running on {pending}") from None
        yield


@contextlib.contextmanager
def _quiet_mlflow():
    """One line per run, ours: no "View run ... at: URL" from MLflow, no retry lines."""
    name, logger = "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", logging.getLogger(__package__)
    old, level = os.environ.get(name), logger.level
    os.environ[name] = "true"
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        os.environ.pop(name) if old is None else os.environ.update({name: old})
        logger.setLevel(level)


def _tracking_uri(marker: Path, layout: Layout) -> str:
    """$MLFLOW_TRACKING_URI, else the marker's URI, else the results tree's sqlite store."""
    config_uri = read_json(marker).get("tracking_uri") if marker.is_file() else None
    return resolve_tracking_uri(config_uri, layout.tracking_db())


def _eval_dir(layout: Layout, run_dir: Path, entries: list[tuple[Path, dict]]) -> Path:
    """The evaluation's directory: as the evaluate job recorded it, else where the results
    layout puts the evaluation of the run's dataset and architecture."""
    recorded = [entry["eval_dir"] for _, entry in entries if entry.get("eval_dir")]
    if recorded:
        return Path(recorded[0])
    params = read_run_record(run_dir / TRAIN_FILES["run"]).get("params") or {}
    replicate = params.get("replicate", 0)
    return Path(layout.eval_dir(params.get("dataset", "-"), params.get("name", "-"), replicate))


def sync_run(uri: str, run_dir: Path, eval_dir: Path) -> tuple[str, str]:
    """Log what the run lacks from the files in ``run_dir`` and ``eval_dir``; end it FINISHED;
    point run.json at it. Returns (run id, the line to print)."""
    record_path = run_dir / TRAIN_FILES["run"]
    record = read_run_record(record_path)
    history, metrics = run_dir / TRAIN_FILES["history"], run_dir / TRAIN_FILES["metrics"]
    for path in (history, metrics):
        if not path.is_file():
            raise DataFormatError(f"no {path.name}: training did not finish, run the job again")
    steps = _history(history)
    summary = read_json(metrics)
    evaluation, eval_metrics = {}, eval_dir / EVAL_FILES["metrics"]
    if eval_metrics.is_file():
        evaluation = logged_eval_metrics(read_json(eval_metrics))
    run, created = _open_run(uri, record, run_dir)
    logged = with_retries(run.client.get_run, run.run_id).data
    if not created:
        params = flatten_params(record.get("params") or {})
        run.log_params({k: v for k, v in params.items() if k not in logged.params})
        run.set_tags({k: v for k, v in (record.get("tags") or {}).items() if k not in logged.tags})
    missing = _missing_steps(run, steps, logged.metrics)
    if summary.get("run_id") != run.run_id:  # training wrote None: no run yet
        _keep_mtime(metrics, {**summary, "run_id": run.run_id})
    summary = {k: v for k, v in summary.items() if _number(v)}
    single = {k: v for k, v in {**summary, **evaluation}.items() if k not in logged.metrics}
    if single:
        missing.setdefault(0, {}).update(single)
    run.log_steps(missing)
    files = _missing_files(run, [run_dir / name for name in LOGGED_TRAIN_FILES], None)
    files += _missing_files(run, [eval_dir / name for name in LOGGED_FILES], "evaluation")
    for path, artifact_path in files:
        run.log_artifact(path, artifact_path)
    run.set_tags({"afternoon.tracking_synced": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
    run.finish("FINISHED")
    if record["run_id"] != run.run_id or not record["complete"]:
        updated = {**record, "run_id": run.run_id, "complete": True}
        updated["tracking_uri"] = strip_credentials(uri)
        _keep_mtime(record_path, updated)
    points = sum(len(values) for values in missing.values())
    how = "created" if created else "completed"
    return run.run_id, f"synced {run_dir}: run {run.run_id} {how}, {points} metric values, " + (
        f"{len(files)} files"
    )


def _open_run(uri: str, record: dict, run_dir: Path):
    """(RunLogger, created): the run run.json names if the store has it, else a new one."""
    if record["run_id"]:
        try:
            return RunLogger.resume(uri, record["run_id"]), False
        except TrackingError as err:
            if getattr(err.__cause__, "error_code", "") != "RESOURCE_DOES_NOT_EXIST":
                raise
    params, tags = record.get("params") or {}, record.get("tags") or {}
    name = run_name(params, run_dir.name, run_dir.parent.name)
    return RunLogger.start(uri, record["experiment"], name, params, tags), True


def _number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _history(path: Path) -> dict[int, dict]:
    """history.csv as {epoch: {metric: value}} (empty cells left out)."""
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    try:
        numbers = [{k: float(v) for k, v in row.items() if v not in ("", None)} for row in rows]
        return {int(values.pop("epoch")): values for values in numbers}
    except (KeyError, TypeError, ValueError) as err:
        raise DataFormatError(f"{path}: not a training history ({err})") from None


def _missing_steps(run, steps: dict[int, dict], logged: dict) -> dict[int, dict]:
    """The (epoch, metric) values of ``steps`` the run has not logged."""
    keys = {key for values in steps.values() for key in values if key in logged}
    have = {
        key: {m.step for m in with_retries(run.client.get_metric_history, run.run_id, key)}
        for key in keys
    }
    missing = {}
    for step, values in steps.items():
        todo = {k: v for k, v in values.items() if step not in have.get(k, ())}
        if todo:
            missing[step] = todo
    return missing


def _missing_files(run, paths: list[Path], artifact_path: str | None) -> list[tuple[Path, str]]:
    """Files on disk the run lacks as artifacts (or holds with another size)."""
    listed = with_retries(run.client.list_artifacts, run.run_id, artifact_path)
    sizes = {Path(item.path).name: item.file_size for item in listed}
    return [
        (path, artifact_path)
        for path in paths
        if path.is_file() and sizes.get(path.name) != path.stat().st_size
    ]


def _keep_mtime(path: Path, data: dict) -> None:
    """Rewrite a JSON output (atomically) with its old mtime: Snakemake reruns nothing."""
    stat = path.stat()
    write_json_atomic(path, data)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
