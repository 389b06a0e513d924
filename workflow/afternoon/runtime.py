"""TensorFlow process set-up shared by training and evaluation: threads, seeds, determinism."""

from __future__ import annotations

import logging

from afternoon.errors import ConfigError

log = logging.getLogger(__name__)


def configure_tensorflow(threads: int, seed: int | None = None, deterministic: bool = False):
    """Size TF's thread pools from the job's cores (intra = threads, inter = min(threads, 2)),
    seed Python, NumPy and TF, and switch on op determinism; returns the tf module.

    Call before TensorFlow's first op: once it ran, the pools are fixed (a warning, not an error).
    """
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ConfigError(f"threads must be a positive integer, got {threads!r}")
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(min(threads, 2))
    except RuntimeError as exc:  # TensorFlow already ran in this process: pools are fixed
        log.warning("threads=%d not applied, TensorFlow is already initialised (%s)", threads, exc)
    if seed is not None:
        tf.keras.utils.set_random_seed(seed)
    if deterministic:
        tf.config.experimental.enable_op_determinism()
    return tf
