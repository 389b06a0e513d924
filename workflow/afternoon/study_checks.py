"""The dry run's checks of a study's jobs, without TensorFlow or data: every architecture fits
each dataset's images and classes (the dataset's layers override applied), early stopping on a
validation metric has a validation split, and a distributed backend is installed.
``models.build_model`` refuses exactly what ``check_input_fits`` refuses (tests/test_models.py)."""

from __future__ import annotations

import math

from afternoon.errors import ConfigError
from afternoon.registry import dataset_entry, dataset_names
from afternoon.zoo import (
    architecture_for,
    distributed_settings,
    early_stopping_settings,
    layer_settings,
    unknown_dataset,
)


def _pair(value) -> tuple[int, int]:
    return tuple(value) if isinstance(value, list | tuple) else (value, value)


def _layer_output(kind: str, spec: dict, shape: tuple) -> tuple | None:
    """The output shape (no batch axis) of one zoo layer on ``shape``; None if it does not fit."""
    if kind == "flatten" or (kind == "dense" and len(shape) > 1):  # dense flattens first
        shape = (math.prod(shape),)
    if kind == "dense":
        return (spec["units"],)
    if kind not in ("conv2d", "maxpool2d"):
        return shape  # dropout, batchnorm
    if len(shape) != 3:
        return None  # a 2-D window on a flat (dense or flattened) output
    spec = layer_settings(kind, spec)
    if kind == "conv2d":
        window, channels = _pair(spec["kernel_size"]), spec["filters"]
    else:
        window, channels = _pair(spec["pool_size"]), shape[2]
    strides = _pair(spec.get("strides") or window)  # Keras pools with strides = pool_size
    same = spec["padding"] == "same"  # Keras' output length along each axis (<= 0: none left)
    sizes = zip(shape[:2], window, strides, strict=True)
    out = tuple(-(-(n if same else n - w + 1) // s) for n, w, s in sizes)
    return (*out, channels) if min(out) > 0 else None


def check_input_fits(
    name: str, arch: dict, input_shape, num_classes: int, dataset: str, where: str = "layers"
) -> None:
    """Raise a one-line ConfigError if a validated ``arch`` cannot run on ``input_shape`` (a pool
    or valid conv larger than its input map, a 2-D layer after a flat one) or does not end in
    ``num_classes`` units."""
    input_shape = tuple(input_shape)
    shape = input_shape
    for i, entry in enumerate(arch["layers"]):
        ((kind, spec),) = entry.items()
        out = _layer_output(kind, spec or {}, shape)
        if out is None:
            raise ConfigError(
                f"architecture {name!r}, {where}[{i}] ({kind}): too big for its input {shape} "
                f"(input shape {input_shape} of {dataset})"
            )
        shape = out
    if shape[-1] != num_classes:
        raise ConfigError(
            f"architecture {name!r}: last layer has {shape[-1]} units, {dataset} has "
            f"{num_classes} classes"
        )


def runs_by_dataset(datasets: list[str], names) -> dict[str, list[str]]:
    """``names`` (one list for every dataset, or a mapping dataset -> list) as a mapping."""
    return {ds: list(names[ds] if isinstance(names, dict) else names) for ds in datasets}


def check_inputs_fit(datasets: list[str], zoo: dict, names) -> None:
    """The study's datasets (config key) are registered and every selected architecture (``names``:
    a list, or per dataset a list) fits each one's images and classes, the dataset's layers
    override applied (no TensorFlow: a dry run refuses, say, a pool too big)."""
    for i, dataset in enumerate(datasets):
        if dataset not in dataset_names():
            raise ConfigError(f"config: key datasets.{i}: {unknown_dataset(dataset)}")
    for dataset, archs in runs_by_dataset(datasets, names).items():
        entry = dataset_entry(dataset)
        shape, classes = entry["image_shape"], len(entry["class_names"])
        for name in archs:
            overridden = "layers" in zoo[name].get("datasets", {}).get(dataset, {})
            where = f"datasets.{dataset}.layers" if overridden else "layers"
            arch = architecture_for(zoo, name, dataset)
            check_input_fits(name, arch, shape, classes, dataset, where)


def check_jobs(config: dict, zoo: dict, names, jobs_env_here: bool = True) -> None:
    """The dry run's checks of the study's jobs (dataset x architecture; ``names``: a list, or per
    dataset a list): check_inputs_fit, an early stopping that monitors a val_ metric needs a
    validation split, and (``jobs_env_here``: the jobs run in this Python's environment, not a
    conda one) a distributed backend is installed."""
    from afternoon.distributed.checks import check_backend  # (the package imports this one)

    check_inputs_fit(config["datasets"], zoo, names)
    has_validation = config["data"]["validation_fraction"] > 0
    runs = runs_by_dataset(config["datasets"], names)
    for dataset, name in ((ds, arch) for ds, archs in runs.items() for arch in archs):
        settings = distributed_settings(architecture_for(zoo, name, dataset))
        check_backend(config, name, dataset, settings, jobs_env_here)
        overridden = "early_stopping" in zoo[name].get("datasets", {}).get(dataset, {})
        where = f"datasets.{dataset}.early_stopping" if overridden else "early_stopping"
        try:
            stopping = architecture_for(zoo, name, dataset).get("early_stopping")
            early_stopping_settings(name, stopping or {}, has_validation, where)
        except ConfigError as err:
            raise ConfigError(f"{config['zoo']}: {err}") from None
