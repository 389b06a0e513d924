#!/usr/bin/env bash
# Stop the lab cluster started by tests/slurm/start-cluster.sh: cancel its jobs, then end exactly
# the processes whose PIDs the start script recorded in $AFTERNOON_SLURM_DIR/pids (default
# /tmp/afternoon-slurm/pids), each only while it still runs the program recorded for it.
# Nothing else is signalled. It also removes the /etc/slurm/slurm.conf symlink start-cluster.sh
# made (only that symlink). State (logs, accounting database) stays; --purge removes it.
set -euo pipefail

STATE=${AFTERNOON_SLURM_DIR:-/tmp/afternoon-slurm}
PIDS=$STATE/pids
export SLURM_CONF=$STATE/etc/slurm.conf
say() { echo "stop-cluster: $*" >&2; }

purge=false
[[ ${1:-} == --purge ]] && purge=true

# Jobs first (their slurmstepd processes belong to slurmd), while slurmctld still answers.
if [[ -f $PIDS/slurmctld.pid ]] && scontrol ping >/dev/null 2>&1; then
    if [[ -n $(squeue -h -o %i 2>/dev/null) ]]; then
        say "cancelling the cluster's jobs"
        squeue -h -o %i | xargs -r scancel --full --quiet || true
        for _ in $(seq 1 30); do
            [[ -z $(squeue -h -o %i 2>/dev/null) ]] && break
            sleep 1
        done
    fi
fi

# stop NAME PROGRAM: TERM the recorded PID if it still runs PROGRAM, KILL it after 20 s.
stop() {
    local name=$1 program=$2 file=$PIDS/$1.pid pid
    [[ -f $file ]] || return 0
    pid=$(cat "$file")
    if [[ $(cat "/proc/$pid/comm" 2>/dev/null) == "$program" ]]; then
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 1 40); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.5
        done
        if kill -0 "$pid" 2>/dev/null; then
            say "$name ($pid) ignored TERM for 20 s: KILL"
            kill -KILL "$pid" 2>/dev/null || true
        fi
        say "stopped $name ($pid)"
    else
        say "$name ($pid) is not running (any more)"
    fi
    rm -f "$file"
}

stop slurmd slurmd
stop slurmctld slurmctld
stop slurmdbd slurmdbd
stop mariadbd mariadbd
stop munged munged

# The /etc/slurm/slurm.conf symlink start-cluster.sh made (only if it points into this state dir).
if [[ -L /etc/slurm/slurm.conf && $(readlink /etc/slurm/slurm.conf) == "$STATE/etc/slurm.conf" ]]; then
    rm -f /etc/slurm/slurm.conf
fi

if $purge; then
    rm -rf "$STATE"
    say "removed $STATE"
fi
