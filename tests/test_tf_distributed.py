"""TensorFlow's own data parallelism: backend multi_worker (2 local workers under the launcher,
MultiWorkerMirroredStrategy) and mirrored (MirroredStrategy, one replica on this CPU, and two on
two logical CPU devices), against the one-process run; what the workers listen on; a killed
2-worker job resumes; a backend that is not installed is one line. No Horovod, no MPI: these run
wherever TensorFlow does."""

import ipaddress
import json
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from afternoon.config import job_spec, load_yaml, load_zoo
from afternoon.defaults import filled
from helpers import runners
from helpers.components import require
from helpers.paths import REPO
from helpers.runners import snakemake_command
from test_horovod import accuracy_on_test_set, init_tracking, planned_training, train_args
from test_resume import OUTPUTS, assert_same_training, saved_epoch, start_and_stop

pytestmark = pytest.mark.slow

LAUNCH = [sys.executable, "-m", "afternoon.distributed.launch", "-n", "2"]
ARCH, EPOCHS = "cnn1", 5  # SGD with momentum: the warm-up's momentum correction is exercised
# How ss shows a socket bound to every interface (IPv4's unspecified address, written out from
# the integer: tests/test_safe_defaults.py refuses the literal anywhere in the repository).
WILDCARD = {str(ipaddress.IPv4Address(0)), "*", "[::]"}
MULTI_WORKER = {"backend": "multi_worker", "ranks": 2, "scale_lr": True, "warmup_epochs": 1}


def run(args, check=True, env=None):
    return runners.run(args, check=check, env=env)


def spec_for(arch=ARCH, **changes) -> dict:
    config = load_yaml(REPO / "config/config.yaml")
    spec = job_spec(config, load_zoo(REPO / "config/zoo.yaml"), "digits", arch)
    return filled({**spec, "epochs": EPOCHS, **changes}, has_validation=True)


def mlflow_runs(marker: Path) -> list:
    import mlflow

    saved = json.loads(marker.read_text())
    client = mlflow.tracking.MlflowClient(saved["tracking_uri"])
    return client.search_runs([saved["experiment_id"]])


@pytest.fixture(scope="module")
def jobs(digits, tmp_path_factory):
    """cnn1 trained in one process, on 2 multi_worker workers (the launcher) and mirrored (one
    CPU replica), each with its own MLflow store (the 2-worker one must hold exactly one run)."""
    root = tmp_path_factory.mktemp("tf-distributed")
    data = {"npz": digits["npz"], "card": digits["card"], "root": root}
    outs = {name: root / name for name in ("single", "workers", "mirrored")}
    markers = {name: init_tracking(root, name) for name in outs}
    run(train_args(data, spec_for(), outs["single"], markers["single"]))
    spec = spec_for(distributed=MULTI_WORKER)
    logs = {"workers": run(LAUNCH + train_args(data, spec, outs["workers"], markers["workers"]))}
    spec = spec_for(distributed={"backend": "mirrored"})
    logs["mirrored"] = run(train_args(data, spec, outs["mirrored"], markers["mirrored"]))
    return {**data, **outs, "markers": markers, "logs": logs}


def test_two_workers_write_the_outputs_once_with_the_warmed_up_rate(jobs):
    out = jobs["workers"]
    assert {*OUTPUTS, "tensorboard"} <= {p.name for p in out.iterdir()}
    assert any((out / "tensorboard").rglob("events.out.tfevents.*"))
    history = pd.read_csv(out / "history.csv")
    assert list(history["epoch"]) == list(range(1, EPOCHS + 1))
    # warm-up: from the one-worker rate to 2 x 0.01 by the end of epoch 1 (Horovod's formula)
    assert list(history["lr"]) == pytest.approx([0.02] * EPOCHS)
    assert not (out / "checkpoint").exists()


def test_both_workers_end_with_identical_weights(jobs):
    metrics = json.loads((jobs["workers"] / "metrics.json").read_text())
    assert metrics["backend"] == "multi_worker"
    assert metrics["world_size"] == 2 and metrics["workers"] == 2
    assert metrics["threads_per_rank"] == 1 and metrics["learning_rate"] == pytest.approx(0.02)
    checksums = metrics["rank_weight_sha256"]
    assert len(checksums) == 2 and checksums[0] == checksums[1] and metrics["ranks_identical"]


