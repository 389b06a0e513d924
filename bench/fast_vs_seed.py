"""The seed recipes against the fast recipes on real MNIST or Fashion-MNIST: accuracy and time.

    .venv/bin/python bench/fast_vs_seed.py [--dataset mnist|fashion_mnist] [--replicates N]
        [--seed-results DIR] [--precision auto|float32] [--archs fc64,...] [--seed-epochs 2]
        [--keep DIR] [--seed-study DIR] [--fast-study DIR]

Studies of the pipeline (`snakemake --cores 2`, this repository's Snakefile, 2 threads per job,
one job at a time), one after the other on this machine, on the real data: MNIST from
../shared/data, Fashion-MNIST from ../shared/data/fashion_mnist where it is there, else Debian's
dataset-fashion-mnist (/usr/share/datasets/fashion-mnist):

- seed: the seed recipes (the dataset's: cnn1 and cnn_dropout 100 epochs on Fashion-MNIST, ...),
  capped at --seed-epochs (2) per architecture; each job's time is extrapolated to its recipe's
  epochs: the job's wall time (process start, data, model, the capped epochs, saving) + (epochs -
  cap) x its last epoch's time (validation included). Its accuracies come from a full run of the
  seed recipes (--seed-results: that study's results folder, BENCHMARKS.md); without one, none
  are shown.
- fast: `training.recipes: fast` in full (the dataset's fast recipes; --precision float32 forces
  float32: the recipe alone, what a CPU without bf16 gets), --replicates N times with the seeds
  seed + i (42, 43, ...: replicate i of the study's `replicates`), each its own study.

Per architecture: epochs, train job time (wall, start-up included; fast: the replicates' mean),
test accuracy (fast: mean, standard deviation and range over the replicates), the slides'
accuracy and the difference; totals and fast / seed. Targets: every fast accuracy at least the
slides' minus 0.3 points (or the slides' within the replicates' range), in at most a third
(MNIST, issue 14) or a tenth (Fashion-MNIST, issue 21) of the seed recipes' time.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
SEVEN = ["fc64", "fc512", "fc512x3", "cnn1", "cnn2", "cnn_dropout", "cnn_batchnorm"]
SOLUTIONS = ["fm_cnn2_64", "fm_dropout55_80", "fm_same_40", "fm_same_80", "fm_nesterov_40"]
SOLUTIONS += ["fm_dropout66_40", "fm_dropout66_100", "fm_nesterov_100"]
ARCHS = {"mnist": SEVEN, "fashion_mnist": SEVEN + SOLUTIONS}  # those with the slides' number
TARGET_POINTS = 0.3
TARGET_RATIO = {"mnist": 1 / 3, "fashion_mnist": 1 / 10}
SEED = 42


def real_data(dataset: str) -> Path:
    """Where ``dataset``'s real files are: ../shared/data, else (Fashion-MNIST) Debian's copy."""
    source = SHARED_DATA / dataset
    if dataset == "fashion_mnist" and not source.is_dir():
        source = DEBIAN_FASHION_MNIST
    if not source.is_dir():
        sys.exit(f"{Path(sys.argv[0]).stem}: no copy of {dataset} at {source}")
    return source


def mirror(root: Path, dataset: str) -> Path:
    """A mirror folder holding ``dataset``'s real files (a link to where they are)."""
    source = real_data(dataset)
    folder = root / "mirror"
    (folder / dataset).parent.mkdir(parents=True, exist_ok=True)
    if not (folder / dataset).exists():
        (folder / dataset).symlink_to(source)
    return folder


def run_study(workdir: Path, dataset: str, archs: list[str], training: dict, seed=SEED,
              zoo: Path = REPO / "config/zoo.yaml", cores: int = 2) -> float:  # fmt: skip
    """`snakemake --cores 2` (or ``cores``) of a study of ``archs`` on ``dataset`` in ``workdir``
    (the zoo: config/zoo.yaml, or ``zoo``); its wall seconds."""
    config = yaml.safe_load((REPO / "config/config.yaml").read_text())
    config.update(study=f"bench-{workdir.name}", datasets=[dataset], architectures=archs)
    config.update(seed=seed, zoo=str(zoo))
    config["data"]["mirror"] = str(mirror(workdir.parent, dataset))
    config["training"].update({"threads": 2, **training})
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "config.yaml").write_text(yaml.safe_dump(config))
    return snakemake(workdir, ["--cores", str(cores), "--quiet"], workdir / "snakemake.log")


