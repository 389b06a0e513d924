"""The whole chain on a small study: outputs, MLflow runs, and rerun-only-what-changed."""

import json
import re

import pytest
import yaml

from helpers.runners import run_snakemake
from helpers.study import ARCHS

pytestmark = pytest.mark.slow


def planned_jobs(workdir) -> dict[str, list[str]]:
    """Rule -> sorted wildcard strings of the jobs a dry run would run."""
    result = run_snakemake(workdir, "-n")
    out = result.stdout + result.stderr
    jobs: dict[str, list[str]] = {}
    for block in re.split(r"\n(?=rule \w+:|localrule \w+:)", out):
        head = re.match(r"(?:local)?rule (\w+):", block)
        if head:
            wildcards = re.search(r"wildcards: (.*)", block)
            jobs.setdefault(head[1], []).append(wildcards[1] if wildcards else "")
    return {rule: sorted(w) for rule, w in jobs.items()}


@pytest.fixture(scope="module")
def study(small_study):
    """digits, fc64 + cnn1, 2 epochs: the session's small study (tests/conftest.py)."""
    return small_study


def test_every_job_wrote_its_outputs(study):
    for arch in ARCHS:
        metrics = json.loads((study / f"results/runs/digits/{arch}/metrics.json").read_text())
        assert metrics["epochs_run"] == 2
        evaluation = json.loads((study / f"results/eval/digits/{arch}/metrics.json").read_text())
        assert 0.3 < evaluation["test_accuracy"] <= 1.0  # 2 epochs; chance is 0.1
        assert evaluation["n_test"] == 450


def test_mlflow_holds_one_run_per_job_with_epoch_and_test_metrics(study):
    import mlflow

    marker = json.loads((study / "results/mlflow/tracking.json").read_text())
    client = mlflow.tracking.MlflowClient(marker["tracking_uri"])
    runs = client.search_runs([marker["experiment_id"]])
    assert sorted(run.info.run_name for run in runs) == ["cnn1@digits", "fc64@digits"]
    for run in runs:
        assert run.info.status == "FINISHED"
        assert [m.step for m in client.get_metric_history(run.info.run_id, "loss")] == [1, 2]
        assert "test_accuracy" in run.data.metrics
        assert run.data.tags["afternoon.snakemake_rule"] == "train"
        arch = run.info.run_name.split("@")[0]
        record = json.loads((study / f"results/runs/digits/{arch}/run.json").read_text())
        assert record["run_id"] == run.info.run_id


def test_nothing_changed_plans_nothing(study):
    assert planned_jobs(study) == {}


def test_editing_one_architecture_plans_only_its_jobs_and_the_report(study):
    zoo_path = study / "config/zoo.yaml"
    original = zoo_path.read_text()
    zoo = yaml.safe_load(original)
    zoo["cnn1"]["optimizer"]["learning_rate"] = 0.02
    zoo_path.write_text(yaml.safe_dump(zoo, sort_keys=False))
    try:
        jobs = planned_jobs(study)
    finally:
        zoo_path.write_text(original)
    expected = "dataset=digits, arch=cnn1"
    assert jobs.pop("train") == [expected]
    assert jobs.pop("evaluate") == [expected]
    assert jobs.pop("report") == [""]
    assert set(jobs) <= {"all"}
    assert planned_jobs(study) == {}
