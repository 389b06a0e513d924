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
    "executions_per_trial not a positive integer": (
        {"executions_per_trial": 0},
        "search 'x', executions_per_trial: must be a positive integer, got 0",
    ),
    "a reference without the objective's name": (
        {"reference": [{"values": {}, "accuracy": 0.9}]},
        "search 'x', reference[0]: must have exactly the keys values and val_accuracy (the "
        "search's objective), got ['accuracy', 'values']",
    ),
    "a reference missing a hyperparameter": (
        {"reference": [{"values": {"optimizer.learning_rate": 0.01}, "val_accuracy": 0.9}]},
        "search 'x', reference[0].values: must give a value for each hyperparameter of the space "
        "(optimizer.learning_rate, layers[3].dense.units, layers[0].conv2d.padding), got "
        "['optimizer.learning_rate']",
    ),
    "a reference value the space cannot take": (
        {
            "reference": [
                {
                    "values": {
                        "optimizer.learning_rate": 0.01,
                        "layers[3].dense.units": 20,
                        "layers[0].conv2d.padding": "same",
                    },
                    "val_accuracy": 0.9,
                }
            ]
        },
        "search 'x', reference[0].values.layers[3].dense.units: 20 is not a value of the space "
        "({'int': [16, 128], 'step': 16})",
    ),  # fmt: skip
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
    assert {"fashion_exercise", "digits_tiny", "ciml_filters", "ciml_filters_quick"} <= set(
        searches
    )
    # The CIML deck's snippet: hp.Int('hpnumfilters', 8, 32, step=4), kt.Hyperband(objective=
    # 'val_accuracy', max_epochs=N, factor=3, hyperband_iterations=10, executions_per_trial=5,
    # seed=777) on the deck's CNN.
    ciml = searches["ciml_filters"]
    assert (ciml["base"], ciml["datasets"], ciml["objective"]) == ("ciml_cnn", ["mnist"],
                                                                    "val_accuracy")  # fmt: skip
    assert ciml["space"] == {"layers[0].conv2d.filters": {"int": [8, 32], "step": 4}}
    assert (ciml["seed"], ciml["executions_per_trial"]) == (777, 5)
    assert {k: v for k, v in ciml["algorithm"]["hyperband"].items() if k != "max_epochs"} == {
        "factor": 3, "iterations": 10}  # fmt: skip
    # The hparams tutorial's grid with the slide's eight accuracies (num_units, dropout, optimizer).
    grid = searches["hparams_grid"]
    assert (grid["base"], grid["objective"], list(grid["algorithm"])) == (
        "hparams_tutorial", "test_accuracy", ["grid"])  # fmt: skip
    slide = {(32, 0.1, "adam"): 0.8395, (16, 0.1, "adam"): 0.8321, (32, 0.2, "adam"): 0.8265,
             (16, 0.2, "adam"): 0.8154, (32, 0.1, "sgd"): 0.7853, (16, 0.1, "sgd"): 0.7770,
             (32, 0.2, "sgd"): 0.7755, (16, 0.2, "sgd"): 0.7683}  # fmt: skip
    assert {tuple(r["values"].values()): r["test_accuracy"] for r in grid["reference"]} == slide
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
    for key, value, message in (
        ("executions_per_trial", -2, "executions_per_trial: must be a positive integer, got -2"),
        ("reference", [], "reference: must be a non-empty list of {values: {...}, val_accuracy: "
         "number}, got []"),
    ):  # fmt: skip
        write_search_study(tmp_path, run=["tiny"], searches={"tiny": TINY | {key: value}})
        result = run_snakemake(tmp_path, "-n", "--cores", "1", check=False)
        assert result.returncode != 0
        last = result.stderr.strip().splitlines()[-1]
        assert last == f"afternoon: config/searches.yaml: search 'tiny', {message}"
    write_search_study(tmp_path, run=["tiny"], searches={"tiny": TINY})
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
