"""A hyperparameter search on the lab Slurm cluster through the real profiles/slurm: one Slurm job
of a task per worker on the GPU partition, its chief (Keras Tuner's oracle) in the job's batch
step starting the 2 workers as one srun step, finding each other on the address Slurm gives the
node, running the trials Hyperband predicts."""

import json
from datetime import datetime, timedelta

import pytest
import yaml

from helpers.search import search_dir, summary, write_search_study
from test_slurm import Study, cluster, jobs_of_run, lab_env, srun_step  # noqa: F401 (a fixture)

pytestmark = pytest.mark.slurm

SEARCH = "digits_tiny"  # Hyperband, max_epochs 3, factor 3: 6 trials; 2 workers


def test_a_search_is_one_slurm_job_of_a_task_per_worker(cluster, tmp_path):  # noqa: F811
    """With a `--config` on the command line (which replaces the profile's `config:` entry) and
    no --overcommit: the job holds a core per worker (training.threads 1), as many as the lab
    node has; the idle chief needs no task of its own."""
    workdir = write_search_study(tmp_path, run=[])
    config_path = workdir / "config/config.yaml"
    config = yaml.safe_load(config_path.read_text())
    config["training"]["threads"] = 1  # a core per worker
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    env = lab_env(cluster)
    since = (datetime.now() - timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M:%S")
    study = Study(workdir, env, since, ["fc64"], horovod="not part of this study")
    selected = ("--config", f"searches={{run: [{SEARCH}]}}")
    output, run_id = study.snakemake("search", "--until", "tune", *selected)
    assert run_id, output[-3000:]
    (job,) = [job for job in jobs_of_run(env, run_id, since) if job.rule == "tune"]
    assert job.state == "COMPLETED" and job.partition == "lab-gpu", job
    assert job.tres.get("gres/gpu") == "1" and job.tres.get("cpu") == "2", job
    assert srun_step(env, job.job_id) == ["2", "COMPLETED"]
    done = summary(workdir, SEARCH)
    assert done["trials"] == done["predicted_trials"] == 6 and done["completed"] == 6
    state = search_dir(workdir, SEARCH) / "state"
    chief = json.loads((state / "chief.json").read_text())
    assert chief["host"] == "127.0.0.1" and chief["slurm_job_id"] == job.job_id
    tuners = {json.loads(p.read_text())["tuner_id"] for p in state.glob("trials/*/trial.json")}
    assert tuners == {"tuner0", "tuner1"}
