"""The Fashion-MNIST fast recipes (issue 21) and their knobs: a recipe set's overrides per dataset
(recipes.<set>.datasets), horizontal flips only where the registry says they keep the label (a
flip on digits or MNIST is one line at the dry run), label smoothing on integer labels; the
afternoon config (config/afternoon.yaml) planned, and every Fashion-MNIST fast recipe trained
capped at one epoch (training.max_epochs) on a 512-image slice of the real Fashion-MNIST."""

import copy
import json
import shlex
import subprocess
import sys

import numpy as np
import pytest
import yaml

from afternoon.checks import check_jobs
from afternoon.config import job_spec, load_yaml, load_zoo, study_runs
from afternoon.errors import ConfigError
from afternoon.registry import dataset_entry
from afternoon.zoo import architecture_for, validate_architecture
from helpers.paths import REPO
from helpers.stage_args import train_outputs
from helpers.study import planned_train_specs
from test_workshop_recipes import fashion_slice  # noqa: F401 (a fixture: the real 512-image slice)

ZOO = load_zoo(REPO / "config/zoo.yaml")
AFTERNOON = REPO / "config/afternoon.yaml"
SEVEN = ["fc64", "fc512", "fc512x3", "cnn1", "cnn2", "cnn_dropout", "cnn_batchnorm"]
CIML = ["ciml_cnn", "ciml_cnn9"]
# The instructors' eight solutions (fm_*), not Table B's rows (fm_b01 ...)
SOLUTIONS = [name for name in ZOO if name.startswith("fm_") and not name.startswith("fm_b")]


@pytest.fixture(scope="module")
def afternoon():
    return load_yaml(AFTERNOON), ZOO


# --- The grammar: a recipe set per dataset, flips, label smoothing -----------------------------


def test_a_recipe_sets_dataset_overrides_apply_last_on_that_dataset_only():
    zoo = copy.deepcopy(ZOO)
    cnn1 = zoo["cnn1"]
    cnn1["recipes"]["fast"]["datasets"] = {"fashion_mnist": {"epochs": 9, "batch_size": 64}}
    fashion = architecture_for(zoo, "cnn1", "fashion_mnist", "fast")
    # entry, its fashion_mnist override (epochs 100), the set (epochs 5), the set's fashion_mnist
    assert (fashion["epochs"], fashion["batch_size"]) == (9, 64)
    assert fashion["optimizer"] == cnn1["recipes"]["fast"]["optimizer"]
    mnist = architecture_for(zoo, "cnn1", "mnist", "fast")
    assert (mnist["epochs"], mnist["batch_size"]) == (5, 256)
    assert architecture_for(zoo, "cnn1", "fashion_mnist")["epochs"] == 100  # seed: untouched
    assert "datasets" not in fashion


@pytest.mark.parametrize(
    "recipe, message",
    [
        ({"datasets": {"svhn": {"epochs": 3}}}, "recipes.fast.datasets: unknown dataset 'svhn'"),
        ({"datasets": {"mnist": {"epoch": 3}}}, "recipes.fast.datasets.mnist: unknown key 'epoch'"),
        ({"label_smoothing": 1.0}, "recipes.fast.label_smoothing: must be a number in [0, 1)"),
        ({"augmentation": {"flip": "vertical"}}, "recipes.fast.augmentation.flip: must be "),
        ({"datasets": {"mnist": {"datasets": {}}}}, "datasets.mnist: unknown key 'datasets'"),
    ],
)
def test_a_bad_recipe_is_one_line_naming_the_key(recipe, message):
    arch = copy.deepcopy(ZOO["cnn2"])
    arch["recipes"]["fast"].update(recipe)
    with pytest.raises(ConfigError) as info:
        validate_architecture("cnn2", arch)
    assert message in str(info.value) and "\n" not in str(info.value)
    assert str(info.value).startswith("architecture 'cnn2', recipes.fast")


def test_the_registry_says_which_datasets_a_flip_keeps():
    flips = {ds: dataset_entry(ds)["label_preserving_flips"] for ds in ("digits", "mnist")}
    assert flips == {"digits": [], "mnist": []}
    for dataset in ("fashion_mnist", "cifar10"):
        assert dataset_entry(dataset)["label_preserving_flips"] == ["horizontal"]


