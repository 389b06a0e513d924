"""The explicit output flags of the train and evaluate stages (``afternoon.cli``) for a run's or
an evaluation's folder, named as the results layout names them."""

from pathlib import Path

from afternoon.cli import output_flags
from afternoon.layout import eval_job_files, train_job_files


def train_outputs(run_dir: Path) -> dict[str, Path]:
    """A train job's outputs in ``run_dir``, as the layout places them (checkpoint included)."""
    return {name: Path(path) for name, path in train_job_files(str(run_dir)).items()}


def eval_outputs(eval_dir: Path) -> dict[str, Path]:
    return {name: Path(path) for name, path in eval_job_files(str(eval_dir)).items()}


def train_output_args(run_dir: Path) -> list[str]:
    """``--model DIR/model.keras --history ... --checkpoint DIR/checkpoint`` for ``run_dir``."""
    return output_flags(train_job_files(str(run_dir)))


def eval_output_args(eval_dir: Path) -> list[str]:
    return output_flags(eval_job_files(str(eval_dir)))
