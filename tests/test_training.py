"""Training jobs: outputs, reproducibility (identical weights), NaN detection, early stopping."""

import json

import numpy as np
import pandas as pd
import pytest

from afternoon.config import job_spec, load_yaml, load_zoo
from afternoon.defaults import filled
from afternoon.distributed.common import weights_sha256
from helpers import runners
from helpers.paths import REPO
from helpers.stage_args import train_output_args

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def digits(digits, tmp_path_factory):
    """The session's digits dataset (tests/conftest.py), and a tracking store initialised once."""
    return runners.tracked_dataset(digits, tmp_path_factory.mktemp("training"), "test-training")


def run_cli(*args, check=True):
    """helpers.runners.run_cli, checked by default."""
    return runners.run_cli(*args, check=check)


def spec_for(arch: str, **changes) -> dict:
    """A digits job's spec with ``changes``, their defaults filled in as job_spec fills them."""
    config = load_yaml(REPO / "config/config.yaml")
    spec = job_spec(config, load_zoo(REPO / "config/zoo.yaml"), "digits", arch)
    return filled(spec | changes, has_validation=True)


def train(digits, spec, out_dir, check=True):
    return run_cli(
        "train",
        "--spec",
        json.dumps(spec),
        "--npz",
        str(digits["npz"]),
        "--card",
        str(digits["card"]),
        "--tracking",
        str(digits["marker"]),
        *train_output_args(out_dir),
        "--threads",
        "2",
        "--tag",
        "snakemake_rule=train",
        check=check,
    )


def weights(path):
    import tensorflow as tf

    return tf.keras.models.load_model(path).get_weights()


def test_two_runs_of_one_config_give_identical_weights_and_metrics(digits):
    spec = spec_for("cnn_dropout", epochs=3)
    first, second = digits["root"] / "a", digits["root"] / "b"
    train(digits, spec, first)
    train(digits, spec, second)
    for w1, w2 in zip(weights(first / "model.keras"), weights(second / "model.keras"), strict=True):
        np.testing.assert_array_equal(w1, w2)
    m1 = json.loads((first / "metrics.json").read_text())
    m2 = json.loads((second / "metrics.json").read_text())
    finals = [k for k in m1 if k.startswith("final_")]
    assert finals and all(m1[k] == m2[k] for k in finals)
    assert m1["run_id"] != m2["run_id"]  # a rerun is a new MLflow run
    # The weights digest (metrics.json and the run's MLflow tag) is the saved weights', and the
    # rerun shows the same one.
    digest = m1["weights_sha256"]
    assert digest == weights_sha256(weights(first / "model.keras")) == m2["weights_sha256"]
    assert tag_of(digits, m1["run_id"]) == tag_of(digits, m2["run_id"]) == digest
    # a different seed trains a different model, with another digest
    third = digits["root"] / "c"
    train(digits, {**spec, "seed": 7}, third)
    assert not np.array_equal(weights(first / "model.keras")[0], weights(third / "model.keras")[0])
    m3 = json.loads((third / "metrics.json").read_text())
    assert m3["weights_sha256"] != digest and tag_of(digits, m3["run_id"]) == m3["weights_sha256"]


def tag_of(digits, run_id: str, tag: str = "weights_sha256") -> str:
    """The MLflow run's tag ``tag``, from the module's tracking store."""
    from mlflow.tracking import MlflowClient

    marker = json.loads(digits["marker"].read_text())
    return MlflowClient(marker["tracking_uri"]).get_run(run_id).data.tags[tag]


def test_outputs_history_and_mlflow_run(digits):
    import mlflow

    out = digits["root"] / "fc64"
    train(digits, spec_for("fc64", epochs=4), out)
    history = pd.read_csv(out / "history.csv")
    assert list(history["epoch"]) == [1, 2, 3, 4]
    assert {"loss", "accuracy", "val_loss", "val_accuracy", "epoch_time_s"} <= set(history)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["epochs_run"] == 4
    assert metrics["parameters"] == (64 * 64 + 64) + (64 * 64 + 64) + (64 * 10 + 10)
    assert metrics["final_val_accuracy"] == pytest.approx(history["val_accuracy"].iloc[-1])
    assert any((out / "tensorboard").rglob("events.out.tfevents.*"))
    run_record = json.loads((out / "run.json").read_text())

    marker = json.loads(digits["marker"].read_text())
    client = mlflow.tracking.MlflowClient(marker["tracking_uri"])
    run = client.get_run(run_record["run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.params["batch_size"] == "128"
    assert run.data.params["layers.0.dense.units"] == "64"
    # every hyperparameter the run used, the defaults its zoo entry leaves out included
    assert run.data.params["optimizer.learning_rate"] == "0.001"  # fc64: {name: adam}
    assert run.data.params["optimizer.beta_1"] == "0.9"
    assert run.data.params["layers.0.dense.activation"] == "relu"
    assert run.data.tags["afternoon.snakemake_rule"] == "train"
    assert (
        len(run.data.tags["afternoon.git_commit"]) in (7, 40)
        or run.data.tags["afternoon.git_commit"] == "unknown"
    )
    accuracy = client.get_metric_history(run.info.run_id, "val_accuracy")
    assert [m.step for m in accuracy] == [1, 2, 3, 4]
    assert accuracy[-1].value == pytest.approx(metrics["final_val_accuracy"])
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"model.keras", "history.csv", "metrics.json"} <= artifacts


def test_nan_loss_stops_with_the_epoch_and_leaves_no_model(digits):
    spec = spec_for("fc64", epochs=5, optimizer={"name": "sgd", "learning_rate": 1e12})
    out = digits["root"] / "nan"
    result = train(digits, spec, out, check=False)
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("afternoon: error: fc64 on digits: loss became nan at epoch 1")
    assert not (out / "model.keras").exists() and not (out / "metrics.json").exists()


def test_early_stopping_stops_before_the_planned_epochs(digits):
    spec = spec_for(
        "fc512",  # 670k parameters on 1,437 images: overfits within a few epochs
        epochs=60,
        early_stopping={"monitor": "val_loss", "patience": 2, "restore_best_weights": True},
    )
    out = digits["root"] / "early"
    train(digits, spec, out)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["epochs_run"] < 60
    assert metrics["best_epoch"] == metrics["epochs_run"] - 2


def test_training_batches_run_without_tf_data_autotuning():
    """Autotuning's model thread held up the deletion of fit()'s iterator (the end of a job)
    for up to a minute; the pipeline's gathers need no tuning, so it is off."""
    import tensorflow as tf

    from afternoon.training.loop import PREFETCH_BATCHES, make_dataset

    x, y = np.arange(10 * 4, dtype=np.uint8).reshape(10, 2, 2, 1), np.arange(10, dtype=np.uint8)
    dataset = make_dataset(tf, x, y, 4, shuffle=True, seed=0, threads=2, epochs=range(2))
    assert dataset.options().autotune.enabled is False
    assert dataset.options().threading.private_threadpool_size == 2
    assert PREFETCH_BATCHES >= 2
    batches = [b.numpy() for b, _ in dataset]  # both epochs, each a permutation, in batches of 4
    assert [len(b) for b in batches] == [4, 4, 2, 4, 4, 2]
    epochs = np.concatenate(batches)[:10], np.concatenate(batches)[10:]
    for epoch in epochs:
        assert sorted(epoch[:, 0, 0, 0] // 4) == list(range(10))
