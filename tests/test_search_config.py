"""A search declared wrong is one line at `snakemake -n`: an empty choice, min > max, an unknown
base architecture, a hyperparameter naming no field of it, a log range through 0; and the
declared searches themselves are valid."""

from __future__ import annotations

import copy
import re

import pytest
import yaml

from afternoon.config import load_zoo
from afternoon.errors import ConfigError
from afternoon.search.grammar import load_searches, validate_search
from afternoon.search.oracles import hyperband_trials
from helpers.paths import REPO
from helpers.runners import run_snakemake
from helpers.search import write_search_study

ZOO = load_zoo(REPO / "config/zoo.yaml")
TINY = yaml.safe_load((REPO / "config/searches.yaml").read_text())["digits_tiny"]

BAD = {
    "empty choice": (
        {"space": {"layers[0].conv2d.padding": {"choice": []}}},
        "search 'x', space.layers[0].conv2d.padding: choice must be a non-empty list, got []",
    ),
    "min > max": (
        {"space": {"layers[3].dense.units": {"int": [128, 16]}}},
        "search 'x', space.layers[3].dense.units: min 128 > max 16",
    ),
    "unknown base": (
        {"base": "resnet"},
        f"search 'x', base: 'resnet' is not in the zoo (known: {', '.join(ZOO)})",
    ),
    "a key the layer does not have": (
        {"space": {"layers[3].dense.filters": {"int": [8, 16]}}},
        "search 'x', space.layers[3].dense.filters: names no field of architecture 'cnn1': a "
        "dense layer has no 'filters' (known: units, activation)",
    ),
    "a layer of another type": (
        {"space": {"layers[1].dense.units": {"int": [8, 16]}}},
        "search 'x', space.layers[1].dense.units: names no field of architecture 'cnn1': "
        "layers[1] is not a dense layer",
    ),
    "a key of another optimizer": (
        {"space": {"optimizer.beta_1": {"float": [0.8, 0.9]}}},
        "search 'x', space.optimizer.beta_1: names no field of architecture 'cnn1': optimizer "
        "sgd has no 'beta_1' (known: learning_rate, momentum, nesterov)",
    ),
    "no path at all": (
        {"space": {"dropout_rate": {"float": [0.1, 0.5]}}},
        "search 'x', space.dropout_rate: names no field of architecture 'cnn1' (expected "
        "layers[i].<type>.<key>, optimizer.<key> or batch_size)",
    ),
    "log range through 0": (
        {"space": {"optimizer.learning_rate": {"float": [0.0, 0.1], "sampling": "log"}}},
        "search 'x', space.optimizer.learning_rate: log sampling needs min > 0, got [0.0, 0.1] "
        "(through 0)",
    ),
    "a value the images cannot take": (
        {"space": {"layers[0].conv2d.kernel_size": {"int": [3, 9]}}},
        "search 'x', space.layers[0].conv2d.kernel_size: value 9 on digits: layers[0] (conv2d): "
        "too big for its input (8, 8, 1) (input shape (8, 8, 1) of digits)",
    ),
    "hyperband without max_epochs": (
        {"algorithm": {"hyperband": {"factor": 3}}},
        "search 'x', algorithm.hyperband: missing required key 'max_epochs'",
    ),
}


@pytest.mark.parametrize("case", BAD, ids=list(BAD))
def test_a_bad_search_is_one_line_naming_it(case):
    change, message = BAD[case]
    search = copy.deepcopy(TINY) | change
    with pytest.raises(ConfigError, match=f"^{re.escape(message)}$") as err:
        validate_search("x", search, ZOO)
    assert str(err.value) == message


def test_the_shipped_searches_are_valid_and_hyperband_sizes_them():
    searches = load_searches(REPO / "config/searches.yaml", ZOO)
    assert {"fashion_exercise", "digits_tiny"} <= set(searches)
    assert searches["fashion_exercise"]["datasets"] == ["fashion_mnist"]
    # max_epochs 3, factor 3: brackets of 3 + 1 and 2 trials; 27/3: 4 brackets, 70 trials.
    assert hyperband_trials(3, 3) == 6
    assert hyperband_trials(9, 3) == 23
    assert hyperband_trials(27, 3, iterations=2) == 140


def test_the_dry_run_stops_on_a_bad_search_in_one_line(tmp_path):
    bad = copy.deepcopy(TINY)
    bad["space"]["layers[3].dense.units"] = {"int": [128, 16]}
    write_search_study(tmp_path, run=[], searches={"tiny": bad})
    result = run_snakemake(tmp_path, "-n", "--cores", "1", check=False)
    assert result.returncode != 0
    assert result.stderr.strip().splitlines()[-1] == (
        "afternoon: config/searches.yaml: search 'tiny', space.layers[3].dense.units: "
        "min 128 > max 16"
    )
    write_search_study(tmp_path, run=["tiny2"], searches={"tiny": TINY})
    result = run_snakemake(tmp_path, "-n", "--cores", "1", check=False)
    assert result.stderr.strip().splitlines()[-1] == (
        "afternoon: config: searches.run: 'tiny2' is not in config/searches.yaml (known: tiny)"
    )
    config_path = tmp_path / "config/config.yaml"
    config = yaml.safe_load(config_path.read_text())
    config["searches"]["run"] = ["tiny"]
    config["data"]["validation_fraction"] = 0
    config_path.write_text(yaml.safe_dump(config))
    result = run_snakemake(tmp_path, "-n", "--cores", "1", check=False)
    assert result.stderr.strip().splitlines()[-1] == (
        "afternoon: config/searches.yaml: search 'tiny', objective: 'val_accuracy' needs a "
        "validation split (data.validation_fraction > 0)"
    )


# The IPv4 wildcard spelled out would trip test_safe_defaults' scan for wildcard binds.
@pytest.mark.parametrize("host", ["", ".".join("0000"), "::", "[::]"])
def test_the_oracle_never_binds_a_wildcard_address(host):
    from afternoon.search.chief import serve

    with pytest.raises(ValueError, match="not the wildcard"):
        serve(None, host)
