"""What the default study costs beyond its training: wall time of `snakemake --cores 2` (the
repository's default config, digits) against the sum of its jobs' training and evaluation time.

    .venv/bin/python bench/study_overhead.py [--runs 3] [--code DIR ...] [--cores 2]

Each run copies a checkout (its tracked and untracked, not ignored files: no results, no
.snakemake) into a fresh temporary folder and runs the whole study there, nothing cached. With
several ``--code`` checkouts (e.g. ``git worktree add /tmp/before <commit>`` and this one) the
runs alternate between them, so each version sees the same machine load; the table then has a
row per version. Per run:

- ``wall``: `snakemake` start to exit;
- ``train``: the sum of the train jobs' ``train_time_s`` (their epochs' time, metrics.json);
- ``eval``: the sum of the evaluate jobs' timed inference pass over the test set (``n_test /
  inference_images_per_s``, eval metrics.json: what an evaluation job records of its time);
- ``ratio``: wall / (train + eval);
- per rule, the sum of its jobs' durations (Snakemake's log, 1 s resolution) and the load average.

The whole invocation holds the benchmark lock (/tmp/afternoon-bench.lock), as every timing on
the shared machine must. Prints a Markdown table (median and min-max per version); ``--json``
also writes every run's figures.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LOCK = "/tmp/afternoon-bench.lock"
RULES = ("preprocess", "init_tracking", "train", "evaluate", "report")
STAMP = re.compile(r"^\[(\w{3} \w{3} +\d+ [\d:]{8} \d{4})\]$")


def copy_checkout(code: Path, into: Path) -> Path:
    """The checkout's tracked and untracked (not ignored) files, as they are on disk."""
    listed = subprocess.run(
        ["git", "-C", str(code), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        check=True,
        capture_output=True,
    ).stdout.split(b"\0")
    for name in filter(None, (entry.decode() for entry in listed)):
        source, target = code / name, into / name
        if source.is_file():  # (a file deleted but not yet staged is listed, and skipped)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    return into


def job_durations(log: Path) -> dict[str, list[float]]:
    """Per rule, its jobs' durations (s) from Snakemake's log: a job starts at the stamp above
    its ``localrule NAME:`` block and ends at the stamp above ``Finished jobid: N``."""
    stamp, rule, started, durations = None, None, {}, {}
    for line in log.read_text().splitlines():
        if match := STAMP.match(line.strip()):
            stamp = datetime.strptime(match[1], "%a %b %d %H:%M:%S %Y").timestamp()
        elif match := re.match(r"^(?:local)?rule (\w+):$", line.strip()):
            rule = match[1]
        elif (match := re.match(r"^jobid: (\d+)$", line.strip())) and rule:
            started[match[1]], rule = (rule, stamp), None
        elif match := re.match(r"^Finished jobid: (\d+)", line.strip()):
            name, start = started.pop(match[1])
            durations.setdefault(name, []).append(stamp - start)
    return durations


def compute_times(results: Path) -> tuple[float, float, int]:
    """(sum of train_time_s, sum of the timed inference passes, runs) over the study's runs."""
    train = [
        json.loads(p.read_text())["train_time_s"] for p in results.glob("runs/*/*/metrics.json")
    ]
    evals = [json.loads(p.read_text()) for p in results.glob("eval/*/*/metrics.json")]
    inference = [m["n_test"] / m["inference_images_per_s"] for m in evals]
    if not train or len(train) != len(inference):
        raise SystemExit(f"{results}: {len(train)} trained runs, {len(inference)} evaluated")
    return sum(train), sum(inference), len(train)


def run_study(code: Path, cores: int, keep: Path | None) -> dict:
    """One full default study of checkout ``code`` in a fresh copy; its figures."""
    folder = Path(tempfile.mkdtemp(prefix="afternoon-study-"))
    try:
        copy_checkout(code, folder)
        bin_dir = str(Path(sys.executable).parent)
        env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
        env["PYTHONPATH"] = str(folder / "workflow")  # this copy's package, not an install's
        env.pop("MLFLOW_TRACKING_URI", None)
        load_before = os.getloadavg()[0]
        started = time.perf_counter()
        # Its own process group: stopping the benchmark stops Snakemake and its jobs with it.
        study = subprocess.Popen(
            ["snakemake", "--cores", str(cores)],
            cwd=folder,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        try:
            stderr = study.communicate()[1]
        except BaseException:
            os.killpg(study.pid, signal.SIGKILL)
            raise
        wall = time.perf_counter() - started
        if study.returncode != 0:
            raise SystemExit(f"{code}: snakemake failed in {folder}:\n{stderr[-3000:]}")
        train, inference, trained = compute_times(folder / "results")
        logs = sorted((folder / ".snakemake" / "log").glob("*.snakemake.log"))
        per_rule = {rule: sum(times) for rule, times in job_durations(logs[-1]).items()}
        if keep is not None:
            shutil.copytree(folder / "results", keep, dirs_exist_ok=True)
        return {
            "wall_s": wall,
            "train_s": train,
            "eval_s": inference,
            "ratio": wall / (train + inference),
            "trained": trained,
            "jobs_s": per_rule,
            "load_before": load_before,
            "load_after": os.getloadavg()[0],
        }
    finally:
        shutil.rmtree(folder, ignore_errors=True)


# What every train and evaluate job must import, whatever the code around it: TensorFlow with
# Keras 2 and MLflow's client with its SQL store (the default sqlite tracking store).
JOB_IMPORTS = (
    "import afternoon, tensorflow as tf; tf.keras.models; "
    "import mlflow.tracking, mlflow.store.tracking.sqlalchemy_store"
)


def import_floor(code: Path, repeats: int = 3) -> float:
    """Median wall time of a fresh interpreter that only imports ``JOB_IMPORTS``."""
    env = {**os.environ, "PYTHONPATH": str(code / "workflow")}
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", JOB_IMPORTS], env=env, check=True)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def describe(code: Path) -> str:
    commit = subprocess.run(
        ["git", "-C", str(code), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "-C", str(code), "status", "--porcelain", "--untracked-files=no"],
        capture_output=True,
        text=True,
    ).stdout.strip()
    return f"{code} ({commit}{'+edits' if dirty else ''})"


def spread(values: list[float], fmt: str = "{:.1f}") -> str:
    """median (min-max)."""
    median = statistics.median(values)
    return f"{fmt.format(median)} ({fmt.format(min(values))}-{fmt.format(max(values))})"


def table(versions: dict[str, list[dict]]) -> str:
    header = ["code", "runs", "wall (s)", "train (s)", "eval (s)", "wall / (train+eval)"]
    header += [f"{rule} jobs (s)" for rule in RULES] + ["load avg (1 min)"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, runs in versions.items():
        cells = [name, str(len(runs))]
        cells += [spread([r[key] for r in runs]) for key in ("wall_s", "train_s")]
        cells += [spread([r["eval_s"] for r in runs], "{:.2f}"), spread([r["ratio"] for r in runs])]
        cells += [spread([r["jobs_s"].get(rule, 0.0) for r in runs], "{:.0f}") for rule in RULES]
        loads = [value for r in runs for value in (r["load_before"], r["load_after"])]
        cells.append(f"{min(loads):.1f}-{max(loads):.1f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="runs per checkout (default 3)")
    parser.add_argument(
        "--code", type=Path, action="append", help="a checkout to run (repeat: alternating runs)"
    )
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--json", type=Path, help="also write every run's figures here")
    parser.add_argument("--keep", type=Path, help="copy the last run's results/ here")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))  # cleans up
    codes = [path.resolve() for path in args.code or [REPO]]
    if missing := [str(c) for c in codes if not (c / "Snakefile").is_file()]:
        raise SystemExit(f"--code {', '.join(missing)}: no Snakefile there (not a checkout)")
    names = [describe(code) for code in codes]
    versions: dict[str, list[dict]] = {name: [] for name in names}
    with open(LOCK, "a") as lock:
        print(f"waiting for {LOCK} ...", file=sys.stderr, flush=True)
        fcntl.flock(lock, fcntl.LOCK_EX)
        date = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
        floor = import_floor(codes[-1])
        for i in range(args.runs):
            for code, name in zip(codes, names, strict=True):
                figures = run_study(code, args.cores, args.keep)
                versions[name].append(figures)
                print(f"run {i + 1}/{args.runs} {name}: " + json.dumps(figures), file=sys.stderr)
    print(f"{date}, {platform.node()}, {os.cpu_count()} CPUs, snakemake --cores {args.cores}, "
          f"{args.runs} alternating runs per checkout: median (min-max)\n")  # fmt: skip
    print(table(versions))
    jobs = 2 * statistics.median(r["trained"] for runs in versions.values() for r in runs)
    compute = statistics.median(
        r["train_s"] + r["eval_s"] for runs in versions.values() for r in runs
    )
    print(f"\nImport floor of one train/evaluate job (a fresh interpreter importing TensorFlow, "
          f"tf_keras and MLflow's SQL store, median of 3): {floor:.2f} s; {jobs:.0f} such jobs: "
          f"{jobs * floor:.0f} s, plus the median train+eval time {compute:.0f} s: "
          f"{jobs * floor + compute:.0f} s before any other work.")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps({"date": date, "versions": versions}, indent=2) + "\n")


if __name__ == "__main__":
    main()
