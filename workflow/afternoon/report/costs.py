"""What a training run ran on and what it cost.

- The device: the GPU's name when TensorFlow trains on one, else the CPU model and the cores the
  job uses (of the machine's). An MLflow tag (``afternoon.device``) and a column of the report.
- The cost, logged as MLflow metrics and kept in the job's metrics.json:
  ``cost_core_s`` (cores x wall seconds) on a CPU, ``cost_gpu_s`` (GPUs x wall seconds) on a
  GPU; and under Slurm, once the training job has ended, the job's own accounting
  (``sacct``: elapsed seconds x allocated TRES): ``cost_slurm_cpu_s`` and, with GPUs allocated,
  ``cost_slurm_gpu_s`` (``slurm_cost``, called by the evaluation job, which runs after it).
  ``cost_of`` picks the one a report compares: Slurm's GPU, then Slurm's CPU, GPU, core seconds.
- The report's view of them: per run its device, its cost and its time per 60,000-sample epoch
  beside the seeds' GPU timing; per dataset the Pareto front of test accuracy against cost (the
  architectures no other beats on both; drawn by ``plots.plot_pareto``).
"""

from __future__ import annotations

import logging
import os
import platform
import subprocess
import time
from pathlib import Path

import pandas as pd

log = logging.getLogger(__name__)

# The report's cost, most authoritative first: (metric, unit).
COST_METRICS = (
    ("cost_slurm_gpu_s", "GPU·s (Slurm)"),
    ("cost_slurm_cpu_s", "core·s (Slurm)"),
    ("cost_gpu_s", "GPU·s"),
    ("cost_core_s", "core·s"),
)
SACCT_FIELDS = "JobIDRaw,State,ElapsedRaw,AllocTRES"
# sacct states of a job that still runs (its elapsed time still grows).
NO_ACCOUNTING = "slurm job %s: no accounting (%s): cost from the wall clock only"
SLURM_ACTIVE_STATES = ("PENDING", "RUNNING", "REQUEUED", "RESIZING", "SUSPENDED", "COMPLETING")


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else what ``platform`` says."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def gpu_names() -> list[str]:
    """The names of the GPUs TensorFlow sees (none on a CPU-only build or machine)."""
    import tensorflow as tf

    names = []
    for gpu in tf.config.list_physical_devices("GPU"):
        details = tf.config.experimental.get_device_details(gpu)
        names.append(details.get("device_name", gpu.name))
    return names


def device_of(cores: int, ranks: int = 1, gpus: list[str] | None = None) -> dict:
    """What a job of ``ranks`` processes, ``cores`` cores in all, trains on: ``kind`` (cpu or
    gpu), ``name`` (for the tag and the report), ``units`` (cores, or GPUs: one per rank)."""
    gpus = gpu_names() if gpus is None else gpus
    if gpus:
        units = min(ranks, len(gpus)) if ranks > 1 else 1  # Keras trains on one GPU a process
        return {"kind": "gpu", "name": f"{units}x {gpus[0]}", "units": units}
    machine = os.cpu_count() or cores
    return {"kind": "cpu", "name": f"{cpu_model()} ({cores} of {machine} cores)", "units": cores}


def run_cost(device: dict, wall_s: float) -> dict:
    """``cost_core_s`` or ``cost_gpu_s`` of ``wall_s`` seconds on ``device``, and the wall time."""
    metric = "cost_gpu_s" if device["kind"] == "gpu" else "cost_core_s"
    return {"job_wall_s": float(wall_s), metric: float(wall_s) * device["units"]}


def cost_of(metrics: dict) -> tuple[float, str] | None:
    """The cost a report shows for a run's metrics, with its unit (``COST_METRICS`` order)."""
    for metric, unit in COST_METRICS:
        if metrics.get(metric) is not None:
            return float(metrics[metric]), unit
    return None


def _tres(text: str) -> dict[str, float]:
    """``billing=2,cpu=2,gres/gpu=1,mem=4G,node=1`` -> {"cpu": 2.0, "gres/gpu": 1.0, ...}
    (values with a unit suffix, like mem, are left out)."""
    out = {}
    for item in filter(None, text.split(",")):
        key, _, value = item.partition("=")
        try:
            out[key] = float(value)
        except ValueError:
            continue
    return out


