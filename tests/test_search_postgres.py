"""The tracking server for many concurrent cluster jobs: `mlflow server` on PostgreSQL (a private
cluster on 127.0.0.1, the `postgres` fixture). A 2-worker search and the study's training and
evaluation jobs log to it at once, and nothing is lost: every run, every epoch, every status."""

from __future__ import annotations

import json

import pandas as pd

from helpers.runners import run_snakemake
from helpers.search import STUDY, search_dir, search_runs, summary, write_search_study
from helpers.services import MlflowServer

SEARCH = "digits_tiny"


def test_a_search_and_training_jobs_log_everything_to_a_server_on_postgresql(postgres, tmp_path):
    (tmp_path / "server").mkdir()
    backend = postgres.createdb("mlflow_search")
    with MlflowServer(tmp_path / "server", backend=backend) as server:
        workdir = write_search_study(tmp_path / "study", run=[SEARCH], archs=("fc64", "cnn1"))
        run_snakemake(workdir, "--cores", "2", env={"MLFLOW_TRACKING_URI": server.uri})
        client, parent, children = search_runs(workdir, SEARCH, uri=server.uri)
        done = summary(workdir, SEARCH)
        trials = pd.read_csv(search_dir(workdir, SEARCH) / "trials.csv", dtype={"trial_id": str})
        assert parent.info.status == "FINISHED" and len(children) == len(trials) == 6
        by_trial = {run.data.tags["afternoon.trial_id"]: run for run in children}
        for trial in trials.itertuples():
            run = by_trial[trial.trial_id]
            assert run.info.status == "FINISHED", trial
            steps = [m.step for m in client.get_metric_history(run.info.run_id, "val_accuracy")]
            assert sorted(steps) == list(range(trial.initial_epoch + 1, trial.epochs + 1)), trial
        assert by_trial[done["best_trial"]].data.tags["afternoon.best_trial"] == "true"
        experiment = client.get_experiment_by_name(STUDY)
        runs = {r.info.run_name: r for r in client.search_runs([experiment.experiment_id])}
        folders = {"fc64@digits": "runs/digits/fc64", "cnn1@digits": "runs/digits/cnn1",
                   f"{SEARCH}-best@digits": f"search/{SEARCH}/digits/best"}  # fmt: skip
        for name, folder in folders.items():
            run = runs[name]
            metrics = json.loads((workdir / "results" / folder / "metrics.json").read_text())
            record = json.loads((workdir / "results" / folder / "run.json").read_text())
            assert record["run_id"] == run.info.run_id and record["tracking_uri"] == server.uri
            assert run.info.status == "FINISHED" and "test_accuracy" in run.data.metrics, name
            history = client.get_metric_history(run.info.run_id, "loss")
            assert len(history) == metrics["epochs_run"], name
        assert not list((workdir / "results/mlflow/pending").glob("*.json"))  # nothing to sync
