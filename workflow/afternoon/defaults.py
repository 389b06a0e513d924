"""The zoo's defaults, each written once, and a job's spec with them filled in.

A zoo entry (``config/zoo.yaml``) may leave out any optional key. The Snakemake side fills in
what the job then trains with (``config.job_spec``; a search's trials from the ``defaults`` of
its job, ``search.jobs.search_job``), so a job's spec holds every hyperparameter it uses: MLflow
records them all, and a changed default changes the spec, the rerun trigger, of exactly the jobs
that use it. The TensorFlow side (``training``, ``distributed``, the search's trials) reads the
spec, never this module (tests/test_defaults.py). Where Keras has a default of its own, ours
equals it (tests/test_models.py). Sections a job does not use (no ``early_stopping``,
``distributed`` or ``schedule``) stay out of its spec.
"""

from __future__ import annotations

import copy

from afternoon.errors import ConfigError

OPTIMIZER_DEFAULTS = {
    "adam": {"learning_rate": 0.001, "beta_1": 0.9, "beta_2": 0.999, "epsilon": 1e-07},
    "sgd": {"learning_rate": 0.01, "momentum": 0.0, "nesterov": False},
}
# Keras 2's Adadelta (rho 0.95, epsilon 1e-7; PyTorch's: rho 0.9, eps 1e-6, lr 1.0): the same
# update, other defaults.
OPTIMIZER_DEFAULTS["adadelta"] = {"learning_rate": 0.001, "rho": 0.95, "epsilon": 1e-07}
# Nadam: Adam with Nesterov momentum (Keras 2's defaults are Adam's).
OPTIMIZER_DEFAULTS["nadam"] = dict(OPTIMIZER_DEFAULTS["adam"])
LAYER_DEFAULTS = {  # dropout's rate is required; flatten has no keys
    "dense": {"activation": "linear"},
    "conv2d": {"strides": 1, "padding": "valid", "activation": "linear"},
    "maxpool2d": {"pool_size": 2, "strides": None, "padding": "valid"},  # None: the pool_size
    "batchnorm": {"momentum": 0.99, "epsilon": 0.001},
}
# monitor (not here): val_loss where the job has a validation split, else loss.
EARLY_STOPPING_DEFAULTS = {"patience": 3, "min_delta": 0.0, "restore_best_weights": True}
# backend: horovod when not given, so zoo entries written before the other backends keep meaning
# what they meant (a `ranks` alone was a Horovod job); new entries name their backend.
DISTRIBUTED_DEFAULTS = {"backend": "horovod", "ranks": 1, "scale_lr": True, "warmup_epochs": 1}
# A learning-rate schedule over the whole run (afternoon.training.schedules). warmup_epochs None:
# warmup_fraction (not a zoo key) of the run's epochs, Smith's 30 % for the one cycle.
SCHEDULE_DEFAULTS = {
    "cosine": {"warmup_epochs": 0, "final_lr_fraction": 0.0},
    "one_cycle": {"warmup_epochs": None, "warmup_fraction": 0.3, "final_lr_fraction": 0.0},
}
# step: the rate x gamma every `every_epochs` epochs (PyTorch's StepLR; its gamma default, 0.1).
SCHEDULE_DEFAULTS["step"] = {"gamma": 0.1, "every_epochs": 1}


def early_stopping_defaults(has_validation: bool) -> dict:
    return {"monitor": "val_loss" if has_validation else "loss", **EARLY_STOPPING_DEFAULTS}


def early_stopping_settings(name, stopping: dict, has_validation, where="early_stopping") -> dict:
    """A validated ``early_stopping`` mapping with its defaults; a val_ metric without a
    validation split is a one-line ConfigError."""
    settings = {**early_stopping_defaults(has_validation), **stopping}
    if settings["monitor"].startswith("val_") and not has_validation:
        raise ConfigError(
            f"architecture {name!r}, {where}.monitor: {settings['monitor']!r} needs a "
            "validation split (data.validation_fraction > 0)"
        )
    return settings


def layer_settings(kind: str, spec: dict | None) -> dict:
    """The keys of a validated layer entry, defaults filled in."""
    return _layer(LAYER_DEFAULTS.get(kind, {}), spec)


def _layer(table: dict, spec: dict | None) -> dict:
    settings = {**table, **(spec or {})}
    if "strides" in settings and settings["strides"] is None:  # a pool's: its pool_size
        settings["strides"] = settings["pool_size"]
    return settings


def distributed_settings(spec: dict) -> dict:
    """The job's ``distributed`` settings with defaults filled in (ranks 1: one process)."""
    return {**DISTRIBUTED_DEFAULTS, **(spec.get("distributed") or {})}


def ranks_of(spec: dict) -> int:
    """How many processes train this job (1 when it is not distributed)."""
    return int(distributed_settings(spec)["ranks"])


def defaults_for(arch: dict, has_validation: bool, optimizers=()) -> dict:
    """The defaults a validated ``arch`` (training keys) can use, for a job with or without a
    validation split; ``optimizers``: those a search may switch it to. What ``fill`` takes, and
    what a search's job carries for its trials."""
    kinds = {kind for entry in arch["layers"] for kind in entry}
    names = dict.fromkeys([arch["optimizer"]["name"], *optimizers])
    defaults = {
        "optimizer": {name: OPTIMIZER_DEFAULTS[name] for name in names},
        "layers": {kind: table for kind, table in LAYER_DEFAULTS.items() if kind in kinds},
    }
    if "early_stopping" in arch:
        defaults["early_stopping"] = early_stopping_defaults(has_validation)
    if "distributed" in arch:
        defaults["distributed"] = DISTRIBUTED_DEFAULTS
    if "schedule" in arch:
        defaults["schedule"] = SCHEDULE_DEFAULTS[arch["schedule"]["name"]]
    return copy.deepcopy(defaults)


def fill(arch: dict, defaults: dict) -> dict:
    """A copy of the validated ``arch`` (training keys, its final epochs) with ``defaults``
    (``defaults_for``'s) filled in. Filling a filled spec changes nothing."""
    spec = copy.deepcopy(arch)
    name = arch["optimizer"]["name"]
    spec["optimizer"] = {"name": name, **defaults["optimizer"][name], **arch["optimizer"]}
    layers = [next(iter(entry.items())) for entry in arch["layers"]]
    spec["layers"] = [
        {kind: _layer(defaults["layers"].get(kind, {}), settings)} for kind, settings in layers
    ]
    for key in ("early_stopping", "distributed"):
        if key in arch:
            spec[key] = {**defaults[key], **(arch[key] or {})}
    if "schedule" in arch:
        schedule = {**defaults["schedule"], **arch["schedule"]}
        fraction = schedule.pop("warmup_fraction", None)
        if schedule.get("warmup_epochs", 0) is None:
            schedule["warmup_epochs"] = fraction * arch["epochs"]
        spec["schedule"] = schedule
    return spec


def filled(arch: dict, has_validation: bool) -> dict:
    """``arch`` (training keys, its final epochs) with every default it uses filled in."""
    return fill(arch, defaults_for(arch, has_validation))
