"""What an epoch checkpoint costs: milliseconds and megabytes per save, per architecture.

    .venv/bin/python bench/checkpoint_cost.py [--archs fc64,fc512,...] [--repeats 5]

Each architecture of config/zoo.yaml is built for MNIST's 28x28x1 images with the optimizer's
state created (as after the first step), then saved ``--repeats`` times with
``afternoon.training.checkpoint.Checkpointer.save`` (weights, optimizer moments, random generators,
state.json; the previous epoch's files removed) into a fresh directory. Prints the median time per
save and the checkpoint's size on disk, to set against the seconds per epoch in BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "workflow"))


def measure(arch: str, repeats: int) -> tuple[float, float]:
    """(median seconds per save, megabytes on disk) for ``arch``."""
    import afternoon  # noqa: F401 (TF_USE_LEGACY_KERAS=1 before TensorFlow loads)
    from afternoon.config import job_spec, load_yaml, load_zoo
    from afternoon.runtime import configure_tensorflow
    from afternoon.training.checkpoint import Checkpointer, CheckpointState, build_optimizer_state
    from afternoon.training.models import build_model

    config = load_yaml(REPO / "config/config.yaml")
    spec = job_spec(config, load_zoo(REPO / "config/zoo.yaml"), "mnist", arch)
    tf = configure_tensorflow(2, spec["seed"], True)
    model = build_model(spec, (28, 28, 1), seed=spec["seed"])
    build_optimizer_state(model)
    rows = [{"epoch": e, "loss": 0.1, "accuracy": 0.9} for e in range(1, 41)]
    with tempfile.TemporaryDirectory() as tmp:
        checkpointer = Checkpointer(Path(tmp) / "checkpoint", {"bench": arch})
        times = []
        for epoch in range(1, repeats + 1):
            started = time.perf_counter()
            checkpointer.save(tf, model, CheckpointState(epoch, rows))
            times.append(time.perf_counter() - started)
        size = sum(f.stat().st_size for f in checkpointer.directory.iterdir())
    return statistics.median(times), size / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archs", default="fc64,fc512,fc512x3,cnn1,cnn2,cnn_dropout,cnn_batchnorm")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    print("| arch | ms per save (median) | checkpoint size (MB) |")
    print("|---|---|---|")
    for arch in args.archs.split(","):
        seconds, megabytes = measure(arch, args.repeats)
        print(f"| {arch} | {seconds * 1000:.0f} | {megabytes:.1f} |", flush=True)


if __name__ == "__main__":
    main()
