"""MLflow tracking by explicit run id (no global active run), so training and a later evaluation
process log to the same run. mlflow is imported lazily (~1.5 s); secrets never reach the store."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import math
import os
import platform
import random
import re
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path
from urllib.parse import urlsplit

from afternoon.errors import AfternoonError, ConfigError, DataFormatError
from afternoon.fileio import read_json, write_json_atomic

log = logging.getLogger(__name__)

SCHEMES = ("sqlite", "http", "https", "file", "postgresql", "mysql")
STATUSES = ("FINISHED", "FAILED", "KILLED")
MAX_PARAM, MAX_TAG, BATCH = 6000, 8000, 100  # MLflow: value lengths, params/tags per log_batch
_SECRET_NAME = re.compile(r"TOKEN|PASSWORD|SECRET|KEY|AUTH", re.IGNORECASE)
_CREDENTIALS = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://)[^/?#\s]+@")
_TRANSIENT = re.compile(
    r"database (table )?is locked|connection (refused|reset|aborted)|max retries exceeded|"
    r"remote end closed|temporarily unavailable|bad gateway|service unavailable|gateway time"
    r"|error code 5\d\d|status( code)? 5\d\d|too many 5\d\d error",
    re.IGNORECASE,
)
_NET_CLASSES = {"ConnectionError", "NewConnectionError", "ProtocolError", "ConnectTimeout"}
_PACKAGES = {"tensorflow": ("tensorflow", "tensorflow-cpu", "tensorflow-gpu"), "mlflow": ()}
_PACKAGES.update({name: () for name in ("tf_keras", "numpy", "snakemake", "horovod", "afternoon")})
_SLURM = ("SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID", "SLURM_JOB_NODELIST")


class TrackingError(AfternoonError):
    """The tracking store cannot be opened, or a run in it cannot be found."""


class Terminated(KeyboardInterrupt):
    """SIGTERM (Snakemake, a Slurm time limit) inside ``with RunLogger``: the run ends KILLED."""

    signum = signal.SIGTERM


def strip_credentials(uri: str) -> str:
    """``scheme://user:pw@host/...`` -> ``scheme://host/...``, anywhere in the text."""
    return _CREDENTIALS.sub(r"\1", str(uri))


