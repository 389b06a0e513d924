"""The seeds' example scripts and Table B in the zoo (config/zoo.yaml): Adadelta and the step
schedule give the rates the scripts ask for (and a resumed job stays on the staircase), the
Horovod, PyTorch and Keras 3 entries build with the scripts' parameter counts, the new keys are
one-line mistakes at the dry run, and every Table B row validates, fits Fashion-MNIST at the dry
run and carries the slide's test accuracy."""

import json
import re
import signal
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import yaml

from afternoon.checks import check_inputs_fit
from afternoon.config import job_spec, load_yaml, load_zoo
from afternoon.defaults import filled
from afternoon.errors import ConfigError
from afternoon.zoo import validate_architecture
from helpers import runners
from helpers.paths import REPO
from helpers.stage_args import train_outputs
from test_resume import assert_same_training, saved_epoch, start_and_stop, train_command
from test_workshop_recipes import fashion_slice  # noqa: F401 (a fixture: the real 512-image slice)

ZOO = load_zoo(REPO / "config/zoo.yaml")
CONFIG = load_yaml(REPO / "config/config.yaml")
TABLE_B_CONFIG = REPO / "config/fashion_table_b.yaml"


def spec(arch: str, dataset: str = "mnist") -> dict:
    return job_spec(CONFIG, ZOO, dataset, arch)


# --- Adadelta and the step schedule: the rates, in numbers ------------------------------------


def pytorch_adadelta(grads, lr, rho, eps, w):
    """torch.optim.Adadelta's update (its documented algorithm), in NumPy."""
    square_avg, acc_delta = np.zeros_like(w), np.zeros_like(w)
    for g in grads:
        square_avg = rho * square_avg + (1 - rho) * g * g
        delta = np.sqrt(acc_delta + eps) / np.sqrt(square_avg + eps) * g
        acc_delta = rho * acc_delta + (1 - rho) * delta * delta
        w = w - lr * delta
    return w


@pytest.mark.parametrize("arch", ["pytorch_mnist", "horovod_keras_mnist"])
def test_adadelta_updates_as_the_scripts_optimizers_do(arch):
    """Keras' Adadelta with the entry's settings takes the steps PyTorch's (and old Keras')
    Adadelta takes: lr 1.0, and the entry's rho and epsilon (PyTorch's 0.9 / 1e-6, Keras'
    0.95 / 1e-7)."""
    import tensorflow as tf

    from afternoon.training.models import build_optimizer

    settings = spec(arch)["optimizer"]
    expected = {"pytorch_mnist": (0.9, 1e-6), "horovod_keras_mnist": (0.95, 1e-7)}[arch]
    assert (settings["learning_rate"], settings["rho"], settings["epsilon"]) == (1.0, *expected)
    optimizer = build_optimizer(settings)
    w0 = np.array([1.0, -2.0, 0.5], dtype=np.float64)
    grads = [np.array([0.3, -1.0, 2.0]), np.array([0.1, 0.5, -2.0]), np.array([1.0, 1.0, 1.0])]
    var = tf.Variable(w0.astype(np.float32))
    for g in grads:
        optimizer.apply_gradients([(tf.constant(g, tf.float32), var)])
    want = pytorch_adadelta(grads, 1.0, settings["rho"], settings["epsilon"], w0)
    np.testing.assert_allclose(var.numpy(), want, rtol=1e-5)
    assert not np.allclose(want, w0)  # it moved: 1.0 is Adadelta's rate, not Keras' 0.001


def step_schedule(schedule: dict, peak: float, steps_per_epoch: int):
    from afternoon.training.schedules import schedule_of

    arch = filled({**ZOO["cnn1"], "schedule": schedule}, has_validation=True)
    return schedule_of(arch["schedule"], peak, arch["epochs"], steps_per_epoch)


def test_step_schedule_multiplies_the_rate_by_gamma_every_n_epochs():
    # StepLR(step_size=1, gamma=0.7) stepped after every epoch: epoch e trains at 0.7 ** (e - 1)
    rate = step_schedule({"name": "step", "gamma": 0.7, "every_epochs": 1}, 1.0, 100)
    for epoch in range(1, 15):
        first, last = (epoch - 1) * 100, epoch * 100 - 1
        want = 0.7 ** (epoch - 1)
        assert float(rate(first)) == pytest.approx(want, rel=1e-6)
        assert float(rate(last)) == pytest.approx(want, rel=1e-6)
    assert float(rate(13 * 100)) == pytest.approx(0.0096889, rel=1e-4)  # epoch 14: 0.7 ** 13
    # every 2 epochs, PyTorch's default gamma (0.1): 0.5, 0.5, 0.05, 0.05, 0.005
    rate = step_schedule({"name": "step", "every_epochs": 2}, 0.5, 10)
    got = [float(rate(epoch * 10 + 9)) for epoch in range(5)]
    np.testing.assert_allclose(got, [0.5, 0.5, 0.05, 0.05, 0.005], rtol=1e-6)


