"""The processes of a tune job: its chief and its workers.

The chief: Keras Tuner's oracle, reloaded from its saved state, served over gRPC on one address
(127.0.0.1 on a workstation, its node's address when a launcher starts the workers: never a
wildcard); it starts its workers, which ask it for trials: local processes, or with the
launcher in ``AFTERNOON_SEARCH_LAUNCHER`` (under Slurm ``srun ... -n N``, from the job's batch
step, where the idle chief needs no task of its own) the tasks of one job step, worker i its
task i (``SLURM_PROCID``).
When the oracle stops and no trial is left running, the chief writes the search's results: the
trials table, the summary and the best trial as a complete zoo entry.

``chief.json`` in the state folder tells the workers where the oracle is and which MLflow run
is the search's; a worker in a Slurm job waits for one written in its own Slurm job.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import logging
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from concurrent import futures
from pathlib import Path

from afternoon import tracking
from afternoon.errors import WorkerFailed
from afternoon.fileio import read_json, write_text_atomic
from afternoon.npz import load_npz
from afternoon.search.jobs import LAUNCHER_VARIABLE
from afternoon.search.oracles import make_oracle
from afternoon.search.results import write_results
from afternoon.search.state import (
    PROJECT,
    TUNER_DIR,
    WORKERS_DIR,
    prepare_state,
    save_state,
    wait_for_chief,
    worker_file,
    write_chief_file,
)
from afternoon.search.trials import TrialContext, TrialRunner, mlflow_names

log = logging.getLogger(__name__)


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


LAUNCHED = "AFTERNOON_SEARCH_LAUNCHED"  # set for workers a launcher starts: tuner<its rank>
RANKS = ("SLURM_PROCID", "OMPI_COMM_WORLD_RANK", "PMI_RANK")  # a launched task's rank


def start_workers(argv: list[str], count: int, launcher: str) -> dict[str, subprocess.Popen]:
    """The workers (the same stage command), by name, each told to stop (SIGTERM) when the chief
    dies; they find the chief in ``chief.json``. ``launcher`` ('' : ``count`` local processes,
    KERASTUNER_TUNER_ID tuner0..) starts them all as one process, e.g. ``srun ... -n N``."""
    command = [sys.executable, "-m", "afternoon.cli", *argv]
    if launcher:
        env = dict(os.environ, **{LAUNCHED: "1"})
        started = subprocess.Popen([*shlex.split(launcher), *command], env=env,
                                   preexec_fn=_die_with_parent)  # fmt: skip
        return {f"workers ({launcher})": started}
    workers = {}
    for index in range(count):
        env = dict(os.environ, KERASTUNER_TUNER_ID=f"tuner{index}")
        workers[f"worker tuner{index}"] = subprocess.Popen(command, env=env,
                                                           preexec_fn=_die_with_parent)  # fmt: skip
    return workers


def _die_with_parent() -> None:
    import ctypes

    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def wait(oracle, servicer, workers: dict[str, subprocess.Popen]) -> None:
    """Until the search is done; a worker that fails stops the search (the next run resumes)."""
    while not finished(oracle, servicer):
        for name, worker in workers.items():
            code = worker.poll()
            if code not in (None, 0):
                raise WorkerFailed(f"{name} exited with status {code}; run again to resume the "
                                   "search")  # fmt: skip
        done = all(w.poll() == 0 for w in workers.values())
        if workers and done and not oracle.ongoing_trials:
            break
        time.sleep(0.5)
    for worker in workers.values():
        worker.wait()


def stop_workers(workers: dict[str, subprocess.Popen], grace_s: float = 30) -> None:
    """SIGTERM to the workers still running (they keep their checkpoints), then SIGKILL."""
    for worker in workers.values():
        if worker.poll() is None:
            worker.terminate()
    deadline = time.monotonic() + grace_s
    for worker in workers.values():
        try:
            worker.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            worker.kill()


def role() -> tuple[str, str | None]:
    """("chief", None) or ("worker", tuner id): from KERASTUNER_TUNER_ID (a local worker), or
    the task's rank (a worker a launcher started); else this is the chief."""
    tuner_id = os.environ.get("KERASTUNER_TUNER_ID")
    if tuner_id:
        return ("chief", None) if "chief" in tuner_id else ("worker", tuner_id)
    if os.environ.get(LAUNCHED):
        rank = next((os.environ[name] for name in RANKS if name in os.environ), None)
        if rank is None:
            raise WorkerFailed(f"a launched worker has no rank ({', '.join(RANKS)} unset)")
        return "worker", f"tuner{int(rank)}"
    return "chief", None


