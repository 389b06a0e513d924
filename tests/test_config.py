"""Config loading and validation: every mistake is one line naming the key and the reason."""

import copy
import re
import subprocess
import sys

import pytest
import yaml

from afternoon.checks import check_inputs_fit, check_jobs
from afternoon.config import (
    check_against_schema,
    job_spec,
    load_yaml,
    load_zoo,
    scaled_epochs,
    selected_architectures,
    study_runs,
    typed_command_line_values,
)
from afternoon.defaults import (
    DISTRIBUTED_DEFAULTS,
    distributed_settings,
    early_stopping_settings,
    ranks_of,
)
from afternoon.errors import ConfigError
from afternoon.registry import dataset_names
from afternoon.zoo import (
    OVERRIDABLE_KEYS,
    TRAINING_KEYS,
    architecture_for,
    dataset_pattern,
    validate_architecture,
)
from conftest import REPO

SCHEMA = load_yaml(REPO / "workflow/schemas/config.schema.yaml")


@pytest.fixture
def config():
    return load_yaml(REPO / "config/config.yaml")


@pytest.fixture(scope="module")
def zoo():
    return load_zoo(REPO / "config/zoo.yaml")


def test_shipped_configs_are_valid(config):
    check_against_schema(config, SCHEMA)
    check_against_schema(load_yaml(REPO / "config/workshop.yaml"), SCHEMA)


@pytest.mark.parametrize(
    "mutate, expected",
    [
        (lambda c: c["training"].update(foo=1), "unknown key training.foo"),
        (lambda c: c.update(colour="red"), "unknown key colour"),
        (lambda c: c["training"].update(epochs_scale="fast"), "key training.epochs_scale"),
        (lambda c: c["training"].update(epochs_scale=0), "key training.epochs_scale"),
        (lambda c: c["training"].update(max_epochs=0), "key training.max_epochs"),
        (lambda c: c["training"].update(precision="fp8"), "key training.precision"),
        (lambda c: c["data"].update(validation_fraction=1.5), "key data.validation_fraction"),
        (lambda c: c.pop("zoo"), "'zoo' is a required property"),
    ],
)
def test_schema_errors_name_the_key(config, mutate, expected):
    mutate(config)
    with pytest.raises(ConfigError, match=re.escape(expected)) as info:
        check_against_schema(config, SCHEMA)
    message = str(info.value)
    assert expected in message
    assert "\n" not in message


def test_command_line_strings_are_typed_as_the_schema_says(config):
    """What `--config training='{max_epochs: 1, deterministic: false, precision: null}'` and
    `data='{validation_fraction: 0.2}'` pass (every value a string) reads as typed; a string
    key keeps its string, a value not of the key's type stays for the check to name."""
    given = {"training": {"max_epochs": "1", "deterministic": "false", "precision": "null",
                          "recipes": "fast", "nodes": "2"},
             "data": {"validation_fraction": "0.2"}, "seed": 3, "datasets": ["mnist"]}  # fmt: skip
    typed = typed_command_line_values(given, SCHEMA)
    assert typed["training"] == {"max_epochs": 1, "deterministic": False, "precision": None,
                                 "recipes": "fast", "nodes": "2"}  # fmt: skip
    assert typed["data"] == {"validation_fraction": 0.2}
    assert (typed["seed"], typed["datasets"]) == (3, ["mnist"])
    wrong = typed_command_line_values({"training": {"max_epochs": "one"}}, SCHEMA)
    assert wrong == {"training": {"max_epochs": "one"}}
    config["training"].update(max_epochs="1")
    config.update(typed_command_line_values(config, SCHEMA))
    check_against_schema(config, SCHEMA)  # valid once typed


def test_duplicate_yaml_key_is_refused(tmp_path):
    path = tmp_path / "zoo.yaml"
    path.write_text("fc64:\n  epochs: 1\nfc64:\n  epochs: 2\n")
    with pytest.raises(ConfigError, match=r"zoo.yaml:3: duplicate key 'fc64'"):
        load_yaml(path)