def test_test_accuracy_is_within_005_of_one_process(jobs):
    single = accuracy_on_test_set(jobs["single"] / "model.keras", jobs["npz"])
    workers = accuracy_on_test_set(jobs["workers"] / "model.keras", jobs["npz"])
    assert workers > 0.85 and abs(workers - single) < 0.05


def test_one_mlflow_run_tagged_with_backend_and_world_size(jobs):
    (run_,) = mlflow_runs(jobs["markers"]["workers"])
    assert run_.info.status == "FINISHED"
    assert run_.info.run_id == json.loads((jobs["workers"] / "run.json").read_text())["run_id"]
    tags = run_.data.tags
    assert tags["afternoon.backend"] == "multi_worker" and tags["afternoon.world_size"] == "2"
    addresses = tags["afternoon.worker_addresses"].split(",")
    assert len(addresses) == 2 and all(a.startswith("127.0.0.1:") for a in addresses)


def test_mirrored_on_a_cpu_node_trains_one_replica_and_says_so(jobs):
    log = jobs["logs"]["mirrored"].stderr
    assert "mirrored: no GPU on this node, training on the CPU (CPU:0)" in log
    metrics = json.loads((jobs["mirrored"] / "metrics.json").read_text())
    assert metrics["backend"] == "mirrored" and metrics["world_size"] == 1
    assert metrics["learning_rate"] == pytest.approx(0.01)  # one replica: nothing to scale
    assert "lr" not in pd.read_csv(jobs["mirrored"] / "history.csv")  # no warm-up either
    (run_,) = mlflow_runs(jobs["markers"]["mirrored"])
    assert run_.data.tags["afternoon.devices"] == "CPU:0 (no GPU on this node)"
    assert run_.data.tags["afternoon.backend"] == "mirrored"
    mirrored = accuracy_on_test_set(jobs["mirrored"] / "model.keras", jobs["npz"])
    single = accuracy_on_test_set(jobs["single"] / "model.keras", jobs["npz"])
    assert abs(mirrored - single) < 0.05


# Two logical devices on this CPU (set before TensorFlow starts): MirroredStrategy takes every
# logical device of a node without a GPU, as it takes every GPU of a node with several.
TWO_CPU_DEVICES = (
    "import afternoon, tensorflow as tf; tf.config.set_logical_device_configuration("
    "tf.config.list_physical_devices('CPU')[0], [tf.config.LogicalDeviceConfiguration()] * 2)"
)


def test_mirrored_on_two_cpu_devices_trains_two_replicas_in_sync(digits, tmp_path):
    marker = init_tracking(tmp_path, "mirrored-two")
    out, spec = tmp_path / "out", spec_for(epochs=2, distributed={"backend": "mirrored"})
    args = train_args(digits, spec, out, marker)
    cli = args[args.index("afternoon.cli") + 1 :]
    result = run(python_m_after(TWO_CPU_DEVICES, "afternoon.cli", cli))
    assert "mirrored: no GPU on this node, training on the CPU (CPU:0,CPU:1)" in result.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["backend"] == "mirrored" and metrics["world_size"] == 2
    assert metrics["workers"] == 1 and metrics["ranks_identical"] is True
    # the learning rate scaled by the two replicas, warmed up to it over epoch 1
    assert metrics["learning_rate"] == pytest.approx(0.02)
    assert list(pd.read_csv(out / "history.csv")["lr"]) == pytest.approx([0.02, 0.02])
    # the saved model holds the replicas' weights
    assert metrics["weights_sha256"] == metrics["rank_weight_sha256"][0]
    (run_,) = mlflow_runs(marker)
    assert run_.data.tags["afternoon.world_size"] == "2"
    assert run_.data.tags["afternoon.devices"] == "CPU:0,CPU:1 (no GPU on this node)"
    assert accuracy_on_test_set(out / "model.keras", digits["npz"]) > 0.5