def test_distributed_ranks_scale_adadelta_as_horovods_example():
    """Adadelta(1.0 x size): the backends' legacy copy of the optimizer, its rate x ranks."""
    from afternoon.distributed.common import scaled_optimizer

    optimizer, rate = scaled_optimizer(spec("pytorch_mnist")["optimizer"], size=4, scale_lr=True)
    assert type(optimizer).__name__ == "Adadelta" and rate == 4.0
    config = optimizer.get_config()
    assert (config["learning_rate"], config["rho"], config["epsilon"]) == (4.0, 0.9, 1e-6)


@pytest.fixture(scope="module")
def digits(digits, tmp_path_factory):
    return runners.tracked_dataset(digits, tmp_path_factory.mktemp("seeds"), "test-seed-examples")


@pytest.mark.slow
def test_pytorch_recipe_trains_on_the_staircase_and_resumes_on_it(digits):
    """pytorch_mnist's recipe (Adadelta 1.0, step gamma 0.7 an epoch, normalised inputs) on
    digits, 8 epochs: the rate per epoch is 1.0, 0.7, 0.49, ..., 0.7 ** 7; a job killed after
    its first checkpoint resumes to the same weights and rates (the step is the optimizer's,
    checkpointed)."""
    import afternoon.training.schedules  # noqa: F401 (the saved models' StepDecay loads)

    arch = spec("pytorch_mnist", dataset="digits") | {"epochs": 8}
    whole, killed = digits["root"] / "whole", digits["root"] / "killed"
    runners.run(train_command(digits, arch, whole), check=True)
    history = pd.read_csv(whole / "history.csv")
    np.testing.assert_allclose(history["lr"], 0.7 ** np.arange(8), rtol=1e-5)
    assert history["val_accuracy"].iloc[-1] > 0.5  # learned (10 classes)

    command = train_command(digits, arch, killed)
    process, _ = start_and_stop(command, killed, signal.SIGKILL)
    assert process.returncode == -signal.SIGKILL
    epoch = saved_epoch(killed)
    assert 1 <= epoch < 8
    resumed = runners.run(command, check=True)
    assert f"from the checkpoint of epoch {epoch}" in resumed.stderr
    assert_same_training(killed, whole)
    np.testing.assert_allclose(pd.read_csv(killed / "history.csv")["lr"], history["lr"])


# --- The example entries: layers and parameter counts -----------------------------------------

# PyTorch's Net (and Horovod's and the Keras 3 slide's model: the same layers) on 28x28x1:
#   conv1 32 3x3:  1*9*32 + 32   =       320   -> 26x26x32
#   conv2 64 3x3:  32*9*64 + 64  =    18,496   -> 24x24x64, max pool 2 -> 12x12x64 = 9,216
#   fc1 9216->128: 9216*128 + 128 = 1,179,776
#   fc2 128->10:   128*10 + 10   =     1,290
#   total                          1,199,882 (dropout, pooling and the rescaling: none)
EXAMPLE_PARAMS = 320 + 18_496 + 1_179_776 + 1_290
EXAMPLES = ["horovod_keras_mnist", "pytorch_mnist", "keras3_cnn_dropout"]


@pytest.mark.parametrize("arch", EXAMPLES)
def test_example_entries_build_with_the_scripts_parameter_count(arch):
    import tensorflow as tf

    from afternoon.training.models import build_model, count_params

    assert EXAMPLE_PARAMS == 1_199_882
    settings = spec(arch)
    model = build_model(settings, (28, 28, 1), steps_per_epoch=10)
    assert count_params(model) == EXAMPLE_PARAMS
    kinds = [type(layer).__name__ for layer in model.layers]
    dropout = "SpatialDropout2D" if arch == "pytorch_mnist" else "Dropout"
    assert kinds == ["Rescaling", "Conv2D", "Conv2D", "MaxPooling2D", dropout, "Flatten",
                     "Dense", "Dropout", "Dense"]  # fmt: skip
    recipes = {
        "horovod_keras_mnist": ("adadelta", 128, 12),  # ceil(12 / size), size 1
        "pytorch_mnist": ("adadelta", 64, 14),  # main.py's --batch-size and --epochs
        "keras3_cnn_dropout": ("adam", 128, 15),
    }
    recipe = (settings["optimizer"]["name"], settings["batch_size"], settings["epochs"])
    assert recipe == recipes[arch]
    # inputs: PyTorch's ToTensor + Normalize((0.1307,), (0.3081,)); the others x / 255
    pixels = model.layers[0](tf.constant([[0, 255]], tf.uint8)).numpy()[0]
    normalized = [-0.1307 / 0.3081, (1 - 0.1307) / 0.3081]
    np.testing.assert_allclose(pixels, normalized if arch == "pytorch_mnist" else [0, 1], rtol=1e-6)


