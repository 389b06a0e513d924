"""The grammar of hyperparameter searches (``config/searches.yaml``), without TensorFlow or Keras
Tuner: a search's keys and space checked (one line per mistake), a trial's architecture from its
values.

A search names a base architecture of the zoo and a space of hyperparameters, each a dotted path
to a field of that architecture (``optimizer.learning_rate``, ``batch_size``,
``layers[3].dropout.rate``); Keras Tuner's oracles (``afternoon.search.trials``) pick the values.
"""

from __future__ import annotations

import copy
import re

from afternoon.checks import check_flip, check_input_fits
from afternoon.defaults import defaults_for, fill
from afternoon.errors import ConfigError
from afternoon.registry import dataset_entry, dataset_names
from afternoon.search.reference import check_reference
from afternoon.zoo import (
    ARCHITECTURE_PATTERN,
    LAYER_KEYS,
    OPTIMIZER_KEYS,
    SEED_RECIPES,
    architecture_for,
    validate_architecture,
)

ALGORITHMS = {  # algorithm -> its keys and their defaults (None: required)
    "hyperband": {"max_epochs": None, "factor": 3, "iterations": 1},
    "random": {"max_trials": None},
    "grid": {"max_trials": None},
}
KINDS = ("int", "float", "choice")
SAMPLINGS = ("linear", "log")
SEARCH_KEYS = ("description", "base", "datasets", "objective", "seed", "workers", "algorithm")
SEARCH_KEYS += ("space", "recipes", "executions_per_trial", "reference")
# test_*: the trial's model evaluated on the test split (as the TensorFlow hparams tutorial does).
OBJECTIVES = {"val_accuracy": "max", "val_loss": "min", "accuracy": "max", "loss": "min"}
OBJECTIVES.update(test_accuracy="max", test_loss="min")
_PATH = re.compile(r"^(?:layers\[(\d+)\]\.(\w+)\.(\w+)|optimizer\.(\w+)|(batch_size))$")


def _fail(name: str, where: str, message: str):
    raise ConfigError(f"search {name!r}, {where}: {message}")


def _positive_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def set_field(arch: dict, path: str, value) -> None:
    """Set the field ``path`` (a space key) of ``arch`` (a zoo entry, changed in place)."""
    index, kind, key, opt_key, batch = _PATH.match(path).groups()
    if batch:
        arch["batch_size"] = value
    elif opt_key:
        arch["optimizer"][opt_key] = value
    else:
        layer = arch["layers"][int(index)]
        layer[kind] = {**(layer[kind] or {}), key: value}


def _check_path(name: str, path: str, base: str, arch: dict, searched_optimizers) -> None:
    """``path`` names a field the base architecture has (or may have)."""
    match = _PATH.match(path) if isinstance(path, str) else None
    if match is None:
        _fail(name, f"space.{path}", f"names no field of architecture {base!r} (expected "
              "layers[i].<type>.<key>, optimizer.<key> or batch_size)")  # fmt: skip
    index, kind, key, opt_key, _ = match.groups()
    if opt_key and opt_key != "name":
        if not any(opt_key in OPTIMIZER_KEYS[o] for o in searched_optimizers):
            known = sorted({k for o in searched_optimizers for k in OPTIMIZER_KEYS[o]})
            which = "/".join(searched_optimizers)
            _fail(name, f"space.{path}", f"names no field of architecture {base!r}: optimizer "
                  f"{which} has no {opt_key!r} (known: {', '.join(known)})")  # fmt: skip
    if index is not None:
        layers = arch["layers"]
        if int(index) >= len(layers) or kind not in layers[int(index)]:
            where = f"layers[{index}] is not a {kind} layer" if int(index) < len(layers) else (
                f"it has {len(layers)} layers")  # fmt: skip
            _fail(name, f"space.{path}", f"names no field of architecture {base!r}: {where}")
        keys = LAYER_KEYS[kind]["required"] + LAYER_KEYS[kind]["optional"]
        if key not in keys:
            _fail(name, f"space.{path}", f"names no field of architecture {base!r}: a {kind} "
                  f"layer has no {key!r} (known: {', '.join(keys)})")  # fmt: skip


