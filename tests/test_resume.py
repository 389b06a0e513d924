"""Preemption and time limits: a real training process stopped by SIGTERM or SIGKILL resumes from
its last epoch checkpoint and ends with the weights and metrics of an uninterrupted run.

Slurm ends a job at its time limit (or on preemption) with SIGTERM, then SIGKILL after a grace
period; Snakemake then removes the job's outputs and, with `retries`, starts it again.
"""

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from afternoon.config import job_spec, load_yaml, load_zoo
from afternoon.defaults import filled
from helpers import runners
from helpers.components import needs_horovod, needs_mpirun
from helpers.env import clean_env
from helpers.paths import REPO
from helpers.runners import cli_command as cli  # cli(*args) -> the command line, not run
from helpers.runners import snakemake_command
from helpers.stage_args import train_output_args
from helpers.study import write_study
from test_horovod import DISTRIBUTED

pytestmark = pytest.mark.slow

OUTPUTS = ("model.keras", "history.csv", "metrics.json", "run.json")
# Columns that must match exactly (epoch_time_s is wall time).
METRICS = ["epoch", "loss", "accuracy", "val_loss", "val_accuracy"]


def spec_for(arch: str, **changes) -> dict:
    """A digits job's spec with ``changes``, their defaults filled in as job_spec fills them."""
    config = load_yaml(REPO / "config/config.yaml")
    spec = job_spec(config, load_zoo(REPO / "config/zoo.yaml"), "digits", arch)
    return filled(spec | changes, has_validation=True)


def train_command(data: dict, spec: dict, out_dir: Path) -> list[str]:
    return cli(
        *("train", "--spec", json.dumps(spec), "--npz", str(data["npz"])),
        *("--card", str(data["card"]), "--tracking", str(data["marker"])),
        *train_output_args(out_dir),
        *("--threads", "2"),
    )


def run(command: list[str]) -> subprocess.CompletedProcess:
    """Run ``command`` (helpers.runners.run), asserting it exits 0."""
    return runners.run(command, check=True)


def saved_epoch(out_dir: Path) -> int:
    state = out_dir / "checkpoint" / "state.json"
    try:
        return json.loads(state.read_text())["epoch"]
    except (OSError, ValueError, KeyError):
        return 0


def start_and_stop(command: list[str], out_dir: Path, sig: int, after_epoch: int = 1, group=False):
    """Start ``command``; once the checkpoint of ``after_epoch`` is on disk, send ``sig`` (to
    the whole process group with ``group``: an MPI launcher and its ranks).
    Returns (process, stderr)."""
    process = subprocess.Popen(
        command, cwd=REPO, env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, start_new_session=group,
    )  # fmt: skip
    deadline = time.monotonic() + 600
    while saved_epoch(out_dir) < after_epoch:
        assert process.poll() is None, process.communicate()[1][-3000:]
        assert time.monotonic() < deadline, "no checkpoint within 10 minutes"
        time.sleep(0.05)
    os.killpg(process.pid, sig) if group else process.send_signal(sig)
    _, stderr = process.communicate(timeout=300)
    return process, stderr


def weights(model_path: Path) -> list[np.ndarray]:
    import tensorflow as tf

    return tf.keras.models.load_model(model_path).get_weights()


def assert_same_training(resumed: Path, uninterrupted: Path) -> None:
    """Bit-identical weights and per-epoch metrics; every epoch in the history once."""
    for got, want in zip(weights(resumed / "model.keras"), weights(uninterrupted / "model.keras"),
                         strict=True):  # fmt: skip
        np.testing.assert_array_equal(got, want)
    got, want = pd.read_csv(resumed / "history.csv"), pd.read_csv(uninterrupted / "history.csv")
    pd.testing.assert_frame_equal(got[METRICS], want[METRICS])
    assert list(got["epoch"]) == list(range(1, len(want) + 1))
    assert not (resumed / "checkpoint").exists(), "the checkpoint outlived the finished job"


