"""The pipeline on a real Slurm cluster, through the real profiles/slurm.

The cluster is tests/slurm/start-cluster.sh's lab: Slurm 22.05 from Debian packages on 127.0.0.1,
one node with fake GPUs, slurmdbd accounting (the executor plugin polls sacct), MPI through PMIx.
It needs root (it starts daemons) and apt (the packages, installed when missing): elsewhere these
tests skip, saying why; under CI=true they fail instead (CI runs them). The profile is used as
shipped; only its site variables are set for the lab (partitions, account, and memory and polling
sized for a small machine).

A small study (digits, fc64 + cnn1, one epoch; plus fc64 on 2 Horovod ranks when
``horovod.tensorflow.keras`` imports with MPI) runs once per module; the tests then read sacct,
the outputs and MLflow, run Snakemake again (nothing to submit) and after a zoo edit (only that
architecture's jobs and the report are resubmitted). A second study has its training job
signalled by Slurm (SIGTERM, as `--signal=TERM@120` does before a time limit): the profile's
retry resubmits it and it resumes from its checkpoint.
"""

import copy
import json
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import pytest
import yaml

from helpers.components import missing, need_root
from helpers.env import clean_env
from helpers.paths import REPO

pytestmark = pytest.mark.slurm

SCRIPTS = REPO / "tests" / "slurm"
STATE = Path(os.environ.get("AFTERNOON_SLURM_DIR", "/tmp/afternoon-slurm"))
ARCHS = ["fc64", "cnn1"]
HOROVOD_ARCH = "fc64_horovod"
WORKERS_ARCH = "cnn1_workers"  # cnn1 on 2 multi_worker workers: one Slurm job of 2 tasks
PORTS = (6817, 6818, 6819)  # slurmctld, slurmd, slurmdbd

# The profile's site variables, set for the lab cluster (see profiles/slurm/config.yaml).
LAB = {
    "AFTERNOON_SLURM_ACCOUNT": "lab",
    "AFTERNOON_SLURM_CPU_PARTITION": "lab-cpu",
    "AFTERNOON_SLURM_GPU_PARTITION": "lab-gpu",
    # The lab node has the machine's memory (85 %) and cores: small jobs, so several fit at once.
    "AFTERNOON_SLURM_MEM_MB": "1000",
    "AFTERNOON_SLURM_TRAIN_MEM_MB": "2000",
    # Jobs here take seconds: query their states soon after submission (the default is 40 s).
    "AFTERNOON_SLURM_STATUS_CHECK_S": "2",
}
RUN_TIMEOUT_S = 900


# --- the cluster ------------------------------------------------------------------------------


def _script(name: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(SCRIPTS / name)], env=env, capture_output=True, text=True, timeout=600
    )


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """The lab cluster, started for this module (and stopped after it, unless it was already
    running: then it is someone's, and stays)."""
    need_root("the lab Slurm cluster starts daemons as root")
    env = {**os.environ, "AFTERNOON_SLURM_DIR": str(STATE)}
    # `snakemake --profile slurm`, as users type it, finds the profile by name once
    # `make slurm-profile` linked it into the user's Snakemake profile directory (here a fresh
    # $XDG_CONFIG_HOME).
    env["XDG_CONFIG_HOME"] = str(tmp_path_factory.mktemp("xdg-config"))
    linked = subprocess.run(["make", "-s", "-C", str(REPO), "slurm-profile"], env=env,
                            capture_output=True, text=True, timeout=60)  # fmt: skip
    assert linked.returncode == 0, linked.stdout + linked.stderr
    profile = Path(env["XDG_CONFIG_HOME"]) / "snakemake" / "slurm"
    assert profile.resolve() == (REPO / "profiles" / "slurm").resolve()
    started = _script("start-cluster.sh", env)
    if started.returncode == 2:  # this machine cannot run it (the script says why, last)
        lines = started.stderr.strip().splitlines() or [f"{SCRIPTS}/start-cluster.sh exited 2"]
        missing(f"no lab Slurm cluster here: {lines[-1]}")
    assert started.returncode == 0, started.stdout + started.stderr
    ours = "already running" not in started.stderr
    env["SLURM_CONF"] = str(STATE / "etc" / "slurm.conf")
    try:
        yield env
    finally:
        if ours:
            stopped = _script("stop-cluster.sh", env)
            assert stopped.returncode == 0, stopped.stdout + stopped.stderr


