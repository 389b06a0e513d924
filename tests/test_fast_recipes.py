"""The fast recipe set (config training.recipes: fast) and what it is made of: the precision
decision (auto: bf16 only on bf16 hardware), the warmed-up cosine schedule, steps per execution."""

import json
import math
import platform

import numpy as np
import pandas as pd
import pytest

from afternoon.config import job_spec, load_yaml, load_zoo
from afternoon.defaults import filled
from afternoon.errors import ConfigError
from afternoon.training.precision import NO_BF16, choose_precision, cpu_flags
from afternoon.zoo import validate_architecture
from helpers import runners
from helpers.components import require
from helpers.paths import REPO
from test_training import train, weights

ZOO = load_zoo(REPO / "config/zoo.yaml")
SEVEN = ("fc64", "fc512", "fc512x3", "cnn1", "cnn2", "cnn_dropout", "cnn_batchnorm")


def config_with(**training) -> dict:
    config = load_yaml(REPO / "config/config.yaml")
    config["training"].update(training)
    return config


# --- Which recipe a job gets -------------------------------------------------------------------


def test_seed_recipes_stay_the_default():
    config = load_yaml(REPO / "config/config.yaml")
    assert config["training"]["recipes"] == "seed"
    spec = job_spec(config, ZOO, "mnist", "cnn_dropout")
    assert (spec["batch_size"], spec["epochs"], spec["precision"]) == (32, 15, "float32")
    assert spec["optimizer"] == {"name": "sgd", "learning_rate": 0.01, "momentum": 0.9,
                                 "nesterov": False}  # fmt: skip
    assert "schedule" not in spec and "steps_per_execution" not in spec


@pytest.mark.parametrize("arch", SEVEN)
def test_every_seed_architecture_has_a_fast_recipe_with_larger_batches_and_fewer_epochs(arch):
    seed = job_spec(config_with(), ZOO, "mnist", arch)
    fast = job_spec(config_with(recipes="fast"), ZOO, "mnist", arch)
    assert fast["layers"] == seed["layers"]  # the same model, another recipe
    assert fast["batch_size"] > seed["batch_size"] or fast["batch_size"] == 256
    assert fast["epochs"] < seed["epochs"]
    assert fast["schedule"]["name"] in ("cosine", "one_cycle")
    assert fast["precision"] == "auto"


def test_config_precision_overrides_the_recipes():
    spec = job_spec(config_with(recipes="fast", precision="float32"), ZOO, "mnist", "cnn1")
    assert spec["precision"] == "float32"


def test_a_bad_schedule_is_one_line_naming_the_key():
    arch = {**ZOO["cnn1"], "schedule": {"name": "linear"}}
    message = r"'cnn1', schedule.name: must be cosine, one_cycle or step"
    with pytest.raises(ConfigError, match=message):
        validate_architecture("cnn1", arch)
    arch["recipes"] = {"fast": {"precision": "fp16"}}
    arch.pop("schedule")
    with pytest.raises(ConfigError, match=r"recipes.fast.precision: must be float32 or "):
        validate_architecture("cnn1", arch)


# --- Precision: bf16 only where the hardware computes in it ------------------------------------


def test_auto_precision_follows_the_cpu_flags_and_the_gpu():
    assert choose_precision("auto", flags={"avx2", "amx_bf16"})[0] == "mixed_bfloat16"
    assert choose_precision("auto", flags={"avx512f", "avx512_bf16"})[0] == "mixed_bfloat16"
    precision, why = choose_precision("auto", flags={"avx2", "avx512f"})  # an AMD EPYC of ours
    assert precision == "float32" and NO_BF16 in why and "#45441" in why
    assert choose_precision("auto", [("A100", "8.0")], flags=set())[0] == "mixed_bfloat16"
    assert choose_precision("auto", [("V100", "7.0")], flags={"amx_bf16"})[0] == "mixed_float16"
    # asked for explicitly: honoured, and said when it will be slow
    precision, why = choose_precision("mixed_bfloat16", flags=set())
    assert precision == "mixed_bfloat16" and NO_BF16 in why
    assert choose_precision("float32", flags={"amx_bf16"})[0] == "float32"


def test_cpu_flags_reads_this_machine():
    # An empty set is detection broken, not a CPU without flags: `auto` would then pick float32
    # on a bf16 CPU without a word. Every x86-64 CPU has the architecture's baseline flags.
    machine = platform.machine()
    require(machine == "x86_64", f"the kernel lists x86 flags on x86-64 only, this is {machine}")
    assert {"fpu", "cx8", "cmov", "sse", "sse2"} <= cpu_flags()


# --- Training with the fast recipe (digits) ----------------------------------------------------


