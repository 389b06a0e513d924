"""Study config: load (duplicate keys rejected), validate (one-line errors), slice per job.

Snakemake passes each job only the slice of config it needs (``job_spec``), so editing one
architecture retrains only that architecture.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path

import jsonschema
import yaml

from afternoon.errors import ConfigError

# Keys of an architecture that change how it trains; the others (description, reference_accuracy)
# reach only the report, so editing them retrains nothing.
TRAINING_KEYS = (
    "layers",
    "optimizer",
    "batch_size",
    "epochs",
    "early_stopping",
    "augmentation",
    "distributed",
)
OVERRIDABLE_KEYS = ("optimizer", "batch_size", "epochs", "early_stopping", "augmentation")


class _UniqueKeyLoader(yaml.SafeLoader):
    """A safe loader that refuses a repeated mapping key (plain YAML keeps the last silently)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                mark = key_node.start_mark
                raise ConfigError(f"{mark.name}:{mark.line + 1}: duplicate key {key!r}")
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def load_yaml(path: str | Path) -> dict:
    """Read a YAML mapping safely; a missing file, bad YAML or duplicate key is one line."""
    path = Path(path)
    try:
        with open(path) as handle:  # an open file: error marks carry its name
            data = yaml.load(handle, Loader=_UniqueKeyLoader)  # noqa: S506 (a SafeLoader)
    except OSError as err:
        raise ConfigError(f"{path}: cannot read ({err.strerror})") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise ConfigError(f"{where}: invalid YAML ({getattr(err, 'problem', err)})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return data


def _key_path(error: jsonschema.ValidationError) -> str:
    return ".".join(str(part) for part in error.absolute_path)


def describe_schema_error(error: jsonschema.ValidationError, what: str = "config") -> str:
    """One line naming the key and the reason, for the most relevant schema violation."""
    key = _key_path(error)
    if error.validator == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        unknown = sorted(set(error.instance) - set(allowed))
        prefix = f"{key}." if key else ""
        return f"{what}: unknown key {prefix}{unknown[0]!s} (allowed here: {', '.join(allowed)})"
    if error.validator == "required":
        return f"{what}: {error.message} at {key or 'top level'}"
    return f"{what}: key {key or '(top level)'}: {error.message}"


def check_against_schema(data: dict, schema: dict, what: str = "config") -> None:
    """Raise ConfigError (one line) if ``data`` violates ``schema``."""
    validator_cls = jsonschema.validators.validator_for(schema)
    validator = validator_cls(schema)
    error = jsonschema.exceptions.best_match(validator.iter_errors(data))
    if error is not None:
        raise ConfigError(describe_schema_error(error, what))


def load_zoo(path: str | Path) -> dict:
    """The architecture zoo (name -> definition), each definition checked."""
    from afternoon.models import validate_architecture

    zoo = load_yaml(path)
    for name, arch in zoo.items():
        if not isinstance(arch, dict):
            raise ConfigError(f"{path}: architecture {name!r} must be a mapping")
        try:
            validate_architecture(name, arch)
        except ConfigError as err:
            raise ConfigError(f"{path}: {err}") from None
    return zoo


def check_inputs_fit(datasets: list[str], zoo: dict, names: list[str]) -> None:
    """Every selected architecture fits every dataset's images and classes (no TensorFlow, so
    a dry run refuses, say, a pool larger than its input before any job runs)."""
    from afternoon.models import check_input_fits
    from afternoon.registry import dataset_entry

    for dataset in datasets:
        entry = dataset_entry(dataset)
        shape, classes = entry["image_shape"], len(entry["class_names"])
        for name in names:
            check_input_fits(name, zoo[name], shape, classes, dataset)


def selected_architectures(config: dict, zoo: dict) -> list[str]:
    """The architectures this study trains (all of the zoo when the config names none)."""
    names = config.get("architectures") or list(zoo)
    for name in names:
        if name not in zoo:
            raise ConfigError(
                f"config: architectures: {name!r} is not in the zoo {config['zoo']} "
                f"(known: {', '.join(zoo)})"
            )
    return list(names)


def scaled_epochs(epochs: int, training: dict) -> int:
    """Apply the study's quick scale and cap: at least one epoch."""
    scaled = max(1, math.ceil(epochs * training.get("epochs_scale", 1.0)))
    cap = training.get("max_epochs")
    return min(scaled, cap) if cap else scaled


def job_spec(config: dict, zoo: dict, dataset: str, arch_name: str) -> dict:
    """Everything one training job needs, and nothing else (the rerun trigger for that job)."""
    arch = zoo[arch_name]
    spec = {key: copy.deepcopy(arch[key]) for key in TRAINING_KEYS if key in arch}
    for key, value in arch.get("datasets", {}).get(dataset, {}).items():
        spec[key] = copy.deepcopy(value)
    training = config.get("training", {})
    spec["epochs"] = scaled_epochs(spec["epochs"], training)
    spec.update(
        name=arch_name,
        dataset=dataset,
        seed=config.get("seed", 0),
        precision=training.get("precision", "float32"),
        deterministic=training.get("deterministic", True),
    )
    return spec


def architecture_of(spec: dict) -> dict:
    """The architecture part of a job spec (what models.build_model takes), with its name."""
    return {key: spec[key] for key in TRAINING_KEYS if key in spec} | {"name": spec["name"]}


def reference_accuracy(zoo: dict, arch_name: str, dataset: str) -> float | None:
    """The seed's published test accuracy (percent) for this architecture on this dataset."""
    return zoo[arch_name].get("reference_accuracy", {}).get(dataset)
