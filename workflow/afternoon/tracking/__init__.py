"""MLflow tracking: every job logs to one run, by id, and survives a tracking outage.

- ``uris``: which store a job uses ($MLFLOW_TRACKING_URI, the config, a sqlite default);
- ``runs``: the store (created once) and ``RunLogger``, one MLflow run by id;
- ``records``: a job's tracking on disk (run.json) and the ledger of runs whose tracking is pending;
- ``sync``: re-logs those runs from disk (``afternoon.cli sync-tracking``);
- ``provenance``: what a run records about itself (params, config hash, git, versions), redacted;
- ``retries``: which store errors are transient, and retrying them.

The stages use the names below; the submodules' other names are theirs.
"""

from afternoon.tracking.provenance import config_hash, provenance_tags, run_name
from afternoon.tracking.records import read_run_record, record_pending, write_run_record
from afternoon.tracking.runs import RunLogger, TrackingError, init_store
from afternoon.tracking.uris import resolve_tracking_uri

__all__ = [
    "RunLogger",
    "TrackingError",
    "config_hash",
    "init_store",
    "provenance_tags",
    "read_run_record",
    "record_pending",
    "resolve_tracking_uri",
    "run_name",
    "write_run_record",
]
