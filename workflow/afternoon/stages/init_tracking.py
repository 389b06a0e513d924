"""Stage init-tracking: create the tracking store and the study's experiment once, before any
training job (creating a store takes seconds and races when many jobs do it at once), then write
the marker the training and evaluation jobs read: the store's URI and the experiment."""

from __future__ import annotations

import argparse
from pathlib import Path

from afternoon.tracking import init_store, resolve_tracking_uri


def init_tracking(uri: str | None, experiment: str, default_db: Path, marker: Path) -> dict:
    """$MLFLOW_TRACKING_URI, else ``uri``, else sqlite at ``default_db``: created with the
    experiment; returns what ``marker`` records."""
    resolved = resolve_tracking_uri(uri or None, default_db)
    return init_store(resolved, experiment, marker)


def main(args: argparse.Namespace) -> None:
    init_tracking(args.uri, args.experiment, Path(args.default_db), Path(args.marker))
