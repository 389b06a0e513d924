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
from afternoon.zoo import architecture_for, validate_architecture


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
    ``dataset_architectures``, else ``architectures``."""
    default = selected_architectures(config, zoo)
    per_dataset = config.get("dataset_architectures") or {}
    for dataset, names in per_dataset.items():
        if dataset not in config["datasets"]:
            raise ConfigError(
                f"config: key dataset_architectures.{dataset}: not a dataset of this study "
                f"(datasets: {', '.join(config['datasets'])})"
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


def job_spec(config: dict, zoo: dict, dataset: str, arch_name: str) -> dict:
    """Everything one training job needs, and nothing else (the rerun trigger for that job),
    the zoo's defaults filled in. ``config`` as Snakemake's validate() leaves it: the schema's
    defaults filled in."""
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
    return spec
