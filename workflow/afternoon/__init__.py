"""afternoon: the "Deep Learning in an Afternoon" architecture study as a reproducible pipeline.

Keras 2 (``tf_keras``) is used everywhere: Horovod 0.28.1's Keras callbacks fail on Keras 3, and
one Keras for training and evaluation means a model trained under Horovod loads in evaluation. The
switch must be set before TensorFlow is imported for the first time, so it lives here.
"""

import os
import sys

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
# Jobs often run on nodes without internet: no usage telemetry from MLflow.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
# A dead tracking server must cost a job seconds, not minutes: MLflow's own HTTP retries (7, with
# backoff up to 2 min each: ~4 min per call) stack with afternoon.tracking.retries' (~12 s,
# logged), so MLflow retries nothing and a request that hangs gives up after 20 s.
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")

__version__ = "0.1.0"


def export_package_path(package_dir: str) -> None:
    """Put ``package_dir`` first on PYTHONPATH for the jobs Snakemake starts (any environment),
    and this interpreter's ``bin`` first on PATH: jobs run ``python`` and ``mlflow`` from PATH, so
    a command typed as ``.venv/bin/snakemake ...`` needs no activated venv (a job's conda
    environment still goes first)."""
    for name, first in (("PYTHONPATH", package_dir), ("PATH", os.path.dirname(sys.executable))):
        parts = [p for p in os.environ.get(name, "").split(os.pathsep) if p]
        if first not in parts[:1]:
            os.environ[name] = os.pathsep.join([first, *parts])