def mlflow_run(marker: Path, run_id: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient(f"sqlite:///{marker.with_name('mlflow.db')}").get_run(run_id)


@pytest.fixture(scope="module")
def digits(digits, tmp_path_factory):
    """The session's digits dataset (tests/conftest.py), a root for this module's runs and a
    tracking store of its own."""
    root = tmp_path_factory.mktemp("resume")
    data = {"npz": digits["npz"], "card": digits["card"], "root": root}
    data["marker"] = root / "mlflow" / "tracking.json"
    db = data["marker"].with_name("mlflow.db")
    run(
        cli(
            "init-tracking",
            "--experiment",
            "resume",
            "--default-db",
            str(db),
            "--marker",
            str(data["marker"]),
        )
    )
    return data


# Dropout (its masks come from a generator whose state is checkpointed) and Adam (moments,
# step count); early stopping's counters and best weights in the second spec.
DROPOUT = spec_for("cnn_dropout", epochs=8)
STOPPING = spec_for("cnn_dropout", epochs=8, early_stopping={"monitor": "val_loss", "patience": 3})


@pytest.fixture(scope="module")
def uninterrupted(digits):
    """Each spec trained once without interruption: the reference."""
    done = {}
    for name, spec in {"dropout": DROPOUT, "stopping": STOPPING}.items():
        done[name] = digits["root"] / f"uninterrupted-{name}"
        run(train_command(digits, spec, done[name]))
    return done


def test_sigterm_mid_epoch_stops_cleanly_and_the_rerun_resumes_to_identical_weights(
    digits, uninterrupted
):
    out = digits["root"] / "sigterm"
    command = train_command(digits, DROPOUT, out)
    process, stderr = start_and_stop(command, out, signal.SIGTERM)

    assert process.returncode == 128 + signal.SIGTERM
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("afternoon: stopped: cnn_dropout@digits: SIGTERM received; ")
    epoch = saved_epoch(out)
    assert epoch >= 1 and f"the checkpoint of epoch {epoch} in {out / 'checkpoint'}" in last
    assert [name for name in OUTPUTS if (out / name).exists()] == []  # nothing looks complete
    state = json.loads((out / "checkpoint" / "state.json").read_text())
    killed = mlflow_run(digits["marker"], state["run_id"])
    assert killed.info.status == "KILLED"

    resumed = run(command)
    assert f"from the checkpoint of epoch {epoch}" in resumed.stderr
    assert_same_training(out, uninterrupted["dropout"])
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["resumed_from_epoch"] == epoch and metrics["epochs_run"] == 8
    # The same MLflow run, finished, with every epoch's metrics once.
    assert json.loads((out / "run.json").read_text())["run_id"] == state["run_id"]
    finished = mlflow_run(digits["marker"], state["run_id"])
    assert finished.info.status == "FINISHED"
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{digits['marker'].with_name('mlflow.db')}")
    steps = sorted(m.step for m in client.get_metric_history(state["run_id"], "val_loss"))
    assert steps[:epoch] == list(range(1, epoch + 1)) and set(steps) == set(range(1, 9))


def test_sigkill_resumes_from_the_last_checkpoint_on_disk(digits, uninterrupted):
    out = digits["root"] / "sigkill"
    command = train_command(digits, STOPPING, out)
    process, _ = start_and_stop(command, out, signal.SIGKILL)

    assert process.returncode == -signal.SIGKILL
    assert [name for name in OUTPUTS if (out / name).exists()] == []
    epoch = saved_epoch(out)
    resumed = run(command)
    assert f"from the checkpoint of epoch {epoch}" in resumed.stderr
    assert_same_training(out, uninterrupted["stopping"])
    assert (
        json.loads((out / "metrics.json").read_text())["best_epoch"]
        == json.loads((uninterrupted["stopping"] / "metrics.json").read_text())["best_epoch"]
    )


def test_a_checkpoint_of_another_spec_is_not_resumed(digits, uninterrupted):
    out = digits["root"] / "changed"
    process, _ = start_and_stop(train_command(digits, DROPOUT, out), out, signal.SIGKILL)
    assert process.returncode == -signal.SIGKILL
    changed = {**DROPOUT, "batch_size": DROPOUT["batch_size"] * 2}
    result = run(train_command(digits, changed, out))
    assert "checkpoint not used, training starts at epoch 1" in result.stderr
    assert "another spec" in result.stderr
    assert json.loads((out / "metrics.json").read_text())["resumed_from_epoch"] == 0


def test_the_next_pipeline_run_resumes_a_job_whose_process_got_sigterm(tmp_path):
    """As under Slurm: the training process gets SIGTERM, Snakemake marks the job failed and
    removes its outputs; the next `snakemake` run trains it again, from the checkpoint."""
    workdir = write_study(tmp_path, archs=["cnn_dropout"], max_epochs=8)
    env = clean_env()
    target = "results/runs/digits/cnn_dropout/metrics.json"
    command = snakemake_command(workdir, "--cores", "2", target)
    out = workdir / "results/runs/digits/cnn_dropout"
    snakemake = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                 text=True)  # fmt: skip
    deadline = time.monotonic() + 600
    while saved_epoch(out) < 1:
        assert snakemake.poll() is None, snakemake.communicate()[0][-3000:]
        assert time.monotonic() < deadline
        time.sleep(0.05)
    # The python process itself, not the shell that started it (its command line holds the same).
    pattern = "^[^ ]*python[^ ]* -m afternoon.cli train .*--run results/runs/digits/cnn_dropout/"
    found = subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True)
    trainer = found.stdout.split()
    assert len(trainer) == 1, trainer
    os.kill(int(trainer[0]), signal.SIGTERM)
    output, _ = snakemake.communicate(timeout=300)
    assert snakemake.returncode != 0
    log = (workdir / "results/logs/train/digits/cnn_dropout.log").read_text()
    assert "afternoon: stopped: cnn_dropout@digits: SIGTERM received" in log
    assert [name for name in OUTPUTS if (out / name).exists()] == []
    epoch = saved_epoch(out)

    again = subprocess.run(command, env=env, capture_output=True, text=True)
    assert again.returncode == 0, (again.stdout + again.stderr)[-3000:]
    log = (workdir / "results/logs/train/digits/cnn_dropout.log").read_text()
    assert f"from the checkpoint of epoch {epoch}" in log
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["resumed_from_epoch"] == epoch and metrics["epochs_run"] == 8


