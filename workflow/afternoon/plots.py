"""Evaluation and training figures as PNG files (~100 dpi), written atomically.

Matplotlib runs headless (Agg, chosen before pyplot is imported); every figure is closed after it
is saved, so long runs do not accumulate open figures.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from afternoon.fileio import atomic_path  # noqa: E402

DPI = 100
NO_ERRORS_TEXT = "no misclassified test images"


def save_png(fig, path: str | Path) -> Path:
    """Save ``fig`` as a PNG at ``path`` (temp file + rename) and close it either way."""
    path = Path(path)
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=DPI, bbox_inches="tight", pad_inches=0.15)
    finally:
        plt.close(fig)
    return path


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
    return save_png(fig, path)


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
        return save_png(fig, path)
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
    return save_png(fig, path)


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
    return save_png(fig, path)