def redact(value) -> str:
    """``value`` as text, without URI credentials or the value of a secret-looking env var."""
    text = strip_credentials(str(value))
    secrets = {v for k, v in os.environ.items() if _SECRET_NAME.search(k) and len(v) >= 4}
    for secret in sorted(secrets - {"true", "false", "True", "False"}, key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


def _first_line(err: BaseException) -> str:
    return redact((str(err).strip().splitlines() or [repr(err)])[0])[:300]


def _check_uri(uri: str, source: str) -> str:
    def invalid(why: str) -> ConfigError:
        return ConfigError(f"{source} {redact(uri)!r} is not a valid tracking URI ({why})")

    try:
        parts = urlsplit(uri)
        parts.port  # noqa: B018 (raises ValueError on a bad port)
    except ValueError as err:
        raise invalid(str(err)) from None
    scheme = parts.scheme.lower()
    base, rest = scheme.split("+", 1)[0], uri[len(scheme) :]
    if base not in SCHEMES:
        raise invalid(f"{f'scheme {scheme!r}' if scheme else 'no scheme'}, not {'/'.join(SCHEMES)}")
    if base == "sqlite":
        path, sep, query = rest[4:].partition("?")
        if not rest.startswith(":///") or path in ("", ":memory:"):
            raise invalid("expected sqlite:///relative/path.db or sqlite:////absolute/path.db")
        return f"{scheme}:///{os.path.abspath(path)}{sep}{query}"
    where = parts.hostname if base.startswith("http") else parts.path.strip("/")
    if not (rest.startswith("://") and where):
        form = {"http": "host[:port]", "file": "/absolute/path"}.get(base[:4], "host/database")
        raise invalid(f"expected {scheme}://{form}")
    return uri


def resolve_tracking_uri(config_uri: str | None, default_db: Path) -> str:
    """$MLFLOW_TRACKING_URI, else the config's tracking.uri, else sqlite at ``default_db``."""
    if env := os.environ.get("MLFLOW_TRACKING_URI", "").strip():
        return _check_uri(env, "MLFLOW_TRACKING_URI")
    if not (config_uri or "").strip():
        return f"sqlite:///{os.path.abspath(default_db)}"
    uri = _check_uri(config_uri.strip(), "config tracking.uri")
    if urlsplit(uri).password:  # the config, the rules' params and the logs would all hold it
        raise ConfigError(
            f"config tracking.uri {redact(uri)!r} holds a password: pass it as "
            "MLFLOW_TRACKING_PASSWORD (or the URI as MLFLOW_TRACKING_URI) instead"
        )
    return uri


def run_url(uri: str, experiment_id: str, run_id: str) -> str | None:
    """The run's page on an http(s) tracking server; None for a database store."""
    if urlsplit(uri).scheme.lower() not in ("http", "https"):
        return None
    return f"{strip_credentials(uri).rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"


def is_transient(err: BaseException) -> bool:
    """A sqlite lock or a lost/refused server connection, anywhere in the exception chain."""
    seen, stack = set(), [err]
    while stack:
        exc = stack.pop()
        if exc is None or id(exc) in seen:
            continue
        seen.add(id(exc))
        if isinstance(exc, ConnectionError) or _TRANSIENT.search(str(exc)):
            return True
        if getattr(exc, "error_code", None) == "TEMPORARILY_UNAVAILABLE" or any(
            c.__name__ in _NET_CLASSES and c.__module__.split(".")[0] in ("requests", "urllib3")
            for c in type(exc).__mro__
        ):
            return True
        stack += [exc.__cause__, exc.__context__]
    return False


def with_retries(fn, *args, attempts: int = 8, **kwargs):
    """``fn(*args, **kwargs)``, retried with jittered exponential backoff on transient errors."""
    for attempt in range(1, attempts + 1):
        try:
            return fn(*args, **kwargs)
        except Exception as err:
            if attempt >= attempts or not is_transient(err):
                raise
            delay = random.uniform(0.5, 1.0) * min(5.0, 0.2 * 2 ** (attempt - 1))
            what = f"{getattr(fn, '__name__', 'call')}: {_first_line(err)}"
            log.warning(f"{what} (retry {attempt}/{attempts - 1} in {delay:.1f} s)")
            time.sleep(delay)


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


def _client(uri: str):
    from mlflow.tracking import MlflowClient

    if _sqlite_path(uri):  # import outside the lock: seconds, the store's opening is ~0.1 s
        import mlflow.store.tracking.sqlalchemy_store  # noqa: F401
    try:
        with _store_lock(uri):
            return with_retries(MlflowClient, tracking_uri=uri)
    except Exception as err:
        raise TrackingError(f"MLflow store {redact(uri)!r}: {_first_line(err)}") from err


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
    record = dict(tracking_uri=strip_credentials(uri), experiment=experiment, experiment_id=exp_id)
    write_json_atomic(marker, record)
    return record


def flatten_params(d: dict, prefix: str = "") -> dict[str, str]:
    """Nested mappings -> dotted keys; lists of mappings -> indexed keys; other values -> str."""
    out: dict[str, str] = {}
    for key, value in d.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, Mapping):
            out.update(flatten_params(value, name) if value else {name: "{}"})
        elif isinstance(value, list | tuple) and any(isinstance(v, Mapping) for v in value):
            out.update(flatten_params(dict(enumerate(value)), name))
        else:
            is_list = isinstance(value, list | tuple)
            out[name] = json.dumps(list(value), default=str) if is_list else str(value)
    return out


