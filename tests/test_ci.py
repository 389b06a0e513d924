"""`.ci/run`, CI's entry point: it sets CI=true itself (a missing component then fails its tests
instead of skipping, tests/helpers/components.py), whatever the caller's environment says, and
runs `make test`."""

import os
import shutil
import stat

from helpers.paths import REPO
from helpers.runners import run


def test_ci_run_sets_ci_true_and_runs_make_test(tmp_path):
    # A copy of the script in a checkout of its own, with a `make` that records what it got.
    (tmp_path / ".ci").mkdir()
    shutil.copy(REPO / ".ci/run", tmp_path / ".ci/run")
    (tmp_path / "bin").mkdir()
    fake_make = tmp_path / "bin/make"
    fake_make.write_text('#!/bin/sh\necho "CI=${CI-unset} cwd=$PWD args=$*" > "$MAKE_RECORD"\n')
    fake_make.chmod(fake_make.stat().st_mode | stat.S_IXUSR)
    record = tmp_path / "make.txt"
    env = {"PATH": f"{tmp_path / 'bin'}:{os.environ['PATH']}", "MAKE_RECORD": str(record)}
    # CI not set, and set otherwise by the caller
    for command in (["env", "-u", "CI"], ["env", "CI=false"]):
        run([*command, tmp_path / ".ci/run"], env=env, cwd=tmp_path / "bin", check=True)
        assert record.read_text().split() == ["CI=true", f"cwd={tmp_path}", "args=test"]