def _check_hyperparameter(name: str, path: str, spec) -> list:
    """One hyperparameter's declaration; returns the values to try against the architecture."""
    where = f"space.{path}"
    if not isinstance(spec, dict) or len([k for k in spec if k in KINDS]) != 1:
        _fail(name, where, f"must be a mapping with one of {', '.join(KINDS)}, got {spec!r}")
    kind = next(k for k in spec if k in KINDS)
    allowed = {"choice": (kind,), "int": (kind, "step", "sampling")}.get(
        kind, (kind, "step", "sampling")
    )
    if unknown := [k for k in spec if k not in allowed]:
        _fail(name, where, f"unknown key {unknown[0]!r} (allowed: {', '.join(allowed)})")
    values = spec[kind]
    if kind == "choice":
        if not isinstance(values, list) or not values:
            _fail(name, where, f"choice must be a non-empty list, got {values!r}")
        if len({type(v) for v in values}) != 1 or len(set(map(repr, values))) != len(values):
            _fail(name, where, f"choice values must be distinct and of one type, got {values!r}")
        return values
    if not (isinstance(values, list) and len(values) == 2 and all(map(_number, values))):
        _fail(name, where, f"{kind} must be [min, max], got {values!r}")
    low, high = values
    if kind == "int" and not all(isinstance(v, int) for v in values):
        _fail(name, where, f"int bounds must be integers, got {values!r}")
    if low > high:
        _fail(name, where, f"min {low} > max {high}")
    sampling = spec.get("sampling", "linear")
    if sampling not in SAMPLINGS:
        _fail(name, where, f"sampling must be linear or log, got {sampling!r}")
    if sampling == "log" and low <= 0:
        _fail(name, where, f"log sampling needs min > 0, got [{low}, {high}] (through 0)")
    step = spec.get("step")
    if step is not None and not (_number(step) and step > 0):
        _fail(name, where, f"step must be a positive number, got {step!r}")
    return [low, high]


def _check_algorithm(name: str, algorithm) -> None:
    if (
        not isinstance(algorithm, dict)
        or len(algorithm) != 1
        or next(iter(algorithm)) not in ALGORITHMS
    ):
        _fail(
            name,
            "algorithm",
            f"must be one of {{{', '.join(ALGORITHMS)}: {{...}}}}, got {algorithm!r}",
        )
    ((kind, settings),) = algorithm.items()
    settings = settings or {}
    for key, value in settings.items():
        if key not in ALGORITHMS[kind]:
            _fail(
                name,
                f"algorithm.{kind}",
                f"unknown key {key!r} (allowed: {', '.join(ALGORITHMS[kind])})",
            )
        if not (value is None and kind == "grid") and not _positive_int(value):
            _fail(name, f"algorithm.{kind}.{key}", f"must be a positive integer, got {value!r}")
    for key, default in ALGORITHMS[kind].items():
        if default is None and key not in settings and kind != "grid":
            _fail(name, f"algorithm.{kind}", f"missing required key {key!r}")
    if kind == "hyperband" and settings.get("factor", 3) < 2:
        _fail(name, "algorithm.hyperband.factor", f"must be at least 2, got {settings['factor']}")


def validate_search(name: str, search, zoo: dict) -> None:
    """One search of searches.yaml against the zoo; a problem is a one-line ConfigError."""
    if not re.fullmatch(ARCHITECTURE_PATTERN, str(name)):
        raise ConfigError(
            f"search {name!r}: the name must be letters, digits, _ . - (a letter or digit first)"
        )
    if not isinstance(search, dict):
        raise ConfigError(f"search {name!r}: must be a mapping, got {search!r}")
    for key in search:
        if key not in SEARCH_KEYS:
            raise ConfigError(
                f"search {name!r}: unknown key {key!r} (allowed: {', '.join(SEARCH_KEYS)})"
            )
    for key in ("base", "datasets", "algorithm", "space"):
        if key not in search:
            raise ConfigError(f"search {name!r}: missing required key {key!r}")
    base = search["base"]
    if base not in zoo:
        _fail(name, "base", f"{base!r} is not in the zoo (known: {', '.join(zoo)})")
    datasets = search["datasets"]
    if not isinstance(datasets, list) or not datasets:
        _fail(name, "datasets", f"must be a non-empty list, got {datasets!r}")
    for dataset in datasets:
        if dataset not in dataset_names():
            _fail(
                name,
                "datasets",
                f"unknown dataset {dataset!r} (known: {', '.join(dataset_names())})",
            )
    objective_name(name, search)
    for key in ("seed", "workers", "executions_per_trial"):
        if key in search and not (
            _positive_int(search[key]) or (key == "seed" and search[key] == 0)
        ):
            _fail(name, key, f"must be a positive integer, got {search[key]!r}")
    _check_algorithm(name, search["algorithm"])
    space = search["space"]
    if not isinstance(space, dict) or not space:
        _fail(name, "space", "must be a non-empty mapping of hyperparameters")
    for dataset in datasets:
        arch = base_architecture(name, search, zoo, dataset)
        optimizers = searched_optimizers(search, arch)
        if bad := [o for o in optimizers if o not in OPTIMIZER_KEYS]:
            known = ", ".join(OPTIMIZER_KEYS)
            _fail(name, "space.optimizer.name", f"unknown optimizer {bad[0]!r} (known: {known})")
        defaults = defaults_for(arch, True, optimizers)  # either early-stopping monitor is valid
        for path, spec in space.items():
            _check_path(name, path, base, arch, optimizers)
            for value in _check_hyperparameter(name, path, spec):
                _check_value_fits(name, path, value, arch, dataset, defaults)
    if "reference" in search:
        check_reference(name, search["reference"], space, objective_name(name, search)[0])


