"""User-facing errors: one line that names the cause (file, key, value, URL)."""

import signal


class AfternoonError(Exception):
    """Base class for every error the pipeline reports to the user as one line."""


class ConfigError(AfternoonError):
    """A config key, type or value is wrong."""


class DownloadError(AfternoonError):
    """A dataset file could not be fetched or failed verification."""


class DataFormatError(AfternoonError):
    """A dataset file is not what its format says (magic number, shape, record length)."""


class TrainingDiverged(AfternoonError):
    """The loss became NaN or infinite."""


class RanksDiverged(AfternoonError):
    """The workers ended training with different weights: gradients were not averaged."""


class WorkerFailed(AfternoonError):
    """A worker process of a search exited with an error."""


class Terminated(KeyboardInterrupt):
    """SIGTERM (Snakemake, a Slurm time limit) inside ``with RunLogger``: the run ends KILLED.

    A KeyboardInterrupt, not an ``AfternoonError``: it unwinds every ``except Exception``."""

    signum = signal.SIGTERM


def horovod_unavailable(why: str) -> str:
    """The one line said when an architecture asks for backend horovod and it cannot load."""
    return (
        f"distributed.backend horovod is not available here ({why}): build Horovod 0.28.1 "
        "(`make horovod`, see README) or use backend multi_worker (TensorFlow's own, no MPI)"
    )