def snakemake(workdir: Path, args: list[str], log: Path) -> float:
    """This repository's Snakefile on ``workdir``'s config.yaml with ``args`` (cores, targets),
    its output in ``log``; its wall seconds."""
    command = ["snakemake", "-s", str(REPO / "Snakefile"), "-d", str(workdir), *args,
               "--configfile", str(workdir / "config.yaml")]  # fmt: skip
    # this interpreter's snakemake and python, without PATH set
    path = f"{Path(sys.executable).parent}:{os.environ['PATH']}"
    env = {**os.environ, "PYTHONPATH": str(REPO / "workflow"), "PATH": path}
    started = time.perf_counter()
    with open(log, "w") as out:
        subprocess.run(command, check=True, stdout=out, stderr=subprocess.STDOUT, env=env)
    return time.perf_counter() - started


def job(results: Path, dataset: str, arch: str) -> dict:
    """A train job's metrics and epoch times, and its evaluation's test accuracy (percent)."""
    run = results / "runs" / dataset / arch
    import pandas as pd

    metrics = json.loads((run / "metrics.json").read_text())
    epochs = list(pd.read_csv(run / "history.csv")["epoch_time_s"])
    evaluation = results / "eval" / dataset / arch / "metrics.json"
    accuracy = json.loads(evaluation.read_text())["test_accuracy"] * 100
    return {"metrics": metrics, "epoch_times": epochs, "accuracy": accuracy}


def seed_accuracy(seed_results: Path | None, dataset: str, arch: str) -> float | None:
    if seed_results is None:
        return None
    path = seed_results / "eval" / dataset / arch / "metrics.json"
    return json.loads(path.read_text())["test_accuracy"] * 100 if path.is_file() else None


def fast_dir(root: Path, replicate: int) -> Path:
    """Replicate 0 where a single fast study has always been kept (root/fast)."""
    return root / ("fast" if replicate == 0 else f"fast-{replicate}")


def band(accuracies: list[float]) -> str:
    """Mean, and with several replicates their standard deviation and range."""
    mean = statistics.fmean(accuracies)
    if len(accuracies) == 1:
        return f"{mean:.2f}"
    sd, low, high = statistics.stdev(accuracies), min(accuracies), max(accuracies)
    return f"{mean:.2f} ± {sd:.2f} ({low:.2f}–{high:.2f}, n={len(accuracies)})"


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", choices=sorted(ARCHS), default="mnist")
    parser.add_argument("--archs", help="default: the dataset's architectures with a slide number")
    parser.add_argument("--replicates", type=int, default=1, help="fast studies, seeds 42 + i")
    parser.add_argument("--seed-epochs", type=int, default=2)
    parser.add_argument("--seed-results", type=Path, help="results/ of a full seed-recipe study")
    parser.add_argument("--precision", choices=["auto", "float32"], default="auto")
    parser.add_argument("--fast-max-epochs", type=int,
                        help="cap the fast side too (a smoke test of this script: its numbers "
                        "then say nothing)")  # fmt: skip
    parser.add_argument("--keep", type=Path, help="run the studies here and keep them")
    help_seed = "take the seed side from this kept study (the seed/ folder of an earlier --keep)"
    parser.add_argument("--seed-study", type=Path, help=help_seed)
    help_fast = (
        "take the fast side's replicate 0 from this kept study (the fast/ folder of an "
        "earlier --keep, same code and archs); only replicates 1.. then run"
    )
    parser.add_argument("--fast-study", type=Path, help=help_fast)
    parser.add_argument(
        "--table-only",
        action="store_true",
        help="print the table of the studies kept in --keep, run nothing",
    )
    args = parser.parse_args()
    if args.replicates < 1:
        parser.error("--replicates must be at least 1")
    return args


def read_walls(root: Path) -> tuple[float, list[float]]:
    """The seed study's wall seconds and the fast studies' (one per replicate) from walls.json."""
    walls = json.loads((root / "walls.json").read_text())
    fast = walls["fast"]
    return walls["seed"], fast if isinstance(fast, list) else [fast]  # one number: kept before


def reuse(kept: Path, dest: Path, side: str) -> float:
    """Copy a study measured before (the seed/ or fast/ folder of an earlier --keep) to ``dest``;
    its wall seconds (the fast side's: replicate 0's), from the walls.json beside it."""
    shutil.copytree(kept, dest, symlinks=True)
    seed_wall, fast_walls = read_walls(kept.parent)
    return seed_wall if side == "seed" else fast_walls[0]


