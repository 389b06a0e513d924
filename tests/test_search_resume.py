"""A search stopped mid-trial resumes on the next `snakemake`: a worker killed by SIGKILL, then
the chief stopped by SIGTERM, then the chief killed by SIGKILL (its workers stop with it); the
finished trials are not run again, a stopped trial continues from its checkpoint into the same
MLflow run, and the search ends with the trials Hyperband predicts, under one parent run
(keras-tuner #835, Hyperband's reload, does not bite 1.4.7)."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import pandas as pd

from afternoon.search.oracles import hyperband_trials
from helpers.env import clean_env
from helpers.paths import REPO
from helpers.runners import run_snakemake, snakemake_command
from helpers.search import search_dir, search_runs, tune_process, write_search_study

SEARCH = "resume_probe"
PROBE = {  # cnn1 on digits: epochs of ~0.2 s, trials of 2 and 6 epochs
    "description": "a search to stop and resume",
    "base": "cnn1",
    "datasets": ["digits"],
    "seed": 3,
    "workers": 2,
    "algorithm": {"hyperband": {"max_epochs": 6, "factor": 3}},
    "space": {
        "layers[3].dense.units": {"int": [64, 256], "step": 64},
        "optimizer.learning_rate": {"float": [0.003, 0.03], "sampling": "log"},
    },
}
TIMEOUT_S = 300
TARGET = f"results/search/{SEARCH}/digits/summary.json"  # the tune job alone


def records(workdir: Path) -> dict[str, dict]:
    """Each trial's trial.json (afternoon.search.trials), with its checkpoint's epoch if it has
    one."""
    out = {}
    for path in (search_dir(workdir, SEARCH) / "state/trials").glob("*/trial.json"):
        try:
            record = json.loads(path.read_text())
            state = path.parent / "checkpoint/state.json"
            record["checkpoint_epoch"] = (
                json.loads(state.read_text())["epoch"] if state.exists() else None
            )
        except (OSError, ValueError):
            continue  # being written (atomically renamed) right now
        record["mtime"] = path.stat().st_mtime_ns
        out[record["trial_id"]] = record
    return out


def wait_for_no_tune_process(workdir: Path, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            tune_process(workdir, "tuner0")
        except AssertionError:
            try:
                tune_process(workdir, "tuner1")
            except AssertionError:
                return
        time.sleep(0.5)
    raise AssertionError(f"a worker outlived its chief for {timeout_s:.0f} s")


def wait_until(condition, what: str, snakemake: subprocess.Popen):
    deadline = time.monotonic() + TIMEOUT_S
    while time.monotonic() < deadline:
        if (found := condition()) is not None:
            return found
        assert snakemake.poll() is None, f"snakemake ended before {what}"
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def start(workdir: Path) -> subprocess.Popen:
    command = snakemake_command(workdir, "--cores", "2", TARGET)
    return subprocess.Popen(command, cwd=REPO, env=clean_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)  # fmt: skip


def test_a_search_killed_mid_trial_resumes_without_redoing_finished_trials(tmp_path):
    workdir = write_search_study(tmp_path, run=[SEARCH], searches={SEARCH: PROBE})
    run_snakemake(workdir, "--cores", "2", "--until", "init_tracking", "preprocess")

    # 1. SIGKILL the worker of a trial that has saved an epoch of its own.
    snakemake = start(workdir)

    def mid_trial():
        for trial_id, record in records(workdir).items():
            initial = record["values"].get("tuner/initial_epoch", 0)
            if record.get("status") == "RUNNING" and (record["checkpoint_epoch"] or 0) > initial:
                return trial_id, record
        return None

    killed_id, killed = wait_until(mid_trial, "a trial with a checkpoint", snakemake)
    tune_process(workdir, killed["tuner_id"]).send_signal(signal.SIGKILL)
    assert snakemake.wait(TIMEOUT_S) != 0
    finished = {t: r for t, r in records(workdir).items() if r.get("status") == "COMPLETED"}

    # 2. SIGTERM the chief once one more trial has finished; 3. then SIGKILL it likewise (its
    # workers get SIGTERM from the kernel when it dies: none is left behind).
    for sig in (signal.SIGTERM, signal.SIGKILL):
        before = sum(r.get("status") == "COMPLETED" for r in records(workdir).values())
        snakemake = start(workdir)

        def one_more(before=before):
            done = [t for t, r in records(workdir).items() if r.get("status") == "COMPLETED"]
            return done if len(done) > before else None

        wait_until(one_more, "another finished trial", snakemake)
        tune_process(workdir, None).send_signal(sig)
        assert snakemake.wait(TIMEOUT_S) != 0
        if sig == signal.SIGTERM:
            log = (workdir / f"results/logs/tune/{SEARCH}/digits.log").read_text()
            assert "afternoon: stopped: SIGTERM received" in log
        wait_for_no_tune_process(workdir)

    # 4. Run to the end.
    run_snakemake(workdir, "--cores", "2", TARGET)
    after = records(workdir)
    trials = pd.read_csv(search_dir(workdir, SEARCH) / "trials.csv", dtype={"trial_id": str})
    assert len(trials) == hyperband_trials(6, 3) and set(trials["status"]) == {"COMPLETED"}
    for trial_id, record in finished.items():  # not run again
        assert after[trial_id]["mtime"] == record["mtime"], trial_id
    assert after[killed_id]["status"] == "COMPLETED"
    assert after[killed_id]["run_id"] == killed["run_id"]  # the same MLflow run, continued
    client, parent, children = search_runs(workdir, SEARCH)
    assert parent.info.status == "FINISHED"
    assert Counter(run.data.tags["afternoon.trial_id"] for run in children) == Counter(
        trials["trial_id"]
    )
    steps = Counter(m.step for m in client.get_metric_history(killed["run_id"], "loss"))
    saved = killed["checkpoint_epoch"]
    first = killed["values"].get("tuner/initial_epoch", 0) + 1
    # The epochs up to its checkpoint were trained (and logged) once: it resumed from there.
    assert all(steps[epoch] == 1 for epoch in range(first, saved + 1)), steps
    assert max(steps) == killed["values"]["tuner/epochs"]
