"""The architecture zoo (``config/zoo.yaml``) without TensorFlow: its grammar, per-dataset
overrides and every check that needs neither TensorFlow nor data. Its defaults, and a job's spec
with them filled in, are ``afternoon.defaults``'. The dry run checks a zoo with these rules."""

from __future__ import annotations

import copy
import re
from functools import partial

from afternoon.defaults import SCHEDULE_DEFAULTS
from afternoon.errors import ConfigError
from afternoon.registry import dataset_names

BACKENDS = ("mirrored", "multi_worker", "horovod")

# The activation strings tf_keras 2.18's activations.get() turns into an activation (its functions
# and its activation layers; tests/test_models.py checks this list against Keras).
ACTIVATIONS = (
    *("elu", "exponential", "gelu", "hard_sigmoid", "leaky_relu", "linear", "log_softmax"),
    *("mish", "relu", "relu6", "selu", "sigmoid", "silu", "softmax", "softplus", "softsign"),
    *("swish", "tanh", "ELU", "LeakyReLU", "PReLU", "ReLU", "Softmax", "ThresholdedReLU"),
)
# Architecture names become path components and the Snakefile's `arch` wildcard.
ARCHITECTURE_PATTERN = "[A-Za-z0-9][A-Za-z0-9_.-]*"


def one_of(names) -> str:
    """'a, b or c'."""
    return " or ".join(", ".join(names).rsplit(", ", 1))


def _number(v, types=int | float):
    return isinstance(v, types) and not isinstance(v, bool)


def _size(v):
    pair = isinstance(v, list | tuple) and len(v) == 2
    return POS_INT[0](v) or (pair and all(map(POS_INT[0], v)))


POS_INT = (lambda v: _number(v, int) and v > 0, "a positive integer")
SIZE = (_size, "a positive integer or a pair of them")
FRACTION = (lambda v: _number(v) and 0 <= v < 1, "a number in [0, 1)")
POS_NUMBER = (lambda v: _number(v) and v > 0, "a positive number")
NON_NEGATIVE = (lambda v: _number(v) and v >= 0, "a number >= 0")
NON_NEG_INT = (lambda v: _number(v, int) and v >= 0, "an int >= 0")
BOOL = (lambda v: isinstance(v, bool), "true or false")
STRING = (lambda v: isinstance(v, str), "a string")
PADDING = (lambda v: v in ("valid", "same"), "valid or same")
ACTIVATION = (
    lambda v: isinstance(v, str) and v in ACTIVATIONS,
    f"a Keras activation ({', '.join(ACTIVATIONS)})",
)
_ANY = (lambda v: True, "anything")
PERCENT = (lambda v: _number(v) and 0 <= v <= 100, "a percentage (0..100)")
MONITOR = (lambda v: v in ("val_loss", "val_accuracy", "loss", "accuracy"), "a Keras metric")