def base_architecture(name: str, search: dict, zoo: dict, dataset: str) -> dict:
    """The search's base on ``dataset`` in its recipe set (``recipes``: seed, the entry itself,
    unless it names one of the base's sets, e.g. fast); a flip must keep the dataset's labels."""
    recipes = search.get("recipes", SEED_RECIPES)
    try:
        arch = architecture_for(zoo, search["base"], dataset, recipes)
        check_flip(search["base"], arch, dataset)
    except ConfigError as err:
        _fail(name, "recipes" if recipes != SEED_RECIPES else "base", str(err))
    return arch


def searched_optimizers(search: dict, arch: dict) -> list:
    """The optimizers a search's trials may use: its space's choice, else the base's."""
    return (search["space"].get("optimizer.name") or {}).get("choice") or [
        arch["optimizer"]["name"]
    ]


def _check_value_fits(name: str, path: str, value, arch: dict, dataset: str, defaults) -> None:
    """The trial with ``path`` = ``value`` (defaults filled in) is valid and fits the dataset's
    images."""
    trial = trial_architecture(arch, {path: value}, defaults)
    entry = dataset_entry(dataset)
    try:
        validate_architecture(name, trial)
        check_input_fits(name, trial, entry["image_shape"], len(entry["class_names"]), dataset)
    except ConfigError as err:
        message = str(err).removeprefix(f"architecture {name!r}").lstrip(",: ")
        _fail(name, f"space.{path}", f"value {value!r} on {dataset}: {message}")


def _drop_foreign_optimizer_keys(arch: dict) -> None:
    """Keys of another optimizer (momentum when the search picked adam) are left out."""
    optimizer = arch["optimizer"]
    allowed = OPTIMIZER_KEYS.get(optimizer["name"], {})
    arch["optimizer"] = {k: v for k, v in optimizer.items() if k == "name" or k in allowed}


def load_searches(path, zoo: dict) -> dict:
    """searches.yaml (name -> search), each checked against the zoo."""
    from afternoon.config import load_yaml

    searches = load_yaml(path)
    for name, search in searches.items():
        try:
            validate_search(name, search, zoo)
        except ConfigError as err:
            raise ConfigError(f"{path}: {err}") from None
    return searches


def objective_name(name: str, search: dict) -> tuple[str, str]:
    """(metric, direction) of the search's objective (default val_accuracy, max)."""
    objective = search.get("objective", "val_accuracy")
    if objective not in OBJECTIVES:
        _fail(name, "objective", f"must be one of {', '.join(OBJECTIVES)}, got {objective!r}")
    return objective, OBJECTIVES[objective]


def trial_architecture(base_arch: dict, values: dict, defaults: dict) -> dict:
    """The base architecture (a zoo entry, dataset overrides applied) with a trial's values (its
    epochs: Hyperband's tuner/epochs, else the base's), then ``defaults`` (its job's) filled in."""
    arch = copy.deepcopy(base_arch)
    for path, value in values.items():
        if not path.startswith("tuner/"):
            set_field(arch, path, value)
    _drop_foreign_optimizer_keys(arch)
    arch["epochs"] = int(values.get("tuner/epochs", arch["epochs"]))
    return fill(arch, defaults)
