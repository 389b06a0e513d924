"""The real components some tests need, and what a test does when one is missing.

Outside CI a missing component skips the test, saying why (``pytest -ra`` lists the reasons).
With ``CI=true`` it fails the test instead: CI installs every component, so a missing one is a
broken CI machine, and a suite that passed by skipping would hide it.

    missing("no mpirun on PATH")                  # skip (or fail under CI=true), always
    require(shutil.which("mpirun"), "no mpirun")  # the same, only when the condition is false
    need_root("the lab Slurm cluster starts daemons")

Per component, a ``need_*`` function (call it in a test or fixture) and, for the ones whole tests
depend on, a mark that runs the check before any other fixture (the check is a session fixture in
tests/conftest.py; a ``skipif`` mark could not fail under CI, it is decided at collection)::

    @needs_horovod
    @needs_mpirun
    def test_...(...):
"""

from __future__ import annotations

import functools
import os
import shutil
from pathlib import Path
from typing import NoReturn

import pytest

from helpers.paths import DEBIAN_FASHION_MNIST, MNIST_DIR


def in_ci() -> bool:
    """True under CI (``CI=true``): a missing component is a failure, not a skip."""
    return os.environ.get("CI") == "true"


def missing(reason: str) -> NoReturn:
    """This test cannot run here because of ``reason``: skip it, or under ``CI=true`` fail it."""
    __tracebackhide__ = True  # a skip names the test's line, not this one
    if in_ci():
        pytest.fail(f"CI=true: {reason}", pytrace=False)
    pytest.skip(reason)


def require(condition: object, reason: str) -> None:
    """``missing(reason)`` unless ``condition`` is true."""
    __tracebackhide__ = True
    if not condition:
        missing(reason)


def need_root(what: str) -> None:
    """``what`` needs root (it starts daemons, mounts file systems)."""
    __tracebackhide__ = True
    require(os.geteuid() == 0, f"{what}: run as root (CI does)")


@functools.cache
def horovod_missing() -> str | None:
    """Why ``horovod.tensorflow.keras`` does not import here (None: it does). Imports TensorFlow
    (Keras 2, as the package sets it up), so it is asked only by the tests that need Horovod."""
    import afternoon  # noqa: F401 (TF_USE_LEGACY_KERAS=1 before TensorFlow loads)

    try:
        import horovod.tensorflow.keras  # noqa: F401
    except ImportError as err:
        return (
            f"Horovod is not installed or not importable ({err}); build it with `make horovod` "
            "(HOROVOD_WITH_TENSORFLOW=1 HOROVOD_WITH_MPI=1 HOROVOD_WITH_GLOO=1 "
            "pip install --no-build-isolation horovod==0.28.1)"
        )
    return None


def need_horovod() -> None:
    """Horovod 0.28.1 built with TensorFlow (`make horovod`)."""
    __tracebackhide__ = True
    if reason := horovod_missing():
        missing(reason)


def need_mpirun() -> None:
    """Open MPI's ``mpirun`` on PATH (Debian's openmpi-bin)."""
    __tracebackhide__ = True
    require(shutil.which("mpirun"), "no mpirun (Open MPI) on PATH: apt-get install openmpi-bin")


def need_browser() -> None:
    """Debian's chromium and chromium-driver, and the selenium package."""
    __tracebackhide__ = True
    from helpers.browser import missing_browser

    if reason := missing_browser():
        missing(reason)


def need_mnist() -> Path:
    """The directory of the real MNIST files beside the checkout (../shared/data/mnist)."""
    __tracebackhide__ = True
    require(MNIST_DIR.is_dir(), f"../shared/data/mnist not present: {MNIST_DIR}")
    return MNIST_DIR


def need_debian_fashion_mnist() -> Path:
    """The directory of Debian's dataset-fashion-mnist files (recompressed .gz copies)."""
    __tracebackhide__ = True
    require(
        DEBIAN_FASHION_MNIST.is_dir(),
        f"Debian package dataset-fashion-mnist not installed: {DEBIAN_FASHION_MNIST}",
    )
    return DEBIAN_FASHION_MNIST


# Marks for whole tests: the session fixtures in tests/conftest.py that call need_*().
needs_horovod = pytest.mark.usefixtures("horovod_installed")
needs_mpirun = pytest.mark.usefixtures("mpirun_installed")
needs_browser = pytest.mark.usefixtures("browser_installed")
