"""The chief of a search: Keras Tuner's oracle, reloaded from its saved state, served over gRPC
on one address (127.0.0.1 on a workstation, the node's address under Slurm: never a wildcard);
its workers (local processes, or Slurm tasks) ask it for trials. When the oracle stops and no
trial is left running, the chief writes the search's results: the trials table, the summary and
the best trial as a complete zoo entry.

``chief.json`` in the state folder tells the workers where the oracle is and which MLflow run
is the search's; a worker started by Slurm waits for one written in its own Slurm job.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from concurrent import futures
from pathlib import Path

from afternoon.fileio import read_json, write_json_atomic, write_text_atomic
from afternoon.tuning import PROJECT, TRIALS_DIR, TUNER_DIR, WorkerFailed

log = logging.getLogger(__name__)

CHIEF_FILE, STATE_FILE = "chief.json", "search-state.json"


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


def _atomic_saves(oracle) -> None:
    """Keras Tuner writes its state files (oracle.json, each trial.json) in place: a chief killed
    while writing one leaves it truncated, and the search could not be reloaded. Here each is
    written to a temporary file and renamed into place."""

    def save():
        write_text_atomic(Path(oracle._get_oracle_fname()), json.dumps(oracle.get_state()))

    def save_trial(trial):
        path = Path(oracle._get_trial_dir(trial.trial_id)) / "trial.json"
        write_text_atomic(path, json.dumps(trial.get_state()))

    oracle.save, oracle._save_trial = save, save_trial


def load_oracle(oracle, state_dir: Path):
    """The oracle with its project folder; its saved state (trials done, Hyperband's brackets)
    reloaded if there is one: trials that were running go back to its queue, finished ones stay."""
    oracle._set_project_dir(str(state_dir / TUNER_DIR), PROJECT)
    _atomic_saves(oracle)
    if Path(oracle._get_oracle_fname()).exists():
        oracle.reload()
        done = sum(t.status == "COMPLETED" for t in oracle.trials.values())
        log.info("resuming the search: %d trials done, %d to retry", done, len(oracle._retry_queue))
    return oracle


def serve(oracle, host: str):
    """Keras Tuner's OracleServicer on ``host``, a free port; returns (server, servicer, port)."""
    if not host or ipaddress.ip_address(host.strip("[]")).is_unspecified:
        raise ValueError(f"the oracle binds one address, not the wildcard {host!r}")
    import grpc
    from keras_tuner.src import protos
    from keras_tuner.src.distribute.oracle_chief import OracleServicer

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=1))
    servicer = OracleServicer(oracle)
    protos.get_service_grpc().add_OracleServicer_to_server(servicer, server)
    port = server.add_insecure_port(f"{host}:0")
    server.start()
    return server, servicer, port


def finished(oracle, servicer) -> bool:
    """The oracle stopped and no worker holds a trial (Keras Tuner's exit_chief)."""
    from keras_tuner.src.distribute.oracle_chief import exit_chief

    return servicer.stop_triggered and exit_chief(oracle)


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


def start_workers(argv: list[str], count: int) -> list[subprocess.Popen]:
    """``count`` local worker processes (the same stage command, KERASTUNER_TUNER_ID
    tuner0..), each told to stop (SIGTERM) when the chief dies; they find the chief in
    ``chief.json``."""
    workers = []
    for index in range(count):
        env = dict(os.environ, KERASTUNER_TUNER_ID=f"tuner{index}")
        command = [sys.executable, "-m", "afternoon.cli", *argv]
        workers.append(subprocess.Popen(command, env=env, preexec_fn=_die_with_parent))
    return workers


def _die_with_parent() -> None:
    import ctypes

    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def wait(oracle, servicer, workers: list[subprocess.Popen]) -> None:
    """Until the search is done; a worker that fails stops the search (the next run resumes)."""
    while not finished(oracle, servicer):
        for index, worker in enumerate(workers):
            code = worker.poll()
            if code not in (None, 0):
                raise WorkerFailed(f"worker tuner{index} exited with status {code}; run again "
                                   "to resume the search")  # fmt: skip
        if workers and all(w.poll() == 0 for w in workers) and not oracle.ongoing_trials:
            break
        time.sleep(0.5)
    for worker in workers:
        worker.wait()


def stop_workers(workers: list[subprocess.Popen], grace_s: float = 30) -> None:
    """SIGTERM to the workers still running (they keep their checkpoints), then SIGKILL."""
    for worker in workers:
        if worker.poll() is None:
            worker.terminate()
    deadline = time.monotonic() + grace_s
    for worker in workers:
        try:
            worker.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            worker.kill()