def parse_sacct(text: str, job_id: str) -> dict | None:
    """The Slurm cost of job ``job_id`` from ``sacct -X -n -P -o SACCT_FIELDS`` output, or None
    when sacct does not list it or it has not ended."""
    for line in text.splitlines():
        fields = line.strip().split("|")
        if len(fields) != 4 or fields[0] != str(job_id):
            continue
        state, elapsed, tres = fields[1].split()[0], int(fields[2] or 0), _tres(fields[3])
        if state in SLURM_ACTIVE_STATES:
            return None
        cost = {"slurm_elapsed_s": float(elapsed), "cost_slurm_cpu_s": elapsed * tres.get("cpu", 0)}
        gpus = tres.get("gres/gpu", 0)
        if gpus:
            cost["cost_slurm_gpu_s"] = elapsed * gpus
        return cost
    return None


def slurm_cost(job_id: str, sacct: str = "sacct", attempts: int = 6, wait_s: float = 2.0) -> dict:
    """The ended Slurm job's accounting (``parse_sacct``); {} with a warning when sacct cannot say
    (not installed, no accounting, the job still listed as running after ``attempts`` tries)."""
    command = [sacct, "-X", "-n", "-P", "-j", str(job_id), "-o", SACCT_FIELDS]
    for attempt in range(attempts):
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired) as err:
            log.warning(NO_ACCOUNTING, job_id, err)
            return {}
        cost = parse_sacct(done.stdout, job_id) if done.returncode == 0 else None
        if cost is not None:
            return cost
        if attempt < attempts - 1:
            time.sleep(wait_s)
    reason = done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "not ended"
    log.warning(NO_ACCOUNTING, job_id, reason)
    return {}


# --- The report's cost view: per run its cost and time per 60k epoch, per dataset its front ---


EPOCH_SAMPLES = 60_000  # the seeds' timings are per 60,000-sample (MNIST) epoch


def cost_columns(arch: dict, train: dict, evaluation: dict) -> dict:
    """The cost columns of one run's score row: ``cost`` and ``cost_unit`` (``cost_of``:
    the evaluation's Slurm accounting first, then training's own), ``device``, our seconds per
    60,000-sample epoch and the seeds' (``seed_gpu_seconds_per_epoch`` of the zoo)."""
    found = cost_of({**train, **evaluation})
    rate = train.get("train_samples_per_s")
    return {
        "cost": found[0] if found else None,
        "cost_unit": found[1] if found else "",
        "device": train.get("device", "unknown"),
        "s_per_60k_epoch": EPOCH_SAMPLES / rate if rate else None,
        "seed_gpu_s_per_epoch": arch.get("seed_gpu_seconds_per_epoch"),
    }


def pareto_front(runs: pd.DataFrame) -> pd.Series:
    """True for each run (rows with ``cost`` and ``test_accuracy_pct``) that no other run beats
    on both: none as accurate for less, or more accurate for as little. Runs without a cost are
    never on the front."""
    known = runs.dropna(subset=["cost"])
    on_front = pd.Series(False, index=runs.index)
    for index, run in known.iterrows():
        cheaper_or_equal = known["cost"] <= run["cost"]
        as_good = known["test_accuracy_pct"] >= run["test_accuracy_pct"]
        strictly = (known["cost"] < run["cost"]) | (
            known["test_accuracy_pct"] > run["test_accuracy_pct"]
        )
        on_front[index] = not (cheaper_or_equal & as_good & strictly).any()
    return on_front


def device_rows(long: pd.DataFrame) -> list[dict]:
    """Per run (dataset, architecture): its device, cost and seconds per 60k epoch, ours and the
    seeds', and whether it is on its dataset's Pareto front: the report's cost table."""
    fronts = pd.concat([pareto_front(group) for _, group in long.groupby("dataset", sort=False)])
    rows = []
    for index, run in long.iterrows():
        cost = "–" if pd.isna(run["cost"]) else f"{run['cost']:,.0f} {run['cost_unit']}"
        ours, seeds = run["s_per_60k_epoch"], run["seed_gpu_s_per_epoch"]
        rows.append(
            dict(
                dataset=run["dataset"],
                architecture=run["architecture"],
                device=run["device"],
                cost=cost,
                ours="–" if pd.isna(ours) else f"{ours:.1f}",
                seeds="–" if pd.isna(seeds) else f"{seeds:g}",
                front=bool(fronts[index]),
            )
        )
    return rows