def test_what_the_workers_gRPC_servers_listen_on(tmp_path):
    """TensorFlow binds each worker's server to the wildcard address whatever the cluster's address
    (no bind-address option): the README says so, and this test notices if that changes."""
    require(shutil.which("ss"), "no ss here (Debian package iproute2)")
    script = tmp_path / "listen.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import json, os, subprocess, afternoon
            import tensorflow as tf
            strategy = tf.distribute.MultiWorkerMirroredStrategy()  # waits for both workers
            if strategy.cluster_resolver.task_id == 0:
                cluster = json.loads(os.environ["TF_CONFIG"])["cluster"]
                ports = [address.split(":")[1] for address in cluster["worker"]]
                listed = subprocess.run(["ss", "-ltnH"], capture_output=True, text=True).stdout
                open({str(tmp_path / "seen.json")!r}, "w").write(json.dumps([ports, listed]))
            strategy.reduce("SUM", strategy.run(lambda: tf.constant(1.0)), axis=None)  # then exit
            """
        )
    )
    run([*LAUNCH, sys.executable, str(script)])
    ports, listed = json.loads((tmp_path / "seen.json").read_text())
    sockets = {line.split()[3] for line in listed.splitlines()}
    for port in ports:
        bound = {s.rsplit(":", 1)[0] for s in sockets if s.rsplit(":", 1)[1] == port}
        assert bound and bound <= WILDCARD, (port, bound)


PRIVATE_LISTENER = """
import json, os, pathlib, subprocess, time, afternoon
import tensorflow as tf
strategy = tf.distribute.MultiWorkerMirroredStrategy()  # both servers up once this returns
if strategy.cluster_resolver.task_id == 0:
    ports = [a.split(":")[1] for a in json.loads(os.environ["TF_CONFIG"])["cluster"]["worker"]]
    inside = subprocess.run(["ss", "-ltnH"], capture_output=True, text=True).stdout
    pathlib.Path({seen!r}).write_text(json.dumps([ports, inside]))
    while not pathlib.Path({done!r}).exists():
        time.sleep(0.1)
strategy.reduce("SUM", strategy.run(lambda: tf.constant(1.0)), axis=None)
"""


def test_private_network_hides_the_workers_servers_from_the_host(tmp_path):
    """``launch --private-network``: the workers (and their wildcard-bound servers) live in a
    network namespace with only loopback; from the machine's own namespace nothing listens there."""
    require(shutil.which("ss") and shutil.which("unshare"), "no ss or unshare here")
    seen, done = tmp_path / "seen.json", tmp_path / "done"
    script = PRIVATE_LISTENER.format(seen=str(seen), done=str(done))
    launcher = subprocess.Popen([*LAUNCH, "--private-network", sys.executable, "-c", script])
    try:
        deadline = time.monotonic() + 120
        while not seen.exists():
            assert launcher.poll() is None and time.monotonic() < deadline
            time.sleep(0.1)
        ports, inside = json.loads(seen.read_text())
        host = subprocess.run(["ss", "-ltnH"], capture_output=True, text=True).stdout
    finally:
        done.touch()
    assert launcher.wait(timeout=60) == 0
    listening = {tuple(line.split()[3].rsplit(":", 1)) for line in inside.splitlines()}
    for port in ports:  # as ever, on every interface: inside the namespace, only loopback
        assert {a for a, p in listening if p == port} & WILDCARD, (port, inside)
    outside = {line.split()[3].rsplit(":", 1)[1] for line in host.splitlines()}
    assert not set(ports) & outside, "a worker's server is reachable from the host's network"


RESUMED = spec_for("cnn_batchnorm", epochs=4, distributed=MULTI_WORKER)


@pytest.fixture(scope="module")
def uninterrupted(digits, tmp_path_factory):
    """The resume tests' 2-worker job trained without interruption, and its tracking store."""
    root = tmp_path_factory.mktemp("tf-resume")
    marker = init_tracking(root, "resume")
    data = {"npz": digits["npz"], "card": digits["card"], "marker": marker, "root": root}
    run(LAUNCH + train_args(data, RESUMED, root / "uninterrupted", marker))
    return data


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
def test_a_stopped_two_worker_job_resumes_to_identical_weights(uninterrupted, sig):
    """Batch norm (moving statistics averaged over the workers every epoch, so the chief's
    checkpoint holds what every worker holds). SIGTERM to the launcher reaches both workers,
    which stop together at the next epoch's start; SIGKILL kills the launcher and its workers."""
    data, out = uninterrupted, uninterrupted["root"] / sig.name
    command = LAUNCH + train_args(data, RESUMED, out, data["marker"])
    process, stderr = start_and_stop(command, out, sig)
    assert workers_gone(out), "a worker outlived its launcher"
    assert [name for name in OUTPUTS if (out / name).exists()] == []
    epoch = saved_epoch(out)
    if sig == signal.SIGTERM:
        assert process.returncode == 128 + signal.SIGTERM
        stopped = [line for line in stderr.splitlines() if line.startswith("afternoon: stopped")]
        # each worker says it in one line; the chief names the job and its checkpoint
        assert sorted(stopped)[0] == "afternoon: stopped: SIGTERM received" and len(stopped) == 2
        (last,) = [line for line in stopped if "cnn_batchnorm@digits: SIGTERM received; " in line]
        assert f"the checkpoint of epoch {epoch} in {out / 'checkpoint'}" in last
        state = json.loads((out / "checkpoint" / "state.json").read_text())
        (killed,) = [r for r in mlflow_runs(data["marker"]) if r.info.run_id == state["run_id"]]
        assert killed.info.status == "KILLED"
    else:
        assert process.returncode == -signal.SIGKILL
    resumed = run(command)
    assert f"from the checkpoint of epoch {epoch}" in resumed.stderr
    assert_same_training(out, data["root"] / "uninterrupted")
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["resumed_from_epoch"] == epoch and metrics["ranks_identical"] is True


