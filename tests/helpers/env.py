"""The environment a test's subprocess runs in."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from helpers.paths import WORKFLOW

VENV_BIN = str(Path(sys.executable).parent)

# MLflow variables that point a process at someone's store, experiment or run, or carry their
# credentials: a test must never inherit them from the shell it was started from.
CALLERS_MLFLOW = ("MLFLOW_TRACKING_", "MLFLOW_EXPERIMENT_", "MLFLOW_RUN_ID", "MLFLOW_REGISTRY_URI")


def callers_mlflow_variables() -> list[str]:
    """The names in ``os.environ`` that CALLERS_MLFLOW matches (clean_mlflow_env removes them
    for a test; the package's own MLFLOW_* defaults, set when it is imported, stay)."""
    return [name for name in os.environ if name.startswith(CALLERS_MLFLOW)]


def clean_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """``os.environ`` for a subprocess: without any ``MLFLOW_*`` (a tracking URI, a token or
    password of the shell the tests were started from; `python -m afternoon.cli` sets the
    package's own defaults again when it starts), with MLflow's telemetry off and this
    interpreter's bin directory first on PATH (Snakemake jobs run ``python`` and ``mlflow`` from
    PATH), and this checkout's package first on PYTHONPATH (a venv's editable install may point
    at another checkout of it); then ``extra`` on top."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env["MLFLOW_DISABLE_TELEMETRY"] = "true"
    env["PATH"] = os.pathsep.join([VENV_BIN, env.get("PATH", "")])
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(WORKFLOW), env.get("PYTHONPATH")]))
    return env | (extra or {})
