"""Tracking URIs: which store a job uses ($MLFLOW_TRACKING_URI, the config, a sqlite default),
checked up front so a typo is one line, never holding a password in the config or on disk."""

from __future__ import annotations

import json
import os
from pathlib import Path
from urllib.parse import urlsplit

from afternoon.errors import ConfigError
from afternoon.tracking.provenance import redact, strip_credentials

SCHEMES = ("sqlite", "http", "https", "file", "postgresql", "mysql")


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


def resolve_tracking_uri(config_uri: str | None, default_db: Path | None = None) -> str:
    """$MLFLOW_TRACKING_URI, else the config's tracking.uri, else sqlite at ``default_db``
    (None where a URI is always recorded: the tracking marker's, a run.json's)."""
    if env := os.environ.get("MLFLOW_TRACKING_URI", "").strip():
        return _check_uri(env, "MLFLOW_TRACKING_URI")
    if not (config_uri or "").strip():
        if default_db is None:
            raise ConfigError("no tracking URI recorded (run init-tracking again)")
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


# MLflow 3's UI opens an experiment in its GenAI view (traces) unless told otherwise. The query
# below (the UI's workflow type switch) opens the runs table; the experiment tag (set by
# init-tracking) says the same to the UIs that read it instead.
EXPERIMENT_KIND_TAG = ("mlflow.experimentKind", "custom_model_development")
RUNS_TABLE_QUERY = "?workflowType=machine_learning"


def experiment_url(base: str, experiment_id: str) -> str:
    """The runs table of experiment ``experiment_id`` in the MLflow UI at ``base``."""
    return f"{base.rstrip('/')}/#/experiments/{experiment_id}/runs{RUNS_TABLE_QUERY}"


def study_ui_url(base: str, marker: str | Path) -> str:
    """``experiment_url`` of the study that tracking marker ``marker`` names; ``base`` when the
    study has not started tracking yet (no marker)."""
    try:
        experiment_id = json.loads(Path(marker).read_text())["experiment_id"]
    except (OSError, ValueError, KeyError):
        return base
    return experiment_url(base, experiment_id)