def config_hash(obj) -> str:
    """sha256 (hex) of the canonical JSON of ``obj``."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def _git(repo: Path, *args: str) -> str | None:
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        done = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, timeout=30)
        return done.stdout.decode().strip() if done.returncode == 0 else None
    return None


def _version(name: str, *dists: str) -> str | None:
    for dist in dists or (name,):
        with contextlib.suppress(metadata.PackageNotFoundError):
            return metadata.version(dist)
    return None


def provenance_tags(repo: Path | None = None, extra: dict | None = None) -> dict[str, str]:
    """Where a run came from: git state, host, versions, Slurm job, plus ``extra`` (redacted)."""
    commit = _git(repo or Path.cwd(), "rev-parse", "HEAD") or "unknown"
    status = _git(repo or Path.cwd(), "status", "--porcelain")
    dirty = "unknown" if status is None else str(bool(status)).lower()
    tags = dict(git_commit=commit, git_dirty=dirty, hostname=socket.gethostname())
    tags["python"] = platform.python_version()
    for name, dists in _PACKAGES.items():
        if version := _version(name, *dists):
            tags[f"version.{name}"] = version
    tags.update({var.lower(): os.environ[var] for var in _SLURM if os.environ.get(var)})
    for key, value in (extra or {}).items():
        as_json = isinstance(value, Mapping | list)
        tags[key] = json.dumps(value, sort_keys=True, default=str) if as_json else str(value)
    out = {k if k.startswith(("afternoon.", "mlflow.")) else f"afternoon.{k}": redact(v)
           for k, v in tags.items()}  # fmt: skip
    if commit != "unknown":
        out["mlflow.source.git.commit"] = commit
    return out


def _raise_terminated(signum, frame):
    raise Terminated(f"{signal.Signals(signum).name} received")


class RunLogger:
    """One MLflow run, by id; ``with RunLogger.start(...) as run:`` ends it FINISHED, FAILED
    (an exception) or KILLED (KeyboardInterrupt, SIGTERM)."""

    def __init__(self, client, run_id: str, experiment_id: str):
        self.client, self._run_id, self.experiment_id = client, run_id, experiment_id
        self.finished, self._old_sigterm = False, None

    @property
    def run_id(self) -> str:
        return self._run_id

    @classmethod
    def start(cls, uri: str, experiment: str, run_name: str, params: dict, tags: dict):
        """Create a run in ``experiment`` with ``tags``; log the flattened ``params``."""
        from mlflow.entities import Param

        client = _client(uri)
        experiment_id = _experiment_id(client, uri, experiment)
        tags = {k: redact(v)[:MAX_TAG] for k, v in (tags or {}).items()}
        run = with_retries(client.create_run, experiment_id, run_name=redact(run_name), tags=tags)
        logger = cls(client, run.info.run_id, experiment_id)
        try:
            flat = flatten_params(params or {}).items()
            logger._batch("params", [Param(k, redact(v)[:MAX_PARAM]) for k, v in flat])
        except BaseException as err:
            logger._end_quietly(err)
            raise
        return logger

    @classmethod
    def resume(cls, uri: str, run_id: str):
        """An existing run (evaluation after training). MLflow takes metrics, tags and artifacts
        on a FINISHED run; its status stays until ``finish``."""
        client = _client(uri)
        try:
            run = with_retries(client.get_run, run_id)
        except Exception as err:
            where = f"MLflow run {run_id!r} in {redact(uri)!r}"
            raise TrackingError(f"{where} not found: {_first_line(err)}") from err
        if run.info.lifecycle_stage != "active":
            raise TrackingError(f"MLflow run {run_id!r} in {redact(uri)!r} is deleted")
        return cls(client, run_id, run.info.experiment_id)

    def _batch(self, kind: str, items: list) -> None:
        """log_batch in MLflow-sized chunks (100 params or tags, 1000 metrics)."""
        size = 1000 if kind == "metrics" else BATCH
        for i in range(0, len(items), size):
            with_retries(self.client.log_batch, self.run_id, **{kind: items[i : i + size]})

    def log_metrics(self, metrics: dict, step: int | None = None) -> None:
        """One log_batch at ``step``; values cast to float, non-finite ones skipped (warning)."""
        from mlflow.entities import Metric

        now, items = int(time.time() * 1000), []
        for key, value in metrics.items():
            with contextlib.suppress(TypeError, ValueError):
                if math.isfinite(number := float(value)):
                    items.append(Metric(str(key), number, now, int(step or 0)))
                    continue
            log.warning(f"run {self.run_id}: metric {key}={value!r} skipped (not a finite number)")
        self._batch("metrics", items)

    def set_tags(self, tags: dict) -> None:
        from mlflow.entities import RunTag

        self._batch("tags", [RunTag(str(k), redact(v)[:MAX_TAG]) for k, v in tags.items()])

    def log_artifact(self, path, artifact_path: str | None = None) -> None:
        with_retries(self.client.log_artifact, self.run_id, str(path), artifact_path)

    def log_artifacts(self, dir, artifact_path: str | None = None) -> None:
        with_retries(self.client.log_artifacts, self.run_id, str(dir), artifact_path)

    def finish(self, status: str = "FINISHED") -> None:
        if status not in STATUSES:
            raise ValueError(f"run status {status!r} is not one of {', '.join(STATUSES)}")
        with_retries(self.client.set_terminated, self.run_id, status)
        self.finished = True

    def _end_quietly(self, err: BaseException) -> None:
        status = "KILLED" if isinstance(err, KeyboardInterrupt) else "FAILED"
        try:
            self.finish(status)
        except Exception as finish_err:  # never hide the error that ended the run
            log.warning(f"run {self.run_id}: not marked {status}: {_first_line(finish_err)}")

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


def write_run_record(path: Path, run_id: str, uri: str, experiment: str) -> None:
    """The job's pointer to its MLflow run (URI without credentials), written atomically."""
    record = dict(run_id=run_id, tracking_uri=strip_credentials(uri), experiment=experiment)
    write_json_atomic(path, record)


def read_run_record(path: Path) -> dict:
    record = read_json(path)
    for key in ("run_id", "tracking_uri", "experiment"):
        if not isinstance(record, dict) or not isinstance(record.get(key), str):
            raise DataFormatError(f"{path}: not a run record (no {key!r})")
    return record
