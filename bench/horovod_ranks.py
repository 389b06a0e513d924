"""Horovod on one machine: the train job as 1 process against 2 ranks under the MPI launcher.

    flock /tmp/afternoon-bench.lock .venv/bin/python bench/horovod_ranks.py [--arch cnn1]
        [--epochs 3] [--repeats 3] [--threads 2]

The pipeline's train job (``python -m afternoon.cli train``, as the train rule runs it) on the
digits (preprocessed as the pipeline does: validation fraction 0.1, seed 42), once as one
process and once as 2 Horovod ranks started by the MPI launcher of this machine (mpirun, or
config/config.yaml's ``training.mpi_launcher`` when set: ``{launcher} -n 2 python -m
afternoon.cli train ...``; zoo ``distributed: {backend: horovod,
ranks: 2}`` with its defaults: learning rate x 2, one warm-up epoch). Both get --threads cores in
all (2 ranks: threads // 2 each). --repeats runs of each, alternating 1, 2, 1, 2, ...
Per run: wall time of the command (process start to exit), the median epoch time after the
first (history.csv's epoch_time_s), and the saved model's accuracy on the test split. Needs
Horovod built with TensorFlow and the launcher on the PATH.
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "workflow"))
CLI = [sys.executable, "-m", "afternoon.cli"]


def prepare(root: Path) -> None:
    """The digits npz and card, and an MLflow store, as the pipeline makes them."""
    subprocess.run([*CLI, "preprocess", "digits", "--npz", str(root / "digits.npz"), "--card",
                    str(root / "digits.card.json"), "--validation-fraction", "0.1", "--seed",
                    "42"], check=True, capture_output=True, cwd=REPO)  # fmt: skip
    subprocess.run([*CLI, "init-tracking", "--experiment", "horovod-ranks", "--default-db",
                    str(root / "mlflow.db"), "--marker", str(root / "tracking.json")],
                   check=True, capture_output=True, cwd=REPO)  # fmt: skip


def train_run(ranks: int, args, root: Path) -> dict:
    """One train job; wall time, median epoch time after the first, test accuracy."""
    from afternoon.cli import output_flags
    from afternoon.config import job_spec, load_yaml, load_zoo
    from afternoon.layout import train_job_files

    config = load_yaml(REPO / "config/config.yaml")
    spec = job_spec(config, load_zoo(REPO / "config/zoo.yaml"), "digits", args.arch)
    spec["epochs"] = args.epochs
    if ranks > 1:
        spec["distributed"] = {"backend": "horovod", "ranks": ranks}
    out = Path(tempfile.mkdtemp(dir=root))
    command = [*CLI, "train", "--spec", json.dumps(spec), "--npz", str(root / "digits.npz"),
               "--card", str(root / "digits.card.json"), "--tracking", str(root / "tracking.json"),
               "--threads", str(args.threads),
               *output_flags(train_job_files(str(out)))]  # fmt: skip
    if ranks > 1:
        from afternoon.distributed.launch import launcher

        cpus = max(1, args.threads // ranks)
        prefix = launcher("mpi_launcher", config["training"]["mpi_launcher"], None, cpus, ranks)
        command = [*shlex.split(prefix), *command]
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
    wall = time.perf_counter() - start
    if result.returncode:
        raise SystemExit(f"{shlex.join(command[:8])} ... failed:\n{result.stderr[-3000:]}")
    import pandas as pd

    epochs = pd.read_csv(out / "history.csv")["epoch_time_s"]
    return {
        "wall": wall,
        "epoch": float(epochs.iloc[1:].median()),
        "test": test_accuracy(out, root),
    }


def test_accuracy(out: Path, root: Path) -> float:
    import numpy as np

    import afternoon  # noqa: F401  (Keras 2)
    from afternoon.npz import load_npz

    import tensorflow as tf  # isort: skip

    arrays = load_npz(root / "digits.npz")
    model = tf.keras.models.load_model(out / "model.keras")
    predictions = model.predict(arrays["x_test"], verbose=0).argmax(axis=1)
    return float(np.mean(predictions == arrays["y_test"]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="cnn1")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    if args.epochs < 2:
        raise SystemExit("--epochs must be at least 2 (the first epoch is not timed)")
    root = Path(tempfile.mkdtemp(prefix="afternoon-horovod-"))
    print(f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC; {args.arch} on digits, {args.epochs} epochs, "
          f"{args.threads} threads in all; results under {root}")  # fmt: skip
    prepare(root)
    runs: dict[int, list[dict]] = {1: [], 2: []}
    for _ in range(args.repeats):
        for ranks in runs:  # alternating
            runs[ranks].append(train_run(ranks, args, root))
            print(f"  {ranks} process(es): {runs[ranks][-1]}", flush=True)
    print(
        "\n| processes | wall s, median (range) | s / epoch after the first, median (range) "
        "| test accuracy (runs) |\n|---:|---|---|---|"
    )
    for ranks, got in runs.items():
        cells = []
        for key, fmt in (("wall", ".1f"), ("epoch", ".3f")):
            values = sorted(run[key] for run in got)
            low, high = values[0], values[-1]
            cells.append(f"{statistics.median(values):{fmt}} ({low:{fmt}}-{high:{fmt}})")
        accuracies = ", ".join(f"{run['test']:.3f}" for run in got)
        print(f"| {ranks} | {cells[0]} | {cells[1]} | {accuracies} |")


if __name__ == "__main__":
    main()
