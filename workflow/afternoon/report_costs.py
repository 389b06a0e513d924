"""The report's cost view (``afternoon.stages.report``): per run its device, its cost and its
time per 60,000-sample epoch beside the seeds' GPU timing; per dataset the Pareto front of test
accuracy against cost (the architectures no other beats on both)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from afternoon.costs import cost_of
from afternoon.plots import save_png

EPOCH_SAMPLES = 60_000  # the seeds' timings are per 60,000-sample (MNIST) epoch


def cost_columns(arch: dict, train: dict, evaluation: dict) -> dict:
    """The cost columns of one run's score row: ``cost`` and ``cost_unit`` (``costs.cost_of``:
    the evaluation's Slurm accounting first, then training's own), ``device``, our seconds per
    60,000-sample epoch and the seeds' (``seed_gpu_seconds_per_epoch`` of the zoo)."""
    found = cost_of({**train, **evaluation})
    rate = train.get("train_samples_per_s")
    return {
        "cost": found[0] if found else None,
        "cost_unit": found[1] if found else "",
        "device": train.get("device", "unknown"),
        "s_per_60k_epoch": EPOCH_SAMPLES / rate if rate else None,
        "seed_gpu_s_per_epoch": arch.get("seed_gpu_seconds_per_epoch"),
    }


def pareto_front(runs: pd.DataFrame) -> pd.Series:
    """True for each run (rows with ``cost`` and ``test_accuracy_pct``) that no other run beats
    on both: none as accurate for less, or more accurate for as little. Runs without a cost are
    never on the front."""
    known = runs.dropna(subset=["cost"])
    on_front = pd.Series(False, index=runs.index)
    for index, run in known.iterrows():
        cheaper_or_equal = known["cost"] <= run["cost"]
        as_good = known["test_accuracy_pct"] >= run["test_accuracy_pct"]
        strictly = (known["cost"] < run["cost"]) | (
            known["test_accuracy_pct"] > run["test_accuracy_pct"]
        )
        on_front[index] = not (cheaper_or_equal & as_good & strictly).any()
    return on_front


def plot_pareto(runs: pd.DataFrame, path: Path, title: str) -> Path:
    """``pareto_figure`` of one dataset's runs, saved as the PNG ``path``."""
    return save_png(pareto_figure(runs, title), path)


def pareto_figure(runs: pd.DataFrame, title: str):
    """Test accuracy against cost (log scale), one labelled point per architecture; the front
    (``pareto_front``) filled and joined by a step line (the collection labelled "Pareto
    front"), the others hollow ("dominated")."""
    import matplotlib.pyplot as plt

    runs = runs.dropna(subset=["cost"]).assign(front=lambda df: pareto_front(df))
    fig, ax = plt.subplots(figsize=(6.4, 4.4), layout="constrained")
    others, front = runs[~runs["front"]], runs[runs["front"]].sort_values("cost")
    ax.scatter(others["cost"], others["test_accuracy_pct"], facecolors="none",
               edgecolors="#5b6475", label="dominated")  # fmt: skip
    ax.scatter(front["cost"], front["test_accuracy_pct"], color="#c0392b", zorder=3,
               label="Pareto front")  # fmt: skip
    ax.step(front["cost"], front["test_accuracy_pct"], where="post", color="#c0392b", lw=1)
    for _, run in runs.iterrows():
        ax.annotate(run["architecture"], (run["cost"], run["test_accuracy_pct"]), fontsize=8,
                    xytext=(4, 3), textcoords="offset points")  # fmt: skip
    units = sorted(set(runs["cost_unit"]))
    if runs.empty:  # runs trained before costs were recorded
        ax.text(0.5, 0.5, "no run recorded a cost", ha="center", transform=ax.transAxes)
    xlabel = f"cost ({' / '.join(units) or 'none recorded'})"
    ax.set(xscale="log" if len(runs) else "linear", xlabel=xlabel, ylabel="test accuracy (%)",
           title=title)  # fmt: skip
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, loc="lower right")
    return fig


def device_rows(long: pd.DataFrame) -> list[dict]:
    """Per run (dataset, architecture): its device, cost and seconds per 60k epoch, ours and the
    seeds', and whether it is on its dataset's Pareto front: the report's cost table."""
    fronts = pd.concat([pareto_front(group) for _, group in long.groupby("dataset", sort=False)])
    rows = []
    for index, run in long.iterrows():
        cost = "–" if pd.isna(run["cost"]) else f"{run['cost']:,.0f} {run['cost_unit']}"
        ours, seeds = run["s_per_60k_epoch"], run["seed_gpu_s_per_epoch"]
        rows.append(
            dict(
                dataset=run["dataset"],
                architecture=run["architecture"],
                device=run["device"],
                cost=cost,
                ours="–" if pd.isna(ours) else f"{ours:.1f}",
                seeds="–" if pd.isna(seeds) else f"{seeds:g}",
                front=bool(fronts[index]),
            )
        )
    return rows
