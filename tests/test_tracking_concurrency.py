"""Eight training jobs at once on the default sqlite store: every run complete, no lock errors."""

import json
import re
import subprocess
import sys
import time

import pytest
from mlflow.tracking import MlflowClient

from afternoon import tracking
from afternoon.config import job_spec, load_yaml, load_zoo
from afternoon.preprocess import preprocess_dataset
from conftest import REPO

pytestmark = pytest.mark.slow
JOBS, EPOCHS = 8, 2


@pytest.fixture(autouse=True)
def no_env_uri(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


def test_eight_training_jobs_at_once_on_one_sqlite_store(tmp_path):
    npz, card = tmp_path / "digits.npz", tmp_path / "digits.card.json"
    preprocess_dataset("digits", None, npz, card, validation_fraction=0.1, seed=42)
    marker = tmp_path / "results/mlflow/tracking.json"
    cli = [sys.executable, "-m", "afternoon.cli"]
    init = [*cli, "init-tracking", "--experiment", "eight", "--marker", str(marker)]
    subprocess.run(init, check=True, cwd=REPO, capture_output=True)
    config = load_yaml(REPO / "config/config.yaml")
    spec = job_spec(config, load_zoo(REPO / "config/zoo.yaml"), "digits", "fc64")
    spec.update(epochs=EPOCHS)
    jobs, logs = [], []
    started = time.monotonic()
    for index in range(JOBS):
        out = tmp_path / f"results/runs/digits/job{index}"
        logs.append(tmp_path / f"job{index}.log")
        command = [*cli, "train", "--spec", json.dumps({**spec, "seed": index}), "--npz", npz,
                   "--card", card, "--tracking", marker, "--out-dir", out,
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
