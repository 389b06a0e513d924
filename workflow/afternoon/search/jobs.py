"""A study's searches as jobs, without TensorFlow or Keras Tuner: what one tune job gets (its
rerun trigger), its workers, and the dry run's checks of the selected searches."""

from __future__ import annotations

from afternoon.config import has_validation, job_precision, scaled_epochs
from afternoon.defaults import defaults_for, early_stopping_settings
from afternoon.errors import ConfigError
from afternoon.search.grammar import base_architecture, objective_name, searched_optimizers

DEFAULT_WORKERS = 2
DEFAULT_EXECUTIONS = 1  # executions_per_trial: trainings of each trial (seeds seed, seed + 1, ..)
REPORT_ONLY = ("reference",)  # a search's keys only the report reads: editing them reruns no tune
# What a tune job's chief starts its workers with (e.g. `srun ... -n N`), set before its command
# by the tune rule; unset: local processes.
LAUNCHER_VARIABLE = "AFTERNOON_SEARCH_LAUNCHER"


def search_job(config: dict, zoo: dict, searches: dict, name: str, dataset: str) -> dict:
    """Everything one tune job needs and nothing else (its rerun trigger): the search, its base
    architecture on ``dataset`` (epochs scaled as the study's), the defaults its trials are filled
    with (``defaults.defaults_for``: a changed default reruns the searches it changes), seed and
    training settings. Editing another zoo entry or search, or the search's ``REPORT_ONLY`` keys,
    leaves it unchanged."""
    search = {k: v for k, v in searches[name].items() if k not in REPORT_ONLY}
    arch = base_architecture(name, search, zoo, dataset)  # in the search's recipe set
    arch["epochs"] = scaled_epochs(arch["epochs"], config["training"])
    training = config["training"]
    return {
        "name": name,
        "dataset": dataset,
        "base": search["base"],
        "search": search,
        "arch": arch,
        "defaults": defaults_for(arch, has_validation(config), searched_optimizers(search, arch)),
        "seed": search.get("seed", config["seed"]),
        "precision": job_precision(training, arch),
        "deterministic": training["deterministic"],
    }


def workers_of(search: dict) -> int:
    return int(search.get("workers", DEFAULT_WORKERS))


def executions_of(search: dict) -> int:
    """How many times each trial is trained (Keras Tuner's executions_per_trial)."""
    return int(search.get("executions_per_trial", DEFAULT_EXECUTIONS))


def check_search_jobs(config: dict, searches: dict, zoo: dict | None = None) -> None:
    """The dry run's checks of the selected searches: each is in the file, and an objective on
    the validation split (val_*), or its base's early stopping on one (with ``zoo``), has one."""
    file = config["searches"]["file"]
    for name in config["searches"]["run"]:
        if name not in searches:
            known = ", ".join(searches) or "none"
            raise ConfigError(f"config: searches.run: {name!r} is not in {file} (known: {known})")
        objective, _ = objective_name(name, searches[name])
        if objective.startswith("val_") and not has_validation(config):
            raise ConfigError(f"{file}: search {name!r}, objective: {objective!r} needs a "
                              "validation split (data.validation_fraction > 0)")  # fmt: skip
        for dataset in searches[name]["datasets"] if zoo is not None else ():
            arch = base_architecture(name, searches[name], zoo, dataset)
            stopping = arch.get("early_stopping") or {}
            try:
                early_stopping_settings(searches[name]["base"], stopping, has_validation(config))
            except ConfigError as err:
                raise ConfigError(f"{file}: search {name!r}, base {err} on {dataset}") from None
