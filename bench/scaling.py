"""Data-parallel scaling: a model for 1 to 64 GPUs beside measured 1- and 2-worker runs here.

    .venv/bin/python bench/scaling.py model [--step-ms MS] [--bandwidth-gbs 12.5] [--latency-us 10]
    .venv/bin/python bench/scaling.py workers [--repeats 3] [--epochs 5]

``model``: the zoo's largest architecture (by parameters over the registered datasets: fc512x3
on CIFAR-10, 2.1 M parameters) under synchronous data parallelism with a fixed per-replica batch
(its recipe's, 128). Per step, every replica computes its batch in the single-device step time
(measured here: a median of 30 ``train_on_batch`` steps on this machine, unless ``--step-ms``
gives one, e.g. a GPU's), then the gradients (the parameters' float32 bytes) are all-reduced by a
ring: 2 (N-1)/N x bytes / bandwidth + 2 (N-1) x latency, not overlapped with compute (the
pessimistic case: Keras' MultiWorkerMirroredStrategy and Horovod overlap part of it). Efficiency
= compute / (compute + all-reduce); samples/s = N x batch / step time.

``workers``: the same pipeline job (``afternoon.cli train``, fc512x3 on digits, multi_worker)
as one process and as 2 local workers (the launcher), ``--repeats`` times each, alternating; the
median epoch time (epochs 2.., the first includes tracing) and its spread.
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

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "workflow"))
GPUS = (1, 2, 4, 8, 16, 32, 64)


def largest_architecture() -> tuple[str, str, int]:
    """(architecture, dataset, parameters) with the most parameters in the zoo."""
    import afternoon  # noqa: F401 (Keras 2 before TensorFlow loads)
    from afternoon.config import load_zoo
    from afternoon.registry import dataset_entry, dataset_names
    from afternoon.training.models import build_model, count_params
    from afternoon.zoo import architecture_for

    zoo, sizes = load_zoo(REPO / "config/zoo.yaml"), {}
    for name in zoo:
        for dataset in dataset_names():
            entry = dataset_entry(dataset)
            arch = architecture_for(zoo, name, dataset) | {"name": name}
            model = build_model(arch, entry["image_shape"], num_classes=len(entry["class_names"]))
            sizes[name, dataset] = count_params(model)
    (name, dataset), params = max(sizes.items(), key=lambda item: item[1])
    return name, dataset, params


def measure_step_ms(name: str, dataset: str, steps: int = 30) -> tuple[float, int]:
    """Median ms of one training step (its recipe's batch) on this machine; and the batch."""
    import numpy as np

    from afternoon.config import load_zoo
    from afternoon.registry import dataset_entry
    from afternoon.training.models import build_model
    from afternoon.zoo import architecture_for

    entry = dataset_entry(dataset)
    arch = architecture_for(load_zoo(REPO / "config/zoo.yaml"), name, dataset) | {"name": name}
    model = build_model(arch, entry["image_shape"], num_classes=len(entry["class_names"]))
    batch = arch["batch_size"]
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (batch, *entry["image_shape"]), dtype=np.uint8)
    y = rng.integers(0, len(entry["class_names"]), batch)
    for _ in range(5):  # tracing, warm-up
        model.train_on_batch(x, y)
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        model.train_on_batch(x, y)
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times), batch


