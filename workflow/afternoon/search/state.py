"""A search's state folder, said once: its names, what the chief keeps there to resume, where it
announces itself to its workers, and the trials table's columns.

    <state>/search-state.json   the spec's fingerprint and the search's MLflow run
    <state>/chief.json          where the oracle is served (host, port), of which Slurm job
    <state>/tuner/oracle/       Keras Tuner's oracle (oracle.json, each trial's trial.json)
    <state>/workers/oracle/     Keras Tuner's files of the workers (not reloaded)
    <state>/trials/<id>/        a trial's trial.json (its run, epochs, objective, and per
                                execution its seed, value, epochs) and checkpoint/
    <state>/trials/<id>/checkpoint-<i>/   execution i's (executions_per_trial > 1, i >= 1)

A search with ``executions_per_trial: N`` trains each trial N times, execution i with the
search's seed + i (weights, batch order, dropout); execution 0 is what a one-execution search
trains, in ``checkpoint/``. Each execution resumes from its own checkpoint; a finished one (in
trial.json) is not trained again.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from pathlib import Path

from afternoon.errors import WorkerFailed
from afternoon.fileio import read_json, write_json_atomic

log = logging.getLogger(__name__)

STATE_FILE, CHIEF_FILE = "search-state.json", "chief.json"
TUNER_DIR, WORKERS_DIR, TRIALS_DIR = "tuner", "workers", "trials"
PROJECT = "oracle"  # Keras Tuner's project name inside TUNER_DIR and WORKERS_DIR
TRIAL_FILE, TRIAL_CHECKPOINT = "trial.json", "checkpoint"  # in trials/<id>/

# trials.csv: these columns, then with executions_per_trial N > 1 each execution's final
# objective value (EXECUTION_COLUMN: objective_execution_0 .. N-1; objective is their mean,
# epochs_trained and seconds their sum), then one per hyperparameter of the space.
TRIAL_COLUMNS = ("trial_id", "status", "objective", "bracket", "round", "epochs")
TRIAL_COLUMNS += ("initial_epoch", "epochs_trained", "parent_trial", "seconds", "run_id")
EXECUTION_COLUMN = "objective_execution_{}"  # also the metric of the trial's MLflow run


def trial_dir(state_dir: Path, trial_id: str) -> Path:
    return Path(state_dir) / TRIALS_DIR / trial_id


def execution_checkpoint(state_dir: Path, trial_id: str, index: int) -> Path:
    """Execution ``index``'s checkpoint folder in trial ``trial_id``'s."""
    name = TRIAL_CHECKPOINT if index == 0 else f"{TRIAL_CHECKPOINT}-{index}"
    return trial_dir(state_dir, trial_id) / name


def worker_file(state_dir: Path, tuner_id: str) -> Path:
    """Keras Tuner's file of worker ``tuner_id`` (rewritten in place at each trial's end)."""
    return Path(state_dir) / WORKERS_DIR / PROJECT / f"{tuner_id}.json"


def prepare_state(state_dir: Path, fingerprint: str) -> dict:
    """The state folder of this exact search (its spec hash): kept to resume, or emptied when
    the search was edited; without the last attempt's chief.json. Returns what it holds of the
    last attempt (its MLflow run)."""
    (state_dir / CHIEF_FILE).unlink(missing_ok=True)
    path = state_dir / STATE_FILE
    state = read_json(path) if path.exists() else {}
    if state.get("fingerprint") != fingerprint:
        if state_dir.exists():
            log.info("search state in %s is for another spec: starting afresh", state_dir)
        for name in (TUNER_DIR, TRIALS_DIR, CHIEF_FILE, STATE_FILE):
            target = state_dir / name
            shutil.rmtree(target, ignore_errors=True) if target.is_dir() else target.unlink(
                missing_ok=True
            )
        state = {"fingerprint": fingerprint}
    state_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, state)
    return state


def save_state(state_dir: Path, state: dict) -> None:
    write_json_atomic(state_dir / STATE_FILE, state)


def drop_checkpoints(state_dir: Path) -> None:
    """The trials' checkpoints (every execution's), once the search is done (their trial.json
    files stay)."""
    for checkpoint in (state_dir / TRIALS_DIR).glob(f"*/{TRIAL_CHECKPOINT}*"):
        shutil.rmtree(checkpoint, ignore_errors=True)


def write_chief_file(state_dir: Path, host: str, port: int, parent_run_id: str | None) -> None:
    record = dict(host=host, port=port, parent_run_id=parent_run_id)
    record["slurm_job_id"] = os.environ.get("SLURM_JOB_ID", "")
    write_json_atomic(state_dir / CHIEF_FILE, record)


def wait_for_chief(state_dir: Path, timeout_s: float = 600) -> dict:
    """A worker's view of ``chief.json``: of this Slurm job (or any, outside Slurm)."""
    job = os.environ.get("SLURM_JOB_ID", "")
    path, deadline = state_dir / CHIEF_FILE, time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if path.exists():
            record = read_json(path)
            if record.get("slurm_job_id", "") == job:
                return record
        time.sleep(0.5)
    raise WorkerFailed(f"no chief announced itself in {path} within {timeout_s:.0f} s")


def trial_row(trial, state_dir: Path, executions: int = 1) -> dict:
    """A Keras Tuner trial as a row of trials.csv: ``TRIAL_COLUMNS``, each execution's value
    (``executions`` > 1), then its values."""
    values = trial.hyperparameters.values
    record_path = trial_dir(state_dir, trial.trial_id) / TRIAL_FILE
    record = read_json(record_path) if record_path.exists() else {}
    known = {
        "trial_id": trial.trial_id,
        "status": trial.status,
        "objective": trial.score,
        "bracket": values.get("tuner/bracket"),
        "round": values.get("tuner/round"),
        "epochs": values.get("tuner/epochs", record.get("epochs")),
        "initial_epoch": values.get("tuner/initial_epoch", 0),
        "parent_trial": values.get("tuner/trial_id", ""),
    }
    row = {column: known.get(column, record.get(column)) for column in TRIAL_COLUMNS}
    if executions > 1:
        done = {e["index"]: e["value"] for e in record.get("executions", [])}
        row.update({EXECUTION_COLUMN.format(i): done.get(i) for i in range(executions)})
    row.update({k: v for k, v in values.items() if not k.startswith("tuner/")})
    return row
