"""The slides' protocol (issue 21): `data.validation_fraction: 0` trains on every training image,
with training curves only, and refuses every val_ monitor at the dry run in one line naming the
architecture or search and the key: early stopping (an entry's, a dataset's, a recipe set's),
a search's objective and its base's early stopping."""

import copy
import json

import pandas as pd
import pytest
import yaml

from afternoon.checks import check_jobs
from afternoon.config import load_yaml, load_zoo
from afternoon.errors import ConfigError
from afternoon.search.jobs import check_search_jobs
from helpers.paths import REPO
from helpers.runners import run_snakemake
from helpers.study import write_study

ZOO = load_zoo(REPO / "config/zoo.yaml")
ARCHS = ["fc64", "cnn_dropout"]


def no_split(config: dict) -> dict:
    config = copy.deepcopy(config)
    config["data"]["validation_fraction"] = 0
    return config


def test_a_val_monitor_in_a_recipe_set_is_refused_naming_its_key():
    zoo = copy.deepcopy(ZOO)
    recipe = zoo["cnn2"]["recipes"]["fast"]
    recipe["datasets"] = {"digits": {"early_stopping": {"monitor": "val_accuracy"}}}
    config = load_yaml(REPO / "config/config.yaml")
    config["training"]["recipes"] = "fast"
    check_jobs(config, zoo, ["cnn2"])  # with a validation split: fine
    with pytest.raises(ConfigError) as info:
        check_jobs(no_split(config), zoo, ["cnn2"])
    assert str(info.value) == (
        "config/zoo.yaml: architecture 'cnn2', recipes.fast.datasets.digits.early_stopping."
        "monitor: 'val_accuracy' needs a validation split (data.validation_fraction > 0)"
    )
    recipe["early_stopping"] = recipe.pop("datasets")["digits"]["early_stopping"]
    with pytest.raises(ConfigError, match=r"'cnn2', recipes.fast.early_stopping.monitor: 'val_"):
        check_jobs(no_split(config), zoo, ["cnn2"])


def test_a_search_whose_base_stops_on_a_val_metric_is_refused_without_a_split():
    searches = {
        "by_loss": {"base": "cnn1", "datasets": ["cifar10"], "objective": "loss",
                    "algorithm": {"random": {"max_trials": 2}},
                    "space": {"optimizer.learning_rate": {"float": [0.001, 0.01]}}},
    }  # fmt: skip
    config = load_yaml(REPO / "config/config.yaml")
    config["searches"]["run"] = ["by_loss"]
    check_search_jobs(config, searches, ZOO)  # cnn1 on cifar10 stops on val_loss: a split is there
    with pytest.raises(ConfigError) as info:
        check_search_jobs(no_split(config), searches, ZOO)
    assert str(info.value) == (
        "config/searches.yaml: search 'by_loss', base architecture 'cnn1', early_stopping.monitor:"
        " 'val_loss' needs a validation split (data.validation_fraction > 0) on cifar10"
    )


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """digits, fc64 and cnn_dropout, 1 epoch, without a validation split, run to the report."""
    workdir = write_study(tmp_path_factory.mktemp("no-validation"), ARCHS, max_epochs=1)
    path = workdir / "config/config.yaml"
    path.write_text(yaml.safe_dump(no_split(yaml.safe_load(path.read_text())), sort_keys=False))
    run_snakemake(workdir, "--cores", "2")
    return workdir / "results"


@pytest.mark.slow
def test_validation_fraction_0_trains_on_every_image_and_reports_training_curves_only(study):
    import mlflow

    card = json.loads((study / "data/digits.card.json").read_text())
    splits = {split: card["splits"][split]["n"] for split in ("train", "val", "test")}
    assert splits == {"train": 1797 - 450, "val": 0, "test": 450}  # every training image trains
    marker = json.loads((study / "mlflow/tracking.json").read_text())
    client = mlflow.tracking.MlflowClient(marker["tracking_uri"])
    for arch in ARCHS:
        run_dir = study / f"runs/digits/{arch}"
        history = pd.read_csv(run_dir / "history.csv")
        assert len(history) == 1 and {"loss", "accuracy"} <= set(history.columns)
        assert not [column for column in history.columns if column.startswith("val_")]
        metrics = json.loads((run_dir / "metrics.json").read_text())
        assert metrics["epochs_run"] == 1 and metrics["best_epoch"] == 1
        assert not [key for key in metrics if key.startswith("final_val_")]
        run = client.get_run(json.loads((run_dir / "run.json").read_text())["run_id"])
        assert not [key for key in run.data.metrics if key.startswith("val_")]
        assert "test_accuracy" in run.data.metrics  # evaluated on the test set as always
    html = (study / "report/index.html").read_text()
    assert "training accuracy (top) and loss (bottom) per epoch, no\n      validation split" in html
    assert "training and validation accuracy" not in html
