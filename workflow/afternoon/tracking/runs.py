"""MLflow tracking by explicit run id (no global active run), so training and a later evaluation
process log to the same run. mlflow is imported lazily (~1.5 s); secrets never reach the store.

With ``offline_ok`` a tracking outage never stops a job: the run logger degrades to no-ops (one
warning), the job records itself as pending (``records``) and ``sync-tracking`` re-logs it later."""

from __future__ import annotations

import contextlib
import fcntl
import logging
import math
import re
import signal
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

from afternoon.errors import AfternoonError, Terminated
from afternoon.fileio import write_json_atomic
from afternoon.tracking.provenance import first_line, flatten_params, redact, strip_credentials
from afternoon.tracking.records import SYNC_HINT
from afternoon.tracking.retries import is_transient, why, with_retries
from afternoon.tracking.uris import EXPERIMENT_KIND_TAG

log = logging.getLogger(__name__)

STATUSES = ("FINISHED", "FAILED", "KILLED")
MAX_PARAM, MAX_TAG, BATCH = 6000, 8000, 100  # MLflow: value lengths, params/tags per log_batch
SQLITE_BUSY_TIMEOUT_S = 30  # sqlite waits up to this for another writer's lock (default 5 s)


class TrackingError(AfternoonError):
    """The tracking store cannot be opened, or a run in it cannot be found."""


def _sqlite_path(uri: str) -> Path | None:
    if uri.lower().startswith("sqlite:///"):
        return Path(uri[len("sqlite:///") :].partition("?")[0])
    return None