# Layer types and their keys, as the header of config/zoo.yaml documents them.
LAYER_KEYS = {
    "dense": {"required": ("units",), "optional": ("activation",)},
    "conv2d": {
        "required": ("filters", "kernel_size"),
        "optional": ("strides", "padding", "activation"),
    },
    "maxpool2d": {"required": (), "optional": ("pool_size", "strides", "padding")},
    "dropout": {"required": ("rate",), "optional": ()},
    "batchnorm": {"required": (), "optional": ("momentum", "epsilon")},
    "flatten": {"required": (), "optional": ()},
}
# Whole feature maps dropped (Keras' SpatialDropout2D; PyTorch's Dropout2d on a 4-D tensor).
LAYER_KEYS["spatial_dropout2d"] = {"required": ("rate",), "optional": ()}
_LAYER_VALUES = {"units": POS_INT, "filters": POS_INT, "activation": ACTIVATION, "padding": PADDING}
_LAYER_VALUES.update(dict.fromkeys(("kernel_size", "pool_size", "strides"), SIZE))
_LAYER_VALUES.update(rate=FRACTION, momentum=FRACTION, epsilon=POS_NUMBER)
OPTIMIZER_KEYS = {
    "adam": {"learning_rate": POS_NUMBER, "beta_1": FRACTION, "beta_2": FRACTION},
    "sgd": {"learning_rate": POS_NUMBER, "momentum": FRACTION, "nesterov": BOOL},
}
OPTIMIZER_KEYS["adam"]["epsilon"] = POS_NUMBER
OPTIMIZER_KEYS["nadam"] = dict(OPTIMIZER_KEYS["adam"])  # Adam with Nesterov momentum
OPTIMIZER_KEYS["adadelta"] = {"learning_rate": POS_NUMBER, "rho": FRACTION, "epsilon": POS_NUMBER}
EARLY_STOPPING_KEYS = {"monitor": MONITOR, "patience": NON_NEG_INT, "restore_best_weights": BOOL}
EARLY_STOPPING_KEYS["min_delta"] = NON_NEGATIVE
AUGMENTATION_KEYS = {"rotation": NON_NEGATIVE, "shift": FRACTION, "zoom": FRACTION}
# A flip keeps the label only on some datasets: the registry's label_preserving_flips (checks).
FLIPS = ("horizontal",)
AUGMENTATION_KEYS["flip"] = (FLIPS.__contains__, " or ".join(FLIPS))
# Data-parallel training (afternoon.distributed); every key optional, ranks: 1 is one process.
DISTRIBUTED_KEYS = {"backend": (lambda v: v in BACKENDS, " or ".join(BACKENDS)), "ranks": POS_INT}
DISTRIBUTED_KEYS.update(scale_lr=BOOL, warmup_epochs=NON_NEG_INT)
REQUIRED_FIELDS = ("layers", "optimizer", "batch_size", "epochs")
# What a dataset may override (each replaced whole): what a job trains with. The other fields
# (description, reference_accuracy, seed_gpu_seconds_per_epoch) reach only the report: editing
# them retrains nothing.
OVERRIDABLE_KEYS = ("layers", "optimizer", "batch_size", "epochs", "early_stopping")
OVERRIDABLE_KEYS += ("augmentation", "distributed", "schedule", "precision", "steps_per_execution")
OVERRIDABLE_KEYS += ("label_smoothing",)
# The model's input: (x / 255 - mean) / std instead of x / 255 (PyTorch's Normalize).
OVERRIDABLE_KEYS += ("normalize",)
NORMALIZE_KEYS = {"mean": (_number, "a number"), "std": POS_NUMBER}
TRAINING_KEYS = OVERRIDABLE_KEYS
# A learning-rate schedule over the whole run (afternoon.training.schedules).
SCHEDULE_KEYS = {"name": (lambda v: v in SCHEDULE_DEFAULTS, one_of(SCHEDULE_DEFAULTS))}
SCHEDULE_KEYS.update(warmup_epochs=NON_NEGATIVE, final_lr_fraction=FRACTION)
# step has keys of its own: the rate x gamma every every_epochs epochs (PyTorch's StepLR).
DECAY = (lambda v: _number(v) and 0 < v <= 1, "a number in (0, 1]")
STEP_SCHEDULE_KEYS = {"name": SCHEDULE_KEYS["name"], "gamma": DECAY, "every_epochs": POS_INT}
# auto: mixed_bfloat16 where the hardware computes in bf16, mixed_float16 on a GPU of compute
# capability 7.x, else float32 (afternoon.training.precision).
PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16", "auto")
PRECISION = (PRECISIONS.__contains__, " or ".join(PRECISIONS))
# The recipe set a study trains (config training.recipes): the seeds' (the entry itself) or a
# named set of overrides under the entry's `recipes`.
SEED_RECIPES = "seed"


def dataset_pattern() -> str:
    """The registered datasets as a regex alternation (the Snakefile's `dataset` wildcard)."""
    return "|".join(map(re.escape, dataset_names()))


def unknown_dataset(name) -> str:
    return f"unknown dataset {name!r} (known: {', '.join(dataset_names())})"


class _Invalid(Exception):
    """A problem at a place inside one architecture; validate_architecture adds its name."""

    def __init__(self, where: str, message: str):
        super().__init__(f", {where}: {message}" if where else f": {message}")


def _check_value(where: str, value, check) -> None:
    if not check[0](value):
        raise _Invalid(where, f"must be {check[1]}, got {value!r}")


