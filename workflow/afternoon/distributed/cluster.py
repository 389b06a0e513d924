"""Where the workers of a ``multi_worker`` job are: the cluster TensorFlow's
``MultiWorkerMirroredStrategy`` connects.

- Under the local launcher (``afternoon.distributed.launch``): ``TF_CONFIG``, which the launcher
  writes for N processes on 127.0.0.1, on ports the kernel hands out free.
- Inside a Slurm job step of N tasks (``srun -n N``): ``SlurmClusterResolver``. On GPU nodes it
  also gives each task its GPUs (``CUDA_VISIBLE_DEVICES``). It places tasks on GPU slots, so on a
  CPU node (``gpus_per_node=0``: "range() arg 3 must not be zero") it gets the node's task count
  as slots and the strategy is told there is no GPU.

Ports: a Slurm job's workers listen on ``PORT_BASE + (job id % PORT_BLOCKS) * PORT_BLOCK + local
task``: two jobs on one node get different blocks (unless their ids are PORT_BLOCKS apart).

What listens: TensorFlow 2.18 starts each worker's gRPC server on the wildcard address, every
interface (hard-coded in ``grpc_server_lib.cc``; neither ``ServerDef``, ``ConfigProto`` nor
``TF_CONFIG`` has a bind address), unauthenticated. The cluster addresses only decide where
workers *connect*. See the README ("What a multi-worker run exposes").
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess

from afternoon.errors import ConfigError

PORT_BASE, PORT_BLOCK, PORT_BLOCKS = 20000, 64, 600  # ports 20000-58399


def free_ports(n: int, host: str = "127.0.0.1") -> list[int]:
    """``n`` distinct ports free on ``host`` now (held together while the kernel picks them)."""
    sockets = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(n)]
    try:
        for sock in sockets:
            sock.bind((host, 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def tf_config(workers: list[str], index: int) -> str:
    """The ``TF_CONFIG`` of worker ``index`` of the cluster ``workers`` (host:port each)."""
    return json.dumps({"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}})


def slurm_tasks() -> int:
    """The number of tasks of the Slurm job step this process is in (0: not in a step)."""
    if "SLURM_PROCID" not in os.environ:
        return 0
    return int(os.environ.get("SLURM_STEP_NUM_TASKS") or os.environ.get("SLURM_NTASKS") or 1)


def slurm_port_base() -> int:
    """This Slurm job's block of ports (see the module's docstring)."""
    job = int(os.environ.get("SLURM_JOB_ID", "0"))
    return PORT_BASE + (job % PORT_BLOCKS) * PORT_BLOCK


def _gpus_on_node() -> int:
    """GPUs Slurm gave this job on this node that CUDA can see (0 on a CPU node, and where a
    GPU is only declared to Slurm, as in the test cluster's fake one)."""
    gpus = int(os.environ.get("SLURM_GPUS_ON_NODE") or 0)
    if gpus == 0 or shutil.which("nvidia-smi") is None:
        return 0
    listed = subprocess.run(["nvidia-smi", "--list-gpus"], capture_output=True, text=True)
    return min(gpus, len(listed.stdout.splitlines())) if listed.returncode == 0 else 0


def resolver(tf):
    """The cluster resolver of this worker: from Slurm inside a job step of several tasks, else
    from ``TF_CONFIG`` (None when it is unset: a worker started on its own)."""
    from tensorflow.python.distribute.cluster_resolver import slurm_cluster_resolver as slurm

    if slurm_tasks() > 1:
        gpus = _gpus_on_node()
        tasks = slurm.expand_tasks_per_node(os.environ["SLURM_STEP_TASKS_PER_NODE"])
        if gpus >= max(tasks):
            return tf.distribute.cluster_resolver.SlurmClusterResolver(
                port_base=slurm_port_base(), gpus_per_node=gpus, gpus_per_task=gpus // max(tasks)
            )
        # A CPU node: one slot per task, no GPU set or announced to the strategy.
        placed = slurm.SlurmClusterResolver(
            port_base=slurm_port_base(), gpus_per_node=max(tasks), gpus_per_task=1,
            auto_set_gpu=False,
        )  # fmt: skip
        return tf.distribute.cluster_resolver.SimpleClusterResolver(
            placed.cluster_spec(), task_type="worker", task_id=placed.task_id,
            num_accelerators={"GPU": 0}, rpc_layer="grpc",
        )  # fmt: skip
    if "TF_CONFIG" in os.environ:
        return tf.distribute.cluster_resolver.TFConfigClusterResolver()
    return None


def check_world(name: str, wanted: int, workers: int) -> None:
    """A one-line error when the job was started as another number of workers than its spec's
    ``distributed.ranks``."""
    if workers != wanted:
        how = "a single process" if workers == 1 else f"{workers} processes"
        raise ConfigError(
            f"architecture {name!r} trains on {wanted} workers (distributed.ranks) but was "
            f"started as {how}: start it with `python -m afternoon.distributed.launch -n "
            f"{wanted} ...` or `srun -n {wanted} ...`"
        )
