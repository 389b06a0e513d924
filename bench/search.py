"""Hyperparameter searches on the digits: trials per hour with 1 and 2 workers (the same Hyperband
search), and Hyperband against random search at the same total epoch budget.

    .venv/bin/python bench/search.py [--repeats 2] [--max-epochs 9] [--factor 3]

Runs the tune stage (`python -m afternoon.cli tune`, Keras Tuner's chief and its local worker
processes, as the tune rule starts it) on cnn1 over the learning rate, dense units and padding
(config/searches.yaml's digits_tiny space). Worker counts alternate (1, 2, 1, 2, ...); the medians
and spreads of trials/hour are printed. Then random search with max_trials = Hyperband's epoch
budget // max_epochs (trials of max_epochs epochs), once each: the best validation accuracy each
reached and the epochs each trained. Each run is a fresh state folder and MLflow store.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "workflow"))

from afternoon.config import load_zoo  # noqa: E402
from afternoon.search.jobs import search_job  # noqa: E402
from afternoon.search.oracles import hyperband_brackets  # noqa: E402


def cli(*args) -> list[str]:
    return [sys.executable, "-m", "afternoon.cli", *map(str, args)]


def search(algorithm: dict, workers: int) -> dict:
    space = yaml.safe_load((REPO / "config/searches.yaml").read_text())["digits_tiny"]["space"]
    return dict(base="cnn1", datasets=["digits"], objective="val_accuracy", seed=7,
                workers=workers, algorithm=algorithm, space=space)  # fmt: skip


def run_search(root: Path, data: dict, algorithm: dict, workers: int, args) -> dict:
    """One tune job in a fresh folder; its summary plus the wall time. Random search's trials
    train the base's epochs capped at --max-epochs (cnn1: 10 -> 9)."""
    zoo = load_zoo(REPO / "config/zoo.yaml")
    training = dict(epochs_scale=1.0, max_epochs=args.max_epochs, precision="float32",
                    deterministic=True)  # fmt: skip
    config = dict(seed=42, training=training)
    name = "bench"
    job = search_job(config, zoo, {name: search(algorithm, workers)}, name, "digits")
    out = Path(tempfile.mkdtemp(dir=root))
    marker = out / "tracking.json"
    subprocess.run(cli("init-tracking", "--experiment", "bench", "--default-db", out / "mlflow.db",
                       "--marker", marker), check=True, capture_output=True)  # fmt: skip
    outputs = {k: out / f"{k}.out" for k in ("trials", "summary", "best", "best-spec")}
    command = cli("tune", "--spec", json.dumps(job), "--npz", data["npz"], "--card", data["card"],
                  "--tracking", marker, "--state", out / "state", "--workers", workers,
                  "--threads", args.threads * workers,
                  *[a for k, p in outputs.items() for a in (f"--{k}", p)])  # fmt: skip
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    wall = time.perf_counter() - started
    assert done.returncode == 0, done.stderr[-3000:]
    return {**json.loads(outputs["summary"].read_text()), "wall_s": wall}


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):.0f} (range {min(values):.0f}-{max(values):.0f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--max-epochs", type=int, default=9)
    parser.add_argument("--factor", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="cores per worker")
    args = parser.parse_args()
    hyperband = {"hyperband": {"max_epochs": args.max_epochs, "factor": args.factor}}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        data = {"npz": root / "digits.npz", "card": root / "digits.card.json"}
        subprocess.run(cli("preprocess", "digits", "--npz", data["npz"], "--card", data["card"],
                           "--validation-fraction", "0.1", "--seed", "42"), check=True)  # fmt: skip
        rates: dict[int, list[float]] = {1: [], 2: []}
        results = {}
        for _ in range(args.repeats):
            for workers in (1, 2):
                result = run_search(root, data, hyperband, workers, args)
                rates[workers].append(3600 * result["trials"] / result["wall_s"])
                results[workers] = result
                print(f"hyperband, {workers} worker(s): {result['trials']} trials, "
                      f"{result['wall_s']:.1f} s", flush=True)  # fmt: skip
        budget = sum(size * (epochs - (rounds[i - 1][1] if i else 0))
                     for rounds in hyperband_brackets(args.max_epochs, args.factor)
                     for i, (size, epochs) in enumerate(rounds))  # fmt: skip
        random_trials = budget // args.max_epochs
        random = run_search(root, data, {"random": {"max_trials": random_trials}}, 2, args)
    hb = results[2]
    print(f"\ntrials/hour, 1 worker:  {spread(rates[1])}")
    print(f"trials/hour, 2 workers: {spread(rates[2])}")
    print(f"hyperband (max_epochs {args.max_epochs}, factor {args.factor}): {hb['trials']} trials, "
          f"{hb['epochs_trained']} epochs, best val_accuracy {hb['best_value']:.4f}")  # fmt: skip
    best = random["best_value"]
    print(f"random ({random_trials} trials): {random['trials']} trials, "
          f"{random['epochs_trained']} epochs, best val_accuracy {best:.4f}")  # fmt: skip


if __name__ == "__main__":
    main()
