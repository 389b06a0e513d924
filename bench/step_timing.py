"""Shared by bench/flops.py and bench/xla.py: the pipeline's training step, timed.

Not a benchmark of its own. A model is built from config/zoo.yaml as a job builds it
(``afternoon.training.models.build_model``), fed by the pipeline's input
(``afternoon.training.make_dataset``: uint8 batches gathered from shuffled indices, prefetched)
and trained by ``model.fit`` for one epoch of ``samples`` images; the time is that epoch's, from
Keras' ``on_epoch_begin`` to ``on_epoch_end`` (what a job records as ``epoch_time_s``). The first
fit of a model traces its step and is not timed. Images are random uint8 (the time does not
depend on pixel values).
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "workflow"))
SEED = 42
CPU_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16")


def cpu_description() -> str:
    """The CPU's model name and which of the flags that matter here it has."""
    model, flags = "unknown CPU", set()
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name":
            model = value.strip()
        elif key.strip() == "flags":
            flags = set(value.split())
    have = [f for f in CPU_FLAGS if f in flags]
    lacks = [f for f in CPU_FLAGS if f not in flags]
    return f"{model}; has {' '.join(have) or 'none'}; lacks {' '.join(lacks) or 'none'}"


def start_tensorflow(threads: int, deterministic: bool = True):
    """TensorFlow as a job configures it: ``threads`` intra-op threads, seeded, op determinism
    (a job's default, ``training.deterministic``) unless ``deterministic`` is False."""
    import afternoon  # noqa: F401  (Keras 2, as everywhere in the project)
    from afternoon.runtime import configure_tensorflow

    return configure_tensorflow(threads, SEED, deterministic)


def architecture(name: str) -> dict:
    """A zoo entry (its MNIST recipe) as build_model takes it: a job's spec, defaults filled in."""
    from afternoon.config import load_zoo
    from afternoon.defaults import filled
    from afternoon.zoo import architecture_for

    zoo = load_zoo(REPO / "config/zoo.yaml")
    if name not in zoo:
        raise SystemExit(f"architecture {name!r} is not in config/zoo.yaml")
    return filled(architecture_for(zoo, name, "mnist"), has_validation=True) | {"name": name}


def random_images(samples: int, shape=(28, 28, 1)):
    import numpy as np

    rng = np.random.default_rng(SEED)
    images = rng.integers(0, 256, (samples, *shape), dtype=np.uint8)
    return images, rng.integers(0, 10, samples, dtype=np.uint8)


class TimedFit:
    """One model, one batch size: ``seconds()`` is one timed epoch of ``model.fit``."""

    def __init__(self, tf, model, images, labels, batch_size: int, threads: int):
        if len(images) % batch_size:
            raise SystemExit(f"samples {len(images)} is not a multiple of batch {batch_size}")
        self.tf, self.model, self.batch_size, self.threads = tf, model, batch_size, threads
        self.images, self.labels, self.epoch = images, labels, 0
        self._fit(len(images) // batch_size // 4 or 1)  # traces the step: not timed

    def _fit(self, steps: int) -> float:
        from afternoon.training.loop import make_dataset

        times = []

        class EpochTimer(self.tf.keras.callbacks.Callback):
            def on_epoch_begin(self, epoch, logs=None):
                self.start = time.perf_counter()

            def on_epoch_end(self, epoch, logs=None):
                times.append(time.perf_counter() - self.start)

        epochs = range(self.epoch, self.epoch + 1)
        data = make_dataset(
            self.tf,
            self.images,
            self.labels,
            self.batch_size,
            shuffle=True,
            seed=SEED,
            threads=self.threads,
            epochs=epochs,
        )
        self.model.fit(data, epochs=1, steps_per_epoch=steps, verbose=0, callbacks=[EpochTimer()])
        self.epoch += 1
        return times[0]

    def seconds(self) -> float:
        return self._fit(len(self.images) // self.batch_size)


def alternate(variants: dict, repeats: int) -> dict[str, list[float]]:
    """``repeats`` rounds over ``variants`` (name -> callable returning seconds), in turn."""
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(repeats):
        for name, measure in variants.items():
            times[name].append(measure())
    return times


def median_range(values: list[float], fmt: str = ",.0f") -> tuple[str, str]:
    """(median, "min-max") of ``values``, formatted."""
    ordered = sorted(values)
    return format(statistics.median(ordered), fmt), f"{ordered[0]:{fmt}}-{ordered[-1]:{fmt}}"
