"""MLflow tracking on real sqlite stores in tmp_path: store creation, runs, concurrency, secrets."""

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from afternoon import tracking
from afternoon.errors import ConfigError, DataFormatError, Terminated
from afternoon.tracking import provenance, retries, runs, uris
from helpers.paths import REPO

EXPERIMENT = "afternoon-test"

INIT = """
import json, sys
from pathlib import Path
from afternoon.tracking import init_store
print(json.dumps(init_store(sys.argv[1], sys.argv[2], Path(sys.argv[3]))))
"""

WORKER = """
import logging, sys, time
from pathlib import Path
import mlflow.store.tracking.sqlalchemy_store  # imported (~1 s) before the start line, so
import mlflow.tracking  # that all workers start their runs and write at once
from afternoon import tracking
logging.basicConfig(level=logging.INFO)  # retries are logged at INFO
uri, go, index = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
Path(f"{go}.ready{index}").touch()
deadline = time.monotonic() + 120  # never outlive a failed test by long
while not go.exists() and time.monotonic() < deadline:
    time.sleep(0.005)
with tracking.RunLogger.start(uri, sys.argv[4], f"worker{index}", {"index": index}, {}) as run:
    for step in range(20):
        run.log_metrics({"a": step, "b": 2.0 * step, "c": index + step / 100}, step=step)
print(run.run_id)
"""


pytestmark = pytest.mark.usefixtures("clean_mlflow_env")


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """One sqlite store with the experiment, created once (schema migrations take seconds)."""
    root = tmp_path_factory.mktemp("store")
    uri = f"sqlite:///{root}/mlflow.db"
    return tracking.init_store(uri, EXPERIMENT, root / "tracking.json")


