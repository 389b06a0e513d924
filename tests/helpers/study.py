"""The small shared study: digits, fc64 + cnn1, 2 epochs, run through Snakemake once per test
session (the ``small_study`` fixture in tests/conftest.py); and ``write_study`` for a study of
one's own.

    def test_...(small_study):                       # the finished study's working directory
        json.loads((small_study / "results/runs/digits/fc64/metrics.json").read_text())

A test that changes the shared study's files puts them back (or works on a copy:
``shutil.copytree(small_study, tmp_path / "study", symlinks=True)`` keeps mtimes and .snakemake).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from helpers.paths import REPO
from helpers.runners import run_snakemake

STUDY = "small-study"  # the study's name (its MLflow experiment)
ARCHS = ["fc64", "cnn1"]


def write_study(workdir: Path, archs=ARCHS, max_epochs: int = 2) -> Path:
    """A small study config (digits, ``archs``, at most ``max_epochs``) in ``workdir``/config."""
    (workdir / "config").mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "config/zoo.yaml", workdir / "config/zoo.yaml")
    config = yaml.safe_load((REPO / "config/config.yaml").read_text())
    config.update(study=STUDY, datasets=["digits"], architectures=list(archs))
    config["training"]["max_epochs"] = max_epochs
    (workdir / "config/config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return workdir


def run_small_study(workdir: Path) -> Path:
    """The small study written to ``workdir`` and run to the end on 2 cores."""
    write_study(workdir)
    run_snakemake(workdir, "--cores", "2")
    return workdir


def planned_train_specs(configfile: Path) -> tuple[dict, str]:
    """The training jobs' specs of ``snakemake -n -p --configfile CONFIGFILE`` in the
    repository, by (dataset, architecture), and the dry run's printed commands."""
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", "-p", "--configfile", str(configfile)],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    specs = {}
    for match in re.finditer(r"afternoon\.cli train --spec '(\{.*?\})'", result.stdout):
        spec = json.loads(match.group(1))
        specs[spec["dataset"], spec["name"]] = spec
    return specs, result.stdout