def _check_mapping(where: str, spec, checks: dict, required=()) -> None:
    if not isinstance(spec, dict):
        raise _Invalid(where, f"must be a mapping, got {spec!r}")
    if missing := [key for key in required if key not in spec]:
        raise _Invalid(where, f"missing required key {missing[0]!r}")
    for key, value in spec.items():
        if key not in checks:
            raise _Invalid(where, f"unknown key {key!r} (allowed: {', '.join(checks) or 'none'})")
        _check_value(f"{where}.{key}", value, checks[key])


def _check_optimizer(where: str, spec) -> None:
    if not isinstance(spec, dict) or "name" not in spec:
        known = one_of(OPTIMIZER_KEYS)
        raise _Invalid(where, f"must be a mapping with a 'name' ({known}), got {spec!r}")
    if (name := spec["name"]) not in OPTIMIZER_KEYS:
        known = ", ".join(OPTIMIZER_KEYS)
        raise _Invalid(f"{where}.name", f"unknown optimizer {name!r} (known: {known})")
    _check_mapping(where, spec, {"name": STRING, **OPTIMIZER_KEYS[name]})


def _check_schedule(where: str, spec) -> None:
    """cosine and one_cycle take warm-up keys, step its own: the name first, then its keys."""
    if isinstance(spec, dict) and "name" in spec:
        _check_value(f"{where}.name", spec["name"], SCHEDULE_KEYS["name"])
    keys = STEP_SCHEDULE_KEYS if isinstance(spec, dict) and spec.get("name") == "step" else None
    _check_mapping(where, spec, keys or SCHEDULE_KEYS, required=("name",))


def _check_layers(where: str, layers) -> None:
    if not isinstance(layers, list) or not layers:
        raise _Invalid(where, "must be a non-empty list of one-key mappings")
    for i, entry in enumerate(layers):
        at = f"{where}[{i}]"
        if not isinstance(entry, dict) or len(entry) != 1:
            raise _Invalid(at, f"must be a one-key mapping {{type: {{keys}}}}, got {entry!r}")
        ((kind, spec),) = entry.items()
        if kind not in LAYER_KEYS:
            raise _Invalid(at, f"unknown layer type {kind!r} (known: {', '.join(LAYER_KEYS)})")
        keys = LAYER_KEYS[kind]
        checks = {k: _LAYER_VALUES[k] for k in keys["required"] + keys["optional"]}
        _check_mapping(f"{at}.{kind}", {} if spec is None else spec, checks, keys["required"])
    last = layers[-1]
    if "dense" not in last or (last["dense"] or {}).get("activation") != "softmax":
        raise _Invalid(f"{where}[{len(layers) - 1}]", "the last layer must be dense with softmax")


def _check_per_dataset(where: str, spec, check) -> None:
    """A mapping from registered dataset names to values that ``check(where, value)`` accepts."""
    if not isinstance(spec, dict):
        raise _Invalid(where, f"must be a mapping, got {spec!r}")
    for dataset, value in spec.items():
        if dataset not in dataset_names():
            raise _Invalid(where, unknown_dataset(dataset))
        check(f"{where}.{dataset}", value)


def _check_overrides(where: str, overrides) -> None:
    _check_mapping(where, overrides, dict.fromkeys(OVERRIDABLE_KEYS, _ANY))
    for key, value in overrides.items():
        _FIELD_CHECKS[key](f"{where}.{key}", value)


_FIELD_CHECKS = {
    "description": lambda w, v: _check_value(w, v, STRING),
    "layers": _check_layers,
    "optimizer": _check_optimizer,
    "batch_size": lambda w, v: _check_value(w, v, POS_INT),
    "epochs": lambda w, v: _check_value(w, v, POS_INT),
    "early_stopping": lambda w, v: _check_mapping(w, v, EARLY_STOPPING_KEYS),
    "augmentation": lambda w, v: _check_mapping(w, v, AUGMENTATION_KEYS),
    "reference_accuracy": lambda w, v: _check_per_dataset(
        w, v, partial(_check_value, check=PERCENT)
    ),
    "datasets": lambda w, v: _check_per_dataset(w, v, _check_overrides),
    "distributed": lambda w, v: _check_distributed(w, v),
    "seed_gpu_seconds_per_epoch": lambda w, v: _check_value(w, v, POS_NUMBER),
    "schedule": lambda w, v: _check_schedule(w, v),
    "precision": lambda w, v: _check_value(w, v, PRECISION),
    "steps_per_execution": lambda w, v: _check_value(w, v, POS_INT),
    "label_smoothing": lambda w, v: _check_value(w, v, FRACTION),
    "recipes": lambda w, v: _check_recipes(w, v),
}
_FIELD_CHECKS["normalize"] = lambda w, v: _check_mapping(w, v, NORMALIZE_KEYS, ("mean", "std"))