@pytest.fixture
def spawn():
    """Start ``python -c script args``; whatever still runs at teardown is killed."""
    started = []

    def start(script: str, *args) -> subprocess.Popen:
        command = [sys.executable, "-c", script, *map(str, args)]
        pipes = dict(stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        started.append(subprocess.Popen(command, **pipes))
        return started[-1]

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


# --- init_store ----------------------------------------------------------------------------------


def test_init_store_two_processes_at_once_then_again(tmp_path, spawn):
    db = tmp_path / "sub" / "mlflow.db"
    uri = f"sqlite:///{db}"
    procs = [spawn(INIT, uri, EXPERIMENT, tmp_path / f"marker{i}.json") for i in range(2)]
    outputs = [proc.communicate(timeout=60) for proc in procs]
    for proc, (_out, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err
    ids = {json.loads(out)["experiment_id"] for out, _ in outputs}
    assert len(ids) == 1

    record = tracking.init_store(uri, EXPERIMENT, tmp_path / "tracking.json")
    assert record == {"tracking_uri": uri, "experiment": EXPERIMENT, "experiment_id": ids.pop()}
    assert json.loads((tmp_path / "tracking.json").read_text()) == record
    assert db.is_file()
    experiment = MlflowClient(uri).get_experiment_by_name(EXPERIMENT)
    assert experiment.experiment_id == record["experiment_id"]
    assert experiment.artifact_location == (db.parent / "artifacts" / EXPERIMENT).as_uri()


# --- RunLogger -----------------------------------------------------------------------------------


def test_run_full_cycle_then_resume(store, tmp_path):
    uri = store["tracking_uri"]
    spec = {
        "name": "cnn1",
        "layers": [{"conv2d": {"filters": 32, "kernel_size": [3, 3]}}, {"flatten": {}}],
        "optimizer": {"name": "sgd", "learning_rate": 0.01},
        "notes": "x" * 7000,
    }
    tags = tracking.provenance_tags(REPO, extra={"rule": "train", "wildcards": {"arch": "cnn1"}})
    (tmp_path / "plots").mkdir()
    (tmp_path / "plots" / "curve.png").write_bytes(b"png")
    (tmp_path / "history.csv").write_text("epoch,loss\n")
    with tracking.RunLogger.start(uri, EXPERIMENT, "cnn1@digits", spec, tags) as run:
        for epoch in range(3):
            logs = {"loss": 1.0 / (epoch + 1), "accuracy": 0.5 + epoch / 10, "lr": float("nan")}
            run.log_metrics(logs, step=epoch)
        run.log_metrics({"epochs_run": 3, "final_loss": 1 / 3})
        run.log_artifact(tmp_path / "history.csv")
        run.log_artifacts(tmp_path / "plots", artifact_path="plots")
        tracking.write_run_record(tmp_path / "run.json", run.run_id, uri, EXPERIMENT)

    client = MlflowClient(uri)
    got = client.get_run(run.run_id)
    assert got.info.status == "FINISHED"
    assert got.info.run_name == "cnn1@digits"
    params = got.data.params
    assert params["layers.0.conv2d.filters"] == "32"
    assert params["layers.0.conv2d.kernel_size"] == "[3, 3]"
    assert params["layers.1.flatten"] == "{}"
    assert params["optimizer.learning_rate"] == "0.01"
    assert len(params["notes"]) == 6000
    assert got.data.tags["afternoon.hostname"] == socket.gethostname()
    assert "afternoon.git_commit" in got.data.tags
    assert got.data.tags["afternoon.rule"] == "train"
    assert got.data.tags["afternoon.wildcards"] == '{"arch": "cnn1"}'
    history = client.get_metric_history(run.run_id, "loss")
    assert [(m.step, m.value) for m in history] == [(0, 1.0), (1, 0.5), (2, 1.0 / 3)]
    accuracy = client.get_metric_history(run.run_id, "accuracy")
    assert [(m.step, m.value) for m in accuracy] == [(0, 0.5), (1, 0.6), (2, 0.7)]
    assert "lr" not in got.data.metrics  # NaN skipped
    assert got.data.metrics["epochs_run"] == 3.0
    assert {a.path for a in client.list_artifacts(run.run_id)} == {"history.csv", "plots"}
    assert [a.path for a in client.list_artifacts(run.run_id, "plots")] == ["plots/curve.png"]

    record = tracking.read_run_record(tmp_path / "run.json")
    assert record == {
        "run_id": run.run_id,
        "tracking_uri": uri,
        "experiment": EXPERIMENT,
        "complete": True,
    }
    with tracking.RunLogger.resume(record["tracking_uri"], record["run_id"]) as evaluation:
        evaluation.log_metrics({"test_accuracy": 0.97, "test_loss": 0.1})
        evaluation.set_tags({"afternoon.evaluated": "yes"})
        evaluation.log_artifact(tmp_path / "plots" / "curve.png", "evaluation")
    got = client.get_run(run.run_id)
    assert got.info.status == "FINISHED"
    assert got.data.metrics["test_accuracy"] == 0.97
    assert got.data.metrics["loss"] == 1.0 / 3
    assert got.data.tags["afternoon.evaluated"] == "yes"
    assert [a.path for a in client.list_artifacts(run.run_id, "evaluation")] == [
        "evaluation/curve.png"
    ]


def test_context_manager_marks_failed_and_killed(store):
    uri, client = store["tracking_uri"], MlflowClient(store["tracking_uri"])
    with (
        pytest.raises(RuntimeError, match="^training diverged$"),
        tracking.RunLogger.start(uri, EXPERIMENT, "f", {}, {}) as run,
    ):
        raise RuntimeError("training diverged")
    assert client.get_run(run.run_id).info.status == "FAILED"
    with pytest.raises(KeyboardInterrupt, match="^Ctrl-C$"):
        with tracking.RunLogger.start(uri, EXPERIMENT, "k", {}, {}) as run:
            raise KeyboardInterrupt("Ctrl-C")
    assert client.get_run(run.run_id).info.status == "KILLED"


@pytest.fixture
def default_sigterm():
    """SIGTERM at its default action for the test (a test runner may have its own handler)."""
    previous = signal.signal(signal.SIGTERM, signal.SIG_DFL)
    yield
    signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)


def test_sigterm_inside_run_marks_it_killed(store, default_sigterm):
    uri = store["tracking_uri"]
    with pytest.raises(Terminated, match="SIGTERM received"):
        with tracking.RunLogger.start(uri, EXPERIMENT, "t", {}, {}) as run:
            assert signal.getsignal(signal.SIGTERM) is runs._raise_terminated
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)  # the handler raises before this ends
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
    assert MlflowClient(uri).get_run(run.run_id).info.status == "KILLED"


