"""Horovod data-parallel training: 2 ranks on the digits, against the one-process run.

The training tests need Horovod 0.28.1 built with TensorFlow (and Open MPI for the Snakemake run,
whose default launcher is mpirun); they are skipped, with the reason, where
`import horovod.tensorflow.keras` fails (under CI=true, which builds Horovod, they fail instead).
The config checks and the rule's launcher (a dry run) need no Horovod.
"""

import copy
import json
import re
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

import afternoon  # noqa: F401 (TF_USE_LEGACY_KERAS=1 before TensorFlow loads)
from afternoon.config import job_spec, load_yaml, load_zoo
from afternoon.defaults import filled, ranks_of
from afternoon.errors import ConfigError
from afternoon.npz import load_npz
from afternoon.zoo import validate_architecture
from helpers import runners
from helpers.components import needs_horovod, needs_mpirun
from helpers.paths import REPO
from helpers.runners import cli_command as cli  # cli(*args) -> the command line, not run
from helpers.runners import snakemake_command
from helpers.stage_args import train_output_args

HOROVODRUN = str(Path(sys.executable).with_name("horovodrun"))
ARCH, EPOCHS = "cnn1", 5  # SGD with momentum: the warm-up's momentum correction is exercised
DISTRIBUTED = {"backend": "horovod", "ranks": 2, "scale_lr": True, "warmup_epochs": 1}


def run(args, check=True, env=None):
    """Run ``args`` (helpers.runners.run), by default asserting it exits 0."""
    return runners.run(args, check=check, env=env)


def two_ranks(*args):
    """``args`` started as 2 Horovod ranks on this machine (Gloo: no MPI launcher needed)."""
    return [HOROVODRUN, "-np", "2", "-H", "localhost:2", "--gloo", *args]


def spec_for(**changes) -> dict:
    config = load_yaml(REPO / "config/config.yaml")
    spec = job_spec(config, load_zoo(REPO / "config/zoo.yaml"), "digits", ARCH)
    return filled({**spec, "epochs": EPOCHS, **changes}, has_validation=True)


def train_args(data, spec, out_dir, marker):
    return cli(
        "train",
        *("--spec", json.dumps(spec), "--npz", str(data["npz"]), "--card", str(data["card"])),
        *("--tracking", str(marker), *train_output_args(out_dir), "--threads", "2"),
    )


def init_tracking(root: Path, experiment: str) -> Path:
    marker = root / experiment / "tracking.json"
    db = marker.with_name("mlflow.db")
    run(
        cli(
            "init-tracking",
            "--experiment",
            experiment,
            "--default-db",
            str(db),
            "--marker",
            str(marker),
        )
    )
    return marker


def accuracy_on_test_set(model_path: Path, npz: Path) -> float:
    import tensorflow as tf

    arrays = load_npz(npz)
    model = tf.keras.models.load_model(model_path)
    predictions = model.predict(arrays["x_test"], verbose=0).argmax(axis=1)
    return float(np.mean(predictions == arrays["y_test"]))


@pytest.fixture(scope="module")
def jobs(digits, tmp_path_factory):
    """The same architecture trained once in one process and once on 2 ranks (own MLflow stores:
    the 2-rank store must hold exactly one run), on the session's digits (tests/conftest.py)."""
    root = tmp_path_factory.mktemp("horovod")
    data = {"npz": digits["npz"], "card": digits["card"]}
    single, ranks = root / "single", root / "ranks"
    run(train_args(data, spec_for(), single, init_tracking(root, "single")))
    marker = init_tracking(root, "ranks")
    result = run(two_ranks(*train_args(data, spec_for(distributed=DISTRIBUTED), ranks, marker)))
    return {**data, "root": root, "single": single, "ranks": ranks, "marker": marker, "log": result}


@needs_horovod
@pytest.mark.slow
def test_two_ranks_write_the_same_outputs_as_one_process(jobs):
    for out in (jobs["single"], jobs["ranks"]):
        names = {"model.keras", "history.csv", "metrics.json", "run.json", "tensorboard"}
        assert names <= {p.name for p in out.iterdir()}
        assert any((out / "tensorboard").rglob("events.out.tfevents.*"))
    history = pd.read_csv(jobs["ranks"] / "history.csv")
    assert list(history["epoch"]) == list(range(1, EPOCHS + 1))
    assert {"loss", "accuracy", "val_loss", "val_accuracy", "lr"} <= set(history)
    # warm-up: from the one-rank rate to 2 x 0.01 by the end of epoch 1, then constant
    assert list(history["lr"]) == pytest.approx([0.02] * EPOCHS)


