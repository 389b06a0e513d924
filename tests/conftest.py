"""Shared test set-up: the package on sys.path, and the fixtures many modules use.

The helpers behind them live in tests/helpers/ (see its __init__ for an index).

    small_study        the small study (digits, fc64 + cnn1, 2 epochs) run once per session
    search_study       a study with the digits_tiny search finished (Hyperband, 6 trials;
                       helpers.search.run_search_study), once per session
    digits             the digits dataset preprocessed once per session: {"npz", "card"}
                       (a module's own `digits` fixture may ask for it and add to it)
    postgres           a private PostgreSQL cluster on 127.0.0.1 per session (helpers.postgres)
    clean_mlflow_env   this process without the caller's MLflow store, run or credentials
    horovod_installed, mpirun_installed, browser_installed
                       a missing component skips the test, or fails it under CI=true (use them
                       through the marks in helpers.components: @needs_horovod, ...)
"""

import sys

import pytest

pytest.register_assert_rewrite("helpers")  # before the first import: their asserts explain

from helpers import components  # noqa: E402
from helpers.env import callers_mlflow_variables  # noqa: E402
from helpers.paths import REPO, SHARED_DATA, WORKFLOW  # noqa: E402, F401 (`from conftest import REPO`)
from helpers.runners import run_cli  # noqa: E402
from helpers.search import run_search_study  # noqa: E402
from helpers.study import run_small_study  # noqa: E402

if str(WORKFLOW) not in sys.path:
    sys.path.insert(0, str(WORKFLOW))


@pytest.fixture(scope="session")
def small_study(tmp_path_factory):
    """The small shared study's working directory, finished (helpers.study). Shared by every
    module that asks: a test that edits its files puts them back."""
    return run_small_study(tmp_path_factory.mktemp("small-study"))


@pytest.fixture(scope="session")
def search_study(tmp_path_factory):
    """A finished study with the digits_tiny search (Hyperband, 6 trials, 2 workers: see
    helpers.search). Shared by test_search and test_browser: a test that edits it works on a
    copy."""
    return run_search_study(tmp_path_factory.mktemp("search-study"))


@pytest.fixture(scope="session")
def digits(tmp_path_factory):
    """The digits dataset preprocessed once per session, as the pipeline does it (validation
    fraction 0.1, seed 42): {"npz": Path, "card": Path}. Read it, never write beside it: a module
    that needs more (a tracking store, a root for its outputs) wraps it in a fixture of its own."""
    root = tmp_path_factory.mktemp("digits")
    data = {"npz": root / "digits.npz", "card": root / "digits.card.json"}
    run_cli("preprocess", "digits", "--npz", data["npz"], "--card", data["card"],
            "--validation-fraction", "0.1", "--seed", "42", check=True)  # fmt: skip
    return data


@pytest.fixture(scope="session")
def postgres():
    """A PostgreSQL cluster of this session's own (stopped and removed at its end): create
    databases with ``postgres.createdb(name)``, which returns its URI."""
    from helpers.postgres import PostgresCluster, private_dir

    with private_dir() as root, PostgresCluster(root) as cluster:
        yield cluster


@pytest.fixture
def clean_mlflow_env(monkeypatch):
    """No MLflow store, experiment, run or credentials of the caller's in this process for the
    test (helpers.env.CALLERS_MLFLOW); the package's own MLFLOW_* defaults (no HTTP retries,
    timeouts, no telemetry) stay. Subprocesses started through helpers.runners get a clean
    environment of their own (helpers.env.clean_env)."""
    for name in callers_mlflow_variables():
        monkeypatch.delenv(name)


# Component checks: session-scoped, so they run before any module fixture that would need the
# component (a module fixture is set up before a function-scoped one).


@pytest.fixture(scope="session")
def horovod_installed():
    components.need_horovod()


@pytest.fixture(scope="session")
def mpirun_installed():
    components.need_mpirun()


@pytest.fixture(scope="session")
def browser_installed():
    components.need_browser()
