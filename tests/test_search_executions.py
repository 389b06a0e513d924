"""executions_per_trial: each trial trained twice on digits (seeds seed and seed + 1), its
objective the mean of the two executions' final values in trials.csv, MLflow and TensorBoard's
HParams session; a Hyperband continuation continues each execution from its parent's execution
of the same index; a worker killed in a trial's second execution resumes it from its own
checkpoint, without training the first again."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest

from afternoon.search.oracles import hyperband_trials
from helpers.env import clean_env
from helpers.paths import REPO
from helpers.runners import run_snakemake, snakemake_command
from helpers.search import search_dir, search_runs, summary, tune_process, write_search_study

SEARCH = "executions_probe"
SEED = 5
PROBE = {  # cnn1 on digits, Hyperband max_epochs 4, factor 4: 4 trials of 1 epoch, 1 continued
    "description": "two executions per trial",  # to 4 epochs, 2 trials of 4 epochs: 7 trials
    "base": "cnn1",
    "datasets": ["digits"],
    "seed": SEED,
    "workers": 2,
    "executions_per_trial": 2,
    "algorithm": {"hyperband": {"max_epochs": 4, "factor": 4}},
    "space": {
        "layers[3].dense.units": {"int": [16, 128], "step": 16},
        "optimizer.learning_rate": {"float": [0.003, 0.3], "sampling": "log"},
    },
}
TIMEOUT_S = 300
TARGET = f"results/search/{SEARCH}/digits/summary.json"  # the tune job alone


def records(workdir: Path) -> dict[str, dict]:
    """Each trial's trial.json, with the epoch of each execution's checkpoint (None: none)."""
    out = {}
    for path in (search_dir(workdir, SEARCH) / "state/trials").glob("*/trial.json"):
        try:
            record = json.loads(path.read_text())
            record["checkpoint_epochs"] = [
                json.loads(state.read_text())["epoch"] if state.exists() else None
                for state in (path.parent / name / "state.json" for name in ("checkpoint",
                                                                             "checkpoint-1"))
            ]  # fmt: skip
        except (OSError, ValueError):
            continue  # being written (atomically renamed) right now
        out[record["trial_id"]] = record
    return out


def in_second_execution(workdir: Path):
    """(trial id, record) of a trial whose first execution is done and whose second has saved
    an epoch of its own, short of its last."""
    for trial_id, record in records(workdir).items():
        values = record["values"]
        saved = record["checkpoint_epochs"][1] or 0
        first_done = [e["index"] for e in record.get("executions", [])] == [0]
        if (
            record.get("status") == "RUNNING"
            and first_done
            and (values.get("tuner/initial_epoch", 0) < saved < values["tuner/epochs"])
        ):
            return trial_id, record
    return None


@pytest.fixture(scope="module")
def killed_and_resumed(tmp_path_factory):
    """The search, its worker SIGKILLed in a trial's second execution, then run to the end."""
    workdir = write_search_study(tmp_path_factory.mktemp("executions"), run=[SEARCH],
                                 searches={SEARCH: PROBE})  # fmt: skip
    run_snakemake(workdir, "--cores", "2", "--until", "init_tracking", "preprocess")
    command = snakemake_command(workdir, "--cores", "2", TARGET)
    snakemake = subprocess.Popen(command, cwd=REPO, env=clean_env(), stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL)  # fmt: skip
    deadline, found = time.monotonic() + TIMEOUT_S, None
    while found is None and time.monotonic() < deadline:
        assert snakemake.poll() is None, "snakemake ended before a trial's second execution"
        found = in_second_execution(workdir)
        time.sleep(0.02)
    assert found, "timed out waiting for a trial's second execution"
    killed_id, killed = found
    tune_process(workdir, killed["tuner_id"]).send_signal(signal.SIGKILL)
    assert snakemake.wait(TIMEOUT_S) != 0
    log = workdir / f"results/logs/tune/{SEARCH}/digits.log"
    first = log.read_text()  # the job's log is rewritten by the next run
    run_snakemake(workdir, "--cores", "2", TARGET)
    return {"workdir": workdir, "id": killed_id, "before": killed, "log": first + log.read_text()}


def trials_of(workdir: Path) -> pd.DataFrame:
    return pd.read_csv(search_dir(workdir, SEARCH) / "trials.csv",
                       dtype={"trial_id": str, "parent_trial": str})  # fmt: skip