def test_daemons_listen_on_loopback_only(cluster):
    listening = subprocess.run(
        ["ss", "-Hltnp"], capture_output=True, text=True, check=True
    ).stdout.splitlines()
    for port in PORTS:
        local = [line.split()[3] for line in listening if line.split()[3].endswith(f":{port}")]
        assert local, f"nothing listens on port {port}:\n" + "\n".join(listening)
        assert all(addr.startswith("127.") for addr in local), (port, local)


# --- Slurm accounting ---------------------------------------------------------------------------


@dataclass
class Job:
    job_id: str
    rule: str
    wildcards: str
    partition: str
    state: str
    tres: dict[str, str]


def sacct(env: dict, *args: str) -> list[list[str]]:
    out = subprocess.run(
        ["sacct", "--noheader", "--parsable2", *args],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [line.split("|") for line in out.splitlines() if line]


def jobs_of_run(env: dict, run_id: str, since: str) -> list[Job]:
    """The Slurm jobs one Snakemake invocation submitted: the plugin names every job after the
    invocation's run id and comments it rule_<rule>[_wildcards_<values>]."""
    jobs = []
    fields = "JobIDRaw,Comment,Partition,State,AllocTRES"
    for job_id, comment, partition, state, tres in sacct(
        env, "-X", "--starttime", since, "--name", run_id, "--format", fields
    ):
        match = re.fullmatch(r"rule_(?P<rule>.+?)(?:_wildcards_(?P<wildcards>.*))?", comment)
        assert match, f"job {job_id}: comment {comment!r} is not the plugin's"
        allocated = dict(item.split("=", 1) for item in tres.split(",") if "=" in item)
        wildcards = match["wildcards"] or ""
        jobs.append(Job(job_id, match["rule"], wildcards, partition, state, allocated))
    return jobs


def job_count(env: dict, since: str) -> int:
    return len(sacct(env, "-X", "--starttime", since, "--format", "JobIDRaw"))


def srun_step(env: dict, job_id: str) -> list[str]:
    """[tasks, state] of the job's first step (`<id>.0`: the srun its command ran in the batch
    step, which runs Snakemake); [] when it had none."""
    steps = sacct(env, "-j", job_id, "--format", "JobID,NTasks,State")
    return next((step[1:] for step in steps if step[0] == f"{job_id}.0"), [])


# --- the study ----------------------------------------------------------------------------------


def horovod_with_mpi() -> str | None:
    """None when horovod.tensorflow.keras imports (Keras 2, as the package sets it up) with MPI
    built in; else why not."""
    probe = (
        "import afternoon, horovod.tensorflow.keras as hvd;"
        "assert hvd.mpi_built(), 'Horovod was built without MPI: srun cannot start its ranks'"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO / "workflow")}
    try:
        done = subprocess.run(
            [sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=300
        )
    except subprocess.TimeoutExpired:
        return "importing horovod.tensorflow.keras took over 300 s"
    if done.returncode == 0:
        return None
    lines = done.stderr.strip().splitlines()
    return lines[-1] if lines else f"exit status {done.returncode}"


@dataclass
class Study:
    workdir: Path
    env: dict
    since: str
    archs: list[str]
    horovod: str | None  # None: the Horovod architecture is in the study; else why not
    run_id: str = ""
    jobs: list[Job] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)

    def command(self, *args: str) -> list[str]:
        """The snakemake command line with the real Slurm profile, by its name, as users type it
        (`make slurm-profile` linked it into the Snakemake profile directory of ``env``)."""
        return [
            sys.executable,
            "-m",
            "snakemake",
            "-s",
            str(REPO / "Snakefile"),
            "--directory",
            str(self.workdir),
            "--profile",
            "slurm",
            # The lab node has 2 cores: evaluations take one each, so two run side by side.
            "--set-threads",
            "evaluate=1",
            *args,
        ]

    def snakemake(self, label: str, *args: str) -> tuple[str, str]:
        """Run the workflow with the real Slurm profile; (output, the plugin's run id or '')."""
        command = self.command(*args)
        start = time.monotonic()
        try:
            done = subprocess.run(
                command, env=self.env, capture_output=True, text=True, timeout=RUN_TIMEOUT_S
            )
        except subprocess.TimeoutExpired as err:
            # Its jobs are cancelled when the cluster stops (stop-cluster.sh).
            tail = (err.stderr or b"")[-4000:].decode(errors="replace")
            pytest.fail(f"snakemake ({label}) ran over {RUN_TIMEOUT_S} s:\n{tail}")
        self.timings[label] = round(time.monotonic() - start, 1)
        output = done.stdout + done.stderr
        assert done.returncode == 0, output[-6000:]
        run_id = re.search(r"SLURM run ID: (\S+)", output)
        return output, run_id[1] if run_id else ""

    def expected_jobs(self, archs: list[str]) -> set[tuple[str, str]]:
        jobs = {("preprocess", "digits"), ("init_tracking", ""), ("report", "")}
        for arch in archs:
            jobs |= {("train", f"digits_{arch}"), ("evaluate", f"digits_{arch}")}
        return jobs