def test_invalid_yaml_and_missing_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [1, 2\n")
    with pytest.raises(ConfigError, match="bad.yaml:.*invalid YAML"):
        load_yaml(bad)
    with pytest.raises(ConfigError, match="missing.yaml: cannot read"):
        load_yaml(tmp_path / "missing.yaml")


def test_unknown_architecture_selected(config, zoo):
    config["architectures"] = ["fc64", "resnet"]
    with pytest.raises(ConfigError, match="'resnet' is not in the zoo"):
        selected_architectures(config, zoo)


def test_all_architectures_when_none_selected(config, zoo):
    config["architectures"] = []
    assert selected_architectures(config, zoo) == list(zoo)


def test_epochs_scale_and_cap():
    assert scaled_epochs(40, {"epochs_scale": 0.1}) == 4
    assert scaled_epochs(15, {"epochs_scale": 0.1}) == 2
    assert scaled_epochs(3, {"epochs_scale": 0.01}) == 1
    assert scaled_epochs(40, {"epochs_scale": 1.0, "max_epochs": 5}) == 5


def test_job_spec_is_the_slice_of_one_job(config, zoo):
    spec = job_spec(config, zoo, "digits", "cnn1")
    for layer, entry in zip(spec["layers"], zoo["cnn1"]["layers"], strict=True):
        ((kind, given),) = entry.items()  # the entry's layer, its defaults filled in
        assert list(layer) == [kind] and (given or {}).items() <= layer[kind].items()
    assert spec["epochs"] == 10 and spec["batch_size"] == 32
    assert spec["seed"] == 42 and spec["dataset"] == "digits" and spec["name"] == "cnn1"
    # report-only keys never reach training: editing them retrains nothing
    assert "reference_accuracy" not in spec and "description" not in spec


def test_job_spec_applies_per_dataset_overrides(config, zoo):
    zoo = {**zoo, "cnn1": {**zoo["cnn1"], "datasets": {"mnist": {"epochs": 3, "batch_size": 64}}}}
    assert job_spec(config, zoo, "mnist", "cnn1")["epochs"] == 3
    assert job_spec(config, zoo, "mnist", "cnn1")["batch_size"] == 64
    assert job_spec(config, zoo, "digits", "cnn1")["epochs"] == 10


def _dry_run(tmp_path, config_text, *extra):
    configfile = tmp_path / "config.yaml"
    configfile.write_text(config_text)
    return subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", "--configfile", str(configfile), *extra],
        cwd=REPO,
        capture_output=True,
        text=True,
    )


def test_snakemake_rejects_a_bad_key_in_one_line_before_any_job(tmp_path, config):
    config["training"]["epochz"] = 3
    result = _dry_run(tmp_path, yaml.safe_dump(config))
    assert result.returncode == 1
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines == [
        "afternoon: config: unknown key training.epochz (allowed here: conda_env, deterministic, "
        "epochs_scale, max_epochs, mpi_launcher, nodes, precision, profile_batches, recipes, "
        "tasks_per_node, threads, worker_launcher)"
    ]


def test_snakemake_rejects_a_bad_architecture_in_the_zoo(tmp_path, config):
    zoo = yaml.safe_load((REPO / "config/zoo.yaml").read_text())
    zoo["cnn1"]["layers"][0] = {"conv3d": {"filters": 8}}
    (tmp_path / "zoo.yaml").write_text(yaml.safe_dump(zoo))
    config["zoo"] = str(tmp_path / "zoo.yaml")
    result = _dry_run(tmp_path, yaml.safe_dump(config))
    assert result.returncode == 1
    assert "architecture 'cnn1'" in result.stderr and "conv3d" in result.stderr
    assert len([line for line in result.stderr.splitlines() if line.strip()]) == 1


KNOWN = "known: digits, mnist, fashion_mnist, cifar10"


def test_unknown_dataset_is_refused_against_the_registry(config, zoo):
    config["datasets"] = ["digits", "imagenet"]
    check_against_schema(config, SCHEMA)  # the schema lists no dataset: the registry does
    with pytest.raises(ConfigError, match="unknown dataset 'imagenet'") as info:
        check_inputs_fit(config["datasets"], zoo, list(zoo))
    assert str(info.value) == f"config: key datasets.1: unknown dataset 'imagenet' ({KNOWN})"
    assert "key datasets.1" in str(info.value)  # as the schema's error named it


def test_the_dataset_names_come_from_the_registry_alone():
    schema_text = (REPO / "workflow/schemas/config.schema.yaml").read_text()
    assert not any(name in schema_text for name in dataset_names())
    assert dataset_pattern() == "|".join(dataset_names()) == "digits|mnist|fashion_mnist|cifar10"


