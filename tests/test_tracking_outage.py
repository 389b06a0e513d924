"""Tracking outages, with a real `mlflow server` on 127.0.0.1 that the tests start, kill and
restart: a job survives a dead or dying server (one warning, complete files, a pending entry) and
`sync-tracking` re-logs its runs from disk once the server is back, without duplicates."""

import json
import logging
import os
import signal
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from afternoon import tracking
from afternoon.errors import DataFormatError
from afternoon.tracking import records
from afternoon.tracking.sync import sync_tracking
from helpers.paths import REPO
from helpers.runners import cli_command
from helpers.runners import run_cli as cli  # cli(*args): python -m afternoon.cli, as a rule does
from helpers.services import MlflowServer, free_port
from helpers.stage_args import eval_output_args, train_output_args

EXPERIMENT = "outage"
pytestmark = pytest.mark.usefixtures("clean_mlflow_env")


@pytest.fixture
def server(tmp_path):
    """A real `mlflow server` (helpers.services), not started: the test starts and kills it."""
    srv = MlflowServer(tmp_path)
    yield srv
    srv.stop(signal.SIGKILL)


def fake_job(results: Path, uri: str, run_id=None, epochs: int = 5, *, complete=False) -> Path:
    """The files a training and an evaluation job leave behind, without training anything."""
    run_dir, eval_dir = results / "runs/digits/fc64", results / "eval/digits/fc64"
    run_dir.mkdir(parents=True)
    eval_dir.mkdir(parents=True)
    history = pd.DataFrame(
        {
            "epoch": range(1, epochs + 1),
            "loss": [1.0 / e for e in range(1, epochs + 1)],
            "accuracy": [0.5 + e / 100 for e in range(1, epochs + 1)],
            "epoch_time_s": [0.25] * epochs,
        }  # fmt: skip
    )
    history.to_csv(run_dir / "history.csv", index=False)
    summary = {"architecture": "fc64", "dataset": "digits", "epochs_run": epochs,
               "final_loss": 1.0 / epochs, "run_id": run_id}  # fmt: skip
    (run_dir / "metrics.json").write_text(json.dumps(summary))
    (run_dir / "model.keras").write_bytes(b"model" * 100)
    scores = {"test_loss": 0.2, "test_accuracy": 0.93, "n_test": 450}
    (eval_dir / "metrics.json").write_text(json.dumps(scores))
    for name in ("confusion_matrix.csv", "confusion_matrix.png", "per_class.csv"):
        (eval_dir / name).write_bytes(b"x" * 10)
    (eval_dir / "misclassified.png").write_bytes(b"y" * 20)
    spec = {"name": "fc64", "dataset": "digits", "epochs": epochs, "optimizer": {"name": "adam"}}
    tags = {"afternoon.architecture": "fc64", "afternoon.rule": "train"}
    tracking.write_run_record(run_dir / "run.json", run_id, uri, EXPERIMENT,
                              params=spec, tags=tags, complete=complete)  # fmt: skip
    old = time.time() - 3600  # an hour old: a rewrite that kept the mtime is visible
    os.utime(run_dir / "run.json", (old, old))
    return run_dir


def write_marker(results: Path, uri: str) -> Path:
    marker = results / "mlflow" / "tracking.json"
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text(json.dumps({"tracking_uri": uri, "experiment": EXPERIMENT}))
    return marker