def test_resume_unknown_run_is_one_line(store):
    with pytest.raises(tracking.TrackingError, match="not found") as err:
        tracking.RunLogger.resume(store["tracking_uri"], "0" * 32)
    assert "\n" not in str(err.value)


def test_six_processes_log_to_one_sqlite_store_at_once(store, tmp_path, spawn):
    uri, go = store["tracking_uri"], tmp_path / "go"
    procs = [spawn(WORKER, uri, go, index, EXPERIMENT) for index in range(6)]
    deadline = time.monotonic() + 60
    while sum(Path(f"{go}.ready{i}").exists() for i in range(6)) < 6:
        assert time.monotonic() < deadline and all(p.poll() is None for p in procs)
        time.sleep(0.05)
    go.touch()
    start = time.monotonic()
    outputs = [proc.communicate(timeout=60) for proc in procs]
    elapsed = time.monotonic() - start
    for proc, (_, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err
    retries = sum(err.count("(retry ") for _, err in outputs)
    print(f"6 writers: {elapsed:.1f} s after the start line, {retries} retries")

    client = MlflowClient(uri)
    run_ids = [out.strip() for out, _ in outputs]
    assert len(set(run_ids)) == 6
    for index, run_id in enumerate(run_ids):
        run = client.get_run(run_id)
        assert run.info.status == "FINISHED"
        assert run.data.params == {"index": str(index)}
        points = {key: client.get_metric_history(run_id, key) for key in "abc"}
        assert sum(len(history) for history in points.values()) == 60
        assert sorted((m.step, m.value) for m in points["b"]) == [(s, 2.0 * s) for s in range(20)]


# --- with_retries --------------------------------------------------------------------------------


@pytest.fixture
def sleeps(monkeypatch):
    slept = []
    monkeypatch.setattr(retries.time, "sleep", slept.append)
    return slept


def test_with_retries_retries_sqlite_locks(sleeps):
    import sqlite3

    from mlflow.exceptions import MlflowException
    from sqlalchemy.exc import OperationalError

    calls = []

    def flaky(x, y=0):
        calls.append(x)
        if len(calls) == 1:  # as MLflow raises it: the lock is in the cause
            cause = OperationalError("INSERT", {}, sqlite3.OperationalError("database is locked"))
            raise MlflowException("log_batch failed") from cause
        if len(calls) == 2:
            raise RuntimeError("(sqlite3.OperationalError) database is locked")
        return x + y

    assert retries.with_retries(flaky, 40, y=2) == 42
    assert len(calls) == 3
    assert 0.1 <= sleeps[0] <= 0.2 and 0.2 <= sleeps[1] <= 0.4


def test_with_retries_gives_up_and_does_not_retry_other_errors(sleeps):
    calls = []

    def locked():
        calls.append(1)
        raise RuntimeError("database table is locked")

    with pytest.raises(RuntimeError, match="locked"):
        retries.with_retries(locked, attempts=3)
    assert len(calls) == 3

    def wrong():
        calls.append(2)
        raise ValueError("bad value")

    with pytest.raises(ValueError, match="^bad value$"):
        retries.with_retries(wrong)
    assert calls.count(2) == 1


def test_refused_connection_to_a_tracking_server_is_transient(monkeypatch):
    import requests

    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    with pytest.raises(Exception, match="Connection refused") as err:
        MlflowClient(f"http://127.0.0.1:{port}").get_experiment_by_name("x")
    assert retries.is_transient(err.value)
    assert retries.is_transient(requests.exceptions.ConnectionError("boom"))
    assert not retries.is_transient(ValueError("bad value"))


def test_with_retries_stops_at_its_time_budget(sleeps, monkeypatch):
    calls = []

    def locked():
        calls.append(1)
        raise RuntimeError("database is locked")

    monkeypatch.setattr(retries, "RETRY_BUDGET_S", 0.0)
    with pytest.raises(RuntimeError, match="locked"):
        retries.with_retries(locked)
    assert len(calls) == 1 and sleeps == []


def test_why_names_the_cause_in_a_few_words():
    import requests

    refused = requests.exceptions.ConnectionError(
        "HTTPConnectionPool(host='127.0.0.1', port=5999): Max retries exceeded with url: /api "
        "(Caused by NewConnectionError('...: Failed to establish a new connection: "
        "[Errno 111] Connection refused'))"
    )
    assert retries.why(refused) == "[Errno 111] Connection refused"
    wrapped = RuntimeError("API request failed")
    wrapped.__cause__ = RuntimeError("(sqlite3.OperationalError) database is locked")
    assert retries.why(wrapped) == "database is locked"
    assert retries.why(ValueError("bad value\nsecond line")) == "bad value"


def test_sqlite_stores_get_a_busy_timeout(tmp_path):
    uri = f"sqlite:///{tmp_path}/m.db"
    assert runs._store_uri(uri) == f"{uri}?timeout={runs.SQLITE_BUSY_TIMEOUT_S}"
    assert runs._store_uri(f"{uri}?timeout=3") == f"{uri}?timeout=3"
    assert runs._store_uri("http://127.0.0.1:5000") == "http://127.0.0.1:5000"


# --- URIs ----------------------------------------------------------------------------------------


def test_tracking_uri_precedence(monkeypatch, tmp_path):
    default = tmp_path / "mlflow" / "mlflow.db"
    assert tracking.resolve_tracking_uri(None, default) == f"sqlite:///{default}"
    assert tracking.resolve_tracking_uri("", default) == f"sqlite:///{default}"
    server = "http://127.0.0.1:5000"
    assert tracking.resolve_tracking_uri(server, default) == server
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:////srv/mlflow.db")
    assert tracking.resolve_tracking_uri(server, default) == "sqlite:////srv/mlflow.db"
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    monkeypatch.chdir(tmp_path)
    assert tracking.resolve_tracking_uri("sqlite:///r.db", default) == f"sqlite:///{tmp_path}/r.db"


@pytest.mark.parametrize(
    "uri",
    ["sqlite:/x.db", "sqlite://", "htp://host:5000", "xyz", "http://", "http:/host",
     "http://host:port", "postgresql://host", "ftp://host/x"],
)  # fmt: skip
def test_malformed_tracking_uri_is_one_line(monkeypatch, tmp_path, uri):
    with pytest.raises(ConfigError, match="is not a valid tracking URI") as err:
        tracking.resolve_tracking_uri(uri, tmp_path / "m.db")
    message = str(err.value)
    assert message.startswith(f"config tracking.uri {uri!r} is not a valid tracking URI (")
    assert "\n" not in message
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    with pytest.raises(ConfigError, match=r"^MLFLOW_TRACKING_URI '.*' is not a valid tracking URI"):
        tracking.resolve_tracking_uri(None, tmp_path / "m.db")


def test_credentials_stay_out_of_configs_records_and_urls(monkeypatch, tmp_path):
    with pytest.raises(ConfigError, match="holds a password") as err:
        tracking.resolve_tracking_uri("http://user:pw@127.0.0.1:5000", tmp_path / "m.db")
    assert ":pw@" not in str(err.value)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "https://user:pw@mlflow.example.org/")
    uri = tracking.resolve_tracking_uri(None, tmp_path / "m.db")
    assert uri == "https://user:pw@mlflow.example.org/"  # the environment may hold credentials
    tracking.write_run_record(tmp_path / "run.json", "abc", uri, EXPERIMENT)
    assert tracking.read_run_record(tmp_path / "run.json")["tracking_uri"] == (
        "https://mlflow.example.org/"
    )
    url = uris.run_url(uri, "3", "abc")
    assert url == "https://mlflow.example.org/#/experiments/3/runs/abc"
    assert uris.run_url(f"sqlite:///{tmp_path}/m.db", "3", "abc") is None