MPIRUN = ["mpirun", "--allow-run-as-root", "--oversubscribe", "--bind-to", "none", "-n", "2"]


@needs_horovod
@needs_mpirun
def test_a_killed_horovod_job_resumes_every_rank_from_rank_0s_checkpoint(digits):
    """2 ranks, batch norm (moving statistics averaged over the ranks every epoch, so rank 0's
    checkpoint holds what every rank holds); the launcher and both ranks get SIGKILL."""
    spec = spec_for("cnn_batchnorm", epochs=6, distributed=DISTRIBUTED)
    reference = digits["root"] / "horovod-uninterrupted"
    run(MPIRUN + train_command(digits, spec, reference))
    out = digits["root"] / "horovod-killed"
    command = MPIRUN + train_command(digits, spec, out)
    process, _ = start_and_stop(command, out, signal.SIGKILL, group=True)
    for pid in subprocess.run(["pgrep", "-f", "--", f"--run {out}/"], capture_output=True,
                              text=True).stdout.split():  # fmt: skip
        os.kill(int(pid), signal.SIGKILL)  # a rank the launcher left behind
    assert [name for name in OUTPUTS if (out / name).exists()] == []
    epoch = saved_epoch(out)
    resumed = run(command)
    assert f"from the checkpoint of epoch {epoch}" in resumed.stdout + resumed.stderr
    assert_same_training(out, reference)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["resumed_from_epoch"] == epoch and metrics["ranks_identical"] is True