def history_of(client, run_id: str, key: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


def assert_synced(client, run_id, run_dir: Path, history: pd.DataFrame, evaluated=True) -> None:
    """FINISHED, every history column once per epoch, summary, evaluation and files logged."""
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    epochs = [int(epoch) for epoch in history["epoch"]]
    for key in history.columns.drop("epoch"):
        expected = [(e, pytest.approx(v)) for e, v in zip(epochs, history[key], strict=True)]
        assert history_of(client, run_id, key) == expected, key
    summary = json.loads((run_dir / "metrics.json").read_text())
    assert run.data.metrics["final_loss"] == pytest.approx(summary["final_loss"])
    root = {a.path for a in client.list_artifacts(run_id)}
    assert {"model.keras", "history.csv", "metrics.json"} <= root
    if not evaluated:
        return
    assert "test_accuracy" in run.data.metrics and "n_test" not in run.data.metrics
    evaluation = {a.path for a in client.list_artifacts(run_id, "evaluation")}
    assert {"evaluation/metrics.json", "evaluation/misclassified.png"} <= evaluation


# --- RunLogger with the server down --------------------------------------------------------------


def test_server_down_at_start_degrades_in_seconds_with_one_warning(caplog, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "hunter2-pw")
    uri = f"http://user:hunter2-pw@127.0.0.1:{free_port()}"  # nothing listens there
    caplog.set_level(logging.INFO, logger="afternoon")
    started = time.monotonic()
    run = tracking.RunLogger.start(uri, EXPERIMENT, "fc64@digits", {"a": 1}, {}, offline_ok=True)
    elapsed = time.monotonic() - started
    print(f"RunLogger.start with the server down: {elapsed:.1f} s")
    assert elapsed < 30
    assert run.degraded and run.run_id is None
    assert "Connection refused" in run.failure and "hunter2" not in run.failure
    assert "\n" not in run.failure
    with run:
        run.log_metrics({"loss": 1.0}, step=1)
        run.set_tags({"x": "y"})
        run.log_artifact(__file__)
    reopened = tracking.RunLogger.reopen(uri, "0" * 32, offline_ok=True)
    assert reopened.degraded and reopened.run_id == "0" * 32  # the run it should log into
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 2  # one per logger, none for the calls made while degraded
    assert all("sync-tracking" in r.getMessage() for r in warnings)
    assert "hunter2" not in caplog.text
    with pytest.raises(tracking.TrackingError, match="unreachable") as err:
        tracking.RunLogger.start(uri, EXPERIMENT, "fc64@digits", {}, {})
    assert "\n" not in str(err.value) and "hunter2" not in str(err.value)


def test_run_records_and_pending_entries(tmp_path):
    record = tmp_path / "runs/digits/fc64/run.json"
    tracking.write_run_record(record, None, "http://u:p@h:5000", EXPERIMENT,
                              params={"name": "fc64"}, tags={"t": "1"}, complete=False)  # fmt: skip
    assert tracking.read_run_record(record) == {
        "run_id": None, "tracking_uri": "http://h:5000", "experiment": EXPERIMENT,
        "complete": False, "params": {"name": "fc64"}, "tags": {"t": "1"},
    }  # fmt: skip
    record.write_text(json.dumps({"run_id": None, "tracking_uri": "x", "experiment": "e"}))
    with pytest.raises(DataFormatError, match="no .run_id."):
        tracking.read_run_record(record)
    marker = tmp_path / "mlflow/tracking.json"
    entry = tracking.record_pending(marker, record.parent, "train", "http://u:p@h: refused")
    assert entry.parent == tmp_path / "mlflow/pending"
    again = tracking.record_pending(marker, record.parent, "train", "refused again")
    assert again == entry  # one entry per run and stage
    tracking.record_pending(marker, record.parent, "evaluate", "refused")
    entries = records.pending_entries(marker)
    assert [e["stage"] for _, e in entries] == ["evaluate", "train"]
    assert entries[1][1]["run_dir"] == str(record.parent) and "u:p@" not in entries[1][1]["reason"]
    with pytest.raises(ValueError, match="stage 'report' is not one of"):
        tracking.record_pending(marker, record.parent, "report", "x")


# --- sync-tracking -------------------------------------------------------------------------------


def sync_cli(results: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    return cli("sync-tracking", "--results", str(results), env=env)


def test_sync_creates_a_run_that_never_reached_the_server(tmp_path, server):
    results = tmp_path / "results"
    write_marker(results, server.uri)
    run_dir = fake_job(results, server.uri)
    tracking.record_pending(results / "mlflow/tracking.json", run_dir, "train", "refused")
    tracking.record_pending(results / "mlflow/tracking.json", run_dir, "evaluate", "no run")
    mtime = (run_dir / "run.json").stat().st_mtime_ns

    down = sync_cli(results)  # the server is not started yet
    assert down.returncode == 1
    assert down.stderr.startswith("afternoon: error: tracking store") and down.stdout == ""
    assert len(down.stderr.strip().splitlines()) == 1 and "1 run(s) still pending" in down.stderr
    assert len(records.pending_entries(results / "mlflow/tracking.json")) == 2

    print(f"mlflow server up in {server.start():.1f} s")
    started = time.monotonic()
    done = sync_cli(results)
    print(f"sync-tracking of 1 run: {time.monotonic() - started:.1f} s")
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"synced {run_dir}: run ")
    record = tracking.read_run_record(run_dir / "run.json")
    assert record["complete"] is True and record["run_id"]
    assert (run_dir / "run.json").stat().st_mtime_ns == mtime
    assert json.loads((run_dir / "metrics.json").read_text())["run_id"] == record["run_id"]
    client = MlflowClient(server.uri)
    assert_synced(client, record["run_id"], run_dir, pd.read_csv(run_dir / "history.csv"))
    run = client.get_run(record["run_id"])
    assert run.info.run_name == "fc64@digits"
    assert run.data.params["optimizer.name"] == "adam"
    assert run.data.tags["afternoon.rule"] == "train"
    assert records.pending_entries(results / "mlflow/tracking.json") == []

    again = sync_cli(results)  # idempotent: nothing pending, nothing logged
    assert again.returncode == 0 and again.stdout.startswith("nothing to sync")
    experiment = client.get_experiment_by_name(EXPERIMENT)
    assert len(client.search_runs([experiment.experiment_id])) == 1
    assert len(client.get_metric_history(record["run_id"], "loss")) == 5


def test_server_killed_mid_run_then_sync_fills_in_without_duplicates(tmp_path, server, caplog):
    results = tmp_path / "results"
    marker = write_marker(results, server.uri)
    server.start()
    caplog.set_level(logging.INFO, logger="afternoon")
    spec = {"name": "fc64", "dataset": "digits", "epochs": 8, "optimizer": {"name": "adam"}}
    with tracking.RunLogger.start(
        server.uri, EXPERIMENT, "fc64@digits", spec, {}, offline_ok=True
    ) as run:
        for epoch in (1, 2, 3):
            run.log_metrics({"loss": 1.0 / epoch, "accuracy": 0.5 + epoch / 100}, step=epoch)
        server.stop(signal.SIGKILL)  # dies mid-training
        for epoch in range(4, 9):
            run.log_metrics({"loss": 1.0 / epoch, "accuracy": 0.5 + epoch / 100}, step=epoch)
            assert run.degraded
        run.log_artifact(__file__)
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "MLflow tracking failed" in warnings[0]
    run_dir = fake_job(results, server.uri, run.run_id, epochs=8)
    tracking.record_pending(marker, run_dir, "train", run.failure)

    server.start()  # the same database
    client = MlflowClient(server.uri)
    assert client.get_run(run.run_id).info.status == "RUNNING"
    assert len(client.get_metric_history(run.run_id, "loss")) == 3
    assert sync_tracking(results) == [run.run_id]
    assert_synced(client, run.run_id, run_dir, pd.read_csv(run_dir / "history.csv"))
    assert tracking.read_run_record(run_dir / "run.json")["complete"] is True


# --- real training jobs through the CLI ----------------------------------------------------------


def train_command(digits, results: Path, epochs: int) -> list:
    from afternoon.config import job_spec, load_yaml, load_zoo

    config = load_yaml(REPO / "config/config.yaml")
    spec = job_spec(config, load_zoo(REPO / "config/zoo.yaml"), "digits", "fc64")
    spec.update(epochs=epochs)
    spec.pop("early_stopping", None)
    return ["train", "--spec", json.dumps(spec), "--npz", digits["npz"], "--card", digits["card"],
            "--tracking", results / "mlflow/tracking.json",
            *train_output_args(results / "runs/digits/fc64"),
            "--threads", "1", "--tag", "snakemake_rule=train"]  # fmt: skip


def failure_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "tracking failed" in line.lower()]