def run_studies(args, root: Path, archs: list[str]) -> None:
    """The capped seed study (or a kept one) and the fast studies; their walls in walls.json."""
    seed_training = {"recipes": "seed", "max_epochs": args.seed_epochs}
    if args.seed_study:
        seed_wall = reuse(args.seed_study, root / "seed", "seed")
    else:
        seed_wall = run_study(root / "seed", args.dataset, archs, seed_training)
    fast_training = {"recipes": "fast", "precision": args.precision}
    if args.fast_max_epochs:
        fast_training["max_epochs"] = args.fast_max_epochs
    fast_walls = [reuse(args.fast_study, fast_dir(root, 0), "fast")] if args.fast_study else []
    fast_walls += [
        run_study(fast_dir(root, i), args.dataset, archs, fast_training, seed=SEED + i)
        for i in range(len(fast_walls), args.replicates)
    ]
    (root / "walls.json").write_text(json.dumps({"seed": seed_wall, "fast": fast_walls}))


def main() -> None:
    args = parse_args()
    sys.path.insert(0, str(REPO / "workflow"))
    from afternoon.config import load_zoo
    from afternoon.report.costs import cpu_model
    from afternoon.zoo import architecture_for, reference_accuracy

    dataset = args.dataset
    archs = args.archs.split(",") if args.archs else ARCHS[dataset]
    zoo = load_zoo(REPO / "config/zoo.yaml")
    root = args.keep or Path(tempfile.mkdtemp(prefix="fast-vs-seed-"))
    if not args.table_only:
        run_studies(args, root, archs)
    seed_wall, fast_walls = read_walls(root)
    replicates = len(fast_walls)
    fast_results = [fast_dir(root, i) / "results" for i in range(replicates)]
    used = {job(fast_results[0], dataset, arch)["metrics"]["precision_reason"] for arch in archs}
    print(f"{cpu_model()}, 2 threads, {dataset}; fast recipes: {'; '.join(sorted(used))}")
    print(
        f"study wall time: seed (capped at {args.seed_epochs} epochs) {seed_wall:.0f} s, fast "
        f"{' + '.join(f'{w:.0f}' for w in fast_walls)} s ({replicates} replicate(s), seeds "
        f"{SEED}..{SEED + replicates - 1}; each with the mirror's copy and preprocessing)\n"
    )
    print(
        "| arch | slides (%) | seed epochs | seed time (s) | seed acc (%) | fast epochs "
        "| fast time (s) | fast acc (%) | fast − slides (pp) | fast / seed time |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    totals = {"seed": 0.0, "fast": 0.0}
    misses = []
    for arch in archs:
        reference = reference_accuracy(zoo, arch, dataset)
        seed = job(root / "seed/results", dataset, arch)
        fast = [job(results, dataset, arch) for results in fast_results]
        seed_epochs = architecture_for(zoo, arch, dataset)["epochs"]
        ran = len(seed["epoch_times"])
        seed_time = seed["metrics"]["job_wall_s"] + (seed_epochs - ran) * seed["epoch_times"][-1]
        fast_time = statistics.fmean(f["metrics"]["job_wall_s"] for f in fast)
        totals["seed"] += seed_time
        totals["fast"] += fast_time
        accuracies = [f["accuracy"] for f in fast]
        mean = statistics.fmean(accuracies)
        delta = "–" if reference is None else f"{mean - reference:+.2f}"
        within = reference is not None and min(accuracies) <= reference <= max(accuracies)
        if reference is not None and mean - reference < -TARGET_POINTS and not within:
            misses.append(f"{arch} ({mean - reference:+.2f} pp)")
        accuracy = seed_accuracy(args.seed_results, dataset, arch)
        seed_acc = f"{accuracy:.2f}" if accuracy is not None else "–"
        print(f"| {arch} | {reference if reference is not None else '–'} | {seed_epochs} "
              f"| {seed_time:,.0f} | {seed_acc} | {fast[0]['metrics']['epochs_run']} "
              f"| {fast_time:,.0f} | {band(accuracies)} | {delta} "
              f"| {fast_time / seed_time:.2f} |")  # fmt: skip
    ratio = totals["fast"] / totals["seed"]
    print(f"| **total** | | | **{totals['seed']:,.0f}** | | | **{totals['fast']:,.0f}** | | "
          f"| **{ratio:.2f}** |")  # fmt: skip
    target = TARGET_RATIO[dataset]
    print(f"\nfast / seed total time {ratio:.2f} (target <= {target:.2f}): "
          f"{'met' if ratio <= target else 'MISSED'}; at least the slides minus {TARGET_POINTS} "
          f"points (mean of {replicates}, or the slides within their range): "
          f"{'all' if not misses else 'not ' + ', '.join(misses)}")  # fmt: skip
    if args.fast_max_epochs:
        print(f"(the fast side capped at {args.fast_max_epochs} epochs: a smoke test only)")
    if not args.keep:
        shutil.rmtree(root)


if __name__ == "__main__":
    main()