def workers_gone(out: Path, timeout_s: float = 10) -> bool:
    """No worker of the job writing ``out`` left (they die with the launcher: PR_SET_PDEATHSIG;
    the kernel may take a moment)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = subprocess.run(["pgrep", "-f", "--", f"--run {out}/"], capture_output=True)
        if found.returncode == 1:  # none
            return True
        time.sleep(0.1)
    return False


# --- No training: the launcher a job gets, and a backend that is not installed ---------------


def test_the_train_rule_starts_multi_worker_under_the_worker_launcher(tmp_path):
    (tmp_path / "config").mkdir()
    zoo = yaml.safe_load((REPO / "config/zoo.yaml").read_text())
    zoo["cnn1"]["distributed"] = {"backend": "multi_worker", "ranks": 2}
    zoo["fc64"]["distributed"] = {"backend": "mirrored"}
    (tmp_path / "config/zoo.yaml").write_text(yaml.safe_dump(zoo, sort_keys=False))
    config = yaml.safe_load((REPO / "config/config.yaml").read_text())
    config.update(architectures=["fc64", "cnn1"])
    config["training"]["threads"] = 4
    (tmp_path / "config/config.yaml").write_text(yaml.safe_dump(config))

    jobs = planned_training(tmp_path)
    launcher = "python -m afternoon.distributed.launch"
    assert jobs["cnn1"]["shell"].startswith(f"{launcher} -n 2 python -m afternoon.cli train ")
    assert "mpi=multi_worker, tasks=2, cpus_per_task=2" in jobs["cnn1"]["resources"]
    assert jobs["fc64"]["shell"].startswith("python -m afternoon.cli train ")  # one process
    mine = 'training={worker_launcher: "srun --kill-on-bad-exit=1 --cpus-per-task={cpus}"}'
    jobs = planned_training(tmp_path, "--config", mine)
    assert jobs["cnn1"]["shell"].startswith("srun --kill-on-bad-exit=1 --cpus-per-task=2 -n 2 ")
    # the profile's NODES / TASKS_PER_NODE: --nodes and --ntasks-per-node instead of --ntasks
    config["training"].update(nodes=1, tasks_per_node=2)
    (tmp_path / "config/config.yaml").write_text(yaml.safe_dump(config))
    jobs = planned_training(tmp_path)
    assert "nodes=1, tasks_per_node=2" in jobs["cnn1"]["resources"]
    assert "tasks=" not in jobs["cnn1"]["resources"].replace("tasks_per_node=", "")
    assert jobs["cnn1"]["shell"].startswith(f"{launcher} -n 2 python -m afternoon.cli train ")
    assert "nodes=" not in jobs["fc64"]["resources"]  # one process: not spread
    config["training"].update(nodes=None, tasks_per_node=3)
    (tmp_path / "config/config.yaml").write_text(yaml.safe_dump(config))
    wrong = run(snakemake_command(tmp_path, "-n"), check=False)
    assert wrong.returncode != 0
    assert wrong.stderr.strip().splitlines()[-1] == (
        "afternoon: config: training.tasks_per_node 3 (nodes None) cannot place the 2 ranks of "
        "architecture 'cnn1' (nodes x tasks_per_node must be the ranks, at least 2 per node)"
    )


def python_m_after(prelude: str, module: str, args: list[str]) -> list[str]:
    """``python -m module args`` in a Python that ran ``prelude`` (one line of code) first."""
    code = f"import sys, runpy; {prelude}; sys.argv[0] = {module!r}; "
    code += f"runpy.run_module({module!r}, run_name='__main__')"
    return [sys.executable, "-c", code, *args]


def without_horovod(module: str, args: list[str]) -> list[str]:
    """``python -m module args`` in a Python where ``import horovod`` fails."""
    return python_m_after("sys.modules['horovod'] = None", module, args)


def test_a_backend_that_is_not_installed_is_one_line_at_dry_run_and_at_job_start(digits, tmp_path):
    """Horovod hidden from Python (as where it was never built): the dry run refuses a horovod
    architecture in one line; the train stage, started anyway, says the same."""
    (tmp_path / "config").mkdir()
    zoo = yaml.safe_load((REPO / "config/zoo.yaml").read_text())
    zoo["cnn1"]["distributed"] = {"backend": "horovod", "ranks": 2}
    (tmp_path / "config/zoo.yaml").write_text(yaml.safe_dump(zoo, sort_keys=False))
    config = yaml.safe_load((REPO / "config/config.yaml").read_text())
    config.update(architectures=["fc64", "cnn1"])
    (tmp_path / "config/config.yaml").write_text(yaml.safe_dump(config))
    args = snakemake_command(tmp_path, "-n")
    result = run(without_horovod("snakemake", args[args.index("-m") + 2 :]), check=False)
    assert result.returncode != 0
    (line,) = [x for x in (result.stdout + result.stderr).splitlines() if "afternoon:" in x]
    assert line == (
        "afternoon: config/zoo.yaml: architecture 'cnn1' on digits: distributed.backend horovod "
        "is not available here (No module named 'horovod'): build Horovod 0.28.1 (`make "
        "horovod`, see README) or use backend multi_worker (TensorFlow's own, no MPI)"
    )
    marker = init_tracking(tmp_path, "no-horovod")
    args = train_args(digits, spec_for(distributed={"backend": "horovod", "ranks": 2}),
                      tmp_path / "out", marker)  # fmt: skip
    result = run(
        without_horovod("afternoon.cli", args[args.index("afternoon.cli") + 1 :]), check=False
    )
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("afternoon: error: distributed.backend horovod is not available here (")
    assert last.endswith("or use backend multi_worker (TensorFlow's own, no MPI)")
    assert not (tmp_path / "out").exists()


WORKER = """
import json, os, signal, sys, time
index = json.loads(os.environ["TF_CONFIG"])["task"]["index"]
print(index, os.environ["TF_CONFIG"], flush=True)
signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
if index == 1 and sys.argv[1] == "fail":
    sys.exit(3)
