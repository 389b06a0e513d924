"""Defaults said once (afternoon.defaults): a job's spec holds every default it uses, a changed
default changes the specs (Snakemake's rerun trigger) of exactly the jobs that use it, and the
TensorFlow side never imports the zoo or its defaults: it reads the spec."""

import ast
import copy
import json

import pytest

from afternoon import defaults
from afternoon.config import job_spec, load_yaml, load_zoo, study_runs
from afternoon.search.grammar import load_searches, trial_architecture
from afternoon.search.jobs import search_job
from afternoon.zoo import TRAINING_KEYS, validate_architecture
from helpers.paths import REPO, WORKFLOW

CONFIG = load_yaml(REPO / "config/config.yaml")  # the default study
ZOO = load_zoo(REPO / "config/zoo.yaml")
ADAM, SGD = defaults.OPTIMIZER_DEFAULTS["adam"], defaults.OPTIMIZER_DEFAULTS["sgd"]


def spec_of(arch: str, dataset: str = "digits", config=CONFIG, zoo=ZOO) -> dict:
    return job_spec(config, zoo, dataset, arch)


def test_a_spec_holds_every_default_its_entry_leaves_out():
    fc64, cnn1, batchnorm = spec_of("fc64"), spec_of("cnn1"), spec_of("cnn_batchnorm")
    assert ZOO["fc64"]["optimizer"] == {"name": "adam"}
    assert fc64["optimizer"] == {"name": "adam", **ADAM} and ADAM["learning_rate"] == 0.001
    assert cnn1["optimizer"] == {**SGD, "name": "sgd", "learning_rate": 0.01, "momentum": 0.9}
    conv, pool = cnn1["layers"][0]["conv2d"], cnn1["layers"][1]["maxpool2d"]
    assert conv == {"filters": 32, "kernel_size": 3, "activation": "relu", "strides": 1,
                    "padding": "valid"}  # fmt: skip
    assert pool == {"pool_size": 2, "strides": 2, "padding": "valid"}  # strides: the pool size
    assert cnn1["layers"][2] == {"flatten": {}}
    assert batchnorm["layers"][1] == {"batchnorm": defaults.LAYER_DEFAULTS["batchnorm"]}
    # Sections a job uses get their defaults; those it does not use stay out.
    assert not {"early_stopping", "distributed", "schedule"} & set(fc64)
    arch = copy.deepcopy(ZOO["fc64"]) | {"early_stopping": {"patience": 6}, "epochs": 10}
    arch |= {"distributed": {"ranks": 2}, "schedule": {"name": "one_cycle"}}
    spec = spec_of("fc64", zoo={"fc64": arch})
    assert spec["early_stopping"] == {"monitor": "val_loss", "patience": 6, "min_delta": 0.0,
                                      "restore_best_weights": True}  # fmt: skip
    assert spec["distributed"] == {**defaults.DISTRIBUTED_DEFAULTS, "ranks": 2}
    assert spec["schedule"] == {"name": "one_cycle", "warmup_epochs": 3.0, "final_lr_fraction": 0.0}
    no_split = copy.deepcopy(CONFIG)
    no_split["data"]["validation_fraction"] = 0
    without = spec_of("fc64", config=no_split, zoo={"fc64": arch})
    assert without["early_stopping"]["monitor"] == "loss"  # no validation split
    # A filled spec is a valid zoo entry, and filling it again changes nothing.
    validate_architecture("fc64", {key: spec[key] for key in TRAINING_KEYS if key in spec})
    assert defaults.filled(spec, has_validation=True) == spec


def study_specs() -> dict[str, str]:
    """Every train job of the default study: its params.spec, as Snakemake compares it
    (rules/common.smk: train_spec)."""
    runs = study_runs(CONFIG, ZOO)
    return {
        f"{arch}@{dataset}": json.dumps(job_spec(CONFIG, ZOO, dataset, arch), sort_keys=True)
        for dataset, archs in runs.items()
        for arch in archs
    }


CNNS = {"cnn1", "cnn2", "cnn_dropout", "cnn_batchnorm"}


