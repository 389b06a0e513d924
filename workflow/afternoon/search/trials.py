"""Keras Tuner's own oracles drive a search; its trials train through ``training.train``.

Keras Tuner's ``Tuner`` classes build Keras 3 models, so a trial is run by ``TrialRunner``, a
``BaseTuner`` whose ``run_trial`` trains the zoo architecture with the trial's values (tf_keras,
the same builder, input pipeline, determinism and checkpoints as every training job) and returns
the objective. The oracle (Hyperband, random or grid search over the declared space) lives in the
chief, which serves it over gRPC (Keras Tuner's ``OracleServicer``) to the workers.

A trial's folder ``trials/<id>/`` holds its checkpoint (kept until the search ends) and
``trial.json`` (its MLflow run, epochs, objective). A Hyperband continuation
(``tuner/trial_id``) starts from a copy of its parent trial's checkpoint: it trains epochs
``tuner/initial_epoch``..``tuner/epochs`` only. With ``executions_per_trial`` N > 1 a trial is
trained N times (execution i: the search's seed + i, its own checkpoint, a continuation's from
its parent's execution i) and its objective is the mean of the executions' final values (Keras
Tuner averages each execution's best epoch instead; our one-execution trials use the last
epoch); its child run logs execution i's epochs as ``execution_<i>/<metric>`` and its value as
``objective_execution_<i>``.
"""

from __future__ import annotations

import logging
import math
import os
import re
import shutil
import time
from pathlib import Path

import keras_tuner as kt
from keras_tuner.engine.base_tuner import BaseTuner

from afternoon import tracking
from afternoon.distributed import SingleProcess
from afternoon.errors import ConfigError, TrainingDiverged
from afternoon.fileio import read_json, write_json_atomic
from afternoon.search.grammar import objective_name, trial_architecture
from afternoon.search.jobs import executions_of
from afternoon.search.state import (
    EXECUTION_COLUMN,
    PROJECT,
    TRIAL_FILE,
    execution_checkpoint,
    trial_dir,
)
from afternoon.training.checkpoint import Checkpointer, CheckpointState
from afternoon.training.loop import train

log = logging.getLogger(__name__)


def trial_spec(job: dict, values: dict, execution: int = 0) -> dict:
    """The training spec of one trial: the base architecture with the trial's values, the
    epochs Hyperband gives it (tuner/epochs) or the base's, the defaults the job carries, the
    job's settings and seed (+ ``execution``: executions_per_trial trains execution i with
    seed + i)."""
    spec = trial_architecture(job["arch"], values, job["defaults"])
    for key in ("dataset", "precision", "deterministic"):
        spec[key] = job[key]
    spec["seed"] = job["seed"] + execution
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
    """Train one trial's executions (``executions_per_trial``, each with its own seed and
    checkpoint), tracked as one child run; returns {objective: the executions' mean}. An
    execution that finished before (in trial.json) is not trained again; one that was stopped
    resumes from its checkpoint."""
    job = context.job
    metric, _ = objective_name(job["name"], job["search"])
    count = executions_of(job["search"])
    record_path = trial_dir(context.state_dir, trial_id) / TRIAL_FILE
    record = read_json(record_path) if record_path.exists() else {}
    hp_values = dict(values)
    run = _child_run(context, trial_id, hp_values, record.get("run_id"))
    record.update(trial_id=trial_id, run_id=run.run_id, values=hp_values,
                  parent_trial=values.get("tuner/trial_id"),
                  tuner_id=os.environ.get("KERASTUNER_TUNER_ID", ""), status="RUNNING")  # fmt: skip
    write_json_atomic(record_path, record)
    done = {execution["index"]: execution for execution in record.get("executions", [])}
    try:
        with run:
            for index in range(count):
                if index in done:
                    log.info("trial %s: execution %d finished before: %s %.4f", trial_id, index,
                             metric, done[index]["value"])  # fmt: skip
                    continue
                done[index] = _run_execution(context, trial_id, values, index, run)
                record["executions"] = [done[i] for i in sorted(done)]
                write_json_atomic(record_path, record)
            executions = [done[i] for i in range(count)]
            value = math.fsum(e["value"] for e in executions) / count
            trained = sum(e["epochs_trained"] for e in executions)
            run.log_metrics({f"objective_{metric}": value, "epochs_trained": trained})
            run.set_tags({"afternoon.trial_status": "COMPLETED"})
    except BaseException as err:
        status = "KILLED" if isinstance(err, KeyboardInterrupt) else "FAILED"
        _tag_quietly(run, {"afternoon.trial_status": status})
        raise
    record.update(status="COMPLETED", objective=value, epochs_trained=trained,
                  epochs=max(e["epochs"] for e in executions),
                  seconds=sum(e["seconds"] for e in executions))  # fmt: skip
    write_json_atomic(record_path, record)
    return {metric: value}


def _run_execution(context: TrialContext, trial_id: str, values: dict, index: int, run) -> dict:
    """Execution ``index`` of a trial: trained with the search's seed + ``index`` from its own
    checkpoint (a Hyperband continuation's first comes from its parent trial's execution
    ``index``); returns its record (index, seed, value, epochs, epochs_trained, seconds)."""
    import tensorflow as tf

    job = context.job
    metric, _ = objective_name(job["name"], job["search"])
    several = executions_of(job["search"]) > 1
    spec = {**trial_spec(job, values, index), "num_classes": len(context.card["class_names"])}
    checkpoint = execution_checkpoint(context.state_dir, trial_id, index)
    parent = values.get("tuner/trial_id")
    if parent and not checkpoint.exists():
        shutil.copytree(execution_checkpoint(context.state_dir, parent, index), checkpoint)
    checkpointer = Checkpointer(checkpoint, _fingerprint(spec, context.card.get("npz_sha256")))
    checkpointer.resumed = checkpointer.load()
    prefix = f"execution_{index}/" if several else ""  # one run: each execution's own curves

    def on_epoch(epoch, logs):
        run.log_metrics({f"{prefix}{key}": value for key, value in logs.items()}, step=epoch)

    try:
        model, rows, _ = train(spec, context.data, SingleProcess(context.threads),
                               on_epoch=on_epoch, checkpointer=checkpointer)  # fmt: skip
        checkpointer.save(tf, model, CheckpointState(len(rows), rows))
        value = _objective(model, rows, metric, spec, context.data)
    finally:
        tf.keras.backend.clear_session()
    if metric.startswith("test_"):
        run.log_metrics({f"{prefix}{metric}": value})
    if several:
        run.log_metrics({EXECUTION_COLUMN.format(index): value})
    trained = len(rows) - int(values.get("tuner/initial_epoch", 0))
    seconds = sum(row["epoch_time_s"] for row in rows[len(rows) - trained :])
    return dict(index=index, seed=spec["seed"], value=value, epochs=len(rows),
                epochs_trained=trained, seconds=seconds)  # fmt: skip


def _objective(model, rows: list[dict], metric: str, spec: dict, data: dict) -> float:
    """The objective at the end of training: the last epoch's value, or (test_*) the model
    evaluated on the test split, as the TensorFlow hparams tutorial measures it."""
    if metric.startswith("test_"):
        scores = model.evaluate(data["x_test"], data["y_test"], batch_size=spec["batch_size"],
                                verbose=0, return_dict=True)  # fmt: skip
        return float(scores[metric.removeprefix("test_")])
    if metric not in rows[-1]:
        raise ConfigError(f"objective {metric!r} was not measured (no validation split?)")
    return float(rows[-1][metric])


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