time.sleep(60)
"""


def test_the_launcher_stops_the_others_when_a_worker_fails_and_passes_sigterm_on():
    """No TensorFlow: N processes with their TF_CONFIG (127.0.0.1, distinct free ports); a
    failing worker's exit status is the launcher's and the other worker is stopped at once; a
    SIGTERM to the launcher reaches every worker."""
    start = time.monotonic()
    failed = run([*LAUNCH, sys.executable, "-c", WORKER, "fail"], check=False)
    assert failed.returncode == 3 and time.monotonic() - start < 15
    configs = [json.loads(line.split(" ", 1)[1]) for line in failed.stdout.splitlines()]
    (workers,) = {tuple(config["cluster"]["worker"]) for config in configs}
    assert len(set(workers)) == 2 and all(w.startswith("127.0.0.1:") for w in workers)
    launcher = subprocess.Popen([*LAUNCH, sys.executable, "-c", WORKER, "wait"],
                                stdout=subprocess.PIPE, text=True)  # fmt: skip
    assert launcher.stdout.readline() and launcher.stdout.readline()  # both started
    launcher.send_signal(signal.SIGTERM)
    assert launcher.wait(timeout=15) == 143


def test_a_multi_worker_job_started_as_one_process_is_one_line(digits, tmp_path):
    marker = init_tracking(tmp_path, "alone")
    args = train_args(digits, spec_for(distributed=MULTI_WORKER), tmp_path / "out", marker)
    result = run(args, check=False)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        "afternoon: error: architecture 'cnn1' trains on 2 workers (distributed.ranks) but was "
        "started as a single process: start it with `python -m afternoon.distributed.launch -n 2 "
        "...` or `srun -n 2 ...`"
    )
    assert not (tmp_path / "out").exists()
