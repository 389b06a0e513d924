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

import keras_tuner as kt
from keras_tuner.engine.base_tuner import BaseTuner

from afternoon import distributed, tracking
from afternoon.errors import ConfigError, TrainingDiverged
from afternoon.fileio import read_json, write_json_atomic
from afternoon.search.grammar import objective_name, trial_architecture
from afternoon.search.state import PROJECT, TRIAL_CHECKPOINT, TRIAL_FILE, trial_dir
from afternoon.training.checkpoint import Checkpointer, CheckpointState
from afternoon.training.loop import train

log = logging.getLogger(__name__)


def trial_spec(job: dict, values: dict) -> dict:
    """The training spec of one trial: the base architecture with the trial's values, the
    epochs Hyperband gives it (tuner/epochs) or the base's, the defaults the job carries, the
    job's seed and settings."""
    spec = trial_architecture(job["arch"], values, job["defaults"])
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
        self.state_dir = Path(state_dir)
        self.tracking = tracking  # uri, experiment, parent_run_id
        self.threads = tracking.get("threads", 1)


class TrialRunner(BaseTuner):
    """A Keras Tuner ``BaseTuner`` whose ``run_trial`` trains the trial's architecture
    (``run_one_trial``); a trial that diverges or does not fit fails alone."""

    def __init__(self, oracle, context: TrialContext, directory: Path):
        super().__init__(oracle, directory=str(directory), project_name=PROJECT)
        self.context = context
        create = self.oracle.create_trial

        def create_trial(tuner_id):  # Keras Tuner's loop asks again at once when IDLE
            trial = create(tuner_id)
            if trial.status == "IDLE":
                time.sleep(0.5)
            return trial

        self.oracle.create_trial = create_trial

    def run_trial(self, trial, *args, **kwargs):
        try:
            return run_one_trial(self.context, trial.trial_id, trial.hyperparameters.values)
        except (TrainingDiverged, ConfigError) as err:
            raise kt.errors.FailedTrialError(str(err)) from None


def run_one_trial(context: TrialContext, trial_id: str, values: dict) -> dict:
    """Train one trial (from its parent's checkpoint for a Hyperband continuation, from its own
    when it was stopped before), tracked as a child run; returns {objective: last value}."""
    import tensorflow as tf

    job = context.job
    metric, _ = objective_name(job["name"], job["search"])
    spec = {**trial_spec(job, values), "num_classes": len(context.card["class_names"])}
    folder = trial_dir(context.state_dir, trial_id)
    checkpoint = folder / TRIAL_CHECKPOINT
    parent = values.get("tuner/trial_id")
    if parent and not checkpoint.exists():
        shutil.copytree(trial_dir(context.state_dir, parent) / TRIAL_CHECKPOINT, checkpoint)
    checkpointer = Checkpointer(checkpoint, _fingerprint(spec, context.card.get("npz_sha256")))
    checkpointer.resumed = checkpointer.load()
    record_path = folder / TRIAL_FILE
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
