"""What a search of config/searches.yaml will train, without training: Hyperband's arithmetic
beside Keras Tuner's own oracle driven to its end with stand-in scores, times the executions per
trial, and the wall time that makes at a measured per-epoch time.

    .venv/bin/python bench/search_plan.py ciml_filters ciml_filters_quick \\
        --epoch-seconds 3.0 --start-seconds 5

The arithmetic (``afternoon.search.oracles.hyperband_trials``) assumes the space never runs out of
new values; Keras Tuner's Hyperband stops when a bracket's first round wants a new configuration
and none is left (a small discrete space: ciml_filters' 7 filter counts), so the oracle's count
is the one that holds. The oracle here runs one trial at a time; with several workers the order
of trials may differ, and so, for a space that runs out, the count by a trial or so.
``--epoch-seconds``: one epoch of one execution (measured: README, "The seeds' searches");
``--start-seconds``: each execution's fixed cost (model build, first-epoch tracing, its MLflow
logging); the wall time assumes the search's workers share the epochs evenly.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import math
import random
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "workflow"))

from afternoon.config import load_yaml, load_zoo  # noqa: E402
from afternoon.search.grammar import load_searches  # noqa: E402
from afternoon.search.jobs import executions_of, search_job, workers_of  # noqa: E402
from afternoon.search.oracles import hyperband_brackets, hyperband_trials, make_oracle  # noqa: E402


def space_size(space: dict) -> float:
    """Distinct configurations of the space (inf where a hyperparameter is continuous)."""
    size = 1.0
    for spec in space.values():
        if "choice" in spec:
            size *= len(spec["choice"])
        elif spec.get("step") and spec.get("sampling", "linear") == "linear":
            low, high = spec.get("int") or spec["float"]
            size *= math.floor((high - low) / spec["step"] + 1e-9) + 1
        else:
            return math.inf
    return size


def arithmetic(settings: dict) -> tuple[int, int]:
    """(trials, epochs trained) by Hyperband's arithmetic (continuations train the difference)."""
    max_epochs, factor = settings["max_epochs"], settings.get("factor", 3)
    iterations = settings.get("iterations", 1)
    plan = hyperband_brackets(max_epochs, factor)
    epochs = sum(
        size * (reach - (rounds[i - 1][1] if i else 0))
        for rounds in plan
        for i, (size, reach) in enumerate(rounds)
    )
    return hyperband_trials(max_epochs, factor, iterations), iterations * epochs


def oracle_plan(job: dict) -> tuple[int, int]:
    """(trials, epochs trained): Keras Tuner's oracle of the search run to its end, one trial at
    a time, each scored at random."""
    oracle = make_oracle(job)
    metric = job["search"].get("objective", "val_accuracy")
    rng, trials, epochs = random.Random(0), 0, 0
    with tempfile.TemporaryDirectory() as folder, contextlib.redirect_stdout(io.StringIO()):
        oracle._set_project_dir(folder, "plan")
        while (trial := oracle.create_trial("tuner0")).status == "RUNNING":
            values = trial.hyperparameters.values
            trials += 1
            epochs += values.get("tuner/epochs", job["arch"]["epochs"])
            epochs -= values.get("tuner/initial_epoch", 0)
            oracle.update_trial(trial.trial_id, {metric: rng.random()})
            trial = oracle.get_trial(trial.trial_id)
            trial.status = "COMPLETED"
            oracle.end_trial(trial)
    return trials, epochs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("searches", nargs="+")
    parser.add_argument("--file", default=str(REPO / "config/searches.yaml"))
    parser.add_argument("--epoch-seconds", type=float, default=None)
    parser.add_argument("--start-seconds", type=float, default=0.0)
    args = parser.parse_args()
    zoo = load_zoo(REPO / "config/zoo.yaml")
    searches = load_searches(args.file, zoo)
    config = load_yaml(REPO / "config/config.yaml")
    config["training"].setdefault("epochs_scale", 1.0)
    for name in args.searches:
        search = searches[name]
        job = search_job(config, zoo, searches, name, search["datasets"][0])
        ((kind, settings),) = search["algorithm"].items()
        executions, workers = executions_of(search), workers_of(search)
        trials, epochs = oracle_plan(job)
        line = f"{name}: space {space_size(search['space']):g} configurations; "
        if kind == "hyperband":
            planned, planned_epochs = arithmetic(settings)
            line += f"Hyperband's arithmetic {planned} trials, {planned_epochs} epochs; "
        line += f"Keras Tuner's oracle {trials} trials, {epochs} epochs; x {executions} "
        line += f"executions = {trials * executions} trainings, {epochs * executions} epochs"
        if args.epoch_seconds:
            seconds = epochs * executions * args.epoch_seconds
            seconds += trials * executions * args.start_seconds
            line += f"; ~{seconds / workers / 60:.0f} min on {workers} workers"
        print(line)


if __name__ == "__main__":
    main()