def test_the_schema_default_seed_is_the_one_a_job_gets(config, zoo):
    from snakemake.utils import validate

    del config["seed"]
    validate(config, str(REPO / "workflow/schemas/config.schema.yaml"))  # fills in defaults
    assert (
        job_spec(config, zoo, "digits", "fc64")["seed"] == SCHEMA["properties"]["seed"]["default"]
    )
    training = SCHEMA["properties"]["training"]["properties"]
    assert training["precision"]["default"] is None  # each recipe's: the seed's are float32
    assert job_spec(config, zoo, "digits", "fc64")["precision"] == "float32"
    assert config["training"]["recipes"] == training["recipes"]["default"] == "seed"


def test_overridable_keys_are_what_the_validator_allows(zoo):
    assert "distributed" in OVERRIDABLE_KEYS and "layers" in OVERRIDABLE_KEYS
    assert TRAINING_KEYS == OVERRIDABLE_KEYS
    override = {"optimizer": {"name": "sgd"}, "batch_size": 8, "epochs": 2, "distributed": {}}
    override |= {"early_stopping": {"patience": 1}, "augmentation": {"zoom": 0.1}}
    override |= {"schedule": {"name": "cosine"}, "precision": "auto", "steps_per_execution": 4}
    override["layers"] = [{"dense": {"units": 10, "activation": "softmax"}}]
    override["label_smoothing"] = 0.1
    override["normalize"] = {"mean": 0.5, "std": 0.25}
    assert set(override) == set(OVERRIDABLE_KEYS)
    arch = {**zoo["cnn1"], "datasets": {"mnist": override}}
    validate_architecture("cnn1", arch)
    assert architecture_for({"cnn1": arch}, "cnn1", "mnist") == override
    assert architecture_for({"cnn1": arch}, "cnn1", "digits")["layers"] == zoo["cnn1"]["layers"]
    with pytest.raises(ConfigError, match="datasets.mnist: unknown key 'description'") as info:
        validate_architecture("cnn1", {**arch, "datasets": {"mnist": {"description": "x"}}})
    allowed = ", ".join(OVERRIDABLE_KEYS)
    assert str(info.value) == (
        f"architecture 'cnn1', datasets.mnist: unknown key 'description' (allowed: {allowed})"
    )


def _dry_run_with_cnn1_layers_on_digits(tmp_path, config, layers):
    """The dry run of ``config`` with a zoo whose cnn1 overrides its layers on digits; failed."""
    zoo = yaml.safe_load((REPO / "config/zoo.yaml").read_text())
    zoo["cnn1"]["datasets"] = {"digits": {"layers": layers}}
    (tmp_path / "zoo.yaml").write_text(yaml.safe_dump(zoo))
    config["zoo"] = str(tmp_path / "zoo.yaml")
    result = _dry_run(tmp_path, yaml.safe_dump(config))
    assert result.returncode == 1
    return result


@pytest.mark.parametrize(
    "layers, message",
    [
        ([], "datasets.digits.layers: must be a non-empty list of one-key mappings"),
        (
            [{"conv3d": {}}, {"dense": {"units": 10, "activation": "softmax"}}],
            "datasets.digits.layers[0]: unknown layer type 'conv3d' (known: dense, conv2d, "
            "maxpool2d, dropout, batchnorm, flatten, spatial_dropout2d)",
        ),
        (
            [{"dense": {"units": 10, "activation": "relu"}}],
            "datasets.digits.layers[0]: the last layer must be dense with softmax",
        ),
    ],
    ids=["empty", "unknown-type", "no-softmax"],
)
def test_a_bad_layers_override_is_one_line_at_dry_run(tmp_path, config, layers, message):
    result = _dry_run_with_cnn1_layers_on_digits(tmp_path, config, layers)
    assert result.stderr.strip().splitlines()[-1] == (
        f"afternoon: {tmp_path / 'zoo.yaml'}: architecture 'cnn1', {message}"
    )


def test_a_layers_override_too_big_for_its_dataset_names_the_override(tmp_path, config):
    """cnn1's layers fit digits; an override with a 9x9 convolution does not (8x8 images): the
    dry run names the override, not the architecture's own layers."""
    layers = copy.deepcopy(yaml.safe_load((REPO / "config/zoo.yaml").read_text())["cnn1"]["layers"])
    layers[0]["conv2d"]["kernel_size"] = 9
    result = _dry_run_with_cnn1_layers_on_digits(tmp_path, config, layers)
    assert result.stderr.strip().splitlines()[-1] == (
        "afternoon: architecture 'cnn1', datasets.digits.layers[0] (conv2d): too big for its "
        "input (8, 8, 1) (input shape (8, 8, 1) of digits)"
    )