def dry_run(tmp_path, config: dict) -> subprocess.CompletedProcess:
    """``snakemake -n`` of the default study with ``config`` (its keys) changed."""
    configfile = tmp_path / "config.yaml"
    configfile.write_text(yaml.safe_dump({**load_yaml(REPO / "config/config.yaml"), **config}))
    command = [sys.executable, "-m", "snakemake", "-n", "--configfile", str(configfile)]
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True)


@pytest.mark.parametrize("dataset", ["digits", "mnist"])
def test_a_flip_on_digits_or_mnist_is_refused_at_the_dry_run_in_one_line(tmp_path, dataset):
    zoo = yaml.safe_load((REPO / "config/zoo.yaml").read_text())
    zoo["cnn1"]["recipes"]["fast"]["datasets"] = {dataset: {"augmentation": {"flip": "horizontal"}}}
    (tmp_path / "zoo.yaml").write_text(yaml.safe_dump(zoo))
    training = {**load_yaml(REPO / "config/config.yaml")["training"], "recipes": "fast"}
    study = {"zoo": str(tmp_path / "zoo.yaml"), "datasets": [dataset], "training": training}
    result = dry_run(tmp_path, {**study, "architectures": ["fc64", "cnn1"]})
    assert result.returncode == 1
    assert [line for line in result.stderr.splitlines() if line.startswith("afternoon:")] == [
        f"afternoon: {tmp_path / 'zoo.yaml'}: architecture 'cnn1', recipes.fast.datasets."
        f"{dataset}.augmentation.flip: a horizontal flip changes the label of {dataset} images "
        f"(label_preserving_flips of {dataset}: none; workflow/afternoon/datasets.yaml)"
    ]


def test_a_flip_in_the_seed_recipe_is_refused_too_and_fashion_mnist_takes_it():
    zoo = copy.deepcopy(ZOO)
    zoo["cnn2"]["augmentation"] = {"flip": "horizontal"}
    config = load_yaml(REPO / "config/config.yaml")
    check_jobs({**config, "datasets": ["fashion_mnist", "cifar10"]}, zoo, ["cnn2"])
    with pytest.raises(ConfigError, match=r"'cnn2', augmentation.flip: a horizontal flip changes"):
        check_jobs({**config, "datasets": ["mnist"]}, zoo, ["cnn2"])


def test_a_search_from_a_recipe_that_flips_mnist_is_refused():
    from afternoon.search.grammar import validate_search

    search = load_yaml(REPO / "config/searches.yaml")["fashion_exercise_fast"]
    validate_search("fashion_exercise_fast", search, ZOO)
    zoo = copy.deepcopy(ZOO)
    zoo["cnn_dropout"]["recipes"]["fast"]["augmentation"] = {"flip": "horizontal"}
    with pytest.raises(ConfigError, match=r"'fashion_exercise_fast', recipes: architecture "
                       r"'cnn_dropout', augmentation.flip: a horizontal flip changes the label "
                       r"of mnist"):  # fmt: skip
        validate_search("fashion_exercise_fast", {**search, "datasets": ["mnist"]}, zoo)
    with pytest.raises(ConfigError, match=r"recipes: architecture 'cnn_dropout' has no 'slow'"):
        validate_search("fashion_exercise_fast", {**search, "recipes": "slow"}, ZOO)


def test_the_flip_is_a_training_only_layer_of_the_model():
    import tensorflow as tf

    from afternoon.training.models import build_model

    spec = job_spec(load_yaml(AFTERNOON), ZOO, "fashion_mnist", "cnn2")
    assert spec["augmentation"] == {"flip": "horizontal"}
    model = build_model(spec, (28, 28, 1), steps_per_epoch=2)
    flips = [layer for layer in model.layers if isinstance(layer, tf.keras.layers.RandomFlip)]
    assert [layer.mode for layer in flips] == ["horizontal"]
    image = np.arange(28 * 28, dtype=np.float32).reshape(1, 28, 28, 1)
    assert np.array_equal(flips[0](image, training=False), image)  # inference: the image itself
    flipped = [np.array_equal(flips[0](image, training=True), image[:, :, ::-1]) for _ in range(20)]
    assert any(flipped) and not all(flipped)  # training: mirrored about half the time


