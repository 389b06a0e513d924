"""Stage tune: one search (``config/searches.yaml``) on one dataset, Keras Tuner's chief and its
workers, tracked as one MLflow parent run with a child run per trial.

The job's process is the chief (``afternoon.search.chief``): it reloads or creates the
oracle, serves it, and starts ``--workers`` workers (this same command): local processes
(``KERASTUNER_TUNER_ID=tuner<i>``), or with the launcher in ``AFTERNOON_SEARCH_LAUNCHER``
(under Slurm ``srun ... -n N``, from the job's batch step) the N tasks of one job step,
tuner<its rank>. A worker runs trials
(``afternoon.search.trials``) until the oracle says stop. A stopped search (SIGTERM, SIGKILL, of the
chief or a worker) resumes on the next run: finished trials stay, a trial that was running is
run again from its checkpoint. Once done, the chief writes the trials table, the summary, and
the best trial as a zoo entry (``best.yaml``) and as the training spec of its retraining.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from afternoon.search.chief import role, run_chief, run_worker

log = logging.getLogger(__name__)


def main(args: argparse.Namespace) -> None:
    job = json.loads(args.spec)
    kind, tuner_id = role()
    if kind == "worker":
        run_worker(job, args, tuner_id)
        return
    summary = run_chief(job, args, sys.argv[1:])  # the workers: this same command
    best = f"{summary['objective']} = {summary['best_value']} (trial {summary['best_trial']})"
    log.info(
        "search %s on %s: %d trials, best %s", job["name"], job["dataset"], summary["trials"], best
    )
