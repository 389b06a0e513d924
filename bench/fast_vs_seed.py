"""The seed recipes against the fast recipes on real MNIST: accuracy and training time.

    .venv/bin/python bench/fast_vs_seed.py [--seed-results DIR] [--precision auto|float32]
        [--archs fc64,...] [--seed-epochs 2] [--keep DIR]

Two studies of the pipeline (`snakemake --cores 2`, this repository's Snakefile, real MNIST from
../shared/data, 2 threads per job, one job at a time), one after the other on this machine:

- seed: the seed recipes, capped at --seed-epochs (2) per architecture; each job's time is
  extrapolated to its recipe's epochs: the job's wall time (process start, data, model, the
  capped epochs, saving) + (epochs - cap) x its last epoch's time (validation included). Its
  accuracies come from a full run of the seed recipes (--seed-results: that study's results
  folder, BENCHMARKS.md "The seed recipes on real MNIST"); without one, none are shown.
- fast: `training.recipes: fast` in full (--precision float32 forces float32: the recipe alone,
  what a CPU without bf16 gets).

Per architecture: epochs, train job time (wall, start-up included), test accuracy, the slides'
accuracy and the difference; totals and fast / seed. Target (issue 14): every fast accuracy
within 0.3 points of the slides (or better) in at most a third of the seed recipes' time.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
SEVEN = ["fc64", "fc512", "fc512x3", "cnn1", "cnn2", "cnn_dropout", "cnn_batchnorm"]
TARGET_POINTS, TARGET_RATIO = 0.3, 1 / 3


def run_study(workdir: Path, archs: list[str], training: dict) -> float:
    """`snakemake --cores 2` of an MNIST study of ``archs`` in ``workdir``; its wall seconds."""
    config = yaml.safe_load((REPO / "config/config.yaml").read_text())
    config.update(study=f"bench-{workdir.name}", datasets=["mnist"], architectures=archs)
    config["zoo"] = str(REPO / "config/zoo.yaml")
    config["data"]["mirror"] = str(SHARED_DATA)
    config["training"].update(threads=2, **training)
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "config.yaml").write_text(yaml.safe_dump(config))
    command = ["snakemake", "-s", str(REPO / "Snakefile"), "-d", str(workdir), "--cores", "2",
               "--configfile", str(workdir / "config.yaml"), "--quiet"]  # fmt: skip
    # this interpreter's snakemake and python, without PATH set
    path = f"{Path(sys.executable).parent}:{os.environ['PATH']}"
    env = {**os.environ, "PYTHONPATH": str(REPO / "workflow"), "PATH": path}
    started = time.perf_counter()
    with open(workdir / "snakemake.log", "w") as log:
        subprocess.run(command, check=True, stdout=log, stderr=subprocess.STDOUT, env=env)
    return time.perf_counter() - started


def job(results: Path, arch: str) -> dict:
    """A train job's metrics and epoch times, and its evaluation's test accuracy (percent)."""
    run = results / "runs" / "mnist" / arch
    import pandas as pd

    metrics = json.loads((run / "metrics.json").read_text())
    epochs = list(pd.read_csv(run / "history.csv")["epoch_time_s"])
    evaluation = results / "eval" / "mnist" / arch / "metrics.json"
    accuracy = json.loads(evaluation.read_text())["test_accuracy"] * 100
    return {"metrics": metrics, "epoch_times": epochs, "accuracy": accuracy}


def seed_accuracy(seed_results: Path | None, arch: str) -> float | None:
    if seed_results is None:
        return None
    path = seed_results / "eval" / "mnist" / arch / "metrics.json"
    return json.loads(path.read_text())["test_accuracy"] * 100 if path.is_file() else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--archs", default=",".join(SEVEN))
    parser.add_argument("--seed-epochs", type=int, default=2)
    parser.add_argument("--seed-results", type=Path, help="results/ of a full seed-recipe study")
    parser.add_argument("--precision", choices=["auto", "float32"], default="auto")
    parser.add_argument("--keep", type=Path, help="run the studies here and keep them")
    help_seed = "take the seed side from this kept study (the seed/ folder of an earlier --keep)"
    parser.add_argument("--seed-study", type=Path, help=help_seed)
    parser.add_argument(
        "--table-only",
        action="store_true",
        help="print the table of the studies kept in --keep, run nothing",
    )
    args = parser.parse_args()
    sys.path.insert(0, str(REPO / "workflow"))
    from afternoon.config import load_zoo
    from afternoon.report.costs import cpu_model

    archs = args.archs.split(",")
    zoo = load_zoo(REPO / "config/zoo.yaml")
    root = args.keep or Path(tempfile.mkdtemp(prefix="fast-vs-seed-"))
    walls = root / "walls.json"
    if not args.table_only:
        seed_training = {"recipes": "seed", "max_epochs": args.seed_epochs}
        if args.seed_study:  # measured before: its wall time is in its walls.json
            shutil.copytree(args.seed_study, root / "seed", symlinks=True)
            seed_wall = json.loads((args.seed_study.parent / "walls.json").read_text())["seed"]
        else:
            seed_wall = run_study(root / "seed", archs, seed_training)
        fast_wall = run_study(
            root / "fast", archs, {"recipes": "fast", "precision": args.precision}
        )
        walls.write_text(json.dumps({"seed": seed_wall, "fast": fast_wall}))
    seed_wall, fast_wall = json.loads(walls.read_text()).values()
    used = {job(root / "fast/results", arch)["metrics"]["precision_reason"] for arch in archs}
    print(f"{cpu_model()}, 2 threads; fast recipes: {'; '.join(sorted(used))}")
    print(
        f"study wall time: seed (capped at {args.seed_epochs} epochs) {seed_wall:.0f} s, fast "
        f"{fast_wall:.0f} s (both with the download from the mirror and preprocessing)\n"
    )
    print(
        "| arch | slides (%) | seed epochs | seed time (s) | seed acc (%) | fast epochs "
        "| fast time (s) | fast acc (%) | fast − slides (pp) | fast / seed time |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    totals = {"seed": 0.0, "fast": 0.0}
    misses = []
    for arch in archs:
        reference = zoo[arch]["reference_accuracy"]["mnist"]
        seed, fast = job(root / "seed/results", arch), job(root / "fast/results", arch)
        seed_epochs = zoo[arch]["epochs"]
        ran = len(seed["epoch_times"])
        seed_time = seed["metrics"]["job_wall_s"] + (seed_epochs - ran) * seed["epoch_times"][-1]
        fast_time = fast["metrics"]["job_wall_s"]
        totals["seed"] += seed_time
        totals["fast"] += fast_time
        delta = fast["accuracy"] - reference
        if delta < -TARGET_POINTS:
            misses.append(f"{arch} ({delta:+.2f} pp)")
        accuracy = seed_accuracy(args.seed_results, arch)
        seed_acc = f"{accuracy:.2f}" if accuracy is not None else "–"
        print(f"| {arch} | {reference} | {seed_epochs} | {seed_time:,.0f} | {seed_acc} "
              f"| {fast['metrics']['epochs_run']} | {fast_time:,.0f} | {fast['accuracy']:.2f} "
              f"| {delta:+.2f} | {fast_time / seed_time:.2f} |")  # fmt: skip
    ratio = totals["fast"] / totals["seed"]
    print(f"| **total** | | | **{totals['seed']:,.0f}** | | | **{totals['fast']:,.0f}** | | "
          f"| **{ratio:.2f}** |")  # fmt: skip
    print(f"\nfast / seed total time {ratio:.2f} (target <= {TARGET_RATIO:.2f}): "
          f"{'met' if ratio <= TARGET_RATIO else 'MISSED'}; within {TARGET_POINTS} points of the "
          f"slides: {'all' if not misses else 'not ' + ', '.join(misses)}")  # fmt: skip
    if not args.keep:
        shutil.rmtree(root)


if __name__ == "__main__":
    main()