@needs_horovod
@pytest.mark.slow
def test_every_rank_ends_with_identical_weights(jobs):
    metrics = json.loads((jobs["ranks"] / "metrics.json").read_text())
    assert metrics["world_size"] == 2 and metrics["threads_per_rank"] == 1
    assert metrics["learning_rate"] == pytest.approx(0.02)  # scale_lr: 0.01 x 2 ranks
    checksums = metrics["rank_weight_sha256"]
    assert len(checksums) == 2 and checksums[0] == checksums[1]
    assert metrics["ranks_identical"] is True


@needs_horovod
@pytest.mark.slow
def test_accuracy_is_close_to_the_one_process_run(jobs):
    single = json.loads((jobs["single"] / "metrics.json").read_text())
    ranks = json.loads((jobs["ranks"] / "metrics.json").read_text())
    assert ranks["final_val_accuracy"] > 0.85
    assert abs(ranks["final_val_accuracy"] - single["final_val_accuracy"]) < 0.05
    # the saved model loads without Horovod (as evaluation loads it) and scores alike on test
    accuracy = {
        name: accuracy_on_test_set(jobs[name] / "model.keras", jobs["npz"])
        for name in ("single", "ranks")
    }
    assert abs(accuracy["ranks"] - accuracy["single"]) < 0.05


@needs_horovod
@pytest.mark.slow
def test_one_mlflow_run_tagged_with_the_world_size(jobs):
    import mlflow

    marker = json.loads(jobs["marker"].read_text())
    client = mlflow.tracking.MlflowClient(marker["tracking_uri"])
    runs = client.search_runs([marker["experiment_id"]])
    assert len(runs) == 1
    run_ = runs[0]
    assert run_.info.status == "FINISHED"
    assert run_.info.run_id == json.loads((jobs["ranks"] / "run.json").read_text())["run_id"]
    assert run_.data.tags["afternoon.world_size"] == "2"
    ranks = run_.data.tags["afternoon.horovod_ranks"].split(",")
    assert [rank.split("@")[0] for rank in ranks] == ["0", "1"]
    assert run_.data.params["distributed.ranks"] == "2"
    steps = [m.step for m in client.get_metric_history(run_.info.run_id, "val_accuracy")]
    assert steps == list(range(1, EPOCHS + 1))


