"""What a SIGTERM costs a training job: wall time of an uninterrupted job against the same job
stopped by SIGTERM once its first checkpoint is on disk and started again.

    .venv/bin/python bench/resume_cost.py [--arch cnn_dropout] [--epochs 8] [--stop-after 1]

Runs `python -m afternoon.cli train` (a real process, as Snakemake starts it) on the digits:
once to the end; once stopped with SIGTERM after the checkpoint of ``--stop-after`` epochs, then
again to the end (it resumes). Prints the wall times, the epochs redone and whether the final
weights are identical (they must be, bit for bit).
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "workflow"))


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "afternoon.cli", *args]


def saved_epoch(out: Path) -> int:
    try:
        return json.loads((out / "checkpoint" / "state.json").read_text())["epoch"]
    except (OSError, ValueError, KeyError):
        return 0


def timed(command: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(command, cwd=REPO, check=True, capture_output=True)
    return time.perf_counter() - started


def stopped(command: list[str], out: Path, after: int) -> tuple[float, int]:
    """Wall time until the process exited after SIGTERM, and the epoch it had checkpointed."""
    started = time.perf_counter()
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    while saved_epoch(out) < after:
        time.sleep(0.02)
    process.send_signal(signal.SIGTERM)
    process.wait()
    assert process.returncode == 128 + signal.SIGTERM, process.stderr.read()[-2000:]
    return time.perf_counter() - started, saved_epoch(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="cnn_dropout")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--stop-after", type=int, default=1)
    args = parser.parse_args()

    import afternoon  # noqa: F401
    from afternoon.cli import output_flags
    from afternoon.config import job_spec, load_yaml, load_zoo
    from afternoon.layout import train_job_files
    from afternoon.stages.preprocess import preprocess_dataset

    root = Path(tempfile.mkdtemp(prefix="resume-cost-"))
    npz, card, marker = root / "digits.npz", root / "digits.card.json", root / "mlflow/t.json"
    preprocess_dataset("digits", None, npz, card, validation_fraction=0.1, seed=42)
    db = str(marker.with_name("mlflow.db"))
    init = cli(
        "init-tracking", "--experiment", "bench", "--default-db", db, "--marker", str(marker)
    )
    subprocess.run(init, cwd=REPO, check=True, capture_output=True)
    config = load_yaml(REPO / "config/config.yaml")
    spec = job_spec(config, load_zoo(REPO / "config/zoo.yaml"), "digits", args.arch)
    spec["epochs"] = args.epochs

    def command(out: Path) -> list[str]:
        return cli("train", "--spec", json.dumps(spec), "--npz", str(npz), "--card", str(card),
                   "--tracking", str(marker), *output_flags(train_job_files(str(out))),
                   "--threads", "2")  # fmt: skip

    whole = timed(command(root / "whole"))
    first, epoch = stopped(command(root / "stopped"), root / "stopped", args.stop_after)
    second = timed(command(root / "stopped"))

    import numpy as np
    import tensorflow as tf

    a = tf.keras.models.load_model(root / "whole/model.keras").get_weights()
    b = tf.keras.models.load_model(root / "stopped/model.keras").get_weights()
    identical = all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    print(f"{args.arch} on digits, {args.epochs} epochs")
    print(f"uninterrupted: {whole:.1f} s")
    both = first + second
    print(f"stopped after the checkpoint of epoch {epoch}: {first:.1f} s, then resumed: "
          f"{second:.1f} s (together {both:.1f} s, +{both - whole:.1f} s)")  # fmt: skip
    print(f"final weights identical: {identical}")


if __name__ == "__main__":
    main()