# --- Label smoothing ---------------------------------------------------------------------------


def test_label_smoothing_changes_the_loss_as_specified():
    import tensorflow as tf

    from afternoon.training.losses import SmoothedSparseCategoricalCrossentropy, loss_of

    probs = np.array([[0.7, 0.2, 0.1], [0.25, 0.25, 0.5]], np.float32)
    labels = np.array([0, 2])
    e = 0.1
    targets = (1 - e) * np.eye(3)[labels] + e / 3  # [[0.9333, 0.0333, 0.0333], ...]
    expected = float(np.mean(-(targets * np.log(probs)).sum(axis=1)))
    smoothed = float(SmoothedSparseCategoricalCrossentropy(e)(labels, probs))
    assert smoothed == pytest.approx(expected, rel=1e-5)
    # the first image by hand: -(0.9333 ln 0.7 + 0.0333 ln 0.2 + 0.0333 ln 0.1)
    first = float(SmoothedSparseCategoricalCrossentropy(e)(labels[:1], probs[:1]))
    assert first == pytest.approx(0.4633, abs=1e-4)
    keras = tf.keras.losses.CategoricalCrossentropy(label_smoothing=e)(np.eye(3)[labels], probs)
    assert smoothed == pytest.approx(float(keras), rel=1e-6)
    plain = float(np.mean(-np.log(probs[[0, 1], labels])))
    assert float(SmoothedSparseCategoricalCrossentropy(0.0)(labels, probs)) == pytest.approx(plain)
    assert smoothed > plain  # smoothing penalises the confident right answer
    # The default (no key, or 0) is Keras' own sparse loss, as before.
    assert loss_of({}) == loss_of({"label_smoothing": 0}) == "sparse_categorical_crossentropy"


def test_a_model_with_label_smoothing_reports_accuracy_and_loads_back(tmp_path):
    from afternoon.evaluation import load_model
    from afternoon.training.losses import SmoothedSparseCategoricalCrossentropy
    from afternoon.training.models import build_model

    config = load_yaml(REPO / "config/config.yaml")
    seed_spec = job_spec(config, ZOO, "digits", "fc64")
    assert "label_smoothing" not in seed_spec  # the default leaves the spec as it was
    assert build_model(seed_spec, (8, 8, 1)).loss == "sparse_categorical_crossentropy"
    model = build_model({**seed_spec, "label_smoothing": 0.1}, (8, 8, 1))
    assert isinstance(model.loss, SmoothedSparseCategoricalCrossentropy)
    x = np.random.default_rng(0).integers(0, 256, (16, 8, 8, 1), dtype=np.uint8)
    y = np.arange(16, dtype=np.uint8) % 10
    scores = model.evaluate(x, y, verbose=0, return_dict=True)
    assert set(scores) == {"loss", "accuracy"}
    model.save(tmp_path / "model.keras")
    loaded = load_model(tmp_path / "model.keras")
    assert loaded.loss.label_smoothing == pytest.approx(0.1)
    assert loaded.evaluate(x, y, verbose=0) == pytest.approx(list(scores.values()), rel=1e-5)


# --- The afternoon config: planned, and the Fashion-MNIST fast recipes trained capped -----------


