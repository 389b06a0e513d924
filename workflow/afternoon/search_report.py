"""The report's search section: per search and dataset, the best trial retrained as its own score
row, the trials table, the objective against each hyperparameter, and Hyperband's brackets (the
epochs each trial trained, continuations stacked on their parents' epochs).

Read by the report stage from the files of the tune, train_search_best and evaluate_search_best
jobs (``layout.search_report_paths``); figures are embedded as data URIs.
"""

from __future__ import annotations

import base64
import io
from pathlib import Path

import pandas as pd

from afternoon.fileio import read_json
from afternoon.plots import plt  # Agg selected by afternoon.plots

FIXED = ("trial_id", "status", "objective", "bracket", "round", "epochs", "initial_epoch")
FIXED += ("epochs_trained", "parent_trial", "seconds", "run_id")


def _png(fig) -> str:
    buffer = io.BytesIO()
    try:
        fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight", pad_inches=0.15)
    finally:
        plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def objective_figure(trials: pd.DataFrame, objective: str, title: str) -> str:
    """One panel per hyperparameter: each completed trial's objective against its value."""
    names = [c for c in trials.columns if c not in FIXED]
    done = trials[trials["status"] == "COMPLETED"]
    fig, axes = plt.subplots(1, len(names), figsize=(3.2 * len(names), 2.8), squeeze=False)
    for ax, name in zip(axes[0], names, strict=True):
        values = done[name]
        numeric = pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values)
        x = values if numeric else values.astype(str)
        ax.scatter(x, done["objective"], c=done["epochs"], cmap="viridis", s=24)
        if numeric and values.min() > 0 and values.max() / values.min() > 20:
            ax.set_xscale("log")
        ax.set_xlabel(name, fontsize=8)
        ax.set_ylabel(objective if ax is axes[0][0] else "")
    fig.suptitle(f"{title} (colour: epochs trained to)", fontsize=10)
    return _png(fig)


def brackets_figure(trials: pd.DataFrame, title: str) -> str:
    """A bar per trial: epochs from its start (0, or its parent's epochs) to its epochs."""
    ordered = trials.sort_values(["bracket", "round", "trial_id"], ascending=[False, True, True])
    fig, ax = plt.subplots(figsize=(7, 0.25 * len(ordered) + 1.2))
    colors = plt.get_cmap("tab10")
    for row, (_, trial) in enumerate(ordered.iterrows()):
        start = float(trial["initial_epoch"] or 0)
        width = float(trial["epochs"] or 0) - start
        bracket = int(trial["bracket"]) if pd.notna(trial["bracket"]) else 0
        ax.barh(row, width, left=start, color=colors(bracket % 10), edgecolor="black", lw=0.3)
    ids = zip(ordered["trial_id"], ordered["bracket"], ordered["round"], strict=True)
    ax.set_yticks(range(len(ordered)), [f"{t} (b{b}, r{r})" for t, b, r in ids], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("epochs (a continuation starts where its parent trial stopped)")
    ax.set_title(title, fontsize=10)
    return _png(fig)


def _fmt(value) -> str:
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return ""
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def search_sections(searches: list[dict]) -> list[dict]:
    """The template's data for each search (``paths["searches"]`` of the report job)."""
    sections = []
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
                objective_png=objective_figure(trials, summary["objective"], title),
                brackets_png=brackets_figure(trials, f"{title}: Hyperband brackets")
                if hyperband
                else None,
            )
        )
    return sections