def test_study_runs_per_dataset(config, zoo):
    config["datasets"] = ["digits", "mnist"]
    config["architectures"] = ["fc64", "cnn1"]
    config["dataset_architectures"] = {"mnist": ["cnn2"]}
    assert study_runs(config, zoo) == {"digits": ["fc64", "cnn1"], "mnist": ["cnn2"]}
    # A dataset the study leaves out is skipped (one dataset of config/workshop.yaml);
    # one the registry does not know is a mistake.
    config["dataset_architectures"] = {"cifar10": ["cnn2"], "mnist": ["cnn2"]}
    assert study_runs(config, zoo) == {"digits": ["fc64", "cnn1"], "mnist": ["cnn2"]}
    config["dataset_architectures"] = {"cifar100": ["cnn2"]}
    with pytest.raises(ConfigError, match="unknown dataset 'cifar100'") as info:
        study_runs(config, zoo)
    assert str(info.value).startswith(
        "config: key dataset_architectures.cifar100: unknown dataset 'cifar100' (known: "
    )
    config["dataset_architectures"] = {"mnist": ["resnet"]}
    with pytest.raises(ConfigError, match="dataset_architectures.mnist: 'resnet' is not in"):
        study_runs(config, zoo)


def test_early_stopping_and_distributed_defaults():
    assert early_stopping_settings("a", {}, True) == {
        "monitor": "val_loss",
        "patience": 3,
        "min_delta": 0.0,
        "restore_best_weights": True,
    }
    assert early_stopping_settings("a", {"patience": 5}, False)["monitor"] == "loss"
    assert early_stopping_settings("a", {"patience": 5}, False)["patience"] == 5
    assert (
        distributed_settings({})
        == DISTRIBUTED_DEFAULTS
        == {
            "backend": "horovod",
            "ranks": 1,
            "scale_lr": True,
            "warmup_epochs": 1,
        }
    )
    assert ranks_of({"distributed": {"ranks": 4}}) == 4 and ranks_of({"distributed": None}) == 1


def _arch(arch: dict) -> dict:
    return arch


def _digits_override(arch: dict) -> dict:
    return arch.setdefault("datasets", {}).setdefault("digits", {})


@pytest.mark.parametrize(
    "where, key",
    [(_arch, "early_stopping"), (_digits_override, "datasets.digits.early_stopping")],
    ids=["architecture", "override"],
)
def test_a_val_monitor_needs_a_validation_split(config, zoo, where, key):
    fc64 = copy.deepcopy(zoo["fc64"])
    where(fc64).update(early_stopping={"monitor": "val_accuracy"})  # in fc64, or its override
    zoo = {**zoo, "fc64": fc64}
    names = selected_architectures(config, zoo)
    check_jobs(config, zoo, names)  # validation_fraction 0.1: fine
    config["data"]["validation_fraction"] = 0
    with pytest.raises(ConfigError, match=r"'val_accuracy' needs a validation split") as info:
        check_jobs(config, zoo, names)
    assert str(info.value) == (
        f"config/zoo.yaml: architecture 'fc64', {key}.monitor: 'val_accuracy' needs a "
        "validation split (data.validation_fraction > 0)"
    )
    check_jobs(config, zoo, [name for name in names if name != "fc64"])


def test_a_loss_monitor_needs_no_validation_split(config, zoo):
    zoo = {**zoo, "fc64": {**zoo["fc64"], "early_stopping": {"monitor": "loss"}}}
    config["data"]["validation_fraction"] = 0
    check_jobs(config, zoo, selected_architectures(config, zoo))


def test_snakemake_rejects_an_unknown_override_dataset_in_one_line(tmp_path, config):
    zoo = yaml.safe_load((REPO / "config/zoo.yaml").read_text())
    zoo["cnn1"]["datasets"] = {"fashion-mnist": {"epochs": 40}}
    (tmp_path / "zoo.yaml").write_text(yaml.safe_dump(zoo))
    config["zoo"] = str(tmp_path / "zoo.yaml")
    result = _dry_run(tmp_path, yaml.safe_dump(config))
    assert result.returncode == 1
    assert [line for line in result.stderr.splitlines() if line.strip()] == [
        f"afternoon: {tmp_path / 'zoo.yaml'}: architecture 'cnn1', datasets: unknown dataset "
        f"'fashion-mnist' ({KNOWN})"
    ]
