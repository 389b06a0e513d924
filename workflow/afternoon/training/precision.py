"""Which precision a job computes in, and why: ``auto`` (the fast recipes) is mixed_bfloat16 only
where the hardware computes in bfloat16 (a CPU with AMX-BF16 or AVX512-BF16, a GPU of compute
capability 8.0 or newer), else float32: on a CPU without them TensorFlow emulates bf16, many times
slower than float32 (tensorflow #45441).

TensorFlow-free, so the dry run says what a job on this machine will use; the job decides again
where it runs (a cluster node may differ) and records the decision in its MLflow run.
"""

from __future__ import annotations

from pathlib import Path

BF16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")
NO_BF16 = "bf16 would be emulated, many times slower than float32: tensorflow #45441"


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


def choose_precision(requested: str, gpus: list[tuple[str, str]] | None = None,
                     flags: set[str] | None = None) -> tuple[str, str]:  # fmt: skip
    """(precision, reason) for a job that asks for ``requested`` (float32, mixed_bfloat16, auto).

    ``gpus``: (name, compute capability "major.minor") of the GPUs TensorFlow sees (a job knows
    them; None: not known, e.g. at the dry run); ``flags``: the CPU's (default: this machine's).
    """
    flags = cpu_flags() if flags is None else flags
    cpu_bf16 = [flag for flag in BF16_CPU_FLAGS if flag in flags]
    if requested != "auto":
        reason = f"{requested}, as the recipe or config sets it"
        if requested == "mixed_bfloat16" and not gpus and not cpu_bf16:
            reason += f" (this CPU has neither AMX-BF16 nor AVX512-BF16: {NO_BF16})"
        return requested, reason
    if gpus:
        name, capability = gpus[0]
        if _version(capability) >= (8, 0):
            return "mixed_bfloat16", f"auto: GPU {name} (compute capability {capability}) has bf16"
        return "float32", f"auto: GPU {name} (compute capability {capability} < 8.0) has no bf16"
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
