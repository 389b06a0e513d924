"""TensorBoard's HParams dashboard of a finished search, as the slides show it: the experiment
(each hyperparameter of the space with its domain, the objective as its metric) at the root of
the search's TensorBoard folder, and one session per trial in a folder of its own (the trial's
values, its objective at the epoch it trained to, its status). With executions_per_trial N > 1
the objective is the executions' mean (as in trials.csv), each execution's value a metric beside
it (``objective_execution_<i>``).

Written by the chief from the trials table with TensorBoard's own protos and event writer (no
TensorFlow); a rerun replaces the folder whole. One experiment per folder: TensorBoard shows one
experiment per log directory, so point it at one search's folder (``make tensorboard
SEARCH=<search>/<dataset>``; the report names it).
"""

from __future__ import annotations

import math
import shutil
import tempfile
import time
from pathlib import Path

from tensorboard.compat.proto import event_pb2, summary_pb2
from tensorboard.plugins.hparams import api_pb2
from tensorboard.plugins.hparams import summary as hparams_summary
from tensorboard.summary.writer.event_file_writer import EventFileWriter

from afternoon.fileio import current_umask
from afternoon.search.state import EXECUTION_COLUMN

STATUS = {  # Keras Tuner's trial status -> the dashboard's
    "COMPLETED": api_pb2.STATUS_SUCCESS,
    "FAILED": api_pb2.STATUS_FAILURE,
    "INVALID": api_pb2.STATUS_FAILURE,
    "RUNNING": api_pb2.STATUS_RUNNING,
}


def hparam_info(path: str, spec: dict) -> api_pb2.HParamInfo:
    """One hyperparameter of the space (``search.grammar``) with its domain."""
    info = api_pb2.HParamInfo(name=path)
    if "choice" in spec:
        values = spec["choice"]
        if all(isinstance(v, bool) for v in values):
            info.type = api_pb2.DATA_TYPE_BOOL
        elif all(isinstance(v, int | float) for v in values):
            info.type = api_pb2.DATA_TYPE_FLOAT64
        else:
            info.type = api_pb2.DATA_TYPE_STRING
        info.domain_discrete.extend(values)
    else:
        low, high = spec.get("int") or spec["float"]
        info.type = api_pb2.DATA_TYPE_FLOAT64
        info.domain_interval.min_value, info.domain_interval.max_value = low, high
    return info


def _event(summary, step: int = 0) -> event_pb2.Event:
    """An event of ``summary`` (the hparams plugin builds TensorFlow's own Summary class when
    TensorFlow is installed: taken over by its bytes)."""
    summary = summary_pb2.Summary.FromString(summary.SerializeToString())
    return event_pb2.Event(summary=summary, wall_time=time.time(), step=step)


def _scalar(tag: str, value: float) -> summary_pb2.Summary:
    return summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag=tag, simple_value=value)])


def _write(folder: Path, events: list[event_pb2.Event]) -> None:
    writer = EventFileWriter(str(folder))
    for event in events:
        writer.add_event(event)
    writer.close()


def write_hparams(folder: Path, summary: dict, space: dict, rows: list[dict]) -> Path:
    """The search's dashboard in ``folder`` (replaced): ``summary`` (``results.write_results``'s:
    search, dataset, objective), ``space`` (the search's), ``rows`` (the trials table's)."""
    metric = summary["objective"]
    executions = int(summary.get("executions_per_trial", 1))
    metric_infos = [api_pb2.MetricInfo(name=api_pb2.MetricName(tag=metric))]
    extra = [EXECUTION_COLUMN.format(i) for i in range(executions)] if executions > 1 else []
    if extra:  # the objective is the executions' mean; each execution's value beside it
        metric_infos[0].display_name = f"{metric} (mean of {executions} executions)"
        metric_infos += [api_pb2.MetricInfo(name=api_pb2.MetricName(tag=tag)) for tag in extra]
    experiment = hparams_summary.experiment_pb(
        hparam_infos=[hparam_info(path, spec) for path, spec in space.items()],
        metric_infos=metric_infos,
        description=f"search {summary['search']} on {summary['dataset']}: {metric}",
    )
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    staging.chmod(0o777 & ~current_umask())  # mkdtemp makes it private
    try:
        _write(staging, [_event(experiment)])
        for row in rows:
            values = {path: row[path] for path in space if _known(row.get(path))}
            session = [_event(hparams_summary.session_start_pb(values, group_name=""))]
            step = int(row["epochs"]) if _known(row.get("epochs")) else 0
            for tag in (metric, *extra):
                column = "objective" if tag == metric else tag
                if _known(row.get(column)):
                    session.append(_event(_scalar(tag, float(row[column])), step))
            status = STATUS.get(row["status"], api_pb2.STATUS_UNKNOWN)
            session.append(_event(hparams_summary.session_end_pb(status)))
            _write(staging / f"trial-{row['trial_id']}", session)
        shutil.rmtree(folder, ignore_errors=True)
        staging.rename(folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder


def _known(value) -> bool:
    return value is not None and not (isinstance(value, float) and math.isnan(value))