@pytest.mark.parametrize(
    "table, key, value, changed",
    [
        (ADAM, "learning_rate", 0.002, {"fc64", "fc512", "fc512x3"}),  # Adam, no rate given
        (SGD, "nesterov", True, CNNS),  # SGD, nesterov not given
        (defaults.LAYER_DEFAULTS["maxpool2d"], "padding", "same", CNNS),
        (defaults.LAYER_DEFAULTS["batchnorm"], "momentum", 0.9, {"cnn_batchnorm"}),
        (defaults.EARLY_STOPPING_DEFAULTS, "patience", 5, set()),  # none stops early
    ],
    ids=["adam-rate", "sgd-nesterov", "pool-padding", "batchnorm-momentum", "patience"],
)
def test_a_changed_default_reruns_exactly_the_jobs_that_use_it(monkeypatch, table, key, value,
                                                               changed):  # fmt: skip
    before = study_specs()
    assert set(before) == {f"{arch}@digits" for arch in list(ZOO)[:7]}
    monkeypatch.setitem(table, key, value)
    after = study_specs()
    assert {job for job in before if before[job] != after[job]} == {f"{a}@digits" for a in changed}


def test_a_search_carries_the_defaults_its_trials_use(monkeypatch):
    """fashion_exercise may switch cnn_dropout to Adam: a changed Adam default reruns it, not
    digits_tiny (cnn1, SGD only)."""
    config = copy.deepcopy(CONFIG)
    searches = load_searches(REPO / "config/searches.yaml", ZOO)
    jobs = {"fashion_exercise": "fashion_mnist", "digits_tiny": "digits"}

    def specs():
        return {name: search_job(config, ZOO, searches, name, ds) for name, ds in jobs.items()}

    before = specs()
    assert set(before["fashion_exercise"]["defaults"]["optimizer"]) == {"sgd", "adam"}
    monkeypatch.setitem(ADAM, "epsilon", 1e-8)
    after = specs()
    assert [name for name in jobs if before[name] != after[name]] == ["fashion_exercise"]


def test_a_trial_is_filled_with_the_defaults_of_its_job(monkeypatch):
    """A trial's spec (search.trials.trial_spec) takes its defaults from its job, not from the
    tables: switched to Adam, cnn_dropout keeps its own rate and gets Adam's other keys; a
    searched pool size moves the strides that default to it."""
    searches = load_searches(REPO / "config/searches.yaml", ZOO)
    job = search_job(CONFIG, ZOO, searches, "fashion_exercise", "fashion_mnist")
    values = {"optimizer.name": "adam", "optimizer.momentum": 0.9, "tuner/epochs": 3}
    values["layers[2].maxpool2d.pool_size"] = 3
    trial = trial_architecture(job["arch"], values, job["defaults"])
    assert trial["optimizer"] == {"name": "adam", **ADAM, "learning_rate": 0.01}
    assert trial["layers"][2] == {"maxpool2d": {"pool_size": 3, "strides": 3, "padding": "valid"}}
    assert trial["epochs"] == 3
    validate_architecture("trial", trial)
    monkeypatch.setitem(ADAM, "beta_1", 0.5)
    assert trial_architecture(job["arch"], values, job["defaults"]) == trial


def _imports(path, package: str) -> set[str]:
    """The afternoon modules ``path`` (a module of ``package``) imports, anywhere in it."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the package up
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, *([base] if base else [])])
            found |= {base, *(f"{base}.{alias.name}" for alias in node.names)}
    return found


def import_graph() -> dict[str, set[str]]:
    """afternoon's modules -> the afternoon modules each imports (a package's __init__ too)."""
    paths = {}
    for path in (WORKFLOW / "afternoon").rglob("*.py"):
        parts = path.relative_to(WORKFLOW).with_suffix("").parts
        paths[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    graph = {}
    for name, path in paths.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        named = _imports(path, package)
        # importing a.b.c runs a and a.b first
        graph[name] = {
            ".".join(module.split(".")[:i])
            for module in named
            for i in range(1, module.count(".") + 2)
        } & set(paths)
    return graph


def reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for module in graph[todo.pop()] - seen:
            seen.add(module)
            todo.append(module)
    return seen


def test_the_tensorflow_side_never_imports_the_zoo_or_its_defaults():
    """training/, distributed/ and the search's trials read a job's spec: neither they nor any
    module they import (at the top or inside a function) imports afternoon.zoo or
    afternoon.defaults."""
    graph = import_graph()
    tensorflow_side = [
        name for name in graph if name.startswith(("afternoon.training", "afternoon.distributed"))
    ]
    assert len(tensorflow_side) >= 10 and "afternoon.training.models" in tensorflow_side
    assert "afternoon.zoo" in reachable(graph, "afternoon.config")  # the check sees imports
    for name in tensorflow_side:
        assert not reachable(graph, name) & {"afternoon.zoo", "afternoon.defaults"}, name