def test_spatial_dropout_drops_whole_feature_maps():
    """Dropout2d on the pooled maps: each of the 64 maps of a sample is all zero or all kept."""
    import tensorflow as tf

    from afternoon.training.models import build_model

    model = build_model(spec("pytorch_mnist"), (28, 28, 1), steps_per_epoch=10)
    layer = model.layers[4]
    out = layer(tf.ones((8, 12, 12, 64)), training=True).numpy()
    per_map = out.reshape(8, 144, 64)
    assert np.all(per_map.min(axis=1) == per_map.max(axis=1))  # constant over each map
    np.testing.assert_allclose(np.unique(per_map), [0.0, 1 / 0.75], rtol=1e-6)  # rate 0.25


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("optimizer", {"name": "adadelta", "rho": 1.5},
         "optimizer.rho: must be a number in [0, 1), got 1.5"),
        ("optimizer", {"name": "adadelta", "momentum": 0.9},
         "optimizer: unknown key 'momentum' (allowed: name, learning_rate, rho, epsilon)"),
        ("schedule", {"name": "step", "gamma": 1.5},
         "schedule.gamma: must be a number in (0, 1], got 1.5"),
        ("schedule", {"name": "step", "every_epochs": 0.5},
         "schedule.every_epochs: must be a positive integer, got 0.5"),
        ("schedule", {"name": "step", "warmup_epochs": 1},
         "schedule: unknown key 'warmup_epochs' (allowed: name, gamma, every_epochs)"),
        ("schedule", {"name": "stairs"},
         "schedule.name: must be cosine, one_cycle or step, got 'stairs'"),
        ("normalize", {"mean": 0.1307}, "normalize: missing required key 'std'"),
        ("normalize", {"mean": 0.1307, "std": 0}, "normalize.std: must be a positive number"),
        ("layers", [{"spatial_dropout2d": {}}, {"dense": {"units": 10, "activation": "softmax"}}],
         "layers[0].spatial_dropout2d: missing required key 'rate'"),
    ],
    ids=["rho", "adadelta-key", "gamma", "every", "step-key", "name", "std", "std-0", "rate"],
)  # fmt: skip
def test_a_mistake_in_a_new_key_is_one_line(field, value, message):
    arch = {**ZOO["pytorch_mnist"], field: value}
    with pytest.raises(ConfigError) as info:
        validate_architecture("pytorch_mnist", arch)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_the_dry_run_stops_a_bad_step_schedule_in_one_line(tmp_path):
    zoo = yaml.safe_load((REPO / "config/zoo.yaml").read_text())
    zoo["pytorch_mnist"]["schedule"]["gamma"] = 7
    (tmp_path / "zoo.yaml").write_text(yaml.safe_dump(zoo))
    (tmp_path / "config.yaml").write_text(
        yaml.safe_dump({"zoo": str(tmp_path / "zoo.yaml"), "architectures": ["pytorch_mnist"]})
    )
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", "--configfile", str(tmp_path / "config.yaml")],
        cwd=REPO, capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 1
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1
    assert "'pytorch_mnist', schedule.gamma: must be a number in (0, 1], got 7" in lines[0]


def test_spatial_dropout_on_a_flat_output_does_not_fit():
    arch = {**ZOO["pytorch_mnist"]}
    arch["layers"] = [*arch["layers"][:6], {"spatial_dropout2d": {"rate": 0.5}}, arch["layers"][7]]
    with pytest.raises(ConfigError, match=r"layers\[6\] \(spatial_dropout2d\): too big for its"):
        check_inputs_fit(["mnist"], {"pytorch_mnist": arch}, ["pytorch_mnist"])


# --- Table B of the Fashion-MNIST deck ---------------------------------------------------------

# Row -> the slide's Test accuracy, for every row the zoo rebuilds (12-14 and 25 are left out:
# the slide does not say which layer they change).
TABLE_B = {
    1: 91.8, 2: 92.67, 3: 93.15, 4: 93.03, 5: 93.35, 6: 92.64, 7: 93.2, 8: 93.17, 9: 93.18,
    10: 93.43, 11: 93.1, 15: 93.48, 16: 93.56, 17: 93.2, 18: 92.93, 19: 93.38, 20: 93.03,
    21: 93.31, 22: 93.57, 23: 93.16, 24: 93.42, 26: 93.68,
}  # fmt: skip


def table_b() -> dict[int, str]:
    return {int(name[4:]): name for name in ZOO if re.fullmatch(r"fm_b\d\d", name)}


def convs_and_denses(layers) -> tuple[list[int], list[int]]:
    convs = [layer["conv2d"]["filters"] for layer in layers if "conv2d" in layer]
    return convs, [layer["dense"]["units"] for layer in layers if "dense" in layer]


