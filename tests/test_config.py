"""Config loading and validation: every mistake is one line naming the key and the reason."""

import subprocess
import sys

import pytest
import yaml

from afternoon.config import (
    check_against_schema,
    job_spec,
    load_yaml,
    load_zoo,
    scaled_epochs,
    selected_architectures,
)
from afternoon.errors import ConfigError
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
        (lambda c: c.update(datasets=["imagenet"]), "key datasets.0"),
        (lambda c: c["data"].update(validation_fraction=1.5), "key data.validation_fraction"),
        (lambda c: c.pop("zoo"), "'zoo' is a required property"),
    ],
)
def test_schema_errors_name_the_key(config, mutate, expected):
    mutate(config)
    with pytest.raises(ConfigError) as info:
        check_against_schema(config, SCHEMA)
    message = str(info.value)
    assert expected in message
    assert "\n" not in message


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
    assert spec["layers"] == zoo["cnn1"]["layers"]
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
        "afternoon: config: unknown key training.epochz (allowed here: deterministic, "
        "epochs_scale, max_epochs, mpi_launcher, precision, threads)"
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
