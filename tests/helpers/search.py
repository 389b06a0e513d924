"""Studies with a hyperparameter search (config/searches.yaml), and reading what they left.

write_search_study(workdir, run=["digits_tiny"])          the repo's searches, one selected
write_search_study(workdir, searches={...}, run=[...])    searches of the test's own
run_search_study(workdir)                                 the `search_study` fixture's: digits_tiny
search_runs(workdir, "search-study")                      (parent run, child runs) in MLflow
tune_process(workdir, "tuner0")                           a running tune job's worker (None: chief)
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import psutil
import yaml

from helpers.paths import REPO
from helpers.runners import run_snakemake
from helpers.study import write_study

STUDY = "search-study"
TINY = "digits_tiny"  # config/searches.yaml: Hyperband, max_epochs 3, factor 3, 2 workers


def write_search_study(workdir: Path, run: list[str], searches: dict | None = None,
                       archs=("fc64",), max_epochs: int = 2) -> Path:  # fmt: skip
    """A small study (digits, ``archs``, ``max_epochs``) that also runs the searches ``run``."""
    write_study(workdir, archs=list(archs), max_epochs=max_epochs)
    path = workdir / "config/searches.yaml"
    if searches is None:
        shutil.copy(REPO / "config/searches.yaml", path)
    else:
        path.write_text(yaml.safe_dump(searches, sort_keys=False))
    config_path = workdir / "config/config.yaml"
    config = yaml.safe_load(config_path.read_text())
    config["study"] = STUDY
    config["searches"]["run"] = list(run)
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    return workdir


def run_search_study(workdir: Path) -> Path:
    """The repo's digits_tiny search (Hyperband, 6 trials, 2 workers) in a small study (digits,
    fc64), run to the end on 2 cores: the ``search_study`` fixture's."""
    write_search_study(workdir, run=[TINY])
    run_snakemake(workdir, "--cores", "2")
    return workdir


def search_dir(workdir: Path, search: str, dataset: str = "digits") -> Path:
    return workdir / "results/search" / search / dataset


def summary(workdir: Path, search: str, dataset: str = "digits") -> dict:
    return json.loads((search_dir(workdir, search, dataset) / "summary.json").read_text())


def search_runs(workdir: Path, search: str, dataset: str = "digits", uri: str | None = None):
    """(client, the search's MLflow parent run, its child runs: one per trial), from the study's
    sqlite store or the tracking server at ``uri``."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri or f"sqlite:///{workdir / 'results/mlflow/mlflow.db'}")
    experiment = client.get_experiment_by_name(STUDY)
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    parents = [r for r in runs if r.info.run_name == f"{search}@{dataset}"]
    assert len(parents) == 1, [r.info.run_name for r in runs]
    parent = parents[0]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    return client, parent, children


def tune_process(workdir: Path, tuner_id: str | None) -> psutil.Process:
    """The tune job's chief (tuner_id None) or the worker with that Keras Tuner id."""
    for proc in psutil.process_iter(["cmdline", "cwd"]):
        try:
            cmd = proc.info["cmdline"] or []
            if "afternoon.cli" not in cmd or "tune" not in cmd or proc.info["cwd"] != str(workdir):
                continue
            if proc.environ().get("KERASTUNER_TUNER_ID") == tuner_id:
                return proc
        except psutil.Error:
            continue
    raise AssertionError(f"no tune process {tuner_id or 'chief'} in {workdir}")
