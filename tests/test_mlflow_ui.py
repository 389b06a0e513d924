"""`make mlflow-ui`: the MLflow UI over a study's sqlite store, on 127.0.0.1 only, started as the
Makefile starts it (a private port and the small shared study's results), queried over HTTP (the
study's experiment and its runs, through MLflow's REST API) and stopped."""

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import urllib.request

import pytest

from afternoon.tracking.uris import experiment_url
from helpers.env import clean_env
from helpers.paths import REPO
from helpers.services import free_port, search_runs, wait_for
from test_tensorboard import listening_addresses

pytestmark = pytest.mark.slow


def get_json(url: str):
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read())


def listed_experiments(base: str) -> dict[str, str]:
    """name -> id of every experiment the server lists (POST /api/2.0/mlflow/experiments/search)."""
    request = urllib.request.Request(
        f"{base}/api/2.0/mlflow/experiments/search", data=b'{"max_results": 100}',
        headers={"Content-Type": "application/json"},
    )  # fmt: skip
    with urllib.request.urlopen(request, timeout=5) as response:
        return {e["name"]: e["experiment_id"] for e in json.load(response)["experiments"]}


def test_make_mlflow_ui_serves_the_study_and_stops(small_study, tmp_path):
    port, log = free_port(), tmp_path / "mlflow-ui.log"
    marker = json.loads((small_study / "results/mlflow/tracking.json").read_text())
    # -o: the venv's install stamp counts as up to date (the suite runs inside that venv)
    command = ["make", "-s", "-o", ".venv/.installed", "mlflow-ui", f"MLFLOW_UI_PORT={port}",
               f"MLFLOW_UI_RESULTS={small_study / 'results'}"]  # fmt: skip
    with open(log, "wb") as out:
        proc = subprocess.Popen(command, cwd=REPO, env=clean_env(), stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        experiments = wait_for(lambda: listed_experiments(base), 120, f"`make mlflow-ui` ({log})")
        assert experiments[marker["experiment"]] == marker["experiment_id"]
        runs = search_runs(base, marker["experiment_id"])
        recorded = {
            arch: json.loads((small_study / f"results/runs/digits/{arch}/run.json").read_text())
            for arch in ("fc64", "cnn1")
        }
        assert {r["info"]["run_name"]: r["info"]["run_id"] for r in runs} == {
            f"{arch}@digits": record["run_id"] for arch, record in recorded.items()
        }
        assert {r["info"]["status"] for r in runs} == {"FINISHED"}
        assert listening_addresses(port) == {"127.0.0.1"}
        # the address it prints opens the study's runs table on this port
        printed = re.search(r"^MLflow UI: (\S+)$", log.read_text(), re.MULTILINE)[1]
        assert printed == experiment_url(base, marker["experiment_id"])
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
    # stopped: make, mlflow and its server workers gone, the port closed
    wait_for(lambda: not process_group_alive(proc.pid), 30, f"the mlflow-ui processes ({log})")
    with pytest.raises(ConnectionRefusedError, match="Connection refused"):
        socket.create_connection(("127.0.0.1", port), timeout=5)


def process_group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True