def model_table(args) -> None:
    from afternoon.runtime import configure_tensorflow

    configure_tensorflow(2, 0)  # before the first model: 2 threads, as a training job here
    name, dataset, params = largest_architecture()
    measured, batch = measure_step_ms(name, dataset)
    step_ms = args.step_ms or measured
    grad_bytes = params * 4
    print(f"{name} on {dataset}: {params:,} parameters, {grad_bytes / 1e6:.1f} MB of float32 "
          f"gradients, batch {batch} per replica")  # fmt: skip
    print(f"single-device step: {measured:.1f} ms measured on this machine (median of 30)"
          + (f"; the table uses {step_ms:.1f} ms (--step-ms)" if args.step_ms else ""))  # fmt: skip
    print(f"ring all-reduce over {args.bandwidth_gbs} GB/s per link, {args.latency_us} us per hop")
    print("\n| GPUs | compute ms | all-reduce ms | step ms | efficiency | samples/s | speed-up |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for n in GPUS:
        ring = 2 * (n - 1) / n * grad_bytes / (args.bandwidth_gbs * 1e9)
        allreduce_ms = (ring + 2 * (n - 1) * args.latency_us * 1e-6) * 1000
        step = step_ms + allreduce_ms
        rate = n * batch / step * 1000
        print(f"| {n} | {step_ms:.1f} | {allreduce_ms:.2f} | {step:.2f} | {step_ms / step:.0%} "
              f"| {rate:,.0f} | {rate / (batch / step_ms * 1000):.1f} |")  # fmt: skip


def epoch_time(workers: int, epochs: int, root: Path) -> float:
    """Median epoch time (s, epochs 2..) of fc512x3 on digits as ``workers`` processes."""
    from afternoon.cli import output_flags
    from afternoon.config import job_spec, load_yaml, load_zoo
    from afternoon.layout import train_job_files

    config = load_yaml(REPO / "config/config.yaml")
    spec = job_spec(config, load_zoo(REPO / "config/zoo.yaml"), "digits", "fc512x3")
    spec.update(epochs=epochs, distributed={"backend": "multi_worker", "ranks": workers})
    out = Path(tempfile.mkdtemp(dir=root))
    command = [sys.executable, "-m", "afternoon.cli", "train", "--spec", json.dumps(spec),
               "--npz", str(root / "digits.npz"), "--card", str(root / "digits.card.json"),
               "--tracking", str(root / "tracking.json"), "--threads", "2",
               *output_flags(train_job_files(str(out)))]  # fmt: skip
    if workers > 1:
        launch = [sys.executable, "-m", "afternoon.distributed.launch", "-n", str(workers)]
        command = launch + command
    subprocess.run(command, check=True, capture_output=True, cwd=REPO)
    import pandas as pd

    return float(pd.read_csv(out / "history.csv")["epoch_time_s"].iloc[1:].median())


def workers_table(args) -> None:
    root = Path(tempfile.mkdtemp(prefix="afternoon-scaling-"))
    cli = [sys.executable, "-m", "afternoon.cli"]
    subprocess.run([*cli, "preprocess", "digits", "--npz", str(root / "digits.npz"), "--card",
                    str(root / "digits.card.json"), "--validation-fraction", "0.1", "--seed",
                    "42"], check=True, capture_output=True, cwd=REPO)  # fmt: skip
    subprocess.run([*cli, "init-tracking", "--experiment", "scaling", "--default-db",
                    str(root / "mlflow.db"), "--marker", str(root / "tracking.json")],
                   check=True, capture_output=True, cwd=REPO)  # fmt: skip
    times: dict[int, list[float]] = {1: [], 2: []}
    for _ in range(args.repeats):
        for workers in (1, 2):  # alternating
            times[workers].append(epoch_time(workers, args.epochs, root))
    print("| processes | median s/epoch | spread (min-max) |\n|---:|---:|---|")
    for workers, got in times.items():
        print(f"| {workers} | {statistics.median(got):.3f} | {min(got):.3f}-{max(got):.3f} |")
    ratio = statistics.median(times[2]) / statistics.median(times[1])
    print(f"\n2 workers / 1 process: {ratio:.2f}x the epoch time")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="what", required=True)
    model = sub.add_parser("model", help="the scaling model's table (1 to 64 GPUs)")
    model.add_argument("--step-ms", type=float, help="single-device step time (default: measure)")
    model.add_argument("--bandwidth-gbs", type=float, default=12.5, help="GB/s per ring link")
    model.add_argument("--latency-us", type=float, default=10.0, help="latency per ring hop")
    workers = sub.add_parser("workers", help="1 process against 2 local workers, measured")
    workers.add_argument("--repeats", type=int, default=3)
    workers.add_argument("--epochs", type=int, default=5)
    args = parser.parse_args()
    model_table(args) if args.what == "model" else workers_table(args)


if __name__ == "__main__":
    main()
