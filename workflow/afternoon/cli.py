"""Thin entry points for the Snakemake rules: `python -m afternoon.cli <stage> ...`.

Each stage's logic lives in its own module; this file only parses arguments. Errors the user can
fix are one line on stderr (`afternoon: error: ...`) and exit status 1.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from pathlib import Path


def _download(args: argparse.Namespace) -> None:
    from afternoon.download import download_dataset

    download_dataset(
        args.dataset, Path(args.dest), Path(args.manifest), args.mirror, retries=args.retries
    )


def _preprocess(args: argparse.Namespace) -> None:
    from afternoon.preprocess import preprocess_dataset

    manifest = Path(args.manifest) if args.manifest else None
    preprocess_dataset(
        args.dataset,
        manifest,
        Path(args.npz),
        Path(args.card),
        validation_fraction=args.validation_fraction,
        seed=args.seed,
    )


def _init_tracking(args: argparse.Namespace) -> None:
    from afternoon.tracking import init_store, resolve_tracking_uri

    marker = Path(args.marker)
    uri = resolve_tracking_uri(args.uri or None, marker.with_name("mlflow.db"))
    init_store(uri, args.experiment, marker)


def _train(args: argparse.Namespace) -> None:
    import json

    from afternoon.training_job import train_job

    tags = dict(tag.split("=", 1) for tag in args.tag)
    train_job(
        json.loads(args.spec),
        Path(args.npz),
        Path(args.card),
        Path(args.out_dir),
        Path(args.tracking),
        threads=args.threads,
        context=tags,
    )


def _evaluate(args: argparse.Namespace) -> None:
    from afternoon.evaluation import evaluate_job

    evaluate_job(
        Path(args.model),
        Path(args.run),
        Path(args.npz),
        Path(args.card),
        Path(args.out_dir),
        n_misclassified=args.misclassified,
        threads=args.threads,
    )


def _sync_tracking(args: argparse.Namespace) -> None:
    from afternoon.sync import sync_tracking

    sync_tracking(Path(args.results), Path(args.marker) if args.marker else None)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="afternoon", description=__doc__.splitlines()[0])
    stages = parser.add_subparsers(dest="stage", required=True)

    download = stages.add_parser("download", help="fetch and verify a dataset's files")
    download.add_argument("dataset")
    download.add_argument("--dest", required=True, help="directory for the verified files")
    download.add_argument("--manifest", required=True, help="JSON manifest written last")
    download.add_argument("--mirror", default=None, help="directory or URL with <dataset>/<file>")
    download.add_argument("--retries", type=int, default=4)
    download.set_defaults(handler=_download)

    preprocess = stages.add_parser("preprocess", help="parse raw files into one npz + card")
    preprocess.add_argument("dataset")
    preprocess.add_argument("--manifest", default="", help="download manifest ('' for digits)")
    preprocess.add_argument("--npz", required=True)
    preprocess.add_argument("--card", required=True)
    preprocess.add_argument("--validation-fraction", type=float, default=0.0)
    preprocess.add_argument("--seed", type=int, default=0)
    preprocess.set_defaults(handler=_preprocess)

    init = stages.add_parser("init-tracking", help="create the MLflow store and experiment once")
    init.add_argument("--uri", default="", help="tracking URI ('' for sqlite beside the marker)")
    init.add_argument("--experiment", required=True)
    init.add_argument("--marker", required=True, help="JSON written once the store is ready")
    init.set_defaults(handler=_init_tracking)

    train = stages.add_parser("train", help="train one architecture on one dataset")
    train.add_argument("--spec", required=True, help="the job's config slice, as JSON")
    train.add_argument("--npz", required=True)
    train.add_argument("--card", required=True)
    train.add_argument("--tracking", required=True, help="marker written by init-tracking")
    train.add_argument("--out-dir", required=True)
    train.add_argument("--threads", type=int, default=2)
    train.add_argument("--tag", action="append", default=[], help="extra MLflow tag KEY=VALUE")
    train.set_defaults(handler=_train)

    evaluate = stages.add_parser("evaluate", help="test metrics and plots of a trained model")
    evaluate.add_argument("--model", required=True)
    evaluate.add_argument("--run", required=True, help="run.json written by training")
    evaluate.add_argument("--npz", required=True)
    evaluate.add_argument("--card", required=True)
    evaluate.add_argument("--out-dir", required=True)
    evaluate.add_argument("--misclassified", type=int, default=25)
    evaluate.add_argument("--threads", type=int, default=2)
    evaluate.set_defaults(handler=_evaluate)

    sync = stages.add_parser("sync-tracking", help="re-log runs whose tracking failed, from disk")
    sync.add_argument("--results", default="results", help="the results directory")
    sync.add_argument("--marker", default="", help="default: RESULTS/mlflow/tracking.json")
    sync.set_defaults(handler=_sync_tracking)
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
    return run_stage(args.handler, args)


if __name__ == "__main__":
    sys.exit(main())