def test_secrets_are_redacted_in_params_and_tags(monkeypatch, store):
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", "s3cr3t-token")
    params = {"command": "train --token s3cr3t-token", "server": "http://user:pw@127.0.0.1:5000"}
    tags = {"afternoon.env": "TOKEN=s3cr3t-token"}
    uri = store["tracking_uri"]
    with tracking.RunLogger.start(uri, EXPERIMENT, "s3cr3t-token", params, tags) as run:
        run.set_tags({"afternoon.later": "http://u:s3cr3t-token@host/x"})
    got = MlflowClient(uri).get_run(run.run_id)
    assert got.data.params == {"command": "train --token ***", "server": "http://127.0.0.1:5000"}
    assert got.data.tags["afternoon.env"] == "TOKEN=***"
    assert got.data.tags["afternoon.later"] == "http://host/x"
    assert got.info.run_name == "***"
    assert "s3cr3t-token" not in json.dumps([got.data.params, got.data.tags])


# --- params, hashes, provenance ------------------------------------------------------------------


def test_flatten_params_and_config_hash_exact():
    spec = {"a": [1, 2], "b": {"c": 0.5}}
    layers = {"layers": [{"conv2d": {"filters": 32}}, {"flatten": {}}], "seed": None, "x": True}
    assert provenance.flatten_params(spec) == {"a": "[1, 2]", "b.c": "0.5"}
    assert provenance.flatten_params(layers) == {
        "layers.0.conv2d.filters": "32",
        "layers.1.flatten": "{}",
        "seed": "None",
        "x": "True",
    }
    assert provenance.flatten_params({"lr": 0.1}, prefix="optimizer") == {"optimizer.lr": "0.1"}
    expected = "3a36d5b0e625029fae060049c66c7b7c1a7bfbf77e1e9fcf24c57733fb62c8f5"
    assert expected == hashlib.sha256(b'{"a":[1,2],"b":{"c":0.5}}').hexdigest()
    assert tracking.config_hash(spec) == expected
    assert tracking.config_hash({"b": {"c": 0.5}, "a": [1, 2]}) == expected


