"""Random and grid searches end to end on digits, through Snakemake (Hyperband's: test_search.py):
a random search runs its max_trials with values drawn from the space, a grid search every
combination once; each is one MLflow parent run with a child per trial, and its best trial is
retrained, evaluated and reported. Tiny: fc64, one epoch per trial, one worker each. Beside them,
the hparams tutorial's grid (config/searches.yaml's hparams_grid on digits), scored on the test
set and reported beside reference numbers."""

from __future__ import annotations

import itertools
import json
import re

import pandas as pd
import pytest
import yaml

from helpers.runners import run_snakemake
from helpers.search import search_dir, search_runs, summary, write_search_study

BASE = {"base": "fc64", "datasets": ["digits"], "objective": "val_accuracy", "workers": 1}
UNITS, RATE = "layers[0].dense.units", "optimizer.learning_rate"
SEARCHES = {
    "tiny_random": {
        "description": "fc64 on digits, a random search",
        **BASE,
        "seed": 11,
        "algorithm": {"random": {"max_trials": 3}},
        "space": {
            UNITS: {"int": [16, 128], "step": 16},
            RATE: {"float": [0.0005, 0.05], "sampling": "log"},
        },
    },
    "tiny_grid": {
        "description": "fc64 on digits, a grid search",
        **BASE,
        "seed": 2,
        "algorithm": {"grid": {}},
        "space": {UNITS: {"int": [32, 64], "step": 32}, RATE: {"choice": [0.001, 0.01]}},
    },
}


# The hparams tutorial's grid (hparams_grid's space) on digits, objective test_accuracy, with a
# reference for two of its eight combinations.
TUTORIAL, UNITS16, DROPOUT = "tutorial_grid", "layers[1].dense.units", "layers[2].dropout.rate"
TUTORIAL_GRID = {
    "description": "the hparams tutorial's grid on digits, scored on the test set",
    "base": "hparams_tutorial",
    "datasets": ["digits"],
    "objective": "test_accuracy",
    "workers": 1,
    "algorithm": {"grid": {}},
    "space": {
        UNITS16: {"choice": [16, 32]},
        DROPOUT: {"choice": [0.1, 0.2]},
        "optimizer.name": {"choice": ["adam", "sgd"]},
    },
    "reference": [
        {"values": {UNITS16: 16, DROPOUT: 0.1, "optimizer.name": "adam"}, "test_accuracy": 0.5},
        {"values": {UNITS16: 32, DROPOUT: 0.2, "optimizer.name": "sgd"}, "test_accuracy": 0.25},
    ],
}


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("search-random-grid")
    searches = SEARCHES | {TUTORIAL: TUTORIAL_GRID}
    write_search_study(workdir, run=list(searches), searches=searches, max_epochs=1)
    run_snakemake(workdir, "--cores", "2")
    return workdir


def trials_of(workdir, search: str) -> pd.DataFrame:
    return pd.read_csv(search_dir(workdir, search) / "trials.csv", dtype={"trial_id": str})


def trial_values(workdir, search: str) -> list[tuple[int, float]]:
    """Each trial's (units, learning rate), in the order of the trial ids, from the child MLflow
    runs' params."""
    _, _, children = search_runs(workdir, search)
    runs = sorted(children, key=lambda run: int(run.data.tags["afternoon.trial_id"]))
    params = [run.data.params for run in runs]
    return [(int(p["layers.0.dense.units"]), float(p["optimizer.learning_rate"])) for p in params]


def test_a_random_search_runs_its_max_trials_with_values_from_the_space(study):
    trials = trials_of(study, "tiny_random")
    assert len(trials) == 3 and set(trials["status"]) == {"COMPLETED"}
    assert set(trials["epochs"]) == {1} and trials["epochs_trained"].sum() == 3
    values = trial_values(study, "tiny_random")
    assert len(values) == 3
    for units, rate in values:
        assert units in range(16, 129, 16) and 0.0005 <= rate <= 0.05
    assert len(set(values)) == 3  # drawn, not one point three times
    done = summary(study, "tiny_random")
    assert done["algorithm"] == "random" and done["trials"] == done["completed"] == 3
    assert done["best_value"] == trials["objective"].max() > 0.5  # learned (10 classes)


