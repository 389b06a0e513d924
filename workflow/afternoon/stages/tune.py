"""Stage tune: one search (``config/searches.yaml``) on one dataset, Keras Tuner's chief and its
workers, tracked as one MLflow parent run with a child run per trial.

The job's first process is the chief (``afternoon.search_chief``): it reloads or creates the
oracle, serves it, and on a workstation starts ``--workers`` local worker processes (this same
command with ``KERASTUNER_TUNER_ID=tuner<i>``). Under Slurm (``SLURM_NTASKS`` > 1) the job's
tasks are the chief (task 0) and the workers (tasks 1..N). A worker runs trials
(``afternoon.tuning``) until the oracle says stop. A stopped search (SIGTERM, SIGKILL, of the
chief or a worker) resumes on the next run: finished trials stay, a trial that was running is
run again from its checkpoint. Once done, the chief writes the trials table, the summary, and
the best trial as a zoo entry (``best.yaml``) and as the training spec of its retraining.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import socket
import sys
from pathlib import Path

import yaml

from afternoon import search_chief, tracking
from afternoon.fileio import read_json, write_json_atomic, write_text_atomic
from afternoon.npz import load_npz
from afternoon.search import hyperband_trials, objective_name
from afternoon.tuning import (
    PROJECT,
    TRIALS_DIR,
    TrialContext,
    make_oracle,
    make_runner,
    mlflow_names,
    trial_spec,
)

log = logging.getLogger(__name__)

WORKERS_DIR = "workers"  # Keras Tuner's files of the workers, in the state folder
TRIAL_COLUMNS = ("trial_id", "status", "objective", "bracket", "round", "epochs")
TRIAL_COLUMNS += ("initial_epoch", "epochs_trained", "parent_trial", "seconds", "run_id")


def _role() -> tuple[str, str | None]:
    """("chief", None) or ("worker", tuner id), from Keras Tuner's or Slurm's variables."""
    tuner_id = os.environ.get("KERASTUNER_TUNER_ID")
    if tuner_id:
        return ("chief", None) if "chief" in tuner_id else ("worker", tuner_id)
    if _under_slurm():
        rank = int(os.environ.get("SLURM_PROCID", "0"))
        return ("chief", None) if rank == 0 else ("worker", f"tuner{rank - 1}")
    return "chief", None


def _chief_host() -> str:
    """127.0.0.1 on a workstation; under Slurm, this node's address (workers on other nodes)."""
    if _under_slurm():
        return socket.gethostbyname(os.environ.get("SLURMD_NODENAME") or socket.gethostname())
    return "127.0.0.1"


def _under_slurm() -> bool:
    return int(os.environ.get("SLURM_NTASKS", "1")) > 1


def _pin_gpu(tuner_id: str) -> None:
    """Under Slurm the chief uses no GPU, and worker i one of the job's GPUs on its node (i mod
    their number) instead of all of them (TensorFlow would take every visible GPU's memory)."""
    visible = [d for d in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if d]
    if tuner_id == "chief":
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
    elif len(visible) > 1:
        os.environ["CUDA_VISIBLE_DEVICES"] = visible[int(tuner_id[len("tuner") :]) % len(visible)]


def run_chief(job: dict, args: argparse.Namespace, argv: list[str]) -> dict:
    if _under_slurm():
        _pin_gpu("chief")
    state_dir = Path(args.state)
    state = search_chief.prepare_state(state_dir, tracking.config_hash(job))
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
        search_chief.save_state(state_dir, state)
    oracle = search_chief.load_oracle(make_oracle(job), state_dir)
    host = _chief_host()
    # Local workers are started before the gRPC server: forking a process with gRPC's threads
    # running can abort the child. They wait for chief.json, written once the oracle is served.
    workers = []
    if not _under_slurm():
        workers = search_chief.start_workers(argv, args.workers)
    server = None
    try:
        server, servicer, port = search_chief.serve(oracle, host)
        with parent:
            search_chief.write_chief_file(state_dir, host, port, parent.run_id)
            log.info("%s: oracle on %s:%d, %d workers", run_name, host, port, args.workers)
            search_chief.wait(oracle, servicer, workers)
            summary = write_results(job, oracle, state_dir, args, parent)
    finally:
        search_chief.stop_workers(workers)
        if server is not None:
            server.stop(grace=1)
    return summary


def run_worker(job: dict, args: argparse.Namespace, tuner_id: str) -> None:
    if _under_slurm():
        _pin_gpu(tuner_id)
    state_dir = Path(args.state)
    chief = search_chief.wait_for_chief(state_dir)
    os.environ.update(KERASTUNER_TUNER_ID=tuner_id, KERASTUNER_ORACLE_IP=chief["host"],
                      KERASTUNER_ORACLE_PORT=str(chief["port"]))  # fmt: skip
    marker = read_json(args.tracking)
    info = dict(uri=tracking.resolve_tracking_uri(marker["tracking_uri"]),
                experiment=marker["experiment"], parent_run_id=chief["parent_run_id"],
                threads=_worker_threads(args))  # fmt: skip
    context = TrialContext(job, load_npz(args.npz), read_json(args.card), state_dir, info)
    # A worker keeps no state of its own (the chief has it all); Keras Tuner's file of it, written
    # in place at every trial's end, may be truncated by a kill: it is not reloaded.
    (state_dir / WORKERS_DIR / PROJECT / f"{tuner_id}.json").unlink(missing_ok=True)
    runner = make_runner(make_oracle(job), context, state_dir / WORKERS_DIR)
    runner.search()