def test_every_table_b_row_is_an_entry_with_the_slides_test_accuracy():
    rows = table_b()
    assert sorted(rows) == sorted(TABLE_B)
    for row, name in rows.items():
        validate_architecture(name, ZOO[name])
        assert ZOO[name]["reference_accuracy"] == {"fashion_mnist": TABLE_B[row]}
        assert ZOO[name]["description"].startswith(f"Table B row {row}: ")
    check_inputs_fit(["fashion_mnist"], ZOO, list(rows.values()))
    listed = load_yaml(TABLE_B_CONFIG)["architectures"]
    assert listed == list(rows.values())
    # the rows the issue names, as the slide states them
    assert spec("fm_b01", "fashion_mnist")["optimizer"]["name"] == "sgd"
    assert spec("fm_b02", "fashion_mnist")["optimizer"]["name"] == "adam"
    assert convs_and_denses(ZOO["fm_b16"]["layers"]) == ([64, 192, 192], [256, 10])
    assert convs_and_denses(ZOO["fm_b22"]["layers"]) == ([64, 192, 256], [512, 10])


def test_table_b_dry_run_plans_every_row_on_fashion_mnist():
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", "-p", "--configfile", str(TABLE_B_CONFIG)],
        cwd=REPO, capture_output=True, text=True, check=True,
    )  # fmt: skip
    specs = {}
    for match in re.finditer(r"afternoon\.cli train --spec '(\{.*?\})'", result.stdout):
        job = json.loads(match.group(1))
        specs[job["name"]] = job
    assert sorted(specs) == sorted(table_b().values())
    assert {job["dataset"] for job in specs.values()} == {"fashion_mnist"}
    epochs = {row: specs[name]["epochs"] for row, name in table_b().items()}
    assert epochs == {row: 30 if row == 19 else 25 if 20 <= row <= 24 else 20 for row in TABLE_B}
    assert {job["batch_size"] for job in specs.values()} == {32}


# Rows 16 and 22 on 28x28x1 (3x3 valid convolutions, then one 2x2 pooling):
#   row 16: conv 64 (1*9*64 + 64 = 640), conv 192 (64*9*192 + 192 = 110,784), conv 192
#           (192*9*192 + 192 = 331,968) -> 22x22x192, pool -> 11x11x192 = 23,232;
#           dense 256 (23,232*256 + 256 = 5,947,648), dense 10 (2,570): 6,393,610
#   row 22: conv 64 (640), conv 192 (110,784), conv 256 (192*9*256 + 256 = 442,624), pool ->
#           11x11x256 = 30,976; dense 512 (30,976*512 + 512 = 15,860,224), dense 10 (5,130):
#           16,419,402
TABLE_B_PARAMS = {
    "fm_b01": 1_199_882,  # cnn_dropout's
    "fm_b16": 640 + 110_784 + 331_968 + 5_947_648 + 2_570,
    "fm_b22": 640 + 110_784 + 442_624 + 15_860_224 + 5_130,
}


@pytest.mark.parametrize("arch", TABLE_B_PARAMS)
def test_table_b_rows_build_with_their_parameter_counts(arch):
    from afternoon.training.models import build_model, count_params

    model = build_model(spec(arch, "fashion_mnist"), (28, 28, 1))
    assert count_params(model) == TABLE_B_PARAMS[arch]


@pytest.mark.slow
def test_every_table_b_row_trains_capped_on_a_fashion_mnist_slice(fashion_slice):  # noqa: F811
    """Each Table B row with the slides' recipe (config/fashion_table_b.yaml), capped at one
    epoch (training.max_epochs) on the real 512-image slice of Fashion-MNIST: it trains, its
    loss is finite and its model is the row's (parameters as built). The full recipes (20 to 30
    epochs each) are for a quiet machine: BENCHMARKS.md says which rows were run in full."""
    from afternoon.stages.train import train_job

    # config/fashion_table_b.yaml over the default config (as --configfile does), capped.
    config = {**CONFIG, **load_yaml(TABLE_B_CONFIG)}
    config["training"] = {**CONFIG["training"], "max_epochs": 1}
    assert sorted(config["architectures"]) == sorted(table_b().values())
    for name in config["architectures"]:
        job = job_spec(config, ZOO, "fashion_mnist", name)
        assert job["epochs"] == 1 and job["batch_size"] == 32, name
        outputs = train_outputs(fashion_slice["root"] / "table_b" / name)
        summary = train_job(
            job, fashion_slice["npz"], fashion_slice["card"], fashion_slice["marker"], outputs, 2
        )
        assert summary["epochs_run"] == 1 and np.isfinite(summary["final_loss"]), name
        assert summary["parameters"] == TABLE_B_PARAMS.get(name, summary["parameters"]), name