@pytest.fixture(scope="module")
def digits(digits, tmp_path_factory):
    """The session's digits dataset and a tracking store of this module's."""
    return runners.tracked_dataset(digits, tmp_path_factory.mktemp("fast"), "test-fast-recipes")


def training_samples(digits) -> int:
    from afternoon.npz import load_npz

    return len(load_npz(digits["npz"])["x_train"])


def test_a_fast_recipe_trains_with_its_precision_schedule_and_batch(digits):
    import mlflow
    import tensorflow as tf

    import afternoon.training.schedules  # noqa: F401 (a saved model's schedule loads where it is imported)

    spec = job_spec(config_with(recipes="fast"), ZOO, "digits", "cnn_dropout")
    out = digits["root"] / "fast"
    train(digits, spec, out)
    metrics = json.loads((out / "metrics.json").read_text())
    expected, why = choose_precision("auto")
    assert (metrics["precision"], metrics["precision_reason"]) == (expected, why)
    record = json.loads((out / "run.json").read_text())
    marker = json.loads(digits["marker"].read_text())
    run = mlflow.tracking.MlflowClient(marker["tracking_uri"]).get_run(record["run_id"])
    assert run.data.tags["precision"] == expected
    assert run.data.params["batch_size"] == "256" and run.data.params["precision"] == "auto"

    model = tf.keras.models.load_model(out / "model.keras")
    assert model.layers[1].compute_dtype == ("bfloat16" if expected != "float32" else "float32")
    # every epoch ran its ceil(samples / 256) steps: the recipe's batch, not the seed's 32
    steps = math.ceil(training_samples(digits) / 256)
    assert int(model.optimizer.iterations) == spec["epochs"] * steps
    # the learning rate, per epoch (its last step): warmed up over epoch 1, then a cosine decay
    history = pd.read_csv(out / "history.csv")
    peak, total = spec["optimizer"]["learning_rate"], spec["epochs"] * steps
    for epoch, lr in zip(history["epoch"], history["lr"], strict=True):
        step = epoch * steps - 1
        if epoch == 1:
            assert lr == pytest.approx(peak, rel=1e-3)  # the warm-up's end
        else:
            progress = (step - steps) / (total - steps)
            assert lr == pytest.approx(peak * 0.5 * (1 + math.cos(math.pi * progress)), rel=1e-3)
    assert history["lr"].iloc[-1] < 0.01 * peak
    assert metrics["final_val_accuracy"] > 0.6  # learned (10 classes): 30 steps on 8x8 digits


def test_steps_per_execution_changes_no_weight(digits):
    """The pipeline's default (many steps per call) trains exactly what one step per call does."""
    from afternoon.training.loop import STEPS_PER_EXECUTION

    spec = job_spec(config_with(), ZOO, "digits", "cnn_dropout") | {"epochs": 2, "batch_size": 16}
    # the default takes effect: more steps an epoch than one call runs
    assert math.ceil(training_samples(digits) / spec["batch_size"]) > STEPS_PER_EXECUTION
    many, one = digits["root"] / "spe-many", digits["root"] / "spe-one"
    train(digits, spec, many)
    train(digits, spec | {"steps_per_execution": 1}, one)
    for w1, w2 in zip(weights(many / "model.keras"), weights(one / "model.keras"), strict=True):
        np.testing.assert_array_equal(w1, w2)


def schedule_of(schedule: dict, peak: float, epochs: int, steps_per_epoch: int):
    """training.schedules.schedule_of of ``schedule`` as a job's spec has it (defaults filled)."""
    from afternoon.training import schedules

    spec = filled({**ZOO["cnn1"], "epochs": epochs, "schedule": schedule}, has_validation=True)
    return schedules.schedule_of(spec["schedule"], peak, epochs, steps_per_epoch)


def test_one_cycle_rises_from_a_25th_of_the_peak_over_30_percent_then_anneals():
    schedule = schedule_of({"name": "one_cycle"}, peak=0.01, epochs=10, steps_per_epoch=100)
    rate = [float(schedule(step)) for step in range(1000)]
    assert rate[0] == pytest.approx(0.01 / 25 + (0.01 - 0.01 / 25) / 300, rel=1e-4)
    assert max(rate) == pytest.approx(0.01, rel=1e-4) and rate.index(max(rate)) in (299, 300)
    assert all(a <= b for a, b in zip(rate[:300], rate[1:300], strict=False))  # rising
    assert all(a >= b for a, b in zip(rate[300:], rate[301:], strict=False))  # annealing
    assert rate[-1] < 1e-6  # final_lr_fraction 0
    floor = schedule_of({"name": "cosine", "final_lr_fraction": 0.1}, 0.01, 10, 100)
    assert float(floor(999)) == pytest.approx(0.001, rel=1e-3)
    assert float(floor(0)) == pytest.approx(0.01)  # no warm-up by default
