"""Seconds per 60k-sample MNIST epoch: the seed-style script against the pipeline's train().

    .venv/bin/python bench/epoch_throughput.py [--archs fc64,fc512,cnn1,cnn_dropout] [--bf16]

Each variant runs in its own fresh process (TensorFlow's thread pools and determinism are
process-wide), one after the other, on the same model (built from config/zoo.yaml with the same
seed) and the same data:

- seed:     the workshop's script: float images (x / 255.0) straight into model.fit(batch_size=...),
            TensorFlow's default threads, no determinism;
- pipeline: afternoon.training.train() as a Snakemake job runs it: uint8 tf.data pipeline with
            shuffling and prefetch, threads from the job (--threads), op determinism on;
- bf16:     (with --bf16) the pipeline with precision mixed_bfloat16 and batch 256.

Two epochs each, no validation pass; the second epoch is timed (the first includes tracing).
Real MNIST comes from ../shared/data/mnist; without it, random uint8 images of the same shape
(the timing does not depend on pixel values). Prints a table and the pipeline/seed ratio.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "workflow"))
MNIST = REPO.parent / "shared" / "data" / "mnist"
N_TRAIN = 60000


def load_data() -> tuple[dict, str]:
    import numpy as np

    if MNIST.is_dir():
        from afternoon.formats import read_idx_dataset

        roles = {
            "train_images": "train-images-idx3-ubyte.gz",
            "train_labels": "train-labels-idx1-ubyte.gz",
            "test_images": "t10k-images-idx3-ubyte.gz",
            "test_labels": "t10k-labels-idx1-ubyte.gz",
        }
        arrays = read_idx_dataset({role: MNIST / name for role, name in roles.items()})
        source = "MNIST (../shared/data/mnist)"
    else:
        rng = np.random.default_rng(0)
        arrays = {
            "x_train": rng.integers(0, 256, (N_TRAIN, 28, 28, 1), dtype=np.uint8),
            "y_train": rng.integers(0, 10, N_TRAIN, dtype=np.uint8),
        }
        source = "random uint8 images of MNIST's shape (../shared/data/mnist absent)"
    empty = arrays["x_train"][:0]
    data = {
        "x_train": arrays["x_train"],
        "y_train": arrays["y_train"],
        "x_val": empty,
        "y_val": arrays["y_train"][:0],
    }
    return data, source


def spec_for(arch: str, **changes) -> dict:
    from afternoon.config import job_spec, load_yaml, load_zoo

    config = load_yaml(REPO / "config/config.yaml")
    spec = job_spec(config, load_zoo(REPO / "config/zoo.yaml"), "mnist", arch)
    return {**spec, "epochs": 2, **changes}


def run_seed_style(arch: str) -> list[float]:
    """The slides' script: numpy floats into model.fit, TensorFlow's defaults otherwise."""
    import afternoon  # noqa: F401  (Keras 2, as everywhere in the project)
    from afternoon.models import build_model
    from afternoon.zoo import architecture_of

    data, _ = load_data()
    spec = spec_for(arch)
    model = build_model(architecture_of(spec), (28, 28, 1), seed=spec["seed"])
    # the seed divides by 255.0 in NumPy; our model also rescales, which costs the same either way
    train_images = data["x_train"] / 255.0
    times: list[float] = []

    import tensorflow as tf

    class Timer(tf.keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            times.append(time.perf_counter() - self.start)

    model.fit(
        train_images,
        data["y_train"],
        batch_size=spec["batch_size"],
        epochs=2,
        verbose=0,
        callbacks=[Timer()],
    )
    return times


def run_pipeline(arch: str, threads: int, bf16: bool) -> list[float]:
    from afternoon.distributed import SingleProcess
    from afternoon.training import train

    data, _ = load_data()
    changes = {"precision": "mixed_bfloat16", "batch_size": 256} if bf16 else {}
    spec = spec_for(arch, **changes) | {"num_classes": 10}
    _, rows, _ = train(spec, data, SingleProcess(threads))
    return [row["epoch_time_s"] for row in rows]


def worker(variant: str, arch: str, threads: int) -> None:
    if variant == "seed":
        times = run_seed_style(arch)
    else:
        times = run_pipeline(arch, threads, bf16=variant == "bf16")
    print(json.dumps({"variant": variant, "arch": arch, "epoch_s": times}))


def measure(variant: str, arch: str, threads: int) -> float:
    """Seconds of the second (timed) epoch, scaled to 60k samples, from a fresh process."""
    out = subprocess.run(
        [sys.executable, __file__, "--worker", variant, "--archs", arch, "--threads", str(threads)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    result = json.loads(out.strip().splitlines()[-1])
    return result["epoch_s"][-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archs", default="fc64,fc512,cnn1,cnn_dropout")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--bf16", action="store_true", help="also time mixed_bfloat16, batch 256")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.archs, args.threads)
        return
    _, source = load_data()
    variants = ["seed", "pipeline"] + (["bf16"] if args.bf16 else [])
    print(f"data: {source}; threads: {args.threads}; seconds per 60k-sample epoch (2nd epoch)")
    header = f"{'arch':<14}" + "".join(f"{v:>10}" for v in variants) + f"{'pipe/seed':>11}"
    print(header + (f"{'bf16/seed':>11}" if args.bf16 else ""))
    for arch in args.archs.split(","):
        seconds = {v: measure(v, arch, args.threads) for v in variants}
        row = f"{arch:<14}" + "".join(f"{seconds[v]:>10.1f}" for v in variants)
        row += f"{seconds['pipeline'] / seconds['seed']:>11.2f}"
        if args.bf16:
            row += f"{seconds['bf16'] / seconds['seed']:>11.2f}"
        print(row, flush=True)


if __name__ == "__main__":
    main()
