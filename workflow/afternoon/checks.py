"""The dry run's checks of a study's jobs, without TensorFlow or data (a dataset card at most):
every architecture fits each dataset's images and classes (the dataset's layers override
applied), early stopping on a validation metric has a validation split, a flip only where it
keeps the labels, a distributed job's backend is installed here and its ranks are placed by the
configured nodes and tasks per node, and a profile's steps (training.profile_batches) are within
each job's first epoch.
``models.build_model`` refuses exactly what ``check_input_fits`` refuses (tests/test_models.py)."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

from afternoon.config import has_validation
from afternoon.defaults import distributed_settings, early_stopping_settings, layer_settings
from afternoon.errors import ConfigError, DataFormatError, horovod_unavailable
from afternoon.fileio import read_json
from afternoon.registry import dataset_entry, dataset_names
from afternoon.zoo import SEED_RECIPES, architecture_for, recipe_sets, unknown_dataset


def _pair(value) -> tuple[int, int]:
    return tuple(value) if isinstance(value, list | tuple) else (value, value)


def _layer_output(kind: str, spec: dict, shape: tuple) -> tuple | None:
    """The output shape (no batch axis) of one zoo layer on ``shape``; None if it does not fit."""
    if kind == "flatten" or (kind == "dense" and len(shape) > 1):  # dense flattens first
        shape = (math.prod(shape),)
    if kind == "dense":
        return (spec["units"],)
    if kind == "spatial_dropout2d" and len(shape) != 3:
        return None  # whole feature maps: none on a flat output
    if kind not in ("conv2d", "maxpool2d"):
        return shape  # dropout, batchnorm, spatial_dropout2d
    if len(shape) != 3:
        return None  # a 2-D window on a flat (dense or flattened) output
    spec = layer_settings(kind, spec)
    if kind == "conv2d":
        window, channels = _pair(spec["kernel_size"]), spec["filters"]
    else:
        window, channels = _pair(spec["pool_size"]), shape[2]
    strides = _pair(spec["strides"])
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


def _where(zoo: dict, name: str, dataset: str, recipes: str, key: str) -> str:
    """Where a job's ``key`` comes from in the zoo entry: its recipe set (for its dataset, or
    for every dataset), its dataset, itself."""
    entry = zoo[name]
    recipe = entry.get("recipes", {}).get(recipes, {})
    if key in recipe.get("datasets", {}).get(dataset, {}):
        return f"recipes.{recipes}.datasets.{dataset}.{key}"
    if key in recipe:
        return f"recipes.{recipes}.{key}"
    return f"datasets.{dataset}.{key}" if key in entry.get("datasets", {}).get(dataset, {}) else key


def check_flip(name: str, arch: dict, dataset: str, where: str = "augmentation") -> None:
    """A one-line ConfigError where ``arch`` flips images of a dataset whose labels a flip
    changes (the registry's label_preserving_flips: digits and MNIST none)."""
    flip = (arch.get("augmentation") or {}).get("flip")
    keeps = dataset_entry(dataset).get("label_preserving_flips", [])
    if flip and flip not in keeps:
        raise ConfigError(
            f"architecture {name!r}, {where}.flip: a {flip} flip changes the label of "
            f"{dataset} images (label_preserving_flips of {dataset}: {', '.join(keeps) or 'none'}"
            "; workflow/afternoon/datasets.yaml)"
        )


def check_inputs_fit(datasets: list[str], zoo: dict, names, recipes: str = SEED_RECIPES) -> None:
    """The study's datasets (config key) are registered and every selected architecture (``names``:
    a list, or per dataset a list) fits each one's images and classes, the dataset's (and the
    recipe set's) layers override applied (no TensorFlow: a dry run refuses a pool too big)."""
    for i, dataset in enumerate(datasets):
        if dataset not in dataset_names():
            raise ConfigError(f"config: key datasets.{i}: {unknown_dataset(dataset)}")
    for dataset, archs in runs_by_dataset(datasets, names).items():
        entry = dataset_entry(dataset)
        shape, classes = entry["image_shape"], len(entry["class_names"])
        for name in archs:
            arch = architecture_for(zoo, name, dataset, recipes)
            where = _where(zoo, name, dataset, recipes, "layers")
            check_input_fits(name, arch, shape, classes, dataset, where)


def check_jobs(config: dict, zoo: dict, names, jobs_env_here: bool = True) -> None:
    """The dry run's checks of the study's jobs (dataset x architecture; ``names``: a list, or per
    dataset a list): each has the study's recipe set, check_inputs_fit, an early stopping that
    monitors a val_ metric needs a validation split, a flip keeps the dataset's labels, a
    schedule is not combined with a distributed backend (they recompile the optimizer with
    their own warm-up), and
    (``jobs_env_here``: the jobs run in this Python's environment, not a conda one) a distributed
    backend is installed."""
    recipes = config["training"].get("recipes", SEED_RECIPES)
    runs = runs_by_dataset(config["datasets"], names)
    if recipes != SEED_RECIPES:
        for name in dict.fromkeys(arch for archs in runs.values() for arch in archs):
            if recipes not in zoo[name].get("recipes", {}):
                raise ConfigError(
                    f"config: key training.recipes: {config['zoo']} has no {recipes!r} recipe "
                    f"for {name!r} (recipe sets: {', '.join(recipe_sets(zoo))}; add "
                    f"recipes.{recipes} to {name!r} or leave it out of the study)"
                )
    check_inputs_fit(config["datasets"], zoo, names, recipes)
    validation = has_validation(config)
    for dataset, name in ((ds, arch) for ds, archs in runs.items() for arch in archs):
        arch = architecture_for(zoo, name, dataset, recipes)
        check_backend(config, name, dataset, distributed_settings(arch), jobs_env_here)
        where = _where(zoo, name, dataset, recipes, "early_stopping")
        try:
            early_stopping_settings(name, arch.get("early_stopping") or {}, validation, where)
            check_flip(name, arch, dataset, _where(zoo, name, dataset, recipes, "augmentation"))
            if arch.get("schedule") and arch.get("distributed"):
                raise ConfigError(
                    f"architecture {name!r}, {_where(zoo, name, dataset, recipes, 'schedule')}: "
                    "a schedule cannot be combined with distributed (its backends warm the "
                    "learning rate up themselves: distributed.warmup_epochs)"
                )
        except ConfigError as err:
            raise ConfigError(f"{config['zoo']}: {err}") from None


def precision_notes(config: dict, zoo: dict, names, gpus=None) -> list[str]:
    """One line per precision decision of the study's jobs on this machine (auto, bf16 or
    float16 asked for): what the dry run says. Nothing for plain float32. ``gpus``: this
    machine's (default: as nvidia-smi lists them)."""
    from afternoon.config import job_precision
    from afternoon.training.precision import GPU_RULE_TEXT, choose_precision, nvidia_gpus

    jobs: dict[tuple[str, str], list[str]] = {}
    recipes = config["training"].get("recipes", SEED_RECIPES)
    for dataset, archs in runs_by_dataset(config["datasets"], names).items():
        for name in archs:
            arch = architecture_for(zoo, name, dataset, recipes)
            requested = job_precision(config["training"], arch)
            if requested != "float32":
                gpus = nvidia_gpus() if gpus is None else gpus
                jobs.setdefault(choose_precision(requested, gpus), []).append(f"{name}@{dataset}")
    notes = []
    for (precision, why), runs in jobs.items():
        rule = f" ({GPU_RULE_TEXT})" if why.startswith("auto: this CPU") else ""
        notes.append(
            f"precision {precision} for {', '.join(runs)}: {why}; a job on another node (a "
            f"cluster) decides there{rule} and records it in its MLflow run (tag precision)"
        )
    return notes


def check_profile_batches(config: dict, zoo: dict, names, card_of) -> None:
    """training.profile_batches: first <= last and, where a dataset's card (``card_of(dataset)``,
    written by its preprocess job) says how many training samples it has, last within each job's
    steps per epoch (a mirrored job's GPUs are not known here: its job checks again)."""
    batches = config["training"].get("profile_batches")
    if not batches:
        return
    (first, last), key = batches, "config: key training.profile_batches"
    if first > last:
        raise ConfigError(f"{key}: first step {first} is after the last, {last}")
    recipes = config["training"].get("recipes", SEED_RECIPES)
    for dataset, archs in runs_by_dataset(config["datasets"], names).items():
        samples = _train_samples(Path(card_of(dataset)), config["data"]["validation_fraction"])
        if samples is None:
            continue  # not preprocessed yet: the job checks at its start
        for name in archs:
            arch = architecture_for(zoo, name, dataset, recipes)
            shard = samples // distributed_settings(arch)["ranks"]
            steps = -(-shard // arch["batch_size"])
            if last > steps:
                raise ConfigError(
                    f"{key}: [{first}, {last}]: {name} on {dataset} has {steps} steps per epoch "
                    f"({shard} training samples, batch {arch['batch_size']})"
                )


def _train_samples(card: Path, validation_fraction: float) -> int | None:
    """The training split's size from a dataset card made with ``validation_fraction``; None
    where there is none yet (or it was made with another fraction)."""
    try:
        card = read_json(card)
        if card["validation_fraction"] == validation_fraction:
            return int(card["splits"]["train"]["n"])
    except (DataFormatError, KeyError, TypeError, ValueError):
        pass
    return None


# --- Distributed jobs: without TensorFlow or Horovod ----------------------------------------


def missing_backend(backend: str) -> str | None:
    """Why ``backend`` cannot run in this Python (None: it can). Only horovod is optional; the
    check finds the package without importing it (or TensorFlow)."""
    if backend == "horovod" and importlib.util.find_spec("horovod") is None:
        return "No module named 'horovod'"
    return None


def placement(training: dict, key: str) -> int | None:
    """training.nodes or tasks_per_node as a number (a profile's config gives digits), or None."""
    value = training.get(key)
    return int(value) if value not in (None, "") else None


def _check_placement(training: dict, name: str, ranks: int) -> None:
    """training.nodes x tasks_per_node (when given) place exactly an architecture's ranks."""
    nodes, per_node = placement(training, "nodes"), placement(training, "tasks_per_node")
    wrong = per_node and (per_node < 2 or ranks % per_node or (nodes and nodes * per_node != ranks))
    if ranks > 1 and wrong:
        raise ConfigError(
            f"config: training.tasks_per_node {per_node} (nodes {nodes}) cannot place the "
            f"{ranks} ranks of architecture {name!r} (nodes x tasks_per_node must be the ranks, "
            "at least 2 per node)"
        )


def check_backend(config: dict, name: str, dataset: str, settings: dict, jobs_env_here: bool):
    """One line (ConfigError) when architecture ``name`` on ``dataset`` (its ``distributed``
    ``settings``) cannot be placed, or (``jobs_env_here``) its backend is missing here."""
    _check_placement(config["training"], name, settings["ranks"])
    why = jobs_env_here and settings["ranks"] > 1 and missing_backend(settings["backend"])
    if why:
        raise ConfigError(
            f"{config['zoo']}: architecture {name!r} on {dataset}: {horovod_unavailable(why)}"
        )
