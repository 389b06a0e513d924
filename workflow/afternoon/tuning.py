"""Keras Tuner's own oracles drive a search; its trials train through ``training.train``.

Keras Tuner's ``Tuner`` classes build Keras 3 models, so a trial is run by ``TrialRunner``, a
``BaseTuner`` whose ``run_trial`` trains the zoo architecture with the trial's values (tf_keras,
the same builder, input pipeline, determinism and checkpoints as every training job) and returns
the objective. The oracle (Hyperband, random or grid search over the declared space) lives in the
chief, which serves it over gRPC (Keras Tuner's ``OracleServicer``) to the workers.

A trial's folder ``trials/<id>/`` holds its checkpoint (kept until the search ends) and
``trial.json`` (its MLflow run, epochs, objective). A Hyperband continuation
(``tuner/trial_id``) starts from a copy of its parent trial's checkpoint: it trains epochs
``tuner/initial_epoch``..``tuner/epochs`` only.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import time
from pathlib import Path

from afternoon import distributed, tracking
from afternoon.checkpoint import Checkpointer, CheckpointState
from afternoon.errors import AfternoonError, ConfigError
from afternoon.fileio import read_json, write_json_atomic
from afternoon.search import objective_name, trial_architecture
from afternoon.training import TrainingDiverged, train

log = logging.getLogger(__name__)

TUNER_DIR, TRIALS_DIR = "tuner", "trials"
PROJECT = "oracle"  # Keras Tuner's project name inside TUNER_DIR
MAX_CONSECUTIVE_FAILURES = 10  # then the oracle stops the search (e.g. every trial diverges)


def hyperparameters(space: dict):
    """A Keras Tuner ``HyperParameters`` with the search's space declared up front."""
    import keras_tuner as kt

    hp = kt.HyperParameters()
    for path, spec in space.items():
        sampling = spec.get("sampling", "linear")
        if "choice" in spec:
            values = spec["choice"]
            if all(isinstance(v, bool) for v in values) and len(values) == 2:
                hp.Boolean(path)
            else:
                hp.Choice(path, values, ordered=False)
        elif "int" in spec:
            hp.Int(path, *spec["int"], step=spec.get("step"), sampling=sampling)
        else:
            hp.Float(path, *spec["float"], step=spec.get("step"), sampling=sampling)
    return hp


def make_oracle(job: dict):
    """The search's Keras Tuner oracle (not yet given its project directory)."""
    import keras_tuner as kt

    search = job["search"]
    metric, direction = objective_name(job["name"], search)
    ((kind, settings),) = search["algorithm"].items()
    settings = settings or {}
    common = dict(
        objective=kt.Objective(metric, direction),
        hyperparameters=hyperparameters(search["space"]),
        seed=search.get("seed", job["seed"]),
        tune_new_entries=False,
        allow_new_entries=False,
        max_consecutive_failed_trials=MAX_CONSECUTIVE_FAILURES,
    )
    if kind == "hyperband":
        return kt.oracles.HyperbandOracle(
            max_epochs=settings["max_epochs"],
            factor=settings.get("factor", 3),
            hyperband_iterations=settings.get("iterations", 1),
            **common,
        )
    if kind == "random":
        return kt.oracles.RandomSearchOracle(max_trials=settings["max_trials"], **common)
    return kt.oracles.GridSearchOracle(max_trials=settings.get("max_trials"), **common)


def trial_spec(job: dict, values: dict) -> dict:
    """The training spec of one trial: the base architecture with the trial's values, the
    epochs Hyperband gives it (tuner/epochs) or the base's, the job's seed and settings."""
    spec = trial_architecture(job["arch"], values)
    spec["epochs"] = int(values.get("tuner/epochs", job["arch"]["epochs"]))
    for key in ("dataset", "seed", "precision", "deterministic"):
        spec[key] = job[key]
    spec["name"] = f"{job['name']}-trial"
    return spec


def mlflow_names(values: dict) -> dict:
    """Hyperparameter names as MLflow takes them (no brackets): layers[3].x -> layers.3.x."""
    return {re.sub(r"\[(\d+)\]", r".\1", str(k)): v for k, v in values.items()}


def _fingerprint(spec: dict, dataset_sha: str | None) -> dict:
    """What a trial's checkpoint was trained with, epochs left out: a Hyperband continuation
    (same values, more epochs) resumes its parent's checkpoint."""
    return {
        "spec": tracking.config_hash({k: v for k, v in spec.items() if k != "epochs"}),
        "data": dataset_sha,
        "ranks": 1,
    }


class TrialContext:
    """What every trial of one worker shares: the job, the data, the tracking, the folders."""

    def __init__(self, job: dict, data: dict, card: dict, state_dir: Path, tracking: dict):
        self.job, self.data, self.card = job, data, card
        self.trials_dir = Path(state_dir) / TRIALS_DIR
        self.tracking = tracking  # uri, experiment, parent_run_id
        self.threads = tracking.get("threads", 1)


