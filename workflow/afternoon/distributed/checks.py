"""The dry run's checks of a distributed job, without TensorFlow or Horovod: is its backend
installed here, and do the configured nodes and tasks per node place its ranks."""

from __future__ import annotations

import importlib.util

from afternoon.errors import ConfigError


def horovod_unavailable(why: str) -> str:
    """The one line said when an architecture asks for backend horovod and it cannot load."""
    return (
        f"distributed.backend horovod is not available here ({why}): build Horovod 0.28.1 "
        "(`make horovod`, see README) or use backend multi_worker (TensorFlow's own, no MPI)"
    )


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
