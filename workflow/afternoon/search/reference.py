"""A search's published numbers to compare with (``reference:`` in ``config/searches.yaml``),
checked at the dry run; the report's table of ours beside them.

    reference:
      - {values: {layers[1].dense.units: 32, layers[2].dropout.rate: 0.1, optimizer.name: adam},
         test_accuracy: 0.8395}

Each entry gives a value for every hyperparameter of the space (one the space can take) and the
published value of the search's objective, under the objective's name. The report matches each
entry to the trial with those values (the one that trained longest, for Hyperband's
continuations) and shows values, ours, the reference and the difference. Editing the list reruns
the report only (``search.jobs.search_job`` leaves it out of the tune job's spec).
"""

from __future__ import annotations

import math

from afternoon.errors import ConfigError

STEP_TOLERANCE = 1e-9


def _fail(name: str, where: str, message: str):
    raise ConfigError(f"search {name!r}, {where}: {message}")


def _number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def takes(spec: dict, value) -> bool:
    """Whether the hyperparameter declared as ``spec`` (``search.grammar``) can take ``value``."""
    if "choice" in spec:
        return any(type(value) is type(v) and value == v for v in spec["choice"])
    kind = "int" if "int" in spec else "float"
    if not _number(value) or (kind == "int" and not isinstance(value, int)):
        return False
    low, high = spec[kind]
    if not low <= value <= high:
        return False
    step = spec.get("step")
    if step is None or spec.get("sampling", "linear") == "log":
        return True
    steps = (value - low) / step
    return abs(steps - round(steps)) <= STEP_TOLERANCE * max(1.0, abs(steps))


def check_reference(name: str, reference, space: dict, objective: str) -> None:
    """``reference`` (a search's list) against its ``space`` and ``objective``: one line per
    mistake."""
    if not isinstance(reference, list) or not reference:
        _fail(name, "reference", f"must be a non-empty list of {{values: {{...}}, {objective}: "
              f"number}}, got {reference!r}")  # fmt: skip
    seen = set()
    for i, entry in enumerate(reference):
        where = f"reference[{i}]"
        if not isinstance(entry, dict) or set(entry) != {"values", objective}:
            keys = sorted(entry) if isinstance(entry, dict) else entry
            _fail(name, where, f"must have exactly the keys values and {objective} (the "
                  f"search's objective), got {keys!r}")  # fmt: skip
        values, number = entry["values"], entry[objective]
        if not _number(number) or not math.isfinite(number):
            _fail(name, f"{where}.{objective}", f"must be a number, got {number!r}")
        if not isinstance(values, dict) or set(values) != set(space):
            got = sorted(values) if isinstance(values, dict) else values
            _fail(name, f"{where}.values", f"must give a value for each hyperparameter of the "
                  f"space ({', '.join(space)}), got {got!r}")  # fmt: skip
        for path, value in values.items():
            if not takes(space[path], value):
                _fail(name, f"{where}.values.{path}", f"{value!r} is not a value of the space "
                      f"({space[path]!r})")  # fmt: skip
        key = tuple(repr(values[path]) for path in space)
        if key in seen:
            _fail(name, where, f"the values {values!r} are given twice")
        seen.add(key)


def _same(ours, theirs) -> bool:
    if _number(theirs) and _number(ours):
        return math.isclose(float(ours), float(theirs), rel_tol=1e-9, abs_tol=1e-12)
    if isinstance(theirs, bool):
        return str(ours).lower() == str(theirs).lower()
    return str(ours) == str(theirs)


def reference_rows(reference: list[dict], trials, objective: str) -> list[dict]:
    """Per reference entry: {values, ours, reference, difference} (ours and difference None where
    no completed trial had those values). ``trials``: the trials table (a DataFrame)."""
    done = trials[trials["status"] == "COMPLETED"]
    rows = []
    for entry in reference:
        values = entry["values"]
        match = done
        for path, value in values.items():
            match = match[[_same(v, value) for v in match[path]]] if path in match else match[:0]
        ours = None
        if len(match):
            ours = float(match.sort_values("epochs", kind="stable").iloc[-1]["objective"])
        theirs = float(entry[objective])
        rows.append(dict(values=values, ours=ours, reference=theirs,
                         difference=None if ours is None else ours - theirs))  # fmt: skip
    return rows
