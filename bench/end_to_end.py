"""The afternoon in one command, measured: `snakemake --cores 2 --configfile config/afternoon.yaml`
end to end on the real MNIST and Fashion-MNIST (issue 21).

    .venv/bin/python bench/end_to_end.py --keep DIR [--precision auto|float32]
        [--part all|mnist|fashion_mnist|search] [--summary-only]

The study runs in DIR (config/config.yaml overlaid with config/afternoon.yaml, data from a mirror
folder of links: MNIST from ../shared/data, Fashion-MNIST from ../shared/data or Debian's
dataset-fashion-mnist, as bench/fast_vs_seed.py finds them), one `snakemake --cores 2` of this
repository's Snakefile. --precision float32 sets training.precision (what a CPU without bf16 gets).

A run longer than a session can be split: --part mnist, then fashion_mnist, then search (its
targets: that dataset's evaluations, or the search's best trial evaluated); the last part that
completes the study also writes the report. Each part's wall time goes to DIR/walls.json, and
the total is their sum (each part starts where the previous one ended: downloads, preprocessing
and tracking are done once). A part that was cut off is rerun whole.

The summary: CPU and precision, wall time per part and in total, the summed job time per rule
(from the Snakemake logs: which stage takes the time), the training jobs per dataset, the search
(trials, epochs, best values, validation accuracy, retrained test accuracy) and every slide number
the report reproduces (its difference); of a study with parts still to run, those of the parts
done. Targets: the whole at most 2.5 h with bf16; the search and its retraining at most 2 h, the
retrained best at least 93.5 % on the Fashion-MNIST test set.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fast_vs_seed import ARCHS, REPO, TARGET_POINTS, job, mirror, snakemake  # noqa: E402
from study_overhead import job_durations  # noqa: E402

sys.path.insert(0, str(REPO / "workflow"))

SEARCH = "fashion_exercise_fast"
PARTS = ["mnist", "fashion_mnist", "search"]
TARGET_HOURS = 2.5
TARGET_SEARCH_HOURS = 2.0
TARGET_SEARCH_ACCURACY = 93.5


def study_config(root: Path, precision: str) -> dict:
    """config/config.yaml overlaid with config/afternoon.yaml; the mirror and absolute paths."""

    def overlay(base: dict, top: dict) -> dict:
        for key, value in top.items():
            nested = isinstance(value, dict) and isinstance(base.get(key), dict)
            base[key] = overlay(base[key], value) if nested else value
        return base

    config = yaml.safe_load((REPO / "config/config.yaml").read_text())
    overlay(config, yaml.safe_load((REPO / "config/afternoon.yaml").read_text()))
    folders = {mirror(root, dataset) for dataset in config["datasets"]}  # one folder, a link each
    config["data"]["mirror"] = str(folders.pop())
    config["zoo"] = str(REPO / config["zoo"])
    config["searches"]["file"] = str(REPO / config["searches"]["file"])
    if precision == "float32":
        config["training"]["precision"] = "float32"
    return config


def targets(config: dict, part: str) -> list[str]:
    """A part's target files (none: the whole study, report included)."""
    from afternoon.layout import Layout

    layout = Layout()
    if part == "all":
        return []
    if part == "search":
        return [layout.search_best_eval(SEARCH, "fashion_mnist")["metrics"]]
    archs = config["dataset_architectures"][part]
    return [layout.eval_outputs(part, arch)["metrics"] for arch in archs]


def run_part(root: Path, part: str) -> float:
    """One `snakemake --cores 2` of the part's targets (the last part adds the report)."""
    walls = json.loads((root / "walls.json").read_text()) if (root / "walls.json").is_file() else {}
    config = yaml.safe_load((root / "config.yaml").read_text())
    last = part == "all" or set(walls) | {part} == set(PARTS)
    wanted = targets(config, part) + (["all"] if last and part != "all" else [])
    args = ["--cores", "2", *wanted, "--rerun-incomplete"]
    walls[part] = snakemake(root, args, root / f"snakemake-{part}.log")
    (root / "walls.json").write_text(json.dumps(walls, indent=1))
    return walls[part]


def parts(walls: dict) -> str:
    return ", ".join(f"{part} {seconds / 60:.1f} min" for part, seconds in walls.items())


def rule_seconds(root: Path) -> dict[str, float]:
    """Summed job time per rule over the parts' Snakemake logs."""
    totals = {}
    for log in sorted(root.glob("snakemake-*.log")):
        for rule, durations in job_durations(log).items():
            totals[rule] = totals.get(rule, 0.0) + sum(durations)
    return totals