def test_a_grid_search_runs_every_combination_once(study):
    trials = trials_of(study, "tiny_grid")
    assert len(trials) == 4 and set(trials["status"]) == {"COMPLETED"}
    # in the grid's order: the last hyperparameter declared varies fastest
    assert trial_values(study, "tiny_grid") == list(itertools.product([32, 64], [0.001, 0.01]))
    done = summary(study, "tiny_grid")
    assert done["algorithm"] == "grid" and done["trials"] == done["completed"] == 4
    assert done["best_value"] == trials["objective"].max()


@pytest.mark.parametrize("search", list(SEARCHES))
def test_the_best_trial_is_retrained_evaluated_and_reported(study, search):
    client, parent, children = search_runs(study, search)
    done = summary(study, search)
    assert parent.info.status == "FINISHED" and parent.info.run_id == done["parent_run_id"]
    assert {run.info.status for run in children} == {"FINISHED"}
    best = [run for run in children if run.data.tags.get("afternoon.best_trial") == "true"]
    assert [run.data.tags["afternoon.trial_id"] for run in best] == [done["best_trial"]]
    folder = search_dir(study, search)
    entry = yaml.safe_load((folder / "best.yaml").read_text())[f"{search}-best"]
    assert entry["layers"][0]["dense"]["units"] == done["best_values"][UNITS]
    assert entry["optimizer"]["learning_rate"] == done["best_values"][RATE]
    metrics = json.loads((folder / "best/metrics.json").read_text())
    assert metrics["architecture"] == f"{search}-best" and metrics["epochs_run"] == 1
    evaluation = json.loads((folder / "best-eval/metrics.json").read_text())
    html = (study / "results/report/index.html").read_text()
    row = html[html.index(f'data-arch="{search}-best"') :]
    assert f"{100 * evaluation['test_accuracy']:.2f}" in row[:400]


def test_a_grid_scored_on_the_test_set_is_reported_beside_its_reference(study):
    """The hparams tutorial's grid on digits: every combination once, each trial's objective its
    model's test accuracy (the best one, retrained alike, evaluates to the same), and the
    report's table of ours beside the reference."""
    trials = trials_of(study, TUTORIAL)
    space = list(TUTORIAL_GRID["space"])
    assert len(trials) == 8 and set(trials["status"]) == {"COMPLETED"}
    assert len(trials[space].drop_duplicates()) == 8
    done = summary(study, TUTORIAL)
    evaluation = json.loads((search_dir(study, TUTORIAL) / "best-eval/metrics.json").read_text())
    assert evaluation["test_accuracy"] == pytest.approx(done["best_value"], abs=1e-6)
    _, _, children = search_runs(study, TUTORIAL)
    for run in children:
        assert run.data.metrics["test_accuracy"] == run.data.metrics["objective_test_accuracy"]
    html = (study / "results/report/index.html").read_text()
    table = re.search(rf'<table class="scores search-reference" data-search="{TUTORIAL}@digits">'
                      r"(.*?)</table>", html, re.S).group(1)  # fmt: skip
    rows = re.findall(r"<tr><td>(.*?)</td><td>(.*?)</td><td>(.*?)</td><td>(.*?)</td></tr>", table)
    reference = TUTORIAL_GRID["reference"]
    assert len(rows) == len(reference) == 2
    for (values, ours, theirs, difference), entry in zip(rows, reference, strict=True):
        assert values == ", ".join(f"{k} {v}" for k, v in entry["values"].items())
        match = trials
        for path, value in entry["values"].items():
            match = match[match[path] == value]
        (objective,) = match["objective"]
        assert (ours, theirs) == (f"{objective:.4f}", f"{entry['test_accuracy']:.4f}")
        assert difference == f"{objective - entry['test_accuracy']:+.4f}"
    assert f"make tensorboard SEARCH={TUTORIAL}/digits" in html
