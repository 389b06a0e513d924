"""The report's search section: per search and dataset, the best trial retrained as its own score
row, the trials table, the objective against each hyperparameter, Hyperband's brackets (the
epochs each trial trained, continuations stacked on their parents' epochs), and ours beside the
search's published numbers (``reference``, from the report's settings) where it has them.

Read by the report stage from the files of the tune, train_search_best and evaluate_search_best
jobs (``layout.search_report_paths``); figures are embedded as data URIs.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from afternoon.fileio import read_json
from afternoon.layout import TENSORBOARD_COMMAND
from afternoon.report.plots import brackets_figure, data_uri, objective_figure
from afternoon.search.reference import reference_rows


def _fmt(value) -> str:
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return ""
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def search_sections(searches: list[dict], references: dict | None = None) -> list[dict]:
    """The template's data for each search (``paths["searches"]`` of the report job);
    ``references``: search name -> its ``reference`` list (the report's settings)."""
    sections, references = [], references or {}
    for paths in searches:
        summary = read_json(Path(paths["tune"]["summary"]))
        trials = pd.read_csv(paths["tune"]["trials"], dtype={"trial_id": str, "parent_trial": str})
        train = read_json(Path(paths["train"]["metrics"]))
        evaluation = read_json(Path(paths["eval"]["metrics"]))
        record = read_json(Path(paths["train"]["run"]))
        title = f"{summary['search']} on {summary['dataset']}"
        hyperband = summary["algorithm"] == "hyperband"
        columns = [c for c in trials.columns if c != "run_id"]
        sections.append(
            dict(
                name=summary["search"],
                dataset=summary["dataset"],
                summary=summary,
                best_row=dict(
                    name=f"{summary['search']}-best",
                    base=summary["base"],
                    test_accuracy=100 * float(evaluation["test_accuracy"]),
                    test_loss=float(evaluation["test_loss"]),
                    parameters=train.get("parameters"),
                    epochs=train.get("epochs_run"),
                    train_time_s=train.get("train_time_s"),
                    run_id=record.get("run_id"),
                ),
                columns=columns,
                rows=[[_fmt(row[c]) for c in columns] for _, row in trials.iterrows()],
                best_trial=summary["best_trial"],
                tensorboard_command=f"{TENSORBOARD_COMMAND} SEARCH={summary['search']}/"
                f"{summary['dataset']}",
                reference=_reference(references.get(summary["search"]), trials, summary),
                objective_png=data_uri(objective_figure(trials, summary["objective"], title)),
                brackets_png=data_uri(brackets_figure(trials, f"{title}: Hyperband brackets"))
                if hyperband
                else None,
            )
        )
    return sections


def _reference(reference: list | None, trials: pd.DataFrame, summary: dict) -> list[dict]:
    """The search's ``reference`` beside our trials: values, ours, the reference, difference."""
    rows = reference_rows(reference or [], trials, summary["objective"])
    return [
        dict(hparams=", ".join(f"{k} {v}" for k, v in row["values"].items()),
             ours="" if row["ours"] is None else f"{row['ours']:.4f}",
             reference=f"{row['reference']:.4f}",
             difference="" if row["difference"] is None else f"{row['difference']:+.4f}")
        for row in rows
    ]  # fmt: skip
