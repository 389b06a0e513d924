"""The DAG: what a dry run plans for the shipped configs."""

import re

from helpers.paths import REPO
from helpers.runners import run_snakemake
from helpers.study import write_study


def dry_run_jobs(*args: str) -> dict[str, int]:
    """Rule name -> job count of a dry run (Snakemake's job stats table)."""
    result = run_snakemake(REPO, "-n", "--quiet", "rules", *args, check=False)
    assert result.returncode == 0, result.stderr
    out = result.stdout + result.stderr
    return {m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)$", out, re.M) if m[1] != "total"}


def test_workshop_plans_download_and_preprocess_for_three_datasets(tmp_path):
    jobs = dry_run_jobs("--configfile", "config/workshop.yaml", "--forceall")
    assert jobs["download"] == 3
    assert jobs["preprocess"] == 3


def test_lint_is_clean():
    result = run_snakemake(REPO, "--lint", check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Congratulations" in result.stdout + result.stderr


def test_jobs_run_this_environment_without_an_activated_venv(tmp_path):
    """`.venv/bin/snakemake ...` typed with no venv on PATH (the README's commands): the jobs'
    `python -m afternoon.cli` is this environment's python, not the system's (no TensorFlow)."""
    workdir = write_study(tmp_path, archs=["fc64"], max_epochs=1)
    run_snakemake(workdir, "--cores", "2", env={"PATH": "/usr/bin:/bin"})
    assert (workdir / "results/report/index.html").is_file()