def test_provenance_tags_git_host_versions_slurm(monkeypatch, tmp_path):
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    monkeypatch.delenv("SLURM_ARRAY_JOB_ID", raising=False)
    outside = tracking.provenance_tags(tmp_path, extra={"config_hash": "abc"})
    assert outside["afternoon.git_commit"] == "unknown"
    assert outside["afternoon.git_dirty"] == "unknown"
    assert "mlflow.source.git.commit" not in outside
    assert outside["afternoon.slurm_job_id"] == "4242"
    assert "afternoon.slurm_array_job_id" not in outside
    assert outside["afternoon.config_hash"] == "abc"
    assert outside["afternoon.version.mlflow"] and outside["afternoon.version.tensorflow"]
    assert outside["afternoon.python"] == ".".join(map(str, sys.version_info[:3]))

    git = ["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q"], check=True)
    (tmp_path / "a.txt").write_text("a")
    subprocess.run([*git, "add", "a.txt"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "a"], check=True)
    head = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True).stdout
    clean = tracking.provenance_tags(tmp_path)
    assert clean["afternoon.git_commit"] == clean["mlflow.source.git.commit"] == head.strip()
    assert clean["afternoon.git_dirty"] == "false"
    (tmp_path / "a.txt").write_text("b")
    assert tracking.provenance_tags(tmp_path)["afternoon.git_dirty"] == "true"


def test_read_run_record_rejects_other_json(tmp_path):
    (tmp_path / "run.json").write_text('{"run_id": "abc"}')
    with pytest.raises(DataFormatError, match="not a run record"):
        tracking.read_run_record(tmp_path / "run.json")