def test_every_fashion_mnist_architecture_has_a_fast_recipe_of_its_own(afternoon):
    config, zoo = afternoon
    runs = study_runs(config, zoo)
    assert runs["fashion_mnist"] == SEVEN + CIML + SOLUTIONS
    assert runs["mnist"] == SEVEN + CIML
    for name in runs["fashion_mnist"]:
        seed = job_spec({**config, "training": {**config["training"], "recipes": "seed"}}, zoo,
                        "fashion_mnist", name)  # fmt: skip
        fast = job_spec(config, zoo, "fashion_mnist", name)
        assert fast["layers"] == seed["layers"]  # the slide's layers, another recipe
        assert fast["precision"] == "auto"
        assert zoo[name]["recipes"]["fast"]["datasets"]["fashion_mnist"]
        assert fast["epochs"] < seed["epochs"] or name in CIML  # CIML: the deck gives none
        flips = fast.get("augmentation", {}).get("flip")
        if name in CIML:  # small nets that underfit: more steps, no flips, no smoothing
            assert fast["batch_size"] == 128 and "label_smoothing" not in fast and flips is None
            continue
        rates = [layer["dropout"]["rate"] for layer in fast["layers"] if "dropout" in layer]
        if rates == [0.6, 0.6]:  # dropout 0.6 twice: no flips, more steps
            assert fast["batch_size"] == 128 and fast["label_smoothing"] == 0.1 and flips is None
            continue
        assert fast["batch_size"] == 256 and fast["label_smoothing"] == 0.1
        assert flips == (None if name.startswith("fc") else "horizontal")
    # the dropout nets train longer than cnn2 (issue 21: 6 epochs left cnn_dropout 1.5 points short)
    epochs = {n: job_spec(config, zoo, "fashion_mnist", n)["epochs"] for n in SEVEN}
    assert epochs["cnn_dropout"] > epochs["cnn2"] > job_spec(config, zoo, "mnist", "cnn2")["epochs"]
    for name in runs["mnist"]:  # MNIST keeps its fast recipes: no flip, no smoothing
        spec = job_spec(config, zoo, "mnist", name)
        assert "augmentation" not in spec and "label_smoothing" not in spec


def test_the_afternoon_is_planned_with_its_fast_recipes_and_the_exercise_search():
    specs, commands = planned_train_specs(AFTERNOON)
    assert len(specs) == 9 + 17
    assert specs["fashion_mnist", "cnn_dropout"]["augmentation"] == {"flip": "horizontal"}
    # the Nesterov rows keep Nesterov momentum, in Adam's form
    assert specs["fashion_mnist", "fm_nesterov_100"]["optimizer"]["name"] == "nadam"
    assert all(spec["schedule"]["name"] == "cosine" for spec in specs.values())
    (tune,) = [line for line in commands.splitlines() if "afternoon.cli tune " in line]
    words = shlex.split(tune)  # the spec shell-quoted (its description has an apostrophe)
    job = json.loads(words[words.index("--spec") + 1])
    assert (job["name"], job["dataset"], job["base"]) == (
        "fashion_exercise_fast", "fashion_mnist", "cnn_dropout")  # fmt: skip
    fast = specs["fashion_mnist", "cnn_dropout"]
    for key in ("batch_size", "augmentation", "label_smoothing", "precision"):
        assert job["arch"][key] == fast[key]  # the search starts from the fast recipe
    assert job["arch"]["schedule"]["name"] == "cosine"
    assert "train_search_best" in commands and "evaluate_search_best" in commands


def test_the_exercise_search_from_the_seed_recipe_is_kept():
    searches = load_yaml(REPO / "config/searches.yaml")
    assert "recipes" not in searches["fashion_exercise"]
    assert searches["fashion_exercise"]["algorithm"]["hyperband"]["max_epochs"] == 27
    assert searches["fashion_exercise_fast"]["recipes"] == "fast"
    assert searches["fashion_exercise_fast"]["workers"] == 2
    assert list(searches["fashion_exercise_fast"]["algorithm"]) == ["hyperband"]


@pytest.mark.slow
def test_the_fashion_fast_recipes_train_capped_on_a_fashion_mnist_slice(afternoon, fashion_slice):  # noqa: F811
    import tensorflow as tf

    from afternoon.stages.train import train_job

    config, zoo = afternoon
    capped = {**config, "training": {**config["training"], "max_epochs": 1}}
    for name in study_runs(config, zoo)["fashion_mnist"]:
        spec = job_spec(capped, zoo, "fashion_mnist", name)
        assert spec["epochs"] == 1
        outputs = train_outputs(fashion_slice["root"] / "fast" / name)
        summary = train_job(
            spec, fashion_slice["npz"], fashion_slice["card"], fashion_slice["marker"], outputs, 2
        )
        assert summary["epochs_run"] == summary["epochs_planned"] == 1, name
        assert np.isfinite(summary["final_loss"]) and "final_val_accuracy" in summary
        model = tf.keras.models.load_model(outputs["model"], compile=False)
        kinds = {layer.__class__.__name__ for layer in model.layers}
        assert ("RandomFlip" in kinds) == ("augmentation" in spec), name
        assert summary["precision"] in ("float32", "mixed_bfloat16")
