"""The pipeline's one entry point: ``python -m afternoon.cli <stage> ...``, one stage per rule.

This module only parses arguments and hands them to the stage's module in ``afternoon.stages``
(each one the recipe it runs, top to bottom). Every job gets the explicit paths it reads and
writes; the output flags are the layout's output names (``afternoon.layout``). Errors the user can
fix are one line on stderr (``afternoon: error: ...``) and exit status 1.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import signal
import sys

from afternoon.layout import EVAL_FILES, RESULTS, SEARCH_FILES, TRAIN_FILES

# stage (the command) -> its module in afternoon.stages and what it does
STAGES = {
    "download": ("download", "fetch and verify a dataset's files"),
    "preprocess": ("preprocess", "parse raw files into one npz + card"),
    "init-tracking": ("init_tracking", "create the MLflow store and experiment once"),
    "train": ("train", "train one architecture on one dataset"),
    "evaluate": ("evaluate", "test metrics and plots of a trained model"),
    "report": ("report", "the study report from every run's outputs"),
    "tune": ("tune", "a hyperparameter search: Keras Tuner's chief and workers"),
    "sync-tracking": ("sync_tracking", "re-log runs whose tracking failed, from disk"),
}


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def output_flags(paths: dict) -> list[str]:
    """``{"confusion_csv": path, ...}`` as the stage's flags ``--confusion-csv path ...``."""
    return [arg for name, path in paths.items() for arg in (_flag(name), str(path))]


def _add_arguments(stage: str, parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    if stage == "download":
        add("dataset")
        add("--manifest", required=True, help="JSON manifest, written last; files beside it")
        add("--mirror", default=None, help="directory or URL with <dataset>/<file>")
        add("--retries", type=int, default=4)
    elif stage == "preprocess":
        add("dataset")
        add("--manifest", default="", help="download manifest ('' for digits)")
        add("--npz", required=True)
        add("--card", required=True)
        add("--validation-fraction", type=float, default=0.0)
        add("--seed", type=int, default=0)
    elif stage == "init-tracking":
        add("--uri", default="", help="tracking URI ('' for sqlite at --default-db)")
        add("--experiment", required=True)
        add("--default-db", required=True, help="the sqlite store if no URI is given")
        add("--marker", required=True, help="JSON written once the store is ready")
    elif stage in ("train", "evaluate"):
        add("--npz", required=True)
        add("--card", required=True)
        add("--tracking", required=True, help="marker written by init-tracking")
        add("--threads", type=int, default=2)
        if stage == "train":
            add("--spec", required=True, help="the job's config slice, as JSON")
            for name in [*TRAIN_FILES, "tensorboard", "checkpoint"]:
                add(_flag(name), required=True)
            add("--tag", action="append", default=[], help="extra MLflow tag KEY=VALUE")
        else:
            add("--model", required=True)
            add("--run", required=True, help="run.json written by training")
            for name in EVAL_FILES:
                add(_flag(name), required=True)
            add("--misclassified", type=int, default=25, help="misclassified images shown")
    elif stage == "tune":
        add("--spec", required=True, help="the search job's config slice, as JSON")
        add("--npz", required=True)
        add("--card", required=True)
        add("--tracking", required=True, help="marker written by init-tracking")
        add("--state", required=True, help="the oracle's and the trials' folder (resume)")
        add("--workers", type=int, default=2, help="worker processes")
        add("--threads", type=int, default=2, help="cores of the job, shared by the workers")
        for name in SEARCH_FILES:
            add(_flag(name), required=True)
    elif stage == "report":
        add("--settings", required=True, type=json.loads, help="config slice (JSON)")
        add("--paths", required=True, type=json.loads, help="inputs and outputs (JSON)")
    elif stage == "sync-tracking":
        add("--results", default=RESULTS, help="the results directory")
        add("--marker", default="", help="default: the results' tracking marker")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="afternoon", description=__doc__.splitlines()[0])
    stages = parser.add_subparsers(dest="stage", required=True)
    for stage, (_, help_text) in STAGES.items():
        _add_arguments(stage, stages.add_parser(stage, help=help_text))
    return parser


def run_stage(stage, *args) -> int:
    """Run one stage; an error the user can fix is one line on stderr and exit status 1.

    A stage stopped by SIGTERM (Slurm's time limit or preemption, Snakemake's Ctrl-C) or SIGINT
    says so in one line and exits 128 + the signal number, as a process killed by it would.
    """
    from afternoon.errors import AfternoonError
    from afternoon.fileio import WRITE_ERRNOS

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("absl").setLevel(logging.WARNING)  # e.g. a line per checkpoint write
    try:
        stage(*args)
    except AfternoonError as err:
        print(f"afternoon: error: {err}", file=sys.stderr)
        return 1
    except OSError as err:
        if err.errno not in WRITE_ERRNOS:
            raise
        where = f"{err.filename}: " if err.filename else ""
        print(f"afternoon: error: cannot write {where}{err.strerror}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as err:  # tracking.Terminated (SIGTERM) is one
        signum = getattr(err, "signum", signal.SIGINT)
        why = str(err) or signal.Signals(signum).name
        print(f"afternoon: stopped: {why}", file=sys.stderr)
        return 128 + signum
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    module = importlib.import_module(f"afternoon.stages.{STAGES[args.stage][0]}")
    return run_stage(module.main, args)


if __name__ == "__main__":
    sys.exit(main())
