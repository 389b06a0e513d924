"""Keras Tuner's oracles of a search (Hyperband, random, grid) over its declared space, and
Hyperband's arithmetic (how many trials, how many epochs each) without Keras Tuner.

Keras Tuner is imported when an oracle is made, not with this module: the dry run and the report
use the arithmetic.
"""

from __future__ import annotations

import math

from afternoon.search.grammar import objective_name

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


# --- Hyperband's arithmetic (Keras Tuner's HyperbandOracle, min_epochs 1) ---------------------


def hyperband_brackets(max_epochs: int, factor: int) -> list[list[tuple[int, int]]]:
    """Per bracket (most rounds first), per round: (trials, epochs each trains to)."""
    brackets, epochs = 0, max_epochs
    while epochs >= 1:
        epochs, brackets = epochs / factor, brackets + 1
    end_size = math.ceil(1 + math.log(max_epochs, factor))
    plan = []
    for bracket in reversed(range(brackets)):
        rounds = []
        for rnd in range(bracket + 1):
            size = math.ceil(end_size / (bracket + 1) * factor ** (bracket - rnd))
            rounds.append((size, math.ceil(max_epochs / factor ** (bracket - rnd))))
        plan.append(rounds)
    return plan


def hyperband_trials(max_epochs: int, factor: int, iterations: int = 1) -> int:
    """How many trials Hyperband runs (when the space never runs out of new values)."""
    plan = hyperband_brackets(max_epochs, factor)
    return iterations * sum(size for rounds in plan for size, _ in rounds)
