"""Epoch checkpoints: a training job stopped by SIGTERM or SIGKILL (a Slurm time limit, a
preemption, Ctrl-C) resumes where it stopped instead of from epoch 0.

After every epoch the job's ``checkpoint/`` directory (beside its outputs, not one of them, so
Snakemake keeps it when it removes a failed job's outputs) receives:

- ``epoch-N.index`` / ``epoch-N.data-*``: a ``tf.train.Checkpoint`` of the weights, the optimizer
  (step count, moments, learning rate) and the random generators of the dropout and augmentation
  layers; ``epoch-N.best.npz``: early stopping's best weights, when it keeps them;
- ``state.json``, written last and atomically: a ``CheckpointState`` (the epoch, the history rows
  so far, early stopping's counters, the MLflow run id, and the fingerprint of what is trained:
  spec, data, ranks). A checkpoint whose fingerprint differs from the job's is discarded.

Saving costs tens of milliseconds (``bench/checkpoint_cost.py``): for epochs shorter than
``OVERHEAD`` times that, a save is skipped until that much time has passed since the last one, so
checkpoints never cost more than 1/``OVERHEAD`` of the training time; a stop then resumes from
a few epochs back, never more than a few seconds of work.

Older epochs' files are removed only after ``state.json`` names the new ones: a kill at any moment
leaves one complete checkpoint. The batches of epoch e are a function of (seed, e) (see
``training.make_dataset``), so a resumed job sees the batches an uninterrupted one would; with op
determinism on, it ends with identical weights (tests/test_resume.py).
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from afternoon.errors import DataFormatError
from afternoon.fileio import atomic_path, read_json, write_json_atomic

log = logging.getLogger(__name__)

STATE = "state.json"
OVERHEAD = 20  # seconds of training per second spent saving, at least


@dataclass
class CheckpointState:
    """What ``state.json`` holds: where a training job stopped and what it needs to go on."""

    epoch: int  # epochs done
    rows: list[dict]  # the history so far, a row per epoch
    stopped: bool = False  # early stopping ended training at ``epoch``
    early_stopping: dict | None = None  # its counters (wait, best, best_epoch)
    run_id: str | None = None  # the job's MLflow run: the next attempt logs into it
    tracking_complete: bool = True  # every epoch so far reached the tracking store
    checkpoint: str = ""  # the tf.train.Checkpoint's prefix, epoch-N
    best_weights: str | None = None  # early stopping's best weights (npz), when it keeps them
    fingerprint: dict = field(default_factory=dict)  # what was trained: spec, data, ranks


def trackables(model) -> dict:
    """What a checkpoint holds: the model, its optimizer, and each random layer's generator
    (dropout masks and augmentation draws continue their sequence after a resume)."""
    objects = {"model": model, "optimizer": model.optimizer}
    for layer in model.layers:
        generator = getattr(getattr(layer, "_random_generator", None), "_generator", None)
        if generator is not None:
            objects[f"rng_{layer.name}"] = generator
    return objects


def build_optimizer_state(model) -> None:
    """Create the optimizer's variables now (they are otherwise made at the first step), so a
    restore fills them at once instead of deferring."""
    optimizer, variables = model.optimizer, model.trainable_variables
    if hasattr(optimizer, "_create_all_weights"):  # legacy (Keras 2.10-style) optimizers, Horovod
        optimizer._create_all_weights(variables)
    else:
        optimizer.build(variables)


class Checkpointer:
    """The ``checkpoint/`` directory of one training job; ``writer`` False on the other workers of
    a distributed job (they read what the chief wrote). ``collective``: saving reads variables
    with a collective (a tf.distribute strategy's), so the other workers write too, to a scratch
    folder they remove. ``resumed``: the state training continues from (None: epoch 1);
    ``run_id`` and ``tracking_complete``: the job's tracking, saved with every epoch."""

    def __init__(self, directory: Path, fingerprint: dict, *, writer=True, collective=False):
        self.directory, self.fingerprint, self.writer = Path(directory), fingerprint, writer
        self.collective = collective
        self.resumed: CheckpointState | None = None
        self.run_id: str | None = None
        self.tracking_complete = True
        self._checkpoint = None  # one tf.train.Checkpoint per model: building it costs more
        self._saved_at, self._save_cost = None, 0.0

    def due(self) -> bool:
        """Save now? Yes unless the last save (in this process) was under OVERHEAD x its cost
        ago: short epochs are checkpointed every few epochs instead of every one."""
        if self._saved_at is None:
            return True
        return time.perf_counter() - self._saved_at >= OVERHEAD * self._save_cost

    def _of(self, tf, model):
        if self._checkpoint is None or self._checkpoint[0] is not model:
            self._checkpoint = (model, tf.train.Checkpoint(**trackables(model)))
        return self._checkpoint[1]

    def load(self) -> CheckpointState | None:
        """The saved state, or None (nothing saved; or saved for another spec/data: discarded)."""
        path = self.directory / STATE
        if not path.exists():
            return None
        try:
            saved = read_json(path)
            if not isinstance(saved, dict) or saved.get("fingerprint") != self.fingerprint:
                why = "it was written for another spec, dataset or number of ranks"
                raise DataFormatError(f"{path}: {why}")
            state = CheckpointState(**saved)
            if not Path(f"{self.directory / state.checkpoint}.index").exists():
                raise DataFormatError(f"{path}: its checkpoint {state.checkpoint} is missing")
        except (DataFormatError, KeyError, TypeError) as err:
            log.warning("checkpoint not used, training starts at epoch 1: %s", err)
            if self.writer:
                self.clear()
            return None
        return state

    def restore(self, tf, model, state: CheckpointState) -> None:
        """Weights, optimizer and generators of ``state``'s epoch into ``model`` (compiled)."""
        build_optimizer_state(model)
        prefix = str(self.directory / state.checkpoint)
        self._of(tf, model).read(prefix).assert_existing_objects_matched()

    def best_weights(self, state: CheckpointState) -> list | None:
        """Early stopping's best weights saved with ``state``, if any."""
        if not state.best_weights:
            return None
        with np.load(self.directory / state.best_weights, allow_pickle=False) as saved:
            return [saved[f"w{i}"] for i in range(len(saved.files))]

    def save(self, tf, model, state: CheckpointState, best_weights: list | None = None) -> None:
        """Write epoch ``state.epoch``, then ``state.json``, then drop older epochs."""
        if not self.writer:
            if self.collective:  # the chief's save needs this worker's part of the collective
                with tempfile.TemporaryDirectory(prefix="afternoon-checkpoint-") as scratch:
                    self._of(tf, model).write(str(Path(scratch) / "epoch"))
            return
        started = time.perf_counter()
        self.directory.mkdir(parents=True, exist_ok=True)
        name = f"epoch-{state.epoch}"
        self._of(tf, model).write(str(self.directory / name))
        state = dataclasses.replace(state, checkpoint=name, fingerprint=self.fingerprint)
        state.run_id, state.tracking_complete = self.run_id, self.tracking_complete
        if best_weights is not None:
            with atomic_path(self.directory / f"{name}.best.npz") as tmp:
                np.savez(tmp, **{f"w{i}": w for i, w in enumerate(best_weights)})
            state.best_weights = f"{name}.best.npz"
        write_json_atomic(self.directory / STATE, dataclasses.asdict(state))
        for old in self.directory.iterdir():
            if old.name != STATE and not old.name.startswith(f"{name}."):
                old.unlink(missing_ok=True)
        self._saved_at = time.perf_counter()
        self._save_cost = self._saved_at - started

    def clear(self) -> None:
        """Remove the checkpoint (the job finished: its outputs are the result)."""
        if self.writer:
            shutil.rmtree(self.directory, ignore_errors=True)