def test_the_objective_is_the_mean_of_the_executions(killed_and_resumed):
    workdir = killed_and_resumed["workdir"]
    trials = trials_of(workdir)
    assert len(trials) == hyperband_trials(4, 4) == 7 and set(trials["status"]) == {"COMPLETED"}
    values = trials[["objective_execution_0", "objective_execution_1"]]
    assert trials["objective"].to_numpy() == pytest.approx(values.mean(axis=1).to_numpy())
    assert (values["objective_execution_0"] != values["objective_execution_1"]).any()
    assert summary(workdir, SEARCH)["executions_per_trial"] == 2
    for record in records(workdir).values():  # seed + execution index
        assert [(e["index"], e["seed"]) for e in record["executions"]] == [(0, SEED), (1, SEED + 1)]
    client, _, children = search_runs(workdir, SEARCH)
    by_trial = trials.set_index("trial_id")
    for run in children:
        row, metrics = by_trial.loc[run.data.tags["afternoon.trial_id"]], run.data.metrics
        assert metrics["objective_val_accuracy"] == pytest.approx(row["objective"])
        for index in (0, 1):
            assert metrics[f"objective_execution_{index}"] == pytest.approx(
                row[f"objective_execution_{index}"]
            )
            history = client.get_metric_history(run.info.run_id, f"execution_{index}/loss")
            assert max(m.step for m in history) == row["epochs"]  # each execution's own curve
    # TensorBoard's HParams session of each trial carries the mean (and each execution's value).
    from tensorboard.backend.event_processing.plugin_event_multiplexer import EventMultiplexer

    events = EventMultiplexer()
    events.AddRunsFromDirectory(str(search_dir(workdir, SEARCH) / "tensorboard"))
    events.Reload()
    for trial_id, row in by_trial.iterrows():
        for tag, column in (("val_accuracy", "objective"), *[(f"objective_execution_{i}",) * 2
                                                             for i in (0, 1)]):  # fmt: skip
            (scalar,) = events.Tensors(f"trial-{trial_id}", tag)
            assert float(scalar.tensor_proto.float_val[0]) == pytest.approx(row[column])


def test_a_continuation_continues_each_execution_from_its_parents_same_index(killed_and_resumed):
    workdir = killed_and_resumed["workdir"]
    trials = trials_of(workdir)
    (continued,) = trials[trials["round"] == 1].itertuples()
    log = killed_and_resumed["log"]  # both runs'
    for name in ("checkpoint", "checkpoint-1"):  # a checkpoint of another seed would be discarded
        assert re.search(rf"trials/{continued.trial_id}/{name} from the checkpoint of epoch 1", log)
    client, _, children = search_runs(workdir, SEARCH)
    (run,) = [r for r in children if r.data.tags["afternoon.trial_id"] == continued.trial_id]
    for index in (0, 1):
        history = client.get_metric_history(run.info.run_id, f"execution_{index}/val_accuracy")
        assert min(m.step for m in history) == 2  # epoch 1 came from the parent's execution


def test_a_killed_execution_resumes_and_the_finished_one_is_not_retrained(killed_and_resumed):
    workdir, killed_id = killed_and_resumed["workdir"], killed_and_resumed["id"]
    before, after = killed_and_resumed["before"], records(workdir)[killed_id]
    assert after["status"] == "COMPLETED" and after["run_id"] == before["run_id"]
    assert after["executions"][0] == before["executions"][0]  # the first: as it was
    client, _, _ = search_runs(workdir, SEARCH)
    first = Counter(m.step for m in client.get_metric_history(before["run_id"], "execution_0/loss"))
    assert set(first.values()) == {1}  # trained once
    second = Counter(
        m.step for m in client.get_metric_history(before["run_id"], "execution_1/loss")
    )
    saved, start = before["checkpoint_epochs"][1], before["values"].get("tuner/initial_epoch", 0)
    # The second execution's epochs up to its checkpoint were trained (and logged) once.
    assert all(second[epoch] == 1 for epoch in range(start + 1, saved + 1)), second
    assert max(second) == before["values"]["tuner/epochs"]
    log = killed_and_resumed["log"]
    assert re.search(rf"trials/{killed_id}/checkpoint-1 from the checkpoint of epoch {saved}", log)
    assert f"trial {killed_id}: execution 0 finished before" in log
