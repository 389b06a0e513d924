"""What a tracking outage costs a job: the run's start against a dead or hung MLflow server.

    flock /tmp/afternoon-bench.lock .venv/bin/python bench/tracking_outage.py [--repeats 3]
        [--no-hung] [--mlflow-defaults]

- down: ``afternoon.tracking.RunLogger.start(..., offline_ok=True)`` (what a train job calls)
  against ``http://127.0.0.1:PORT`` with nothing listening: MLflow's own HTTP retries off (the
  package's default), ours (``afternoon.tracking.retries.with_retries``: 8 tries, jittered
  backoff, ~12 s) on; then the logger degrades. --repeats calls.
- hung: the same against a socket that takes connections and never answers (what a stopped
  server looks like to a client): each request waits out MLFLOW_HTTP_REQUEST_TIMEOUT (20 s), ours
  retries within its 60 s budget. One call (about a minute); --no-hung skips it.
- job: the whole train job, ``python -m afternoon.cli train`` (fc64 on the digits, 3 epochs,
  1 thread, as tests/test_tracking_outage.py runs it), its tracking marker pointing at the dead
  port: wall time of the process, --repeats runs.
- --mlflow-defaults: one MLflow call (``get_experiment_by_name``) against the dead port with
  MLflow's own defaults (7 HTTP retries with backoff, 120 s timeout) and none of ours: why the
  package switches MLflow's retries off. Several minutes.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "workflow"))
CLI = [sys.executable, "-m", "afternoon.cli"]


def dead_port() -> int:
    """A loopback port with nothing listening on it (bound, then closed)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_seconds(uri: str) -> float:
    """Seconds of one RunLogger.start against ``uri``; it must come back degraded."""
    from afternoon import tracking

    started = time.perf_counter()
    run = tracking.RunLogger.start(uri, "outage", "fc64@digits", {"a": 1}, {}, offline_ok=True)
    elapsed = time.perf_counter() - started
    if not run.degraded:
        raise SystemExit(f"RunLogger.start against {uri} did not degrade")
    return elapsed


def hung_seconds() -> float:
    """RunLogger.start against a listening socket that never accepts or answers."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)  # the kernel completes handshakes; nobody reads the requests
        return start_seconds(f"http://127.0.0.1:{sock.getsockname()[1]}")


def job_seconds(root: Path) -> float:
    """Wall time of a 3-epoch fc64 train job whose tracking server is down."""
    from afternoon.cli import output_flags
    from afternoon.config import job_spec, load_yaml, load_zoo
    from afternoon.layout import train_job_files

    results = Path(tempfile.mkdtemp(dir=root))
    marker = results / "mlflow/tracking.json"
    marker.parent.mkdir(parents=True)
    uri = f"http://127.0.0.1:{dead_port()}"
    marker.write_text(json.dumps({"tracking_uri": uri, "experiment": "outage"}))
    config = load_yaml(REPO / "config/config.yaml")
    spec = job_spec(config, load_zoo(REPO / "config/zoo.yaml"), "digits", "fc64")
    spec.update(epochs=3)
    spec.pop("early_stopping", None)
    command = [*CLI, "train", "--spec", json.dumps(spec), "--npz", str(root / "digits.npz"),
               "--card", str(root / "digits.card.json"), "--tracking", str(marker),
               *output_flags(train_job_files(str(results / "runs/digits/fc64"))),
               "--threads", "1"]  # fmt: skip
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
    elapsed = time.perf_counter() - started
    if result.returncode or "sync-tracking" not in result.stderr:
        raise SystemExit(f"train job with the server down: rc {result.returncode}, "
                         f"{result.stderr[-2000:]}")  # fmt: skip
    return elapsed


def mlflow_defaults_seconds() -> float:
    """One MLflow call against a dead port with MLflow's own retry and timeout defaults."""
    code = (
        "import time; from mlflow.tracking import MlflowClient\n"
        f"client = MlflowClient('http://127.0.0.1:{dead_port()}')\n"
        "t = time.perf_counter()\n"
        "try:\n    client.get_experiment_by_name('outage')\nexcept Exception:\n    pass\n"
        "print(time.perf_counter() - t)\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_HTTP_REQUEST")}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    return float(result.stdout.strip().splitlines()[-1])


def row(what: str, values: list[float]) -> str:
    spread = f"{min(values):.1f}-{max(values):.1f}" if len(values) > 1 else "one run"
    return f"| {what} | {statistics.median(values):.1f} | {spread} | {len(values)} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-hung", action="store_true", help="skip the ~60 s hung-server call")
    parser.add_argument("--mlflow-defaults", action="store_true", help="MLflow's retries (~4 min)")
    args = parser.parse_args()
    import afternoon  # noqa: F401  (MLflow's HTTP retries off, 20 s timeout, unless set)

    print(f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC; MLFLOW_HTTP_REQUEST_MAX_RETRIES="
          f"{os.environ['MLFLOW_HTTP_REQUEST_MAX_RETRIES']}, MLFLOW_HTTP_REQUEST_TIMEOUT="
          f"{os.environ['MLFLOW_HTTP_REQUEST_TIMEOUT']}")  # fmt: skip
    root = Path(tempfile.mkdtemp(prefix="afternoon-outage-"))
    subprocess.run([*CLI, "preprocess", "digits", "--npz", str(root / "digits.npz"), "--card",
                    str(root / "digits.card.json"), "--validation-fraction", "0.1", "--seed",
                    "42"], check=True, capture_output=True, cwd=REPO)  # fmt: skip
    rows = {"down": [], "job": []}
    for _ in range(args.repeats):  # alternating
        rows["down"].append(start_seconds(f"http://127.0.0.1:{dead_port()}"))
        rows["job"].append(job_seconds(root))
    print("\n| scenario | seconds, median | range | runs |\n|---|---:|---|---:|")
    print(row("RunLogger.start, server down (connection refused)", rows["down"]))
    if not args.no_hung:
        print(row("RunLogger.start, server hung (takes connections, never answers)",
                  [hung_seconds()]))  # fmt: skip
    print(row("whole 3-epoch fc64 train job (CLI), server down", rows["job"]))
    if args.mlflow_defaults:
        print(row("one MLflow call, server down, MLflow's defaults, no retries of ours",
                  [mlflow_defaults_seconds()]))  # fmt: skip


if __name__ == "__main__":
    main()