@needs_horovod
@pytest.mark.slow
def test_ranks_with_different_weights_fail_loudly(tmp_path):
    """What catches Horovod silently not averaging gradients (as under Keras 3): rank 1's
    weights are changed before the final check."""
    script = tmp_path / "diverge.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import afternoon
            from afternoon.distributed import start
            from afternoon.training.models import build_model
            spec = {spec_for(distributed=DISTRIBUTED)!r}
            dist = start(spec, 2)
            model = build_model(spec, (8, 8, 1))
            if dist.rank == 1:
                model.layers[-1].bias.assign_add(model.layers[-1].bias + 1e-3)
            dist.finalize(model)
            """
        )
    )
    result = run(two_ranks(sys.executable, str(script)), check=False)
    assert result.returncode != 0
    assert "RanksDiverged" in result.stdout + result.stderr
    assert "ended training with different weights" in result.stdout + result.stderr


@needs_horovod
@pytest.mark.slow
def test_started_without_a_launcher_is_a_one_line_error(jobs, tmp_path):
    spec = spec_for(distributed=DISTRIBUTED)
    result = run(train_args(jobs, spec, tmp_path / "out", jobs["marker"]), check=False)
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert "trains on 2 ranks" in last and "single process" in last and "mpirun -n 2" in last
    assert not (tmp_path / "out").exists()


@needs_horovod
@pytest.mark.slow
def test_keras_3_is_refused_before_training(jobs, tmp_path):
    spec = spec_for(distributed=DISTRIBUTED)
    args = train_args(jobs, spec, tmp_path / "out", jobs["marker"])
    result = run(args, check=False, env={"TF_USE_LEGACY_KERAS": "0"})
    assert result.returncode == 1
    assert "needs Keras 2" in result.stderr.strip().splitlines()[-1]


@needs_horovod
@needs_mpirun
@pytest.mark.slow
def test_snakemake_trains_a_distributed_architecture_through_evaluation(tmp_path):
    import mlflow

    workdir = tmp_path / "study"
    (workdir / "config").mkdir(parents=True)
    zoo = yaml.safe_load((REPO / "config/zoo.yaml").read_text())
    zoo["cnn_batchnorm"]["distributed"] = {"backend": "horovod", "ranks": 2}
    (workdir / "config/zoo.yaml").write_text(yaml.safe_dump(zoo, sort_keys=False))
    config = yaml.safe_load((REPO / "config/config.yaml").read_text())
    config.update(study="horovod-test", architectures=["fc64", "cnn_batchnorm"])
    config["training"]["max_epochs"] = 2
    (workdir / "config/config.yaml").write_text(yaml.safe_dump(config))
    result = run(snakemake_command(workdir, "--cores", "2", "-p"))  # the jobs: this venv's python
    assert "mpirun --allow-run-as-root" in result.stdout + result.stderr

    for arch in ("fc64", "cnn_batchnorm"):
        evaluation = json.loads((workdir / f"results/eval/digits/{arch}/metrics.json").read_text())
        assert evaluation["test_accuracy"] > 0.3  # 2 epochs; chance is 0.1
    metrics = json.loads((workdir / "results/runs/digits/cnn_batchnorm/metrics.json").read_text())
    assert metrics["world_size"] == 2 and metrics["ranks_identical"] is True
    marker = json.loads((workdir / "results/mlflow/tracking.json").read_text())
    client = mlflow.tracking.MlflowClient(marker["tracking_uri"])
    runs = {r.info.run_name: r for r in client.search_runs([marker["experiment_id"]])}
    assert sorted(runs) == ["cnn_batchnorm@digits", "fc64@digits"]
    assert runs["cnn_batchnorm@digits"].data.tags["afternoon.world_size"] == "2"
    assert runs["fc64@digits"].data.tags["afternoon.world_size"] == "1"
    assert "test_accuracy" in runs["cnn_batchnorm@digits"].data.metrics


# --- Without Horovod: the zoo's `distributed` field and how the train rule launches a job ------


@pytest.mark.parametrize(
    "value, needle",
    [
        ({"ranks": 0}, "distributed.ranks: must be a positive integer"),
        ({"ranks": True}, "distributed.ranks"),
        ({"backend": "mpi"}, "distributed.backend: must be mirrored or multi_worker or horovod"),
        ({"backend": "mirrored", "ranks": 2}, "backend mirrored is one process"),
        ({"ranks": 2, "warmup": 1}, "unknown key 'warmup'"),
        ({"scale_lr": "yes"}, "distributed.scale_lr"),
        ({"warmup_epochs": -1}, "distributed.warmup_epochs"),
        ([2], "distributed: must be a mapping"),
    ],
)
def test_bad_distributed_settings_are_one_line_config_errors(value, needle):
    arch = copy.deepcopy(load_zoo(REPO / "config/zoo.yaml")["cnn1"])
    arch["distributed"] = value
    with pytest.raises(ConfigError, match=re.escape(needle)) as info:
        validate_architecture("cnn1", arch)
    assert "\n" not in str(info.value) and needle in str(info.value)
    del arch["distributed"]
    arch["datasets"] = {"mnist": {"distributed": value}}
    with pytest.raises(ConfigError, match=r"datasets\.mnist\.distributed"):
        validate_architecture("cnn1", arch)


def test_the_job_spec_carries_the_settings_and_a_dataset_can_override_them():
    zoo = load_zoo(REPO / "config/zoo.yaml")
    zoo["cnn1"].update(distributed=DISTRIBUTED, datasets={"mnist": {"distributed": {"ranks": 1}}})
    validate_architecture("cnn1", zoo["cnn1"])
    config = load_yaml(REPO / "config/config.yaml")
    digits, mnist = (job_spec(config, zoo, dataset, "cnn1") for dataset in ("digits", "mnist"))
    assert digits["distributed"] == DISTRIBUTED and ranks_of(digits) == 2  # a change retrains it
    assert ranks_of(mnist) == 1  # one process: no launcher, no Horovod
    assert ranks_of(job_spec(config, zoo, "digits", "fc64")) == 1


def planned_training(workdir: Path, *args: str) -> dict[str, dict]:
    """arch (or search) -> {"resources": ..., "shell": ...} of the digits train (and tune) jobs of
    a dry run."""
    result = run(snakemake_command(workdir, "-n", "-p", "--cores", "4", *args))
    jobs = {}
    for block in re.split(r"\n(?=rule |localrule )", result.stdout + result.stderr):
        if block.startswith(("rule train:", "rule tune:")) and "dataset=digits" in block:
            arch = re.search(r"\b(?:arch|search)=([^,\s]+)", block)[1]
            resources = re.search(r"resources: (.*)", block)[1]
            shell = re.search(r"Shell command: (.*)", block)[1].strip()
            jobs[arch] = {"resources": resources, "shell": shell}
    return jobs


def test_the_train_rule_starts_a_distributed_architecture_under_the_mpi_launcher(tmp_path):
    (tmp_path / "config").mkdir()
    zoo = yaml.safe_load((REPO / "config/zoo.yaml").read_text())
    zoo["cnn1"]["distributed"] = {"ranks": 2}
    (tmp_path / "config/zoo.yaml").write_text(yaml.safe_dump(zoo, sort_keys=False))
    config = yaml.safe_load((REPO / "config/config.yaml").read_text())
    config.update(architectures=["fc64", "cnn1"])
    config["training"]["threads"] = 4
    (tmp_path / "config/config.yaml").write_text(yaml.safe_dump(config))

    jobs = planned_training(tmp_path)
    launcher = "mpirun --allow-run-as-root --oversubscribe --bind-to none"
    assert jobs["cnn1"]["shell"].startswith(f"{launcher} -n 2 python -m afternoon.cli train ")
    assert "mpi=horovod, tasks=2, cpus_per_task=2" in jobs["cnn1"]["resources"]
    assert jobs["fc64"]["shell"].startswith("python -m afternoon.cli train ")
    assert "tasks=1" in jobs["fc64"]["resources"] and "mpi=" not in jobs["fc64"]["resources"]
    # an explicit training.mpi_launcher, with the cores per rank
    mine = 'training={mpi_launcher: "srun --mpi=pmi2 --cpus-per-task={cpus}"}'
    jobs = planned_training(tmp_path, "--config", mine)
    assert jobs["cnn1"]["shell"].startswith("srun --mpi=pmi2 --cpus-per-task=2 -n 2 python ")
    assert jobs["fc64"]["shell"].startswith("python -m afternoon.cli train ")


def test_the_slurm_profiles_launchers_survive_a_config_on_the_command_line(tmp_path):
    """profiles/slurm gives the jobs their launchers (srun) as resources: a `--config` on the
    command line, which replaces the profile's `config:` entry, leaves them; a launcher in the
    config overrides them."""
    (tmp_path / "config").mkdir()
    zoo = yaml.safe_load((REPO / "config/zoo.yaml").read_text())
    zoo["cnn1_workers"] = {**zoo["cnn1"], "distributed": {"backend": "multi_worker", "ranks": 2}}
    zoo["fc64_horovod"] = {**zoo["fc64"], "distributed": {"backend": "horovod", "ranks": 2}}
    (tmp_path / "config/zoo.yaml").write_text(yaml.safe_dump(zoo, sort_keys=False))
    (tmp_path / "config/searches.yaml").write_text((REPO / "config/searches.yaml").read_text())
    config = yaml.safe_load((REPO / "config/config.yaml").read_text())
    config.update(architectures=["fc64", "cnn1_workers", "fc64_horovod"])
    config["training"]["threads"] = 4
    config["searches"]["run"] = ["digits_tiny"]  # 2 workers
    (tmp_path / "config/config.yaml").write_text(yaml.safe_dump(config))
    slurm = ("--profile", str(REPO / "profiles/slurm"), "--config")

    jobs = planned_training(tmp_path, *slurm, "study=mine")
    srun = "srun --kill-on-bad-exit=1 --cpus-per-task="
    assert jobs["cnn1_workers"]["shell"].startswith(f"{srun}2 -n 2 python -m afternoon.cli train ")
    hvd = "srun --mpi=pmix --kill-on-bad-exit=1 --cpus-per-task=2 -n 2 python -m afternoon.cli "
    assert jobs["fc64_horovod"]["shell"].startswith(hvd)
    assert jobs["fc64"]["shell"].startswith("python -m afternoon.cli train ")
    # the search: its chief (the job's command) starts a task per worker with srun
    chief = f"AFTERNOON_SEARCH_LAUNCHER='{srun}4 -n 2' python -m afternoon.cli tune "
    assert jobs["digits_tiny"]["shell"].startswith(chief)
    assert "mpi=search, tasks=2, cpus_per_task=4," in jobs["digits_tiny"]["resources"]
    mine = 'training={worker_launcher: "mine -c {cpus}"}', 'searches={launcher: "theirs"}'
    jobs = planned_training(tmp_path, *slurm, *mine)
    assert jobs["cnn1_workers"]["shell"].startswith("mine -c 2 -n 2 python -m afternoon.cli ")
    assert jobs["fc64_horovod"]["shell"].startswith(hvd)
    assert jobs["digits_tiny"]["shell"].startswith("AFTERNOON_SEARCH_LAUNCHER='theirs -n 2' py")
