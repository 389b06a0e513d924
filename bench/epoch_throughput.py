"""Seconds per 60k-sample MNIST epoch: the seed-style script against the pipeline's train().

    .venv/bin/python bench/epoch_throughput.py [--archs fc64,...] [--variants seed,pipeline]
        [--repeats 3] [--samples 60000]

Each variant runs in its own fresh process (TensorFlow's thread pools and determinism are
process-wide) on the same model (built from config/zoo.yaml with the same seed) and data; the
variants alternate, --repeats rounds, and the table gives the median and the spread (min-max):

- seed:          the workshop's script: float images (x / 255.0) straight into
                 model.fit(batch_size=...), one step per call, TensorFlow's default threads, no
                 determinism;
- pipeline:      afternoon.training.train() as a Snakemake job runs it: uint8 tf.data pipeline
                 with shuffling and prefetch, threads from the job (--threads), op determinism
                 on, training.STEPS_PER_EXECUTION steps per call; the seed's batch, float32;
- pipeline-b256: the same at batch 256 (the batch-size effect alone);
- bf16:          the pipeline in mixed_bfloat16 at the seed's batch (the bf16 effect alone);
- bf16-b256:     both (what the fast recipes run on bf16 hardware);
- bf16-b128, bf16-b512: mixed_bfloat16 at batch 128 or 512 (what another fast batch would cost).

Two epochs each, no validation pass; the second epoch is timed (the first includes tracing).
--samples: an epoch over the first N training images, its time scaled to 60,000 (the per-step
costs are the same; the CNNs' seed-batch epochs take a minute each otherwise).
Real MNIST comes from ../shared/data/mnist; without it, random uint8 images of the same shape
(the timing does not depend on pixel values).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "workflow"))
MNIST = REPO.parent / "shared" / "data" / "mnist"
N_TRAIN = 60000
SEVEN = "fc64,fc512,fc512x3,cnn1,cnn2,cnn_dropout,cnn_batchnorm"


def load_data(samples: int = N_TRAIN) -> tuple[dict, str]:
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
        "x_train": arrays["x_train"][:samples],
        "y_train": arrays["y_train"][:samples],
        "x_val": empty,
        "y_val": arrays["y_train"][:0],
    }
    return data, source


def spec_for(arch: str, **changes) -> dict:
    from afternoon.config import job_spec, load_yaml, load_zoo

    config = load_yaml(REPO / "config/config.yaml")
    spec = job_spec(config, load_zoo(REPO / "config/zoo.yaml"), "mnist", arch)
    return {**spec, "epochs": 2, **changes}


def run_seed_style(arch: str, samples: int) -> list[float]:
    """The slides' script: numpy floats into model.fit, TensorFlow's defaults otherwise."""
    import afternoon  # noqa: F401  (Keras 2, as everywhere in the project)
    from afternoon.training.models import build_model
    from afternoon.zoo import architecture_of

    data, _ = load_data(samples)
    spec = spec_for(arch)
    model = build_model(architecture_of(spec), (28, 28, 1), seed=spec["seed"])
    # the seed compiles Keras' own optimizer (the pipeline's Adam updates by a fused kernel)
    import tensorflow as tf

    optimizer = model.optimizer
    stock = getattr(tf.keras.optimizers, type(optimizer).__name__).from_config(
        optimizer.get_config()
    )
    model.compile(stock, loss=model.loss, metrics=["accuracy"])
    # the seed divides by 255.0 in NumPy; our model also rescales, which costs the same either way
    train_images = data["x_train"] / 255.0
    times: list[float] = []

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


# Pipeline variants: (precision, batch size; None: the seed recipe's).
VARIANTS = {
    "pipeline": ("float32", None),
    "pipeline-b256": ("float32", 256),
    "bf16": ("mixed_bfloat16", None),
    "bf16-b256": ("mixed_bfloat16", 256),
    "bf16-b128": ("mixed_bfloat16", 128),
    "bf16-b512": ("mixed_bfloat16", 512),
}


def run_pipeline(arch: str, threads: int, variant: str, samples: int) -> list[float]:
    from afternoon.distributed import SingleProcess
    from afternoon.training.loop import train

    data, _ = load_data(samples)
    precision, batch = VARIANTS[variant]
    spec = spec_for(arch, precision=precision) | {"num_classes": 10}
    if batch:
        spec["batch_size"] = batch
    _, rows, _ = train(spec, data, SingleProcess(threads))
    return [row["epoch_time_s"] for row in rows]


def worker(variant: str, arch: str, threads: int, samples: int) -> None:
    if variant == "seed":
        times = run_seed_style(arch, samples)
    else:
        times = run_pipeline(arch, threads, variant, samples)
    print(json.dumps({"variant": variant, "arch": arch, "epoch_s": times}))


def measure(variant: str, arch: str, threads: int, samples: int) -> float:
    """Seconds of the second (timed) epoch, scaled to 60k samples, from a fresh process."""
    command = [sys.executable, __file__, "--worker", variant, "--archs", arch]
    command += ["--threads", str(threads), "--samples", str(samples)]
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    result = json.loads(out.strip().splitlines()[-1])
    return result["epoch_s"][-1] * N_TRAIN / samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archs", default=SEVEN)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--variants", default="seed,pipeline",
                        help=f"comma-separated: seed, {', '.join(VARIANTS)}")  # fmt: skip
    parser.add_argument("--repeats", type=int, default=3)
    help_samples = "samples per epoch (the first N); times are scaled to 60k"
    parser.add_argument("--samples", type=int, default=N_TRAIN, help=help_samples)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.archs, args.threads, args.samples)
        return
    _, source = load_data(args.samples)
    variants = args.variants.split(",")
    print(
        f"data: {source}, {args.samples:,} samples an epoch; threads: {args.threads}; "
        f"s per 60k-sample epoch (the 2nd), median (min-max) of {args.repeats} alternating runs"
    )
    ratios = [v for v in variants if v != "seed"] if "seed" in variants else []
    print(
        "| arch | batch | "
        + " | ".join(variants)
        + "".join(f" | {v} / seed" for v in ratios)
        + " |"
    )
    print("|---" * (2 + len(variants) + len(ratios)) + "|")
    for arch in args.archs.split(","):
        seconds: dict[str, list[float]] = {v: [] for v in variants}
        for _ in range(args.repeats):  # alternate the variants: the machine's drift hits all
            for variant in variants:
                seconds[variant].append(measure(variant, arch, args.threads, args.samples))
        median = {v: statistics.median(times) for v, times in seconds.items()}
        cells = [f"{median[v]:.2f} ({min(seconds[v]):.2f}-{max(seconds[v]):.2f})" for v in variants]
        cells += [f"{median[v] / median['seed']:.2f}" for v in ratios]
        print(
            f"| {arch} | {spec_for(arch)['batch_size']} | " + " | ".join(cells) + " |", flush=True
        )


if __name__ == "__main__":
    main()
