"""The workshop study's recipes (config/workshop.yaml): the dry run plans the Fashion-MNIST and
CIFAR-10 recipes of the zoo, and every 80- and 100-epoch recipe (cnn1 and cnn_dropout on
Fashion-MNIST, the instructors' solutions) trains, capped at 2 epochs by training.max_epochs, on
a tiny slice of the real Fashion-MNIST (Debian's dataset-fashion-mnist: 512 training, 64
validation and 256 test images), with the layers and optimizer the recipe names."""

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import yaml

from afternoon.config import job_spec, load_yaml, load_zoo, study_runs
from afternoon.npz import load_npz, write_npz
from afternoon.stages.download import download_dataset
from afternoon.stages.preprocess import preprocess_dataset
from helpers.components import need_debian_fashion_mnist, need_mnist
from helpers.paths import REPO
from helpers.runners import run_cli, run_snakemake
from helpers.stage_args import train_outputs
from helpers.study import planned_train_specs

WORKSHOP = REPO / "config/workshop.yaml"
LONG = 80  # a recipe of this many epochs or more is trained capped here
CAP = 2


@pytest.fixture(scope="module")
def workshop():
    config = load_yaml(WORKSHOP)
    config["data"].setdefault("validation_fraction", 0.1)
    return config, load_zoo(REPO / config["zoo"])


def long_recipes(config, zoo) -> list[str]:
    """The Fashion-MNIST architectures of the workshop whose recipe there is >= LONG epochs."""
    names = study_runs(config, zoo)["fashion_mnist"]
    return [n for n in names if job_spec(config, zoo, "fashion_mnist", n)["epochs"] >= LONG]


def test_the_long_recipes_are_the_seeds(workshop):
    config, zoo = workshop
    names = long_recipes(config, zoo)
    epochs = {n: job_spec(config, zoo, "fashion_mnist", n)["epochs"] for n in names}
    assert epochs == {
        "cnn1": 100,
        "cnn_dropout": 100,
        "fm_dropout55_80": 80,
        "fm_same_80": 80,
        "fm_dropout66_100": 100,
        "fm_nesterov_100": 100,
    }
    assert job_spec(config, zoo, "mnist", "cnn1")["epochs"] == 10  # MNIST keeps its recipe


def test_dry_run_plans_the_fashion_mnist_and_cifar10_recipes():
    specs, _ = planned_train_specs(WORKSHOP)
    assert len(specs) == 9 + 15 + 7
    assert specs["fashion_mnist", "cnn1"]["epochs"] == 100
    assert specs["fashion_mnist", "cnn_dropout"]["epochs"] == 100
    assert specs["fashion_mnist", "cnn2"]["epochs"] == 15  # the log's 15, not the code's 10
    assert specs["fashion_mnist", "fm_nesterov_100"]["optimizer"]["nesterov"] is True
    assert ("mnist", "fm_nesterov_100") not in specs and ("mnist", "ciml_cnn9") in specs
    for arch in ("cnn1", "cnn2", "cnn_dropout", "cnn_batchnorm"):
        cifar = specs["cifar10", arch]
        convs = [layer["conv2d"] for layer in cifar["layers"] if "conv2d" in layer]
        assert convs and all(conv["padding"] == "same" for conv in convs)
        assert cifar["augmentation"] == {"rotation": 10, "shift": 0.1, "zoom": 0.1}
        assert cifar["early_stopping"]["monitor"] == "val_loss"
        assert specs["mnist", arch]["layers"] != cifar["layers"]  # MNIST keeps the seeds' layers


@pytest.fixture(scope="module")
def fashion_slice(tmp_path_factory):
    """Real Fashion-MNIST from the Debian mirror, cut to 512/64/256 images, and a tracking store."""
    root = tmp_path_factory.mktemp("fashion")
    (root / "mirror").mkdir()
    (root / "mirror/fashion_mnist").symlink_to(need_debian_fashion_mnist())
    manifest = root / "raw/MANIFEST.json"
    download_dataset("fashion_mnist", root / "raw", manifest, str(root / "mirror"), progress=False)
    full, card = root / "full.npz", root / "fashion_mnist.card.json"
    preprocess_dataset("fashion_mnist", manifest, full, card, validation_fraction=0.1, seed=42)
    arrays = load_npz(full)
    sizes = {"train": 512, "val": 64, "test": 256}
    tiny = {f"{p}_{s}": arrays[f"{p}_{s}"][:n] for s, n in sizes.items() for p in "xy"}
    write_npz(root / "fashion_mnist.npz", tiny)
    marker = root / "mlflow/tracking.json"
    run_cli("init-tracking", "--experiment", "recipes", "--default-db",
            marker.with_name("mlflow.db"), "--marker", marker, check=True)  # fmt: skip
    return {"npz": root / "fashion_mnist.npz", "card": card, "marker": marker, "root": root}


