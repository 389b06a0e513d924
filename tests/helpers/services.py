"""Network services for tests, on 127.0.0.1 only: free ports and a real ``mlflow server``.

port = free_port()                          # nothing listens there (bound, then closed)

with MlflowServer(tmp_path) as server:      # started; stopped (SIGTERM) on leaving
    MlflowClient(server.uri) ...

server = MlflowServer(tmp_path)             # or started and killed by the test itself
server.start()
server.stop(signal.SIGKILL)
server.start()                              # the same database again

with mlflow_server(db, workdir) as url:     # the UI of an existing sqlite store
    ...

search_runs(url, experiment_id)             # the runs, over MLflow's REST API

with make_tensorboard(log, "TENSORBOARD_LOGDIR=...") as base:   # `make tensorboard ARGS`
    get_json(f"{base}/data/runs")
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import NoReturn

import pytest

from helpers.env import clean_env


def free_port() -> int:
    """A loopback port with nothing listening on it (bound, then closed)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(condition, timeout: float, what: str, interval: float = 0.5):
    """Poll ``condition()`` until it returns something truthy (exceptions count as not yet);
    TimeoutError naming ``what`` (and the last value) after ``timeout`` seconds."""
    deadline, last = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            if value := condition():
                return value
            last = value
        time.sleep(interval)
    raise TimeoutError(f"{what} not within {timeout:.0f} s (last: {last!r})")


class MlflowServer:
    """``mlflow server`` on 127.0.0.1:<a free port> with a sqlite store (``db``, by default
    ``root``/server.db) and its artifacts under ``root``/artifacts; its log is ``root``/
    mlflow-server.log. The port stays the same across restarts, so ``uri`` does too.

    The server runs in its own session with a clean environment (helpers.env.clean_env): stopping
    it signals exactly the processes it started (the server and its uvicorn worker) by that
    process group's id. A server that does not come up fails the test (with its log), skip or no
    skip: mlflow is a pinned dependency, so that is a bug, not a missing component."""

    def __init__(self, root: Path, db: Path | None = None, port: int | None = None,
                 backend: str | None = None):  # fmt: skip
        self.root = Path(root)
        self.db = Path(db) if db is not None else self.root / "server.db"
        # Another backend store (a PostgreSQL URI, helpers.postgres) instead of the sqlite db.
        self.backend = backend or f"sqlite:///{self.db}"
        self.port = port or free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.log = self.root / "mlflow-server.log"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 240) -> float:
        """Start it and wait until /health answers; returns the seconds that took."""
        command = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1",
                   "--port", str(self.port), "--workers", "1",
                   "--backend-store-uri", self.backend,
                   "--artifacts-destination", str(self.root / "artifacts")]  # fmt: skip
        with open(self.log, "ab") as log:  # the server keeps its own descriptor
            self.proc = subprocess.Popen(
                command, cwd=self.root, env=clean_env(), stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        started = time.monotonic()
        while True:
            if self.proc.poll() is not None:
                self._fail(f"exited with status {self.proc.returncode}")
            try:
                with urllib.request.urlopen(f"{self.uri}/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except (OSError, http.client.HTTPException):
                pass  # not listening yet
            if time.monotonic() - started > timeout:
                self._fail(f"/health not answering after {timeout:.0f} s")
            time.sleep(0.3)
        return time.monotonic() - started

    def _fail(self, why: str) -> NoReturn:
        self.stop(signal.SIGKILL)
        tail = self.log.read_text(errors="replace")[-3000:]
        pytest.fail(f"mlflow server on {self.uri} did not start: {why}; {self.log}:\n{tail}")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """``sig`` to the server's process group; SIGKILL if it lingers over 30 s."""
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):  # the group outlives an exited server
            os.killpg(self.proc.pid, sig)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.proc = None

    def __enter__(self) -> MlflowServer:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


@contextlib.contextmanager
def mlflow_server(db: Path, workdir: Path, timeout: float = 90):
    """``MlflowServer`` on the existing sqlite store ``db`` (log and artifacts in ``workdir``),
    started for the ``with`` block; yields its URL."""
    server = MlflowServer(workdir, db=db)
    server.start(timeout)
    try:
        yield server.uri
    finally:
        server.stop()


def search_runs(url: str, experiment_id: str) -> list[dict]:
    """The runs of experiment ``experiment_id`` (as JSON) from the MLflow server at ``url``,
    over its REST API (POST /api/2.0/mlflow/runs/search)."""
    body = json.dumps({"experiment_ids": [experiment_id], "max_results": 100}).encode()
    request = urllib.request.Request(
        f"{url}/api/2.0/mlflow/runs/search", data=body, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.load(response).get("runs", [])


def get_json(url: str):
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read())


@contextlib.contextmanager
def make_tensorboard(log: Path, *args: str, cwd: Path | None = None, timeout: float = 120):
    """`make tensorboard ARGS` (the repository's Makefile, from ``cwd``: the repository by
    default, as a user runs it) on a free port, stopped on leaving (its process group); yields
    its base URL once it answers. The venv's install stamp counts as up to date (the suite runs
    inside that venv)."""
    from helpers.paths import REPO

    port, venv = free_port(), REPO / ".venv"
    command = ["make", "-s", "-f", str(REPO / "Makefile"), f"VENV={venv}", "-o",
               f"{venv}/.installed", "tensorboard", f"TENSORBOARD_PORT={port}", *args]  # fmt: skip
    with open(log, "wb") as out:
        proc = subprocess.Popen(command, cwd=cwd or REPO, env=clean_env(), stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: get_json(f"{base}/data/runs") is not None, timeout,
                 f"TensorBoard on {base} ({log})")  # fmt: skip
        yield base
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