def make_runner(oracle, context: TrialContext, directory: Path):
    """A Keras Tuner ``BaseTuner`` (its class made here: keras_tuner is imported lazily)."""
    import keras_tuner as kt
    from keras_tuner.engine.base_tuner import BaseTuner

    class TrialRunner(BaseTuner):
        def __init__(self):
            super().__init__(oracle, directory=str(directory), project_name=PROJECT)
            create = self.oracle.create_trial

            def create_trial(tuner_id):  # Keras Tuner's loop asks again at once when IDLE
                trial = create(tuner_id)
                if trial.status == "IDLE":
                    time.sleep(0.5)
                return trial

            self.oracle.create_trial = create_trial

        def run_trial(self, trial, *args, **kwargs):
            try:
                return run_one_trial(context, trial.trial_id, trial.hyperparameters.values)
            except (TrainingDiverged, ConfigError) as err:
                raise kt.errors.FailedTrialError(str(err)) from None

    return TrialRunner()


def run_one_trial(context: TrialContext, trial_id: str, values: dict) -> dict:
    """Train one trial (from its parent's checkpoint for a Hyperband continuation, from its own
    when it was stopped before), tracked as a child run; returns {objective: last value}."""
    import tensorflow as tf

    job = context.job
    metric, _ = objective_name(job["name"], job["search"])
    spec = {**trial_spec(job, values), "num_classes": len(context.card["class_names"])}
    trial_dir = context.trials_dir / trial_id
    checkpoint = trial_dir / "checkpoint"
    parent = values.get("tuner/trial_id")
    if parent and not checkpoint.exists():
        shutil.copytree(context.trials_dir / parent / "checkpoint", checkpoint)
    checkpointer = Checkpointer(checkpoint, _fingerprint(spec, context.card.get("npz_sha256")))
    checkpointer.resumed = checkpointer.load()
    record_path = trial_dir / "trial.json"
    record = read_json(record_path) if record_path.exists() else {}
    hp_values = dict(values)
    run = _child_run(context, trial_id, hp_values, record.get("run_id"))
    record.update(trial_id=trial_id, run_id=run.run_id, values=hp_values, parent_trial=parent,
                  tuner_id=os.environ.get("KERASTUNER_TUNER_ID", ""), status="RUNNING")  # fmt: skip
    write_json_atomic(record_path, record)
    process = distributed.SingleProcess(context.threads)
    try:
        with run:
            model, rows, summary = train(
                spec,
                context.data,
                process,
                on_epoch=lambda epoch, logs: run.log_metrics(logs, step=epoch),
                checkpointer=checkpointer,
            )
            checkpointer.save(tf, model, CheckpointState(len(rows), rows))
            if metric not in rows[-1]:
                raise ConfigError(f"objective {metric!r} was not measured (no validation split?)")
            value = rows[-1][metric]
            trained = len(rows) - int(values.get("tuner/initial_epoch", 0))
            run.log_metrics({f"objective_{metric}": value, "epochs_trained": trained})
            run.set_tags({"afternoon.trial_status": "COMPLETED"})
    except BaseException as err:
        status = "KILLED" if isinstance(err, KeyboardInterrupt) else "FAILED"
        _tag_quietly(run, {"afternoon.trial_status": status})
        raise
    finally:
        tf.keras.backend.clear_session()
    record.update(status="COMPLETED", objective=value, epochs=len(rows), epochs_trained=trained,
                  seconds=sum(r["epoch_time_s"] for r in rows[len(rows) - trained:]))  # fmt: skip
    write_json_atomic(record_path, record)
    return {metric: value}


def _tag_quietly(run, tags: dict) -> None:
    try:
        run.set_tags(tags)
    except Exception as err:  # never hide the error that ended the trial
        log.warning("trial run %s: tags not set: %s", run.run_id, err)


def _child_run(context: TrialContext, trial_id: str, values: dict, run_id: str | None):
    """The trial's MLflow run, a child of the search's run (reopened when the trial resumes)."""
    info = context.tracking
    if run_id:
        return tracking.RunLogger.reopen(info["uri"], run_id, offline_ok=True)
    tags = tracking.provenance_tags(
        extra={
            "mlflow.parentRunId": info["parent_run_id"],
            "search": context.job["name"],
            "dataset": context.job["dataset"],
            "trial_id": trial_id,
            "trial_parent": values.get("tuner/trial_id", ""),
            "tuner_id": os.environ.get("KERASTUNER_TUNER_ID", ""),
        }
    )
    name = f"{context.job['name']}@{context.job['dataset']}/trial-{trial_id}"
    return tracking.RunLogger.start(
        info["uri"], info["experiment"], name, mlflow_names(values), tags, offline_ok=True
    )


class WorkerFailed(AfternoonError):
    """A worker process of the search exited with an error."""
