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

The real MNIST (``need_mnist``) is ../shared/data/mnist beside the checkout; a fresh clone
elsewhere downloads its four files once, verified, into ``data_cache()`` (~/.cache/afternoon/
test-data, or $AFTERNOON_TEST_CACHE); under CI=true ../shared must be there.
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


def data_cache() -> Path:
    """Where tests keep data they downloaded: $AFTERNOON_TEST_CACHE, else
    $XDG_CACHE_HOME/afternoon/test-data (~/.cache/afternoon/test-data)."""
    if cache := os.environ.get("AFTERNOON_TEST_CACHE"):
        return Path(cache)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "afternoon/test-data"


def fetch_mnist(cache: Path, mirror: str | None = None) -> Path:
    """The four MNIST files in ``cache``/mnist, downloaded where missing (from their canonical
    URLs, or ``mirror``/mnist/NAME) and each verified against its published size and sha256 (the
    registry's: those of ../shared/data/CHECKSUMS.tsv, tests/test_download.py checks); files
    already there and verified are used as they are. Raises DownloadError."""
    from afternoon.registry import dataset_entry
    from afternoon.stages.download import fetch_file

    folder = Path(cache) / "mnist"
    for entry in dataset_entry("mnist")["files"]:
        fetch_file(entry, folder / entry["name"], mirror, dataset="mnist", retries=2,
                   backoff=1.0, timeout=60.0, progress=False)  # fmt: skip
    return folder


def need_mnist(shared: Path = MNIST_DIR, cache: Path | None = None,
               mirror: str | None = None) -> Path:  # fmt: skip
    """The directory of the real MNIST files: ../shared/data/mnist beside the checkout (every
    developer machine and CI have it). Where it is absent (a fresh clone elsewhere), the files are
    downloaded once into the test data cache (``fetch_mnist``; a failed download skips, naming
    where to put them); under CI=true its absence fails the test, nothing is downloaded."""
    __tracebackhide__ = True
    if shared.is_dir():
        return shared
    from afternoon.errors import DownloadError

    absent = f"../shared/data/mnist not present ({shared})"
    if in_ci():
        missing(f"{absent}: CI always has it beside the checkout")
    cache = cache or data_cache()
    try:
        return fetch_mnist(cache, mirror)
    except DownloadError as err:
        missing(
            f"{absent}, and downloading MNIST into {cache / 'mnist'} failed ({err}): put the four "
            "files (train/t10k images/labels idx .gz, their URLs and sha256 in "
            "workflow/afternoon/datasets.yaml) there, or set AFTERNOON_TEST_CACHE to a folder "
            "holding mnist/"
        )


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