def lab_env(cluster) -> dict:
    """The environment Snakemake runs in: the lab's site variables, this interpreter's PATH, and
    the user's Snakemake profile directory where `make slurm-profile` linked the profile."""
    # Jobs run `python -m afternoon.cli` from the PATH they are submitted with (sbatch
    # --export=ALL): clean_env puts this interpreter's first.
    env = {k: v for k, v in clean_env().items() if not k.startswith("SLURM_")}
    env.update(LAB, AFTERNOON_SLURM_DIR=cluster["AFTERNOON_SLURM_DIR"])
    env.update(SLURM_CONF=cluster["SLURM_CONF"], XDG_CONFIG_HOME=cluster["XDG_CONFIG_HOME"])
    return env


def lab_zoo() -> dict:
    """The repository's zoo and WORKERS_ARCH: cnn1 on 2 multi_worker workers."""
    zoo = yaml.safe_load((REPO / "config" / "zoo.yaml").read_text())
    workers = copy.deepcopy(zoo["cnn1"])
    workers.update(
        description="cnn1, data-parallel on 2 TensorFlow workers",
        distributed={"backend": "multi_worker", "ranks": 2},
    )
    zoo[WORKERS_ARCH] = workers
    return zoo


@pytest.fixture(scope="module")
def study(cluster, tmp_path_factory):
    """The small study, run once on the cluster with the real profile."""
    workdir = tmp_path_factory.mktemp("slurm-study")
    (workdir / "config").mkdir()
    zoo = lab_zoo()
    archs = [*ARCHS, WORKERS_ARCH]
    why_not = horovod_with_mpi()
    if why_not is None:
        hvd = copy.deepcopy(zoo["fc64"])
        hvd.update(
            description="fc64, data-parallel on 2 Horovod ranks",
            distributed={"backend": "horovod", "ranks": 2},
        )
        zoo[HOROVOD_ARCH] = hvd
        archs.append(HOROVOD_ARCH)
    (workdir / "config" / "zoo.yaml").write_text(yaml.safe_dump(zoo, sort_keys=False))
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    config.update(study="slurm-lab", architectures=archs, zoo="config/zoo.yaml")
    # One core per training job (a Horovod job: one per rank), one epoch.
    config["training"].update(max_epochs=1, threads=1)
    (workdir / "config" / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))

    env = lab_env(cluster)
    since = (datetime.now() - timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M:%S")

    result = Study(workdir, env, since, archs, why_not)
    output, result.run_id = result.snakemake("first run")
    assert "Using profile slurm for setting default command line arguments" in output
    assert result.run_id, "the Slurm executor did not run"
    result.jobs = jobs_of_run(env, result.run_id, since)
    yield result
    print(f"\nslurm study timings (s): {result.timings}")


def test_every_job_ran_as_a_slurm_job_on_its_partition(study):
    ran = {(job.rule, job.wildcards) for job in study.jobs}
    assert ran == study.expected_jobs(study.archs)
    assert len(study.jobs) == len(ran), "a job was submitted twice"
    for job in study.jobs:
        assert job.state == "COMPLETED", job
        wanted = "lab-gpu" if job.rule == "train" else "lab-cpu"
        assert job.partition == wanted, job


def test_training_jobs_held_a_gpu_and_the_others_none(study):
    for job in study.jobs:
        if job.rule == "train":
            assert job.tres.get("gres/gpu") == "1", job
        else:
            assert "gres/gpu" not in job.tres, job


def test_outputs_are_complete(study):
    results = study.workdir / "results"
    for arch in study.archs:
        metrics = json.loads((results / f"runs/digits/{arch}/metrics.json").read_text())
        assert metrics["epochs_run"] == 1
        assert (results / f"runs/digits/{arch}/model.keras").stat().st_size > 0
        evaluation = json.loads((results / f"eval/digits/{arch}/metrics.json").read_text())
        assert evaluation["n_test"] == 450
    scores = (results / "report/scores.csv").read_text()
    for arch in study.archs:
        assert f"\n{arch}," in scores
    assert (results / "report/index.html").stat().st_size > 0


def test_mlflow_runs_carry_their_slurm_job_id(study):
    import mlflow

    marker = json.loads((study.workdir / "results/mlflow/tracking.json").read_text())
    client = mlflow.tracking.MlflowClient(marker["tracking_uri"])
    runs = {run.info.run_name: run for run in client.search_runs([marker["experiment_id"]])}
    assert sorted(runs) == sorted(f"{arch}@digits" for arch in study.archs)
    train_jobs = {job.wildcards: job.job_id for job in study.jobs if job.rule == "train"}
    for arch in study.archs:
        run = runs[f"{arch}@digits"]
        assert run.info.status == "FINISHED"
        assert run.data.tags["afternoon.slurm_job_id"] == train_jobs[f"digits_{arch}"]


def test_horovod_job_ran_two_mpi_tasks(study):
    if study.horovod is not None:
        missing(f"Horovod part skipped: {study.horovod}")
    (job,) = [j for j in study.jobs if (j.rule, j.wildcards) == ("train", f"digits_{HOROVOD_ARCH}")]
    assert job.tres.get("gres/gpu") == "1"
    # The batch step runs Snakemake; the step it starts (`srun --mpi=pmix -n 2`) runs the ranks.
    assert srun_step(study.env, job.job_id) == ["2", "COMPLETED"]
    metrics = json.loads(
        (study.workdir / f"results/runs/digits/{HOROVOD_ARCH}/metrics.json").read_text()
    )
    assert metrics["world_size"] == 2
    assert metrics["ranks_identical"] is True


def test_multi_worker_job_ran_two_tasks_in_one_slurm_job(study):
    """One Slurm job of 2 tasks (`srun -n 2` in it), its workers' cluster from Slurm's
    variables, equal weights on both, one MLflow run, test accuracy within 0.05 of cnn1 in one
    process."""
    (job,) = [j for j in study.jobs if (j.rule, j.wildcards) == ("train", f"digits_{WORKERS_ARCH}")]
    assert srun_step(study.env, job.job_id) == ["2", "COMPLETED"]
    results = study.workdir / "results"
    metrics = json.loads((results / f"runs/digits/{WORKERS_ARCH}/metrics.json").read_text())
    assert metrics["backend"] == "multi_worker" and metrics["world_size"] == 2
    assert metrics["ranks_identical"] is True and len(set(metrics["rank_weight_sha256"])) == 1
    import mlflow

    marker = json.loads((results / "mlflow/tracking.json").read_text())
    client = mlflow.tracking.MlflowClient(marker["tracking_uri"])
    runs = client.search_runs(
        [marker["experiment_id"]], f"tags.mlflow.runName = '{WORKERS_ARCH}@digits'"
    )
    (run,) = runs
    assert run.data.tags["afternoon.backend"] == "multi_worker"
    assert run.data.tags["afternoon.world_size"] == "2"
    # the cluster from Slurm: localhost, this job's block of ports (cluster.slurm_port_base)
    from afternoon.distributed.cluster import PORT_BASE, PORT_BLOCK, PORT_BLOCKS

    base = PORT_BASE + (int(job.job_id) % PORT_BLOCKS) * PORT_BLOCK
    assert run.data.tags["afternoon.worker_addresses"] == f"localhost:{base},localhost:{base + 1}"
    accuracy = {
        arch: json.loads((results / f"eval/digits/{arch}/metrics.json").read_text())[
            "test_accuracy"
        ]
        for arch in ("cnn1", WORKERS_ARCH)
    }
    assert abs(accuracy[WORKERS_ARCH] - accuracy["cnn1"]) < 0.05, accuracy


def test_a_config_on_the_command_line_leaves_the_workers_to_srun(cluster, tmp_path):
    """A `--config` on the command line replaces the profile's whole `config:` entry; the
    launchers are not in it (they are the jobs' resources): the multi_worker job is still one
    Slurm job whose 2 workers are the 2 tasks of an srun step, a cluster of world size 2."""
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "zoo.yaml").write_text(yaml.safe_dump(lab_zoo(), sort_keys=False))
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    config.update(study="slurm-config", zoo="config/zoo.yaml")
    config["training"].update(max_epochs=1, threads=1)
    (tmp_path / "config" / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    since = (datetime.now() - timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M:%S")
    study = Study(tmp_path, lab_env(cluster), since, [WORKERS_ARCH], "not used")
    settings = f"architectures=[{WORKERS_ARCH}]"
    _, run_id = study.snakemake("--config", "--until", "train", "--config", settings)
    (job,) = [job for job in jobs_of_run(study.env, run_id, since) if job.rule == "train"]
    assert (job.wildcards, job.state) == (f"digits_{WORKERS_ARCH}", "COMPLETED")
    assert srun_step(study.env, job.job_id) == ["2", "COMPLETED"]
    metrics = tmp_path / f"results/runs/digits/{WORKERS_ARCH}/metrics.json"
    metrics = json.loads(metrics.read_text())
    assert metrics["world_size"] == 2 and metrics["epochs_run"] == 1


def test_second_invocation_submits_nothing(study):
    before = job_count(study.env, study.since)
    output, _ = study.snakemake("nothing to do")
    assert "Nothing to be done" in output, output[-3000:]
    assert job_count(study.env, study.since) == before


def test_zoo_edit_resubmits_only_that_architecture_and_the_report(study):
    run_json = study.workdir / "results/runs/digits/cnn1/run.json"
    old_run = json.loads(run_json.read_text())["run_id"]
    zoo_path = study.workdir / "config" / "zoo.yaml"
    zoo = yaml.safe_load(zoo_path.read_text())
    zoo["cnn1"]["optimizer"]["learning_rate"] = 0.02
    zoo_path.write_text(yaml.safe_dump(zoo, sort_keys=False))
    _, run_id = study.snakemake("after a zoo edit")
    jobs = jobs_of_run(study.env, run_id, study.since)
    assert sorted((job.rule, job.wildcards) for job in jobs) == [
        ("evaluate", "digits_cnn1"),
        ("report", ""),
        ("train", "digits_cnn1"),
    ]
    assert all(job.state == "COMPLETED" for job in jobs), jobs
    # A new MLflow run, tagged with the new training job's id.
    import mlflow

    new_run = json.loads(run_json.read_text())["run_id"]
    assert new_run != old_run
    marker = json.loads((study.workdir / "results/mlflow/tracking.json").read_text())
    run = mlflow.tracking.MlflowClient(marker["tracking_uri"]).get_run(new_run)
    (train,) = [job for job in jobs if job.rule == "train"]
    assert run.data.tags["afternoon.slurm_job_id"] == train.job_id


def test_a_training_job_signalled_by_slurm_is_resubmitted_and_resumes(cluster, tmp_path):
    """What the profile's `--signal=TERM@120` does before a time limit: SIGTERM to the training
    job's steps. The job fails, the profile's retry resubmits it, and the second Slurm job resumes
    from the first one's last epoch checkpoint."""
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "zoo.yaml").write_text((REPO / "config" / "zoo.yaml").read_text())
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    config.update(study="slurm-preempt", architectures=["cnn_dropout"], zoo="config/zoo.yaml")
    config["training"].update(max_epochs=12, threads=1)
    (tmp_path / "config" / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    since = (datetime.now() - timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M:%S")
    study = Study(tmp_path, lab_env(cluster), since, ["cnn_dropout"], "not used")
    out = tmp_path / "results/runs/digits/cnn_dropout"
    state = out / "checkpoint" / "state.json"
    snakemake = subprocess.Popen(study.command(), env=study.env, stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT, text=True)  # fmt: skip
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while not (state.exists() and json.loads(state.read_text() or "{}").get("epoch", 0) >= 1):
        assert snakemake.poll() is None, snakemake.communicate()[0][-4000:]
        assert time.monotonic() < deadline, "no checkpoint in time"
        time.sleep(0.2)
    squeue = ["squeue", "-h", "-t", "RUNNING", "-p", "lab-gpu", "-o", "%i"]
    running = subprocess.run(squeue, env=study.env, capture_output=True, text=True).stdout.split()
    assert len(running) == 1, running
    subprocess.run(["scancel", "--signal=TERM", running[0]], env=study.env, check=True)
    output, _ = snakemake.communicate(timeout=RUN_TIMEOUT_S)
    assert snakemake.returncode == 0, output[-6000:]

    run_id = re.search(r"SLURM run ID: (\S+)", output)[1]
    trains = [job for job in jobs_of_run(study.env, run_id, since) if job.rule == "train"]
    assert [job.state for job in trains] == ["FAILED", "COMPLETED"], trains
    log = (tmp_path / "results/logs/train/digits/cnn_dropout.log").read_text()
    assert "from the checkpoint of epoch" in log
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["resumed_from_epoch"] >= 1 and metrics["epochs_run"] == 12
    assert not (out / "checkpoint").exists()


def test_each_run_costs_its_training_jobs_slurm_accounting(study):
    """Once a training job has ended, its evaluation job reads the job's accounting: elapsed x
    allocated CPUs and GPUs (sacct), in the evaluation's metrics.json and the MLflow run."""
    import mlflow

    marker = json.loads((study.workdir / "results/mlflow/tracking.json").read_text())
    client = mlflow.tracking.MlflowClient(marker["tracking_uri"])
    for job in (job for job in study.jobs if job.rule == "train"):
        arch = job.wildcards.removeprefix("digits_")
        # The job that trained the run on disk now: an earlier test (the zoo edit) retrains one
        # architecture in a job of its own, after the study's first invocation.
        record = json.loads((study.workdir / f"results/runs/digits/{arch}/run.json").read_text())
        job_id = record["tags"]["afternoon.slurm_job_id"]
        fields = "ElapsedRaw,AllocTRES"
        ((elapsed, tres),) = sacct(study.env, "-X", "-j", job_id, "--format", fields)
        allocated = dict(item.split("=", 1) for item in tres.split(",") if "=" in item)
        cpus, gpus = float(allocated["cpu"]), float(allocated["gres/gpu"])
        evaluation = study.workdir / f"results/eval/digits/{arch}/metrics.json"
        cost = json.loads(evaluation.read_text())
        assert cost["slurm_elapsed_s"] == float(elapsed)
        assert cost["cost_slurm_cpu_s"] == float(elapsed) * cpus
        assert cost["cost_slurm_gpu_s"] == float(elapsed) * gpus
        logged = client.get_run(record["run_id"]).data.metrics
        assert logged["cost_slurm_gpu_s"] == cost["cost_slurm_gpu_s"]
        assert logged["cost_core_s"] > 0  # the training job's own clock, too


def test_a_training_job_requeued_by_slurm_resumes_from_its_checkpoint(cluster, tmp_path):
    """A preemption as Slurm does it: the profile submits training with --requeue and
    --signal=TERM@120 (read back from Slurm and from the plugin's sbatch call); `scontrol requeue`
    stops the running job (SIGTERM to its steps) and queues it again under the same job id; the
    second start resumes from the first one's checkpoint and Snakemake waits for it."""
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "zoo.yaml").write_text((REPO / "config" / "zoo.yaml").read_text())
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    config.update(study="slurm-requeue", architectures=["cnn_dropout"], zoo="config/zoo.yaml")
    config["training"].update(max_epochs=12, threads=1)
    (tmp_path / "config" / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    since = (datetime.now() - timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M:%S")
    study = Study(tmp_path, lab_env(cluster), since, ["cnn_dropout"], "not used")
    out = tmp_path / "results/runs/digits/cnn_dropout"
    state = out / "checkpoint" / "state.json"
    snakemake = subprocess.Popen(study.command("--verbose"), env=study.env, stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT, text=True)  # fmt: skip
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while not (state.exists() and json.loads(state.read_text() or "{}").get("epoch", 0) >= 1):
        assert snakemake.poll() is None, snakemake.communicate()[0][-4000:]
        assert time.monotonic() < deadline, "no checkpoint in time"
        time.sleep(0.2)
    squeue = ["squeue", "-h", "-t", "RUNNING", "-p", "lab-gpu", "-o", "%i"]
    (job_id,) = subprocess.run(squeue, env=study.env, capture_output=True, text=True).stdout.split()
    shown = subprocess.run(["scontrol", "show", "job", job_id], env=study.env, capture_output=True,
                           text=True, check=True).stdout  # fmt: skip
    assert "Requeue=1" in shown and "Restarts=0" in shown
    subprocess.run(["scontrol", "requeue", job_id], env=study.env, check=True)
    # Back in the queue, a requeued job waits ~2 min before it may start again (BeginTime): in a
    # test, release it at once (once it is PENDING: before, the update is overridden).
    show = ["scontrol", "show", "job", job_id]
    while "JobState=PENDING" not in subprocess.run(show, env=study.env, capture_output=True,
                                                   text=True).stdout:  # fmt: skip
        assert time.monotonic() < deadline, "the requeued job never came back to the queue"
        time.sleep(0.2)
    update = ["scontrol", "update", f"JobId={job_id}", "StartTime=now"]
    subprocess.run(update, env=study.env, check=True)
    output, _ = snakemake.communicate(timeout=RUN_TIMEOUT_S)
    assert snakemake.returncode == 0, output[-6000:]

    calls = [line for line in output.splitlines() if "sbatch call:" in line]
    (sbatch,) = [line for line in calls if "rule_train" in line]
    assert " --requeue" in sbatch and " --signal=TERM@120" in sbatch, sbatch
    shown = subprocess.run(["scontrol", "show", "job", job_id], env=study.env, capture_output=True,
                           text=True, check=True).stdout  # fmt: skip
    assert "Restarts=1" in shown and "JobState=COMPLETED" in shown, shown
    run_id = re.search(r"SLURM run ID: (\S+)", output)[1]
    trains = [job for job in jobs_of_run(study.env, run_id, since) if job.rule == "train"]
    assert [(job.job_id, job.state) for job in trains] == [(job_id, "COMPLETED")], trains
    log = (tmp_path / "results/logs/train/digits/cnn_dropout.log").read_text()
    assert "from the checkpoint of epoch" in log
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["resumed_from_epoch"] >= 1 and metrics["epochs_run"] == 12
    assert not (out / "checkpoint").exists()
