"""A hyperparameter search on the lab Slurm cluster through the real profiles/slurm: one Slurm job
of 3 tasks (Keras Tuner's chief and 2 workers) on the GPU partition, started by srun, finding each
other on the address Slurm gives the node, running the trials Hyperband predicts."""

import json
from datetime import datetime, timedelta

import pytest
import yaml

from helpers.search import search_dir, summary, write_search_study
from test_slurm import Study, cluster, jobs_of_run, lab_env, sacct  # noqa: F401 (cluster: a fixture)

pytestmark = pytest.mark.slurm

SEARCH = "digits_tiny"  # Hyperband, max_epochs 3, factor 3: 6 trials; 2 workers


def test_a_search_is_one_slurm_job_of_a_chief_and_two_workers(cluster, tmp_path):  # noqa: F811
    workdir = write_search_study(tmp_path, run=[SEARCH])
    config_path = workdir / "config/config.yaml"
    config = yaml.safe_load(config_path.read_text())
    config["training"]["threads"] = 1  # a core per task
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    # The lab node has 2 cores for the job's 3 tasks: its idle chief shares one (--overcommit,
    # for the allocation and for the step srun starts in it).
    env = lab_env(cluster) | {
        "AFTERNOON_SLURM_SEARCH_EXTRA": "--overcommit",
        "AFTERNOON_SLURM_SEARCH_LAUNCHER": "srun --kill-on-bad-exit=1 --overcommit",
    }
    since = (datetime.now() - timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M:%S")
    study = Study(workdir, env, since, ["fc64"], horovod="not part of this study")
    output, run_id = study.snakemake("search", "--until", "tune")
    assert run_id, output[-3000:]
    (job,) = [job for job in jobs_of_run(env, run_id, since) if job.rule == "tune"]
    assert job.state == "COMPLETED" and job.partition == "lab-gpu", job
    assert job.tres.get("gres/gpu") == "1", job
    steps = sacct(env, "-j", job.job_id, "--format", "JobID,NTasks,State")
    (tasks,) = [step for step in steps if step[0] == f"{job.job_id}.0"]
    assert tasks[1:] == ["3", "COMPLETED"], steps
    done = summary(workdir, SEARCH)
    assert done["trials"] == done["predicted_trials"] == 6 and done["completed"] == 6
    state = search_dir(workdir, SEARCH) / "state"
    chief = json.loads((state / "chief.json").read_text())
    assert chief["host"] == "127.0.0.1" and chief["slurm_job_id"] == job.job_id
    tuners = {json.loads(p.read_text())["tuner_id"] for p in state.glob("trials/*/trial.json")}
    assert tuners == {"tuner0", "tuner1"}