@contextlib.contextmanager
def _store_lock(uri: str):
    """Serialise opening (so creating, migrating) a sqlite store across processes (flock)."""
    if (db := _sqlite_path(uri)) is None:
        yield
        return
    db.parent.mkdir(parents=True, exist_ok=True)
    with open(db.with_name(db.name + ".lock"), "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield  # closing the file releases the lock


def _store_uri(uri: str) -> str:
    """A sqlite URI with a busy timeout (pysqlite's ``timeout``) unless it sets one: concurrent
    writers then wait for each other's lock instead of failing with "database is locked"."""
    if not (_sqlite_path(uri) and SQLITE_BUSY_TIMEOUT_S) or "timeout=" in urlsplit(uri).query:
        return uri
    return f"{uri}{'&' if '?' in uri else '?'}timeout={SQLITE_BUSY_TIMEOUT_S}"


def _client(uri: str):
    from mlflow.tracking import MlflowClient

    if _sqlite_path(uri):  # import outside the lock: seconds, the store's opening is ~0.1 s
        import mlflow.store.tracking.sqlalchemy_store  # noqa: F401
    try:
        with _store_lock(uri):
            return with_retries(MlflowClient, tracking_uri=_store_uri(uri))
    except Exception as err:
        raise TrackingError(f"MLflow store {redact(uri)!r}: {first_line(err)}") from err


def _experiment_id(client, uri: str, name: str) -> str:
    """The id of experiment ``name``, created if missing (a concurrent creator is fine)."""
    experiment = with_retries(client.get_experiment_by_name, name)
    if experiment is None:  # sqlite: artifacts beside the database, not in ./mlruns of the cwd
        db = _sqlite_path(uri)
        where = db.parent / "artifacts" / re.sub(r"[^\w.-]", "_", name) if db else None
        try:
            return with_retries(client.create_experiment, name, where and where.as_uri())
        except Exception:
            if (experiment := with_retries(client.get_experiment_by_name, name)) is None:
                raise
    if experiment.lifecycle_stage != "active":
        raise TrackingError(f"MLflow experiment {name!r} is deleted (mlflow experiments restore)")
    return experiment.experiment_id


def init_store(uri: str, experiment: str, marker: Path) -> dict:
    """Create the store and the experiment once; write ``marker`` (the rules' input)."""
    client = _client(uri)
    with _store_lock(uri):
        exp_id = _experiment_id(client, uri, experiment)
    # An ML experiment (runs table), not a GenAI one (traces): afternoon.tracking.uris
    with_retries(client.set_experiment_tag, exp_id, *EXPERIMENT_KIND_TAG)
    record = dict(tracking_uri=strip_credentials(uri), experiment=experiment, experiment_id=exp_id)
    write_json_atomic(marker, record)
    return record


def _raise_terminated(signum, frame):
    raise Terminated(f"{signal.Signals(signum).name} received")


class RunLogger:
    """One MLflow run, by id; ``with RunLogger.start(...) as run:`` ends it FINISHED, FAILED
    (an exception) or KILLED (KeyboardInterrupt, SIGTERM).

    With ``offline_ok`` a tracking failure does not raise: the logger becomes ``degraded`` (its
    ``failure`` says why, in one line, logged once as a warning) and every later call is a no-op.
    """

    def __init__(self, client, run_id: str | None, experiment_id: str | None, **options):
        self.client, self._run_id, self.experiment_id = client, run_id, experiment_id
        self.uri, self.offline_ok = options.get("uri", ""), options.get("offline_ok", False)
        self.failure: str | None = None
        self.finished, self._old_sigterm = False, None

    @property
    def run_id(self) -> str | None:
        return self._run_id

    @property
    def degraded(self) -> bool:
        return self.failure is not None

    @classmethod
    def start(cls, uri, experiment, run_name, params, tags, *, offline_ok=False) -> RunLogger:
        """Create a run in ``experiment`` with ``tags``; log the flattened ``params``."""
        try:
            client = _client(uri)
            experiment_id = _experiment_id(client, uri, experiment)
            tags = {k: redact(v)[:MAX_TAG] for k, v in (tags or {}).items()}
            name = redact(run_name)
            run = with_retries(client.create_run, experiment_id, run_name=name, tags=tags)
        except Exception as err:
            return cls._offline(uri, None, err, offline_ok)
        logger = cls(client, run.info.run_id, experiment_id, uri=uri, offline_ok=offline_ok)
        try:
            logger.log_params(params or {})
        except BaseException as err:
            logger._end_quietly(err)
            raise
        return logger

    @classmethod
    def resume(cls, uri: str, run_id: str, *, offline_ok: bool = False) -> RunLogger:
        """An existing run (evaluation after training). MLflow takes metrics, tags and artifacts
        on a FINISHED run; its status stays until ``finish``."""
        try:
            client = _client(uri)
            run = with_retries(client.get_run, run_id)
        except Exception as err:
            if is_transient(err) or isinstance(err, AfternoonError):
                return cls._offline(uri, run_id, err, offline_ok)
            where = f"MLflow run {run_id!r} in {redact(uri)!r}"
            raise TrackingError(f"{where} not found: {first_line(err)}") from err
        if run.info.lifecycle_stage != "active":
            raise TrackingError(f"MLflow run {run_id!r} in {redact(uri)!r} is deleted")
        return cls(client, run_id, run.info.experiment_id, uri=uri, offline_ok=offline_ok)

    @classmethod
    def reopen(cls, uri: str, run_id: str, *, offline_ok: bool = False) -> RunLogger:
        """An existing run (say KILLED when its job was preempted) set back to RUNNING, for a
        resumed training to go on logging into. Degraded, it keeps ``run_id``."""
        logger = cls.resume(uri, run_id, offline_ok=offline_ok)
        logger._call("update_run", run_id, status="RUNNING")
        return logger

    @classmethod
    def _offline(cls, uri: str, run_id, err: Exception, offline_ok: bool) -> RunLogger:
        """A degraded logger for a store that could not be reached; raise if not offline_ok."""
        if not (offline_ok and is_transient(err)):
            if isinstance(err, AfternoonError):
                raise err
            store = f"MLflow store {redact(uri)!r}"
            if is_transient(err):
                raise TrackingError(f"{store} unreachable: {why(err)}") from err
            if type(err).__module__.startswith("mlflow."):  # the store said no: one line
                raise TrackingError(f"{store}: {first_line(err)}") from err
            raise err
        logger = cls(None, run_id, None, uri=uri, offline_ok=True)
        logger._degrade(err)
        return logger

    def _degrade(self, err: BaseException) -> None:
        self.failure = f"{strip_credentials(self.uri)}: {why(err)}"
        log.warning(
            f"MLflow tracking failed ({self.failure}); the job goes on without it and its files "
            f"stay complete: once the server is back, re-log it with `{SYNC_HINT}`"
        )

    def _call(self, method: str, *args, **kwargs):
        """The client's ``method`` with retries; a no-op once degraded; with offline_ok, a
        failure degrades the logger instead of raising."""
        if self.degraded:
            return None
        try:
            return with_retries(getattr(self.client, method), *args, **kwargs)
        except Exception as err:
            if not self.offline_ok:
                raise
            self._degrade(err)
            return None

    def _batch(self, kind: str, items: list) -> None:
        """log_batch in MLflow-sized chunks (100 params or tags, 1000 metrics)."""
        size = 1000 if kind == "metrics" else BATCH
        for i in range(0, len(items), size):
            self._call("log_batch", self.run_id, **{kind: items[i : i + size]})

    def log_params(self, params: dict) -> None:
        """The flattened ``params``, values redacted and cut to MLflow's length limit."""
        from mlflow.entities import Param

        flat = flatten_params(params).items()
        self._batch("params", [Param(k, redact(v)[:MAX_PARAM]) for k, v in flat])

    def log_metrics(self, metrics: dict, step: int | None = None) -> None:
        """One log_batch at ``step``; values cast to float, non-finite ones skipped (warning)."""
        self.log_steps({int(step or 0): metrics})

    def log_steps(self, steps: dict[int, dict]) -> None:
        """``{step: {key: value}}`` in as few log_batch calls as MLflow takes."""
        from mlflow.entities import Metric

        if self.degraded:
            return
        now, items = int(time.time() * 1000), []
        for step, metrics in steps.items():
            for key, value in metrics.items():
                with contextlib.suppress(TypeError, ValueError):
                    if math.isfinite(number := float(value)):
                        items.append(Metric(str(key), number, now, int(step)))
                        continue
                log.warning(f"run {self.run_id}: metric {key}={value!r} skipped (not finite)")
        self._batch("metrics", items)

    def set_tags(self, tags: dict) -> None:
        from mlflow.entities import RunTag

        self._batch("tags", [RunTag(str(k), redact(v)[:MAX_TAG]) for k, v in tags.items()])

    def log_artifact(self, path, artifact_path: str | None = None) -> None:
        self._call("log_artifact", self.run_id, str(path), artifact_path)

    def log_artifacts(self, dir, artifact_path: str | None = None) -> None:
        self._call("log_artifacts", self.run_id, str(dir), artifact_path)

    def finish(self, status: str = "FINISHED", *, attempts: int = 8) -> None:
        """End the run with ``status``; nothing on a degraded logger (sync-tracking ends it)."""
        if status not in STATUSES:
            raise ValueError(f"run status {status!r} is not one of {', '.join(STATUSES)}")
        self._call("set_terminated", self.run_id, status, attempts=attempts)
        self.finished = True

    def _end_quietly(self, err: BaseException) -> None:
        status = "KILLED" if isinstance(err, KeyboardInterrupt) else "FAILED"
        try:  # few tries: a job stopped by SIGTERM has seconds before SIGKILL
            self.finish(status, attempts=3)
        except Exception as finish_err:  # never hide the error that ended the run
            log.warning(f"run {self.run_id}: not marked {status}: {first_line(finish_err)}")

    def __enter__(self) -> RunLogger:
        main = threading.current_thread() is threading.main_thread()
        if main and signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
            self._old_sigterm = signal.signal(signal.SIGTERM, _raise_terminated)
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        if self._old_sigterm is not None:
            signal.signal(signal.SIGTERM, self._old_sigterm)
            self._old_sigterm = None
        if not self.finished:
            self.finish() if exc is None else self._end_quietly(exc)
        return False
