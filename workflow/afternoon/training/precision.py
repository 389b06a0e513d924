"""Which precision a job computes in, and why. ``auto`` (the fast recipes):

- on a GPU: mixed_bfloat16 from compute capability 8.0 (A100, H100), mixed_float16 on 7.x (V100,
  T4: tensor cores for float16, none for bfloat16), float32 below 7.0;
- on a CPU: mixed_bfloat16 only with AMX-BF16 or AVX512-BF16, else float32: without them
  TensorFlow emulates bf16, many times slower than float32 (tensorflow #45441).

mixed_float16 trains with dynamic loss scaling (``loss_scaled``): float16's small range would
otherwise flush small gradients to zero.

TensorFlow-free, so the dry run says what a job on this machine will use (its GPUs as nvidia-smi
lists them); the job decides again where it runs (a cluster node may differ) and records the
decision in its MLflow run.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

BF16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")
NO_BF16 = "bf16 would be emulated, many times slower than float32: tensorflow #45441"
NO_F16 = "float16 is for GPUs' tensor cores: a CPU without AVX512-FP16 computes it slower"
PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")  # what a job computes in
# auto on a GPU of compute capability (major, minor) at least the first: the second.
GPU_RULE = (((8, 0), "mixed_bfloat16"), ((7, 0), "mixed_float16"))
GPU_RULE_TEXT = "a GPU picks mixed_float16 for compute capability 7.x, mixed_bfloat16 from 8.0"


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> set[str]:
    """The CPU feature flags the kernel reports (empty where /proc/cpuinfo has none)."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.partition(":")[2].split())
    return set()


def nvidia_gpus(run=subprocess.run) -> list[tuple[str, str]]:
    """(name, compute capability) of this machine's NVIDIA GPUs as nvidia-smi lists them, those
    CUDA_VISIBLE_DEVICES hides left out; [] without nvidia-smi (or a driver too old to say)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and visible.strip() in ("", "-1"):
        return []
    command = ["nvidia-smi", "--query-gpu=index,name,compute_cap", "--format=csv,noheader"]
    try:
        listed = run(command, capture_output=True, text=True, timeout=20, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    rows = [[part.strip() for part in line.split(",")] for line in listed.splitlines()]
    rows = [row for row in rows if len(row) == 3 and _version(row[2]) > (0,)]
    chosen = (visible or "").split(",")
    if visible and all(index.strip().isdigit() for index in chosen):
        rows = [row for index in chosen for row in rows if row[0] == index.strip()]
    return [(name, capability) for _, name, capability in rows]


def choose_precision(requested: str, gpus: list[tuple[str, str]] | None = None,
                     flags: set[str] | None = None) -> tuple[str, str]:  # fmt: skip
    """(precision, reason) for a job that asks for ``requested`` (float32, mixed_bfloat16,
    mixed_float16, auto).

    ``gpus``: (name, compute capability "major.minor") of the GPUs TensorFlow sees (a job knows
    them; None or []: none, the CPU rule); ``flags``: the CPU's (default: this machine's).
    """
    flags = cpu_flags() if flags is None else flags
    cpu_bf16 = [flag for flag in BF16_CPU_FLAGS if flag in flags]
    if requested != "auto":
        reason = f"{requested}, as the recipe or config sets it"
        if requested == "mixed_bfloat16" and not gpus and not cpu_bf16:
            reason += f" (this CPU has neither AMX-BF16 nor AVX512-BF16: {NO_BF16})"
        if requested == "mixed_float16" and not gpus and "avx512_fp16" not in flags:
            reason += f" ({NO_F16})"
        return requested, reason
    if gpus:
        name, capability = gpus[0]
        gpu = f"auto: GPU {name} (compute capability {capability})"
        for least, precision in GPU_RULE:
            if _version(capability) >= least:
                return precision, f"{gpu}: {GPU_RULE_TEXT}"
        return "float32", f"{gpu} < 7.0: no tensor cores for float16 or bfloat16"
    if cpu_bf16:
        return "mixed_bfloat16", f"auto: this CPU has {', '.join(cpu_bf16)}"
    return "float32", f"auto: this CPU has neither AMX-BF16 nor AVX512-BF16 ({NO_BF16})"


def _version(capability: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in str(capability).split("."))
    except ValueError:
        return (0,)


def job_precision_of(tf, requested: str) -> tuple[str, str]:
    """``choose_precision`` inside a job: the GPUs this TensorFlow sees, this node's CPU."""
    gpus = []
    for device in tf.config.list_physical_devices("GPU"):
        details = tf.config.experimental.get_device_details(device)
        capability = ".".join(map(str, details.get("compute_capability", (0, 0))))
        gpus.append((details.get("device_name", device.name), capability))
    return choose_precision(requested, gpus)


def loss_scaled(tf, optimizer, precision: str, variables=None):
    """``optimizer`` as a model of ``precision`` trains with it: for mixed_float16 wrapped in
    Keras' LossScaleOptimizer (dynamic loss scaling: the loss is multiplied by a scale that halves
    whenever a step's gradients overflow, that step skipped, and doubles after 2,000 finite
    steps), so that float16's small gradients do not flush to zero; else unchanged.
    ``variables``: the model's trainable ones, the wrapped optimizer's state made for them now
    (tf_keras cannot load a saved LossScaleOptimizer that has none: a model saved untrained, as
    the tf.distribute backends export theirs)."""
    wrapper = tf.keras.mixed_precision.LossScaleOptimizer
    if precision != "mixed_float16" or isinstance(optimizer, wrapper):
        return optimizer
    optimizer = wrapper(optimizer)
    if variables is not None:
        optimizer.build(variables)
    return optimizer


def keep_loss_scaling(tf, model, precision: str, scope) -> None:
    """A distributed backend recompiles the model with its own optimizer (``process.compile``):
    compiled again (in the backend's ``scope``) with that optimizer loss-scaled, as Keras wraps
    one for a mixed_float16 model (the gradients averaged over ranks before the check for
    overflow, so every rank skips the same steps). Nothing for another precision."""
    optimizer = loss_scaled(tf, model.optimizer, precision)
    if optimizer is not model.optimizer:
        with scope():
            model.compile(optimizer, loss=model.loss, metrics=["accuracy"])
