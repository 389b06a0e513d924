"""Eight training jobs at once on the default sqlite store: every run complete, no lock errors."""

import json
import re
import subprocess
import time

import pytest
from mlflow.tracking import MlflowClient

from afternoon import tracking
from afternoon.config import job_spec, load_yaml, load_zoo
from helpers.paths import REPO
from helpers.runners import cli_command
from helpers.runners import run as run_command
from helpers.stage_args import train_output_args

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("clean_mlflow_env")]
JOBS, EPOCHS = 8, 2


def test_eight_training_jobs_at_once_on_one_sqlite_store(tmp_path, digits):
    npz, card = digits["npz"], digits["card"]  # read by every job
    marker = tmp_path / "results/mlflow/tracking.json"
    cli = cli_command()
    init = [*cli, "init-tracking", "--experiment", "eight", "--marker", str(marker)]
    init += ["--default-db", str(marker.with_name("mlflow.db"))]
    run_command(init, check=True)
    config = load_yaml(REPO / "config/config.yaml")
    spec = job_spec(config, load_zoo(REPO / "config/zoo.yaml"), "digits", "fc64")
    spec.update(epochs=EPOCHS)
    jobs, logs = [], []
    started = time.monotonic()
    for index in range(JOBS):
        out = tmp_path / f"results/runs/digits/job{index}"
        logs.append(tmp_path / f"job{index}.log")
        command = [*cli, "train", "--spec", json.dumps({**spec, "seed": index}), "--npz", npz,
                   "--card", card, "--tracking", marker, *train_output_args(out),
                   "--threads", "1"]  # fmt: skip
        with open(logs[-1], "w") as log:
            jobs.append(subprocess.Popen(list(map(str, command)), cwd=REPO, stdout=log, stderr=log))
    codes = [job.wait(timeout=900) for job in jobs]
    elapsed = time.monotonic() - started
    texts = [log.read_text() for log in logs]
    for code, text in zip(codes, texts, strict=True):
        assert code == 0, text[-3000:]
    retries = sum(len(re.findall(r"\(retry \d+/\d+", text)) for text in texts)
    print(f"{JOBS} training jobs at once: {elapsed:.1f} s, {retries} tracking retries")
    for text in texts:
        assert "locked" not in text.lower(), text[-3000:]  # not even as a retried warning

    client = MlflowClient(json.loads(marker.read_text())["tracking_uri"])
    run_ids = set()
    for index in range(JOBS):
        out = tmp_path / f"results/runs/digits/job{index}"
        record = tracking.read_run_record(out / "run.json")
        assert record["complete"] is True
        run = client.get_run(record["run_id"])
        assert run.info.status == "FINISHED"
        assert run.data.params["seed"] == str(index)
        for key in ("loss", "accuracy", "val_loss", "val_accuracy", "epoch_time_s"):
            steps = [m.step for m in client.get_metric_history(record["run_id"], key)]
            assert sorted(steps) == list(range(1, EPOCHS + 1)), key
        assert run.data.metrics["epochs_run"] == EPOCHS
        artifacts = {a.path for a in client.list_artifacts(record["run_id"])}
        assert {"model.keras", "history.csv", "metrics.json"} <= artifacts
        run_ids.add(record["run_id"])
    assert len(run_ids) == JOBS