@pytest.mark.slow
def test_the_long_recipes_train_capped_on_a_fashion_mnist_slice(workshop, fashion_slice):
    import mlflow
    import tensorflow as tf

    from afternoon.report import costs
    from afternoon.stages.train import train_job

    tracking_uri = json.loads(fashion_slice["marker"].read_text())["tracking_uri"]
    config, zoo = workshop
    capped = {**config, "training": {**config["training"], "max_epochs": CAP}}
    for name in long_recipes(config, zoo):
        spec = job_spec(capped, zoo, "fashion_mnist", name)
        assert spec["epochs"] == CAP
        outputs = train_outputs(fashion_slice["root"] / "runs" / name)
        summary = train_job(
            spec, fashion_slice["npz"], fashion_slice["card"], fashion_slice["marker"], outputs, 2
        )
        assert summary["epochs_run"] == summary["epochs_planned"] == CAP
        # what it ran on and cost (a CPU here: 2 cores x the job's wall time)
        assert summary["device"] == costs.device_of(2, gpus=[])["name"]
        assert summary["cost_core_s"] == pytest.approx(2 * summary["job_wall_s"])
        assert summary["job_wall_s"] >= summary["train_time_s"] > 0
        run = mlflow.tracking.MlflowClient(tracking_uri).get_run(summary["run_id"])
        assert run.data.tags["afternoon.device"] == summary["device"]
        assert run.data.metrics["cost_core_s"] == pytest.approx(summary["cost_core_s"])
        assert np.isfinite(summary["final_loss"]) and summary["final_accuracy"] > 0.2
        model = tf.keras.models.load_model(outputs["model"])
        convs = [layer for layer in model.layers if layer.__class__.__name__ == "Conv2D"]
        layers = spec["layers"]
        assert [conv.padding for conv in convs] == [
            layer["conv2d"].get("padding", "valid") for layer in layers if "conv2d" in layer
        ]
        rates = [layer.rate for layer in model.layers if layer.__class__.__name__ == "Dropout"]
        assert rates == [layer["dropout"]["rate"] for layer in layers if "dropout" in layer]
        optimizer = model.optimizer.get_config()
        assert optimizer["nesterov"] == spec["optimizer"].get("nesterov", False)


@pytest.fixture(scope="module")
def real_study(tmp_path_factory):
    """A small real study through Snakemake: fc64 and ciml_cnn, 1 epoch, on real MNIST and real
    Fashion-MNIST (the verified files of ../shared/data/mnist and of Debian's package, as a
    mirror)."""
    workdir = tmp_path_factory.mktemp("real-study")
    mirror = workdir / "mirror"
    mirror.mkdir()
    (mirror / "mnist").symlink_to(need_mnist())
    (mirror / "fashion_mnist").symlink_to(need_debian_fashion_mnist())
    (workdir / "config").mkdir()
    shutil.copy(REPO / "config/zoo.yaml", workdir / "config/zoo.yaml")
    config = yaml.safe_load((REPO / "config/config.yaml").read_text())
    config.update(study="real-small", datasets=["mnist", "fashion_mnist"])
    config.update(architectures=["fc64", "ciml_cnn"])
    config["data"]["mirror"] = str(mirror)
    config["training"]["max_epochs"] = 1
    (workdir / "config/config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    run_snakemake(workdir, "--cores", "2")
    return workdir / "results"


@pytest.mark.slow
def test_report_of_a_real_run_has_seed_columns_cost_and_pareto(real_study):
    scores = pd.read_csv(real_study / "report/scores.csv", index_col="architecture")
    # the seeds' references where the zoo has them (none for the CIML deck's CNN)
    assert scores.loc["fc64", "mnist_reference_pct"] == 97.5
    assert scores.loc["fc64", "fashion_mnist_reference_pct"] == 88.32
    assert pd.isna(scores.loc["ciml_cnn", "fashion_mnist_reference_pct"])
    for ds in ("mnist", "fashion_mnist"):
        difference = (
            scores.loc["fc64", f"{ds}_test_accuracy_pct"]
            - scores.loc["fc64", f"{ds}_reference_pct"]
        )
        assert scores.loc["fc64", f"{ds}_difference_pct"] == pytest.approx(difference, abs=1e-3)
        assert scores.loc["fc64", f"{ds}_seed_gpu_s_per_epoch"] == 1
        for arch in ("fc64", "ciml_cnn"):
            assert scores.loc[arch, f"{ds}_cost"] > 0
            assert scores.loc[arch, f"{ds}_cost_unit"] == "core·s"
            metrics = json.loads((real_study / f"runs/{ds}/{arch}/metrics.json").read_text())
            assert scores.loc[arch, f"{ds}_cost"] == pytest.approx(metrics["cost_core_s"], rel=1e-5)
        assert (real_study / f"report/pareto_{ds}.png").read_bytes().startswith(b"\x89PNG")
    markdown = (real_study / "report/scores.md").read_text()
    header = markdown.splitlines()[0]
    for ds in ("mnist", "fashion_mnist"):
        for column in ("seed (%)", "Δ (pp)", "cost", "s/60k", "seed GPU s/60k"):
            assert f"{ds} {column}" in header
    html = (real_study / "report/index.html").read_text()
    assert html.count('<tr class="cost-row"') == 4
    assert html.count("accuracy against cost on") == 2
    card = json.loads((real_study / "data/fashion_mnist.card.json").read_text())
    assert {f["check"] for f in card["source_files"]} == {"uncompressed_sha256"}
    card = json.loads((real_study / "data/mnist.card.json").read_text())
    assert {f["check"] for f in card["source_files"]} == {"sha256"}
