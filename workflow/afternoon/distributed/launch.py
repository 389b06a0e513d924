"""The local launcher of a ``multi_worker`` job: N worker processes of one command on this
machine, each with the ``TF_CONFIG`` of a cluster on 127.0.0.1 (ports the kernel hands out free,
so two jobs never share one).

    python -m afternoon.distributed.launch -n 2 python -m afternoon.cli train ...

With ``--private-network`` the launcher first moves into a network namespace of its own with
only a loopback interface (``unshare --net``; as root, or with unprivileged user namespaces):
TensorFlow's gRPC servers, which listen on every interface, are then unreachable from outside it
(MLflow over HTTP too: use the sqlite store, or sync-tracking afterwards).

The workers share the launcher's stdout and stderr. SIGTERM or SIGINT to the launcher is passed
on to every worker (they stop at once, keeping their checkpoint); the workers die with the
launcher if it is killed (SIGKILL). When a worker fails the others are stopped (they would wait
forever for its gradients). Exit status: the first failing worker's, else 0.

``launcher()`` says which command starts a job's processes (this one, ``mpirun``, or a
cluster's ``srun``): the workflow's rules call it.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import shutil
import signal
import subprocess
import sys
import time

from afternoon.distributed.cluster import free_ports, tf_config

GRACE_S = 20  # seconds a worker gets to stop after SIGTERM before it is killed
PRIVATE = "AFTERNOON_PRIVATE_NETWORK"  # set inside the namespace --private-network made

# What starts a job's processes on this machine, by launcher: a multi_worker job's workers, a
# Horovod job's ranks, a search's workers ('': its chief starts them itself).
LOCAL_LAUNCHERS = {
    "worker_launcher": "python -m afternoon.distributed.launch",
    "mpi_launcher": "mpirun --allow-run-as-root --oversubscribe --bind-to none",
    "search_launcher": "",
}


def launcher(name: str, configured: str | None, cluster: str | None, cpus: int, n: int) -> str:
    """The shell prefix that starts a job's ``n`` processes of ``cpus`` cores each, `{cpus}` in
    it replaced and `-n N` appended; '' where the job starts them itself. ``configured``: the
    config key (training.worker_launcher, training.mpi_launcher, searches.launcher), set only to
    override; else ``cluster``: the launcher ``name`` that the executor's profile gives the job
    as a resource (profiles/slurm: srun); else this machine's (``LOCAL_LAUNCHERS``)."""
    chosen = configured or cluster or LOCAL_LAUNCHERS[name]
    return f"{chosen.replace('{cpus}', str(cpus))} -n {n}" if chosen else ""


def _die_with_parent() -> None:  # in the child, before exec: SIGKILL when the launcher dies
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def launch(n: int, command: list[str]) -> int:
    """Run ``command`` as ``n`` workers; their exit status (see the module's docstring)."""
    addresses = [f"127.0.0.1:{port}" for port in free_ports(n)]
    workers = [
        subprocess.Popen(
            command,
            env={**os.environ, "TF_CONFIG": tf_config(addresses, index)},
            preexec_fn=_die_with_parent,
        )  # fmt: skip
        for index in range(n)
    ]

    def forward(signum, frame):
        for worker in workers:
            if worker.poll() is None:
                worker.send_signal(signum)

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, forward)
    failed = None
    while None in (states := [worker.poll() for worker in workers]):
        failed = next((w for w, state in zip(workers, states, strict=True) if state), None)
        if failed is not None:
            _stop(workers)
            break
        time.sleep(0.1)
    failed = failed or next((w for w in workers if w.returncode), None)
    if failed is None:
        return 0
    return failed.returncode if failed.returncode > 0 else 128 - failed.returncode


def _stop(workers: list[subprocess.Popen]) -> None:
    """SIGTERM the workers still running, SIGKILL those still there after GRACE_S."""
    for worker in workers:
        if worker.poll() is None:
            worker.terminate()
    deadline = time.monotonic() + GRACE_S
    for worker in workers:
        try:
            worker.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()


def private_network(argv: list[str]) -> None:
    """Run this launcher again (``argv``) in a new network namespace with only loopback, up."""
    unshare = shutil.which("unshare")
    if unshare is None or shutil.which("ip") is None:
        sys.exit("afternoon: error: --private-network needs unshare (util-linux) and ip (iproute2)")
    user = [] if os.geteuid() == 0 else ["--map-root-user"]
    inner = [sys.executable, "-m", "afternoon.distributed.launch", *argv]
    script = 'ip link set lo up && exec "$@"'
    env = {**os.environ, PRIVATE: "1"}
    os.execve(unshare, [unshare, "--net", *user, "sh", "-c", script, "sh", *inner], env)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m afternoon.distributed.launch")
    parser.add_argument("-n", type=int, required=True, help="number of workers")
    private = "the workers in a network namespace of their own (loopback only)"
    parser.add_argument("--private-network", action="store_true", help=private)
    parser.add_argument("command", nargs=argparse.REMAINDER, help="the command each worker runs")
    args = parser.parse_args(argv)
    if args.n < 1 or not args.command:
        parser.error("give -n N (N >= 1) and a command")
    if args.private_network and not os.environ.get(PRIVATE):
        private_network(sys.argv[1:] if argv is None else argv)
    return launch(args.n, args.command)


if __name__ == "__main__":
    sys.exit(main())
