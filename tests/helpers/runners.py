"""Subprocesses as the pipeline runs them: ``python -m afternoon.cli <stage>`` and
``snakemake`` on the repository's Snakefile, in a clean environment (helpers.env.clean_env).

    result = run_cli("init-tracking", "--experiment", "x", "--default-db", db, "--marker", marker)
    result = run_cli("train", ..., check=True)        # asserts exit status 0, shows the output
    output = run_snakemake(workdir, "--cores", "2")   # asserts exit status 0 (check=False: not)

Every run captures text output and has a time limit: a hung subprocess fails its test.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest

from helpers.env import clean_env
from helpers.paths import REPO, SNAKEFILE

TIMEOUT_S = 900


def cli_command(*args: object) -> list[str]:
    """``python -m afternoon.cli ARGS`` with this interpreter (arguments made strings)."""
    return [sys.executable, "-m", "afternoon.cli", *map(str, args)]


def snakemake_command(workdir: Path, *args: object) -> list[str]:
    """``snakemake`` on the repository's Snakefile with ``workdir`` as its working directory."""
    command = [sys.executable, "-m", "snakemake", "-s", str(SNAKEFILE)]
    return [*command, "--directory", str(workdir), *map(str, args)]


def output_tail(result: subprocess.CompletedProcess, size: int = 4000) -> str:
    """The end of a finished run's stdout and stderr, for an assertion message."""
    return ((result.stdout or "") + (result.stderr or ""))[-size:]


def run(
    command: Sequence[object],
    *,
    check: bool = False,
    env: dict[str, str] | None = None,
    cwd: Path = REPO,
    timeout: float = TIMEOUT_S,
) -> subprocess.CompletedProcess:
    """Run ``command`` in ``cwd`` with ``clean_env(env)``; with ``check``, assert it exited 0."""
    command = list(map(str, command))
    try:
        result = subprocess.run(
            command, capture_output=True, text=True, cwd=cwd, env=clean_env(env), timeout=timeout
        )
    except subprocess.TimeoutExpired as err:
        tail = (err.stdout or b"")[-2000:] + (err.stderr or b"")[-2000:]
        text = tail.decode(errors="replace") if isinstance(tail, bytes) else tail
        pytest.fail(f"{' '.join(command[:6])} ... ran over {timeout:.0f} s:\n{text}")
    if check:
        assert result.returncode == 0, output_tail(result)
    return result


def run_cli(
    *args: object,
    check: bool = False,
    env: dict[str, str] | None = None,
    cwd: Path = REPO,
    timeout: float = TIMEOUT_S,
) -> subprocess.CompletedProcess:
    """``python -m afternoon.cli ARGS`` as a rule runs it (see ``run``)."""
    return run(cli_command(*args), check=check, env=env, cwd=cwd, timeout=timeout)


def tracked_dataset(dataset: dict, root: Path, experiment: str) -> dict:
    """``dataset`` (npz, card) with a tracking store created in ``root`` once, as init_tracking
    does it, for tests that run train jobs by hand: npz, card, marker (tracking.json), root."""
    marker = root / "mlflow" / "tracking.json"
    db = marker.with_name("mlflow.db")
    run_cli("init-tracking", "--experiment", experiment, "--default-db", db, "--marker", marker,
            check=True)  # fmt: skip
    return {"npz": dataset["npz"], "card": dataset["card"], "marker": marker, "root": root}


def run_snakemake(
    workdir: Path,
    *args: object,
    check: bool = True,
    env: dict[str, str] | None = None,
    timeout: float = TIMEOUT_S,
) -> subprocess.CompletedProcess:
    """``snakemake ARGS`` in ``workdir`` (see ``run``); by default asserts it exited 0."""
    command = snakemake_command(workdir, *args)
    return run(command, check=check, env=env, cwd=REPO, timeout=timeout)
