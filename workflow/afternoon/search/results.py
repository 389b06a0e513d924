"""A finished search's results, written by its chief: the trials table (trials.csv), the summary
(summary.json), the best trial as a complete zoo entry (best.yaml) and as the training spec of
its retraining (best_spec.json), TensorBoard's HParams dashboard (``hparams``); the best trial's
MLflow run tagged."""

from __future__ import annotations

from pathlib import Path

import yaml

from afternoon import tracking
from afternoon.errors import WorkerFailed
from afternoon.fileio import write_json_atomic, write_text_atomic
from afternoon.search.grammar import objective_name
from afternoon.search.hparams import write_hparams
from afternoon.search.jobs import executions_of
from afternoon.search.oracles import hyperband_trials
from afternoon.search.state import drop_checkpoints, trial_row
from afternoon.search.trials import trial_spec


def write_results(job: dict, oracle, state_dir: Path, args, parent) -> dict:
    """trials.csv, summary.json, best.yaml (a zoo entry), best_spec.json; the best trial's run
    tagged, the parent run given the best value and trial."""
    import pandas as pd

    executions = executions_of(job["search"])
    rows = [trial_row(trial, state_dir, executions) for trial in oracle.trials.values()]
    # Keras Tuner records a continuation's bracket as the one current when it was created: a
    # continuation belongs to its parent's bracket.
    brackets = {row["trial_id"]: row for row in rows}
    for row in sorted(rows, key=lambda row: row["trial_id"]):
        if row["parent_trial"]:
            row["bracket"] = brackets[row["parent_trial"]]["bracket"]
    table = pd.DataFrame(rows).sort_values("trial_id")
    write_text_atomic(Path(args.trials), table.to_csv(index=False))
    metric, _ = objective_name(job["name"], job["search"])
    best_trials = oracle.get_best_trials(1)
    if not best_trials:
        raise WorkerFailed(f"search {job['name']}: no trial completed")
    best = best_trials[0]
    best_row = next(row for row in rows if row["trial_id"] == best.trial_id)
    spec = trial_spec(job, best.hyperparameters.values)
    entry_name = f"{job['name']}-best"
    description = (f"best of search {job['name']} on {job['dataset']} (trial {best.trial_id}, "
                   f"{metric} {best.score:.4f})")  # fmt: skip
    entry = {"description": description}
    entry.update({k: spec[k] for k in ("layers", "optimizer", "batch_size", "epochs")})
    optional = ("early_stopping", "augmentation", "label_smoothing", "schedule", "precision")
    entry.update({k: spec[k] for k in optional if k in spec})  # a fast base's recipe kept
    header = f"# {description}: a complete zoo entry (add it to config/zoo.yaml to train it)\n"
    write_text_atomic(
        Path(args.best), header + yaml.safe_dump({entry_name: entry}, sort_keys=False)
    )
    write_json_atomic(Path(args.best_spec), {**spec, "name": entry_name})
    ((kind, settings),) = job["search"]["algorithm"].items()
    summary = {
        "search": job["name"],
        "dataset": job["dataset"],
        "base": job["base"],
        "algorithm": kind,
        "settings": settings or {},
        "objective": metric,
        "trials": len(rows),
        "completed": int((table["status"] == "COMPLETED").sum()),
        "epochs_trained": int(pd.to_numeric(table["epochs_trained"]).fillna(0).sum()),
        "best_trial": best.trial_id,
        "best_value": best.score,
        "best_values": dict(best.hyperparameters.values),
        "parent_run_id": parent.run_id,
        "best_run_id": best_row["run_id"],
        "workers": args.workers,
        "executions_per_trial": executions,
        "seed": job["seed"],  # execution i of a trial trains with seed + i
    }
    if kind == "hyperband":
        summary["predicted_trials"] = hyperband_trials(
            settings["max_epochs"], settings.get("factor", 3), settings.get("iterations", 1)
        )
    parent.log_metrics({f"best_{metric}": best.score, "trials": len(rows)})
    parent.set_tags({"afternoon.best_trial": best.trial_id,
                     "afternoon.best_run_id": best_row["run_id"] or ""})  # fmt: skip
    if best_row["run_id"]:
        tracking.RunLogger.resume(parent.uri, best_row["run_id"], offline_ok=True).set_tags(
            {"afternoon.best_trial": "true"}
        )
    write_hparams(Path(args.tensorboard), summary, job["search"]["space"], rows)
    write_json_atomic(Path(args.summary), summary)
    drop_checkpoints(state_dir)  # the search is done
    return summary
