"""XLA or not: the pipeline's training step with and without ``jit_compile=True``.

    flock /tmp/afternoon-bench.lock .venv/bin/python bench/xla.py [--archs fc64,cnn1,cnn_dropout]
        [--threads 2] [--steps 120] [--repeats 3]

Each architecture at its seed recipe's batch size (config/zoo.yaml), float32, built as a job
builds it and compiled again with a fresh optimizer of its recipe, once with Keras' default
(no XLA) and once with ``jit_compile=True`` (XLA on the CPU). Timed like bench/flops.py
(``bench/step_timing.py``: ``make_dataset`` + ``model.fit``, one epoch of --steps steps), but
with op determinism off for both (a job's default, ``training.deterministic: true``, makes XLA
refuse the CNNs: "MaxPool gradient ops do not yet have a deterministic XLA implementation";
--deterministic shows it); the first fit of each model traces (and, with XLA, compiles) its
step and is timed apart. --repeats rounds, each round running every variant once in turn; the
median and range of ms per step, scaled to seconds per 60,000-image epoch.
"""

from __future__ import annotations

import argparse
import statistics
import time
from datetime import UTC, datetime

from step_timing import (
    TimedFit,
    alternate,
    architecture,
    cpu_description,
    median_range,
    random_images,
    start_tensorflow,
)


def xla_model(arch: dict, jit: bool):
    """The job's model, compiled again (fresh optimizer) with or without XLA."""
    from afternoon.training.models import build_model, build_optimizer

    model = build_model(arch, (28, 28, 1), seed=42)
    model.compile(
        build_optimizer(arch["optimizer"]),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
        jit_compile=jit,
    )
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archs", default="fc64,cnn1,cnn_dropout")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=120, help="steps per timed epoch")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--deterministic", action="store_true", help="op determinism on")
    args = parser.parse_args()
    begin = time.perf_counter()
    tf = start_tensorflow(args.threads, args.deterministic)
    print(f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC; {cpu_description()}")
    print(f"TensorFlow {tf.__version__}, {args.threads} threads, float32, "
          f"op determinism {'on' if args.deterministic else 'off'}\n")  # fmt: skip

    variants, batches, first_fit = {}, {}, {}
    for name in args.archs.split(","):
        arch = architecture(name)
        batches[name] = arch["batch_size"]
        images, labels = random_images(args.steps * arch["batch_size"])
        for jit in (False, True):
            start = time.perf_counter()
            fit = TimedFit(tf, xla_model(arch, jit), images, labels, batches[name], args.threads)
            first_fit[name, jit] = time.perf_counter() - start
            variants[name, jit] = fit.seconds
    times = alternate(variants, args.repeats)

    print(
        "| arch | batch | no XLA: ms / step (range) | XLA: ms / step (range) | XLA / no XLA "
        "| s / 60k epoch, no XLA | s / 60k epoch, XLA | first fit (s), no XLA / XLA |"
    )
    print("|---|---:|---|---|---:|---:|---:|---|")
    for name, batch in batches.items():
        ms = {jit: [1000 * s / args.steps for s in times[name, jit]] for jit in (False, True)}
        plain, xla = (median_range(ms[jit], ".2f") for jit in (False, True))
        ratio = statistics.median(ms[True]) / statistics.median(ms[False])
        epoch = {jit: statistics.median(ms[jit]) * 60000 / batch / 1000 for jit in (False, True)}
        print(
            f"| {name} | {batch} | {plain[0]} ({plain[1]}) | {xla[0]} ({xla[1]}) | {ratio:.2f} "
            f"| {epoch[False]:.1f} | {epoch[True]:.1f} "
            f"| {first_fit[name, False]:.1f} / {first_fit[name, True]:.1f} |"
        )
    print(
        f"\n{args.repeats} rounds of {args.steps} steps per variant; "
        f"{time.perf_counter() - begin:.0f} s in all"
    )


if __name__ == "__main__":
    main()
