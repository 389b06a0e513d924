"""Every figure of the pipeline, as PNG (~100 dpi): an evaluation's (confusion matrix,
misclassified images, history), the report's (learning curves, overfitting, accuracy against cost)
and a search's (objective against each hyperparameter, Hyperband's brackets).

Matplotlib runs headless (Agg, chosen before pyplot is imported); every figure is closed after it
is saved, so long runs do not accumulate open figures.
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from afternoon.fileio import atomic_path  # noqa: E402

DPI = 100
NO_ERRORS_TEXT = "no misclassified test images"


def save_png(fig, path: str | Path | None = None) -> bytes:
    """``fig`` as a PNG, closed either way; written to ``path`` (temp file + rename) when given.
    Returns the PNG's bytes."""
    buffer = io.BytesIO()
    try:
        fig.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight", pad_inches=0.15)
    finally:
        plt.close(fig)
    if path is not None:
        with atomic_path(Path(path)) as tmp:
            tmp.write_bytes(buffer.getvalue())
    return buffer.getvalue()


def data_uri(png: bytes) -> str:
    """A PNG as a data: URI (an HTML page that needs no other file)."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def plot_confusion_matrix(
    cm: np.ndarray, class_names: Sequence[str], path: str | Path, title: str
) -> Path:
    """Counts (rows true, columns predicted) as a heat map, every cell annotated, colour bar."""
    cm = np.asarray(cm)
    k = len(class_names)
    if cm.shape != (k, k):
        raise ValueError(f"confusion matrix is {cm.shape}, expected ({k}, {k})")
    side = max(5.0, 0.6 * k + 3.0)
    fig, ax = plt.subplots(figsize=(side + 1.0, side), layout="constrained")
    image = ax.imshow(cm, cmap="Blues", vmin=0, interpolation="nearest")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="test images")
    ax.set_xticks(range(k), labels=class_names, rotation=45, ha="right", rotation_mode="anchor")
    ax.set_yticks(range(k), labels=class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    threshold = cm.max() / 2 if cm.size and cm.max() > 0 else 1
    fontsize = 9 if k <= 10 else max(5, 9 - (k - 10) // 4)
    for i in range(k):
        for j in range(k):
            colour = "white" if cm[i, j] > threshold else "black"
            ax.text(j, i, str(cm[i, j]), ha="center", va="center", color=colour, fontsize=fontsize)
    save_png(fig, path)
    return Path(path)


def misclassified_titles(
    true: Sequence[int], pred: Sequence[int], prob: Sequence[float], class_names: Sequence[str]
) -> list[str]:
    """One tile title per image: "true → predicted (p=0.97)"."""
    return [
        f"{class_names[int(t)]} → {class_names[int(p)]} (p={float(q):.2f})"
        for t, p, q in zip(true, pred, prob, strict=True)
    ]


def plot_misclassified(
    images: np.ndarray,
    true: Sequence[int],
    pred: Sequence[int],
    prob: Sequence[float],
    class_names: Sequence[str],
    path: str | Path,
    title: str,
) -> Path:
    """A grid of images (N, H, W, C; C 1 = grayscale, 3 = RGB), each titled by its error.

    With no images the figure says so instead of being blank.
    """
    images = np.asarray(images)
    titles = misclassified_titles(true, pred, prob, class_names)
    if len(titles) == 0:
        fig = plt.figure(figsize=(6, 2.5))
        fig.suptitle(title)
        fig.text(0.5, 0.45, NO_ERRORS_TEXT, ha="center", va="center", fontsize=14)
        save_png(fig, path)
        return Path(path)
    if images.ndim != 4 or images.shape[-1] not in (1, 3) or len(images) != len(titles):
        raise ValueError(f"images of shape {images.shape} for {len(titles)} titles")
    cols = min(len(titles), max(3, math.ceil(math.sqrt(len(titles)))))
    rows = math.ceil(len(titles) / cols)
    fig, axes = plt.subplots(
        rows, cols, figsize=(2.2 * cols, 2.2 * rows + 0.5), squeeze=False, layout="constrained"
    )
    fig.suptitle(title)
    for ax in axes.flat:
        ax.axis("off")
    for ax, image, tile_title in zip(axes.flat, images, titles, strict=False):
        if image.shape[-1] == 1:
            ax.imshow(image[..., 0], cmap="gray", vmin=0, vmax=255, interpolation="nearest")
        else:
            ax.imshow(image, interpolation="nearest")
        ax.set_title(tile_title, fontsize=7)
    save_png(fig, path)
    return Path(path)


def plot_history(history_df, path: str | Path, title: str) -> Path:
    """Accuracy and loss per epoch in two panels: training, and validation when recorded."""
    df = history_df
    epochs = df["epoch"] if "epoch" in df.columns else np.arange(1, len(df) + 1)
    marker = "o" if len(df) <= 30 else None
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), layout="constrained")
    fig.suptitle(title)
    for ax, metric in zip(axes, ("accuracy", "loss"), strict=True):
        plotted = False
        for column, label in ((metric, "train"), (f"val_{metric}", "validation")):
            if column in df.columns and df[column].notna().any():
                ax.plot(epochs, df[column], marker=marker, markersize=3, label=label)
                plotted = True
        if plotted:
            ax.legend()
        else:
            ax.text(
                0.5, 0.5, f"no {metric} recorded", ha="center", va="center", transform=ax.transAxes
            )
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(metric)
        ax.set_title(metric)
        ax.grid(alpha=0.3)
    save_png(fig, path)
    return Path(path)


def plot_learning_curves(histories: dict, best_epochs: dict, path: Path, title: str) -> Path:
    """Small multiples: one column per architecture, accuracy (top) and loss (bottom) per epoch,
    train and validation; a dotted line at the best epoch. ``histories`` and ``best_epochs``:
    per architecture a list, one entry per replicate: a line each, the first one solid, the
    others fainter."""
    size = (max(6.0, 2.6 * len(histories)), 5.4)
    fig, axes = plt.subplots(2, len(histories), figsize=size, sharey="row", squeeze=False)
    fig.set_layout_engine("constrained")
    fig.suptitle(title)
    for j, (arch, frames) in enumerate(histories.items()):
        for ax, metric in zip(axes[:, j], ("accuracy", "loss"), strict=True):
            for i, df in enumerate(frames):
                style = dict(alpha=0.45, linewidth=1.0) if i else {}
                lines = ((metric, "train", "C0"), (f"val_{metric}", "validation", "C1"))
                for column, label, colour in lines:
                    if column in df.columns and df[column].notna().any():
                        marker = "o" if len(df) <= 20 else None
                        ax.plot(df["epoch"], df[column], label=None if i else label,
                                color=colour, marker=marker, markersize=2, **style)  # fmt: skip
            for i, best in enumerate(best_epochs.get(arch) or []):
                if best:
                    ax.axvline(best, color="grey", linestyle=":", lw=1, alpha=0.5 if i else 1)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.grid(alpha=0.3)
        runs = f" ({len(frames)} runs)" if len(frames) > 1 else ""
        axes[0, j].set_title(f"{arch}{runs}", fontsize=10)
        axes[1, j].set_xlabel("epoch")
    axes[0, 0].set_ylabel("accuracy")
    axes[1, 0].set_ylabel("loss")
    axes[0, 0].legend(fontsize=8)
    save_png(fig, path)
    return Path(path)


def plot_overfitting(gaps: pd.Series, path: Path, title: str) -> Path:
    """Train minus test accuracy (percentage points) per architecture, as bars."""
    fig, ax = plt.subplots(figsize=(max(5.0, 0.9 * len(gaps) + 2), 3.6), layout="constrained")
    colours = ["#c0392b" if gap > 0 else "#2e86c1" for gap in gaps]
    bars = ax.bar(list(gaps.index), gaps.to_numpy(), color=colours)
    ax.bar_label(bars, fmt="%+.2f", fontsize=8, padding=2)
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set(ylabel="train − test accuracy (pp)", title=title, ymargin=0.2)
    ax.tick_params(axis="x", labelrotation=30)
    ax.grid(axis="y", alpha=0.3)
    save_png(fig, path)
    return Path(path)


def plot_pareto(runs: pd.DataFrame, path: str | Path, title: str) -> Path:
    """``pareto_figure`` of one dataset's runs, saved as the PNG ``path``."""
    save_png(pareto_figure(runs, title), path)
    return Path(path)


def pareto_figure(runs: pd.DataFrame, title: str):
    """Test accuracy against cost (log scale) of one dataset's runs, one labelled point per
    architecture; the front (``costs.pareto_front``) filled and joined by a step line (the
    collection labelled "Pareto front"), the others hollow ("dominated")."""
    from afternoon.report.costs import pareto_front

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


# --- A search's figures (the report's search section) ---------------------------------------


def objective_figure(trials: pd.DataFrame, objective: str, title: str) -> bytes:
    """One panel per hyperparameter: each completed trial's objective against its value."""
    from afternoon.search.state import TRIAL_COLUMNS

    names = [c for c in trials.columns if c not in TRIAL_COLUMNS]
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
    return save_png(fig)


def brackets_figure(trials: pd.DataFrame, title: str) -> bytes:
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
    return save_png(fig)
