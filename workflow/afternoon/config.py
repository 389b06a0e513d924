"""Study config: load (duplicate keys rejected), validate (one-line errors), slice per job.

Snakemake passes each job only the slice of config it needs (``job_spec``), so editing one
architecture retrains only that architecture; the slice holds every default the job uses
(``afternoon.defaults``), so a changed default retrains exactly the jobs it changes. The zoo's own
rules are ``afternoon.zoo``'s.
"""

from __future__ import annotations

import math
from pathlib import Path

import jsonschema
import yaml

from afternoon.defaults import filled
from afternoon.errors import ConfigError
from afternoon.registry import dataset_names
from afternoon.zoo import architecture_for, unknown_dataset, validate_architecture


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


def load_zoo(path) -> dict:
    """The architecture zoo (name -> definition), each definition checked."""
    zoo = load_yaml(path)
    for name, arch in zoo.items():
        try:
            validate_architecture(name, arch)
        except ConfigError as err:
            raise ConfigError(f"{path}: {err}") from None
    return zoo


def _in_zoo(names: list[str], zoo: dict, config: dict, key: str) -> list[str]:
    for name in names:
        if name not in zoo:
            raise ConfigError(
                f"config: {key}: {name!r} is not in the zoo {config['zoo']} "
                f"(known: {', '.join(zoo)})"
            )
    return list(names)


def selected_architectures(config: dict, zoo: dict) -> list[str]:
    """The architectures this study trains on every dataset that ``dataset_architectures`` does
    not name (all of the zoo when the config names none)."""
    return _in_zoo(config.get("architectures") or list(zoo), zoo, config, "architectures")


def study_runs(config: dict, zoo: dict) -> dict[str, list[str]]:
    """Per dataset of the study (config order), the architectures it trains: its list in
    ``dataset_architectures``, else ``architectures``. ``dataset_architectures`` may name
    datasets the study does not train (``--config datasets=[mnist]`` on the workshop config)."""
    default = selected_architectures(config, zoo)
    per_dataset = config.get("dataset_architectures") or {}
    for dataset, names in per_dataset.items():
        if dataset not in dataset_names():  # a dataset the study leaves out is no mistake
            raise ConfigError(
                f"config: key dataset_architectures.{dataset}: {unknown_dataset(dataset)}"
            )
        _in_zoo(names, zoo, config, f"dataset_architectures.{dataset}")
    return {ds: list(per_dataset.get(ds, default)) for ds in config["datasets"]}


def architectures_of(runs: dict[str, list[str]]) -> list[str]:
    """Every architecture of ``study_runs``, once, in order of first appearance."""
    return list(dict.fromkeys(name for names in runs.values() for name in names))


def scaled_epochs(epochs: int, training: dict) -> int:
    """Apply the study's quick scale and cap: at least one epoch."""
    scaled = max(1, math.ceil(epochs * training["epochs_scale"]))
    cap = training.get("max_epochs")
    return min(scaled, cap) if cap else scaled


def job_precision(training: dict, arch: dict) -> str:
    """The precision a job asks for: training.precision when set, else its recipe's, else
    float32 (``auto`` is decided where the job runs: afternoon.training.precision)."""
    return training.get("precision") or arch.get("precision") or "float32"


def has_validation(config: dict) -> bool:
    """Whether the study's preprocessed datasets hold a validation split."""
    return config["data"]["validation_fraction"] > 0


def job_spec(config: dict, zoo: dict, dataset: str, arch_name: str, replicate: int = 0) -> dict:
    """Everything one training job needs, and nothing else (the rerun trigger for that job),
    the zoo's defaults filled in. ``config`` as Snakemake's validate() leaves it: the schema's
    defaults filled in. Replicate i > 0 (config ``replicates``) trains with seed + i and says
    ``replicate: i``; replicate 0's spec is a study's without replicates (nothing reruns)."""
    training = config["training"]
    spec = architecture_for(zoo, arch_name, dataset, training.get("recipes", "seed"))
    spec["epochs"] = scaled_epochs(spec["epochs"], training)
    spec = filled(spec, has_validation=has_validation(config))
    spec.update(
        name=arch_name,
        dataset=dataset,
        seed=config["seed"],
        precision=job_precision(training, spec),
        deterministic=training["deterministic"],
    )
    if int(replicate):
        spec.update(seed=config["seed"] + int(replicate), replicate=int(replicate))
    return spec


_JSON_TYPES = {
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
    "array": lambda v: isinstance(v, list),
    "object": lambda v: isinstance(v, dict),
}


def typed_command_line_values(data, schema: dict):
    """``data`` with each string the schema types otherwise read as YAML: Snakemake reads the
    values inside a ``--config key={...}`` mapping as strings (``training='{max_epochs: 1}'``
    gives ``'1'``). A string is kept where the schema accepts a string, or where it does not
    read as a value of an accepted type (the schema check then names it)."""
    if isinstance(data, dict):
        properties, rest = schema.get("properties", {}), schema.get("additionalProperties")
        return {
            key: typed_command_line_values(
                value, properties.get(key, rest if isinstance(rest, dict) else {})
            )
            for key, value in data.items()
        }
    if isinstance(data, list):
        return [typed_command_line_values(value, schema.get("items", {})) for value in data]
    types = schema.get("type", [])
    types = [types] if isinstance(types, str) else types
    choices = schema.get("enum", [])
    if not isinstance(data, str) or "string" in types or data in choices:
        return data
    try:
        value = yaml.safe_load(data)
    except yaml.YAMLError:
        return data
    typed = any(_JSON_TYPES[t](value) for t in types if t in _JSON_TYPES)
    return value if typed or value in choices else data