def _chief_host(launched: bool) -> str:
    """127.0.0.1 for local workers; for launched ones this node's address (they may run on other
    nodes)."""
    if launched:
        return socket.gethostbyname(os.environ.get("SLURMD_NODENAME") or socket.gethostname())
    return "127.0.0.1"


def _pin_gpu(tuner_id: str) -> None:
    """Where a launcher starts the workers, the chief uses no GPU, and worker i one of the
    GPUs of its node (i mod their number) instead of all of them (TensorFlow would take every
    visible GPU's memory)."""
    visible = [d for d in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if d]
    if tuner_id == "chief":
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
    elif len(visible) > 1:
        os.environ["CUDA_VISIBLE_DEVICES"] = visible[int(tuner_id[len("tuner") :]) % len(visible)]


def run_chief(job: dict, args: argparse.Namespace, argv: list[str]) -> dict:
    """Serve the search's oracle until it is done (local workers: ``argv`` again), then write
    its results (``results.write_results``); returns the summary."""
    state_dir = Path(args.state)
    state = prepare_state(state_dir, tracking.config_hash(job))
    marker = read_json(args.tracking)
    uri = tracking.resolve_tracking_uri(marker["tracking_uri"])
    run_name = f"{job['name']}@{job['dataset']}"
    if state.get("parent_run_id"):
        parent = tracking.RunLogger.reopen(uri, state["parent_run_id"], offline_ok=True)
    else:
        tags = tracking.provenance_tags(extra={"search": job["name"], "dataset": job["dataset"],
                                               "run_kind": "search"})  # fmt: skip
        params = {**job["search"], "space": mlflow_names(job["search"]["space"])}
        parent = tracking.RunLogger.start(uri, marker["experiment"], run_name, params, tags,
                                          offline_ok=True)  # fmt: skip
        state["parent_run_id"] = parent.run_id
        save_state(state_dir, state)
    oracle = load_oracle(make_oracle(job), state_dir)
    launcher = os.environ.get(LAUNCHER_VARIABLE, "")
    host = _chief_host(bool(launcher))
    # The workers are started before the gRPC server: forking a process with gRPC's threads
    # running can abort the child. They wait for chief.json, written once the oracle is served.
    workers = start_workers(argv, args.workers, launcher)
    if launcher:
        _pin_gpu("chief")  # (after starting the workers, who keep the job's GPUs)
    server = None
    try:
        server, servicer, port = serve(oracle, host)
        with parent:
            write_chief_file(state_dir, host, port, parent.run_id)
            log.info("%s: oracle on %s:%d, %d workers", run_name, host, port, args.workers)
            wait(oracle, servicer, workers)
            summary = write_results(job, oracle, state_dir, args, parent)
    finally:
        stop_workers(workers)
        if server is not None:
            server.stop(grace=1)
    return summary


def run_worker(job: dict, args: argparse.Namespace, tuner_id: str) -> None:
    """Run the trials the chief hands out (``trials.run_one_trial``) until it says stop."""
    if os.environ.get(LAUNCHED):
        _pin_gpu(tuner_id)
    state_dir = Path(args.state)
    chief = wait_for_chief(state_dir)
    os.environ.update(KERASTUNER_TUNER_ID=tuner_id, KERASTUNER_ORACLE_IP=chief["host"],
                      KERASTUNER_ORACLE_PORT=str(chief["port"]))  # fmt: skip
    marker = read_json(args.tracking)
    info = dict(uri=tracking.resolve_tracking_uri(marker["tracking_uri"]),
                experiment=marker["experiment"], parent_run_id=chief["parent_run_id"],
                threads=_worker_threads(args))  # fmt: skip
    context = TrialContext(job, load_npz(args.npz), read_json(args.card), state_dir, info)
    # A worker keeps no state of its own (the chief has it all); Keras Tuner's file of it, written
    # in place at every trial's end, may be truncated by a kill: it is not reloaded.
    worker_file(state_dir, tuner_id).unlink(missing_ok=True)
    runner = TrialRunner(make_oracle(job), context, state_dir / WORKERS_DIR)
    runner.search()


def _worker_threads(args) -> int:
    """A worker's cores: an equal share of the job's (training.threads)."""
    return max(1, args.threads // max(1, args.workers))