def _worker_threads(args) -> int:
    """A worker's cores: its Slurm task's, or an equal share of the job's on a workstation."""
    if _under_slurm() and os.environ.get("SLURM_CPUS_PER_TASK"):
        return int(os.environ["SLURM_CPUS_PER_TASK"])
    return max(1, args.threads // max(1, args.workers))


def _trial_row(trial, state_dir: Path) -> dict:
    values = trial.hyperparameters.values
    record_path = state_dir / TRIALS_DIR / trial.trial_id / "trial.json"
    record = read_json(record_path) if record_path.exists() else {}
    row = {
        "trial_id": trial.trial_id,
        "status": trial.status,
        "objective": trial.score,
        "bracket": values.get("tuner/bracket"),
        "round": values.get("tuner/round"),
        "epochs": values.get("tuner/epochs", record.get("epochs")),
        "initial_epoch": values.get("tuner/initial_epoch", 0),
        "epochs_trained": record.get("epochs_trained"),
        "parent_trial": values.get("tuner/trial_id", ""),
        "seconds": record.get("seconds"),
        "run_id": record.get("run_id"),
    }
    row.update({k: v for k, v in values.items() if not k.startswith("tuner/")})
    return row


def write_results(job: dict, oracle, state_dir: Path, args, parent) -> dict:
    """trials.csv, summary.json, best.yaml (a zoo entry), best_spec.json; the best trial's run
    tagged, the parent run given the best value and trial."""
    import pandas as pd

    rows = [_trial_row(trial, state_dir) for trial in oracle.trials.values()]
    # Keras Tuner records a continuation's bracket as the one current when it was created: a
    # continuation belongs to its parent's bracket.
    brackets = {row["trial_id"]: row for row in rows}
    for row in sorted(rows, key=lambda row: row["trial_id"]):
        if row["parent_trial"]:
            row["bracket"] = brackets[row["parent_trial"]]["bracket"]
    table = pd.DataFrame(rows).sort_values("trial_id")
    write_text_atomic(Path(args.trials), table.to_csv(index=False))
    metric, _ = objective_name(job["name"], job["search"])
    best_trials = oracle.get_best_trials(1)
    if not best_trials:
        raise search_chief.WorkerFailed(f"search {job['name']}: no trial completed")
    best = best_trials[0]
    best_row = next(row for row in rows if row["trial_id"] == best.trial_id)
    spec = trial_spec(job, best.hyperparameters.values)
    entry_name = f"{job['name']}-best"
    description = (f"best of search {job['name']} on {job['dataset']} (trial {best.trial_id}, "
                   f"{metric} {best.score:.4f})")  # fmt: skip
    entry = {"description": description}
    entry.update({k: spec[k] for k in ("layers", "optimizer", "batch_size", "epochs")})
    entry.update({k: spec[k] for k in ("early_stopping", "augmentation") if k in spec})
    header = f"# {description}: a complete zoo entry (add it to config/zoo.yaml to train it)\n"
    write_text_atomic(
        Path(args.best), header + yaml.safe_dump({entry_name: entry}, sort_keys=False)
    )
    write_json_atomic(Path(args.best_spec), {**spec, "name": entry_name})
    ((kind, settings),) = job["search"]["algorithm"].items()
    summary = {
        "search": job["name"],
        "dataset": job["dataset"],
        "base": job["base"],
        "algorithm": kind,
        "settings": settings or {},
        "objective": metric,
        "trials": len(rows),
        "completed": int((table["status"] == "COMPLETED").sum()),
        "epochs_trained": int(pd.to_numeric(table["epochs_trained"]).fillna(0).sum()),
        "best_trial": best.trial_id,
        "best_value": best.score,
        "best_values": dict(best.hyperparameters.values),
        "parent_run_id": parent.run_id,
        "best_run_id": best_row["run_id"],
        "workers": args.workers,
    }
    if kind == "hyperband":
        summary["predicted_trials"] = hyperband_trials(
            settings["max_epochs"], settings.get("factor", 3), settings.get("iterations", 1)
        )
    parent.log_metrics({f"best_{metric}": best.score, "trials": len(rows)})
    parent.set_tags({"afternoon.best_trial": best.trial_id,
                     "afternoon.best_run_id": best_row["run_id"] or ""})  # fmt: skip
    if best_row["run_id"]:
        tracking.RunLogger.resume(parent.uri, best_row["run_id"], offline_ok=True).set_tags(
            {"afternoon.best_trial": "true"}
        )
    write_json_atomic(Path(args.summary), summary)
    for checkpoint in (state_dir / TRIALS_DIR).glob("*/checkpoint"):  # the search is done
        shutil.rmtree(checkpoint, ignore_errors=True)
    return summary


def main(args: argparse.Namespace) -> None:
    job = json.loads(args.spec)
    role, tuner_id = _role()
    if role == "worker":
        run_worker(job, args, tuner_id)
        return
    summary = run_chief(job, args, sys.argv[1:])  # the workers: this same command
    best = f"{summary['objective']} = {summary['best_value']} (trial {summary['best_trial']})"
    log.info(
        "search %s on %s: %d trials, best %s", job["name"], job["dataset"], summary["trials"], best
    )
