"""The dataset registry (``datasets.yaml`` beside this module): formats, shapes, files, sha256."""

from functools import cache
from importlib import resources

import yaml

from afternoon.errors import ConfigError

# The checks a downloaded file can pass (the manifest's and the dataset card's ``check``).
CHECKS = {
    "sha256": "size and sha256 of the file as published",
    "uncompressed_sha256": "size and sha256 of its uncompressed bytes (a recompressed copy)",
}


@cache
def load_registry() -> dict:
    """All known datasets, by name."""
    text = resources.files("afternoon").joinpath("datasets.yaml").read_text()
    return yaml.safe_load(text)


def dataset_names() -> list[str]:
    return list(load_registry())


def dataset_entry(name: str) -> dict:
    """The registry entry of one dataset; unknown names are a one-line error."""
    registry = load_registry()
    if name not in registry:
        known = ", ".join(registry)
        raise ConfigError(f"unknown dataset {name!r} (known: {known})")
    return registry[name]