def summarise(root: Path) -> None:
    from afternoon.config import load_zoo
    from afternoon.report.costs import cpu_model
    from afternoon.zoo import reference_accuracy

    config = yaml.safe_load((root / "config.yaml").read_text())
    results = root / "results"
    walls = json.loads((root / "walls.json").read_text())
    zoo = load_zoo(Path(config["zoo"]))
    precisions = set()
    precision = config["training"]["precision"] or "each recipe's own"
    print(f"{cpu_model()}, 2 cores; training.precision: {precision}")
    done = set(PARTS) if "all" in walls else set(walls)
    missing = [part for part in PARTS if part not in done]
    total = sum(walls.values())
    print(f"wall time: {total / 60:.1f} min ({total / 3600:.2f} h; {parts(walls)}); target "
          f"with bf16 <= {TARGET_HOURS} h")  # fmt: skip
    if missing:
        print(f"still to run: {', '.join(missing)} (the figures below are the parts done)")
    per_rule = rule_seconds(root)
    by_time = sorted(per_rule.items(), key=lambda item: -item[1])
    print("job time per rule (min): " + ", ".join(f"{r} {s / 60:.1f}" for r, s in by_time))
    misses, reproduced = [], 0
    datasets = {d: a for d, a in config["dataset_architectures"].items() if d in done}
    for dataset, archs in datasets.items():
        train = 0.0
        for arch in archs:
            run = job(results, dataset, arch)
            train += run["metrics"]["job_wall_s"]
            precisions.add(run["metrics"]["precision_reason"])
            reference = reference_accuracy(zoo, arch, dataset)
            if arch not in ARCHS[dataset] or reference is None:
                continue
            accuracy = run["accuracy"]
            reproduced += accuracy >= reference - TARGET_POINTS
            if accuracy < reference - TARGET_POINTS:
                misses.append(f"{dataset}/{arch} {accuracy:.2f} ({accuracy - reference:+.2f})")
        print(f"{dataset}: {len(archs)} training jobs, {train / 60:.1f} min of job wall time")
    print(f"precision: {'; '.join(sorted(precisions))}")
    total_slides = sum(len(ARCHS[d]) for d in datasets)
    print(f"slide numbers within {TARGET_POINTS} points (or above): {reproduced} of "
          f"{total_slides}; not: {', '.join(misses) or 'none'}")  # fmt: skip
    if "search" not in done:
        return
    search = results / "search" / SEARCH / "fashion_mnist"
    summary = json.loads((search / "summary.json").read_text())
    best = json.loads((search / "best" / "metrics.json").read_text())
    retrained = json.loads((search / "best-eval" / "metrics.json").read_text())["test_accuracy"]
    search_rules = ("tune", "train_search_best", "evaluate_search_best")
    search_s = sum(per_rule.get(rule, 0.0) for rule in search_rules)
    print(f"search {SEARCH}: {summary['trials']} trials ({summary['completed']} completed), "
          f"{summary['epochs_trained']} epochs, best trial {summary['best_trial']} val_accuracy "
          f"{summary['best_value'] * 100:.2f} %: {summary['best_values']}")  # fmt: skip
    print(f"retrained best: {best['epochs_run']} epochs, {best['job_wall_s']:.0f} s, test "
          f"accuracy {retrained * 100:.2f} % (target >= {TARGET_SEARCH_ACCURACY}); search, "
          f"retraining and evaluation {search_s / 60:.1f} min (target <= "
          f"{TARGET_SEARCH_HOURS * 60:.0f} min)")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--keep", type=Path, required=True, help="the study's folder (kept)")
    parser.add_argument("--precision", choices=["auto", "float32"], default="auto")
    parser.add_argument("--part", choices=["all", *PARTS], default="all")
    parser.add_argument("--summary-only", action="store_true", help="summarise DIR, run nothing")
    args = parser.parse_args()
    root = args.keep.resolve()
    if not args.summary_only:
        root.mkdir(parents=True, exist_ok=True)
        config = study_config(root, args.precision)
        kept = root / "config.yaml"
        if kept.is_file() and yaml.safe_load(kept.read_text()) != config:
            sys.exit(f"end_to_end.py: {root} holds a study of another configuration")
        (root / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
        run_part(root, args.part)
    summarise(root)


if __name__ == "__main__":
    main()