def _check_recipes(where: str, spec) -> None:
    """Named recipe sets: {set name: overrides of the training fields, as a dataset's, and
    under ``datasets`` per dataset the set's own overrides there}."""
    if not isinstance(spec, dict):
        raise _Invalid(where, f"must be a mapping, got {spec!r}")
    for name, overrides in spec.items():
        if not isinstance(name, str) or not re.fullmatch(ARCHITECTURE_PATTERN, name):
            raise _Invalid(where, f"recipe set names are letters, digits, _ . -, got {name!r}")
        if name == SEED_RECIPES:
            raise _Invalid(f"{where}.{name}", "'seed' is the entry itself, not an override")
        at = f"{where}.{name}"
        _check_mapping(at, overrides, dict.fromkeys((*OVERRIDABLE_KEYS, "datasets"), _ANY))
        _check_overrides(at, {k: v for k, v in overrides.items() if k != "datasets"})
        if "datasets" in overrides:
            _check_per_dataset(f"{at}.datasets", overrides["datasets"], _check_overrides)


def _check_distributed(where: str, spec) -> None:
    _check_mapping(where, spec, DISTRIBUTED_KEYS)
    if spec.get("backend") == "mirrored" and spec.get("ranks", 1) != 1:
        raise _Invalid(
            f"{where}.ranks",
            f"backend mirrored is one process over the node's GPUs, got ranks {spec['ranks']} "
            "(several processes: backend multi_worker)",
        )


def validate_architecture(name: str, arch: dict) -> None:
    """Raise a one-line ConfigError naming the architecture and key for anything off-format."""
    try:
        if not isinstance(name, str) or not re.fullmatch(ARCHITECTURE_PATTERN, name):
            raise _Invalid("", "the name must be letters, digits, _ . - (a letter or digit first)")
        if not isinstance(arch, dict):
            raise _Invalid("", f"must be a mapping, got {arch!r}")
        if missing := [field for field in REQUIRED_FIELDS if field not in arch]:
            raise _Invalid("", f"missing required field {missing[0]!r}")
        for field, value in arch.items():
            if field not in _FIELD_CHECKS:
                raise _Invalid("", f"unknown field {field!r} (allowed: {', '.join(_FIELD_CHECKS)})")
            _FIELD_CHECKS[field](field, value)
    except _Invalid as err:
        raise ConfigError(f"architecture {name!r}{err}") from None


def architecture_for(zoo: dict, name: str, dataset: str, recipes: str = SEED_RECIPES) -> dict:
    """Architecture ``name``'s TRAINING_KEYS on ``dataset`` in the recipe set ``recipes`` (the
    dataset's overrides, then the set's, then the set's for the dataset, applied), a deep copy."""
    arch = zoo[name]
    spec = {key: arch[key] for key in TRAINING_KEYS if key in arch}
    spec.update(arch.get("datasets", {}).get(dataset, {}))
    if recipes != SEED_RECIPES:
        if recipes not in arch.get("recipes", {}):
            raise ConfigError(
                f"architecture {name!r} has no {recipes!r} recipe (zoo: recipes.{recipes}; "
                f"it has: {', '.join([SEED_RECIPES, *arch.get('recipes', {})])})"
            )
        recipe = arch["recipes"][recipes]
        spec.update({key: value for key, value in recipe.items() if key != "datasets"})
        spec.update(recipe.get("datasets", {}).get(dataset, {}))
    return copy.deepcopy(spec)


def recipe_sets(zoo: dict) -> list[str]:
    """Every recipe set the zoo names: seed (the entries themselves), then the named ones."""
    named = (name for arch in zoo.values() for name in arch.get("recipes", {}))
    return [SEED_RECIPES, *dict.fromkeys(named)]


def reference_accuracy(zoo: dict, arch_name: str, dataset: str) -> float | None:
    """The seed's published test accuracy (percent) for this architecture on this dataset."""
    return zoo[arch_name].get("reference_accuracy", {}).get(dataset)