@pytest.mark.slow
def test_train_and_evaluate_with_server_down_then_sync(tmp_path, digits, server):
    results = tmp_path / "results"
    write_marker(results, server.uri)  # init-tracking ran while the server was up
    run_dir, eval_dir = results / "runs/digits/fc64", results / "eval/digits/fc64"
    started = time.monotonic()
    trained = cli(*train_command(digits, results, epochs=3))
    print(f"train job with the server down: {time.monotonic() - started:.1f} s")
    assert trained.returncode == 0, trained.stderr[-3000:]
    assert "sync-tracking" in failure_lines(trained.stderr)[0]
    for name in ("model.keras", "history.csv", "metrics.json", "run.json"):
        assert (run_dir / name).is_file(), name
    assert len(pd.read_csv(run_dir / "history.csv")) == 3
    record = tracking.read_run_record(run_dir / "run.json")
    assert record["run_id"] is None and record["complete"] is False
    assert record["params"]["name"] == "fc64"

    evaluated = cli("evaluate", "--model", run_dir / "model.keras", "--run", run_dir / "run.json",
                    "--npz", digits["npz"], "--card", digits["card"],
                    "--tracking", results / "mlflow/tracking.json", *eval_output_args(eval_dir),
                    "--threads", "1")  # fmt: skip
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    assert (eval_dir / "metrics.json").is_file() and (eval_dir / "misclassified.png").is_file()
    stages = sorted(
        e["stage"] for _, e in records.pending_entries(results / "mlflow/tracking.json")
    )
    assert stages == ["evaluate", "train"]

    mtime = (run_dir / "run.json").stat().st_mtime_ns
    server.start()
    synced = cli("sync-tracking", "--results", results)
    assert synced.returncode == 0, synced.stderr[-3000:]
    assert len(synced.stdout.strip().splitlines()) == 1
    record = tracking.read_run_record(run_dir / "run.json")
    assert record["complete"] is True and (run_dir / "run.json").stat().st_mtime_ns == mtime
    client = MlflowClient(server.uri)
    assert_synced(client, record["run_id"], run_dir, pd.read_csv(run_dir / "history.csv"))
    again = cli("sync-tracking", "--results", results)
    assert again.returncode == 0 and again.stdout.startswith("nothing to sync")
    # last, so that a second warning does not hide the rest: the job says it once
    assert len(failure_lines(trained.stderr)) == 1, failure_lines(trained.stderr)


