"""The tracking server for many concurrent cluster jobs: `mlflow server` on PostgreSQL (a private
cluster on 127.0.0.1, the `postgres` fixture). A 2-worker search and the study's training and
evaluation jobs log to it at once, and nothing is lost: every run, every epoch, every status."""

from __future__ import annotations

import contextlib
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
        every = client.search_runs([experiment.experiment_id], max_results=1000)
        listed = {r.info.run_id: (r.info.run_name, r.info.status) for r in every}
    # The server's store is PostgreSQL: every run is a row of its runs table, every epoch a row
    # of its metrics table (read without MLflow, with the server stopped).
    stored = query(backend, "SELECT r.run_uuid, r.name, r.status FROM runs r JOIN experiments e"
                   " ON e.experiment_id = r.experiment_id WHERE e.name = %s", STUDY)  # fmt: skip
    assert {uuid: (name, status) for uuid, name, status in stored} == listed
    assert len(listed) == 1 + 6 + len(folders)  # the search, its trials, the training runs
    for name, folder in folders.items():
        metrics = json.loads((workdir / "results" / folder / "metrics.json").read_text())
        ((epochs,),) = query(backend, "SELECT count(*) FROM metrics m JOIN runs r ON r.run_uuid ="
                             " m.run_uuid WHERE r.name = %s AND m.key = 'loss'", name)  # fmt: skip
        assert epochs == metrics["epochs_run"], name


def query(uri: str, sql: str, *args) -> list[tuple]:
    """The rows of ``sql`` (%s placeholders: ``args``) in the PostgreSQL database at ``uri``."""
    import psycopg2

    with contextlib.closing(psycopg2.connect(uri)) as connection, connection.cursor() as cursor:
        cursor.execute(sql, args)
        return cursor.fetchall()