@pytest.mark.slow
def test_server_killed_mid_training_then_sync(tmp_path, digits, server):
    results = tmp_path / "results"
    marker = results / "mlflow/tracking.json"
    server.start()
    assert cli("init-tracking", "--uri", server.uri, "--experiment", EXPERIMENT, "--default-db",
               results / "mlflow/mlflow.db", "--marker", marker).returncode == 0  # fmt: skip
    client = MlflowClient(server.uri)
    experiment_id = client.get_experiment_by_name(EXPERIMENT).experiment_id
    epochs = 150
    log = open(tmp_path / "train.log", "w+")  # noqa: SIM115
    job = subprocess.Popen(cli_command(*train_command(digits, results, epochs)),
                           cwd=REPO, stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
    try:
        deadline = time.monotonic() + 300
        while True:  # kill the server once the run exists and has logged its first epoch
            assert job.poll() is None and time.monotonic() < deadline, log.name
            runs = client.search_runs([experiment_id])
            if runs and client.get_metric_history(runs[0].info.run_id, "loss"):
                break
            time.sleep(0.2)
        server.stop(signal.SIGKILL)
        assert job.wait(timeout=600) == 0, Path(log.name).read_text()[-3000:]
    finally:
        if job.poll() is None:
            job.kill()
        log.close()
    output = Path(log.name).read_text()
    run_dir = results / "runs/digits/fc64"
    history = pd.read_csv(run_dir / "history.csv")
    assert list(history["epoch"]) == list(range(1, epochs + 1))
    record = tracking.read_run_record(run_dir / "run.json")
    assert record["run_id"] == runs[0].info.run_id and record["complete"] is False

    server.start()  # the same database
    logged = len(client.get_metric_history(record["run_id"], "loss"))
    assert 1 <= logged < epochs
    started = time.monotonic()
    assert cli("sync-tracking", "--results", results).returncode == 0
    print(f"sync-tracking of {epochs - logged} missing epochs: {time.monotonic() - started:.1f} s")
    assert_synced(client, record["run_id"], run_dir, history, evaluated=False)
    assert len(failure_lines(output)) == 1, failure_lines(output)  # the job says it once
