#!/usr/bin/env bash
# Start a real single-node Slurm 22.05 "lab cluster" (Debian 12 packages) on 127.0.0.1, as root.
#
#   tests/slurm/start-cluster.sh          start (installs the packages first if missing)
#   tests/slurm/stop-cluster.sh           stop exactly the daemons this script started
#
# Everything lives under one state directory, $AFTERNOON_SLURM_DIR (default /tmp/afternoon-slurm):
#   etc/     slurm.conf, slurmdbd.conf, gres.conf (clients find them through SLURM_CONF)
#   munge/   key, socket, seed        mysql/  MariaDB datadir + socket (no TCP: --skip-networking)
#   log/     one log per daemon       spool/  slurmctld state, slurmd spool
#   pids/    <daemon>.pid for every process this script started (stop-cluster.sh reads these)
#   env      `export SLURM_CONF=...` to source before using sbatch/sacct/snakemake --profile slurm
# The daemons are pointed at the state directory (SLURM_CONF, slurmd/slurmctld -f, munged --socket,
# AuthInfo=socket=...); nothing is written to /etc/munge or /run. One exception: the symlink
# /etc/slurm/slurm.conf -> $STATE/etc/slurm.conf (made only where no slurm.conf exists; removed
# by stop-cluster.sh), because snakemake-executor-plugin-slurm's job step removes every SLURM_*
# variable but the job's identity, SLURM_CONF included, before its `srun`, which then looks in
# /etc/slurm and fails with "Could not establish a configuration source".
#
# The cluster: one node "localhost" (NodeAddr 127.0.0.1) with the machine's cores, 85 % of its
# memory and $AFTERNOON_SLURM_FAKE_GPUS (default 2) fake GPUs (gres gpu:fake:N; their "devices" are
# character devices 1,3, i.e. /dev/null, made under dev/; where mknod is not allowed, one GPU on
# /dev/null itself) so that GPU requests are accepted, scheduled and accounted; two partitions on it, lab-cpu (default) and lab-gpu; slurmdbd + MariaDB
# accounting, because snakemake-executor-plugin-slurm polls job states with sacct; MPI through
# PMIx (`srun --mpi=pmix`). Daemons bind 127.0.0.1 only (CommunicationParameters=NoInAddrAny,
# NoCtldInAddrAny), checked before this script reports success. Ports: 6817 slurmctld, 6818 slurmd,
# 6819 slurmdbd.
#
# Idempotent: when the cluster in the state directory already answers, it says so and exits 0.
# Exit status 2: this machine cannot run it (not root, packages not installable, a slurm.conf of
# its own); 1: it failed (host name not resolving to 127.x, a daemon not coming up: the message
# says which, with its log).
set -euo pipefail

STATE=${AFTERNOON_SLURM_DIR:-/tmp/afternoon-slurm}
CLUSTER=afternoon-lab
ACCOUNT=lab
CPU_PARTITION=lab-cpu
GPU_PARTITION=lab-gpu
PACKAGES=(slurmctld slurmd slurm-client munge libpmix2 slurmdbd mariadb-server openmpi-bin libopenmpi-dev iproute2)
WAIT_S=${AFTERNOON_SLURM_WAIT_S:-60}
FAKE_GPUS=${AFTERNOON_SLURM_FAKE_GPUS:-2}

ETC=$STATE/etc LOG=$STATE/log PIDS=$STATE/pids SPOOL=$STATE/spool
MUNGE=$STATE/munge MYSQL=$STATE/mysql
MUNGE_SOCKET=$MUNGE/munge.socket.2 MYSQL_SOCKET=$MYSQL/mysqld.sock
export SLURM_CONF=$ETC/slurm.conf

say() { echo "start-cluster: $*" >&2; }
unusable() { say "cannot run here: $*"; exit 2; }
die() { say "FAILED: $*"; exit 1; }

# wait_for WHAT LOG COMMAND...: retry COMMAND (quietly) until it succeeds or WAIT_S pass.
wait_for() {
    local what=$1 log=$2 deadline=$((SECONDS + WAIT_S))
    shift 2
    until "$@" >/dev/null 2>&1; do
        if ((SECONDS >= deadline)); then
            [[ -f $log ]] && tail -n 20 "$log" >&2
            die "$what not ready after ${WAIT_S}s (log: $log)"
        fi
        sleep 0.5
    done
}

# launch NAME COMMAND...: run a daemon in the foreground of its own session, record its PID.
launch() {
    local name=$1
    shift
    setsid "$@" </dev/null >>"$LOG/$name.out" 2>&1 &
    echo $! >"$PIDS/$name.pid"
}

# alive NAME: the PID recorded for NAME still runs that program (not a recycled PID).
alive() { [[ -f $PIDS/$1.pid && $(cat "/proc/$(cat "$PIDS/$1.pid")/comm" 2>/dev/null) == "$1" ]]; }

# --- preconditions ---------------------------------------------------------------------------
((EUID == 0)) || unusable "must run as root (the daemons run as root and MariaDB as mysql)"

# srun and sbatch listen for slurmd's calls on the address the host name resolves to: it must be
# loopback (a container's /etc/hosts usually maps its name to its network address).
host=$(uname -n)
addr=$(getent ahostsv4 "$host" | awk 'NR == 1 {print $1}')
[[ $addr == 127.* ]] || die "host name '$host' resolves to '${addr:-nothing}', not 127.x: srun" \
    "would listen there. Map it to loopback first, e.g. echo '127.0.1.1 $host' >>/etc/hosts"

# The plugin's job step runs srun without SLURM_CONF: it must find the configuration in /etc/slurm.
if [[ -L /etc/slurm/slurm.conf && $(readlink /etc/slurm/slurm.conf) == "$ETC/slurm.conf" ]]; then
    :
elif [[ -e /etc/slurm/slurm.conf || -L /etc/slurm/slurm.conf ]]; then
    unusable "/etc/slurm/slurm.conf exists and is not this lab cluster's: not replacing it"
else
    mkdir -p /etc/slurm
    ln -s "$ETC/slurm.conf" /etc/slurm/slurm.conf
fi

if alive slurmctld && alive slurmd && scontrol ping >/dev/null 2>&1; then
    say "already running in $STATE"
    exit 0
fi
# PID files of daemons that are gone (a crash, a reboot) are forgotten; live ones are not ours
# to replace.
for file in "$PIDS"/*.pid; do
    [[ -f $file ]] || continue
    name=$(basename "$file" .pid)
    if alive "$name"; then
        die "$name ($(cat "$file")) of an earlier start still runs: tests/slurm/stop-cluster.sh first"
    fi
    rm -f "$file"
done

missing=()
for pkg in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
    say "installing ${missing[*]}"
    # Package scripts cannot start services here (policy-rc.d), and this script starts them.
    if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -qq --no-install-recommends "${PACKAGES[@]}"; } >"/tmp/afternoon-slurm-apt.log" 2>&1; then
        tail -n 20 /tmp/afternoon-slurm-apt.log >&2
        unusable "apt-get could not install ${missing[*]} (log: /tmp/afternoon-slurm-apt.log)"
    fi
fi

# --- layout and configuration ----------------------------------------------------------------
mkdir -p "$ETC" "$LOG" "$PIDS" "$SPOOL/ctld" "$SPOOL/d" "$MUNGE"
chmod 700 "$MUNGE"

read -r cpus sockets cores threads memory < <(slurmd -C | awk '
    /^NodeName/ { for (i = 1; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
                  print v["CPUs"], v["SocketsPerBoard"], v["CoresPerSocket"], v["ThreadsPerCore"], v["RealMemory"] }')
[[ -n ${memory:-} ]] || die "slurmd -C did not describe this machine"
memory=$((memory * 85 / 100))

# Fake GPU devices: /dev/null's major/minor under names ending in 0..N-1 (Slurm derives
# CUDA_VISIBLE_DEVICES from the trailing number).
gpu_files=/dev/null gpus=1
if ((FAKE_GPUS > 1)); then
    mkdir -p "$STATE/dev"
    made=0
    for ((i = 0; i < FAKE_GPUS; i++)); do
        [[ -c $STATE/dev/fakegpu$i ]] || mknod -m 666 "$STATE/dev/fakegpu$i" c 1 3 2>/dev/null || break
        made=$((made + 1))
    done
    if ((made == FAKE_GPUS)); then
        gpu_files="$STATE/dev/fakegpu[0-$((FAKE_GPUS - 1))]" gpus=$FAKE_GPUS
    else
        say "mknod not permitted: one fake GPU (/dev/null)"
    fi
fi

cat >"$ETC/slurm.conf" <<EOF
# Generated by tests/slurm/start-cluster.sh: a single-node lab cluster on 127.0.0.1.
ClusterName=$CLUSTER
SlurmctldHost=localhost
SlurmctldPort=6817
SlurmdPort=6818
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$MUNGE_SOCKET
# Bind the address the name resolves to (127.0.0.1), never the wildcard (any) address.
CommunicationParameters=NoInAddrAny,NoCtldInAddrAny
StateSaveLocation=$SPOOL/ctld
SlurmdSpoolDir=$SPOOL/d
SlurmctldPidFile=$STATE/run/slurmctld.pid
SlurmdPidFile=$STATE/run/slurmd.pid
SlurmctldLogFile=$LOG/slurmctld.log
SlurmdLogFile=$LOG/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
MailProg=/bin/true
ProctrackType=proctrack/linuxproc
TaskPlugin=task/affinity
MpiDefault=pmix
ReturnToService=2
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
# Without a default, one job without --mem takes the node's whole memory.
DefMemPerCPU=1000
GresTypes=gpu
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=30
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=6819
# With auth/munge this is the munge socket used to talk to slurmdbd (sacct, sacctmgr, slurmctld).
AccountingStoragePass=$MUNGE_SOCKET
AccountingStorageTRES=gres/gpu
AccountingStoreFlags=job_comment
JobCompType=jobcomp/none
InactiveLimit=0
KillWait=10
MinJobAge=300
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$cpus Sockets=$sockets CoresPerSocket=$cores ThreadsPerCore=$threads RealMemory=$memory Gres=gpu:fake:$gpus State=UNKNOWN
PartitionName=$CPU_PARTITION Nodes=localhost Default=YES MaxTime=INFINITE State=UP
PartitionName=$GPU_PARTITION Nodes=localhost MaxTime=INFINITE State=UP
EOF

cat >"$ETC/gres.conf" <<EOF
# Fake GPUs: GPU requests are accepted, scheduled and accounted; there is no device.
AutoDetect=off
NodeName=localhost Name=gpu Type=fake File=$gpu_files
EOF

cat >"$ETC/slurmdbd.conf" <<EOF
# Generated by tests/slurm/start-cluster.sh. MariaDB over its unix socket (MYSQL_UNIX_PORT).
AuthType=auth/munge
AuthInfo=socket=$MUNGE_SOCKET
CommunicationParameters=NoInAddrAny
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort=6819
SlurmUser=root
LogFile=$LOG/slurmdbd.log
PidFile=$STATE/run/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=root
StorageLoc=slurm_acct_db
EOF
chmod 600 "$ETC/slurmdbd.conf"
mkdir -p "$STATE/run"

cat >"$STATE/env" <<EOF
# source this file to use the lab cluster: sbatch, squeue, sacct, snakemake --profile slurm
export SLURM_CONF=$SLURM_CONF
EOF

# --- munge -------------------------------------------------------------------------------------
[[ -f $MUNGE/munge.key ]] || mungekey --create --keyfile="$MUNGE/munge.key" >/dev/null
chmod 600 "$MUNGE/munge.key"
launch munged munged --foreground --force --socket="$MUNGE_SOCKET" --key-file="$MUNGE/munge.key" \
    --pid-file="$MUNGE/munged.pid" --seed-file="$MUNGE/munged.seed" --log-file="$LOG/munged.log"
munge_roundtrip() { munge --socket="$MUNGE_SOCKET" -n | unmunge --socket="$MUNGE_SOCKET"; }
wait_for munged "$LOG/munged.log" munge_roundtrip

# --- MariaDB (unix socket only) ----------------------------------------------------------------
mkdir -p "$MYSQL"
if [[ ! -d $MYSQL/data/mysql ]]; then
    mkdir -p "$MYSQL/data"
    chown -R mysql:mysql "$MYSQL"
    mariadb-install-db --no-defaults --user=mysql --datadir="$MYSQL/data" \
        --auth-root-authentication-method=socket --skip-test-db >"$LOG/mariadb-install.log" 2>&1 ||
        die "mariadb-install-db failed (log: $LOG/mariadb-install.log)"
fi
chown -R mysql:mysql "$MYSQL"
launch mariadbd mariadbd --no-defaults --user=mysql --datadir="$MYSQL/data" \
    --socket="$MYSQL_SOCKET" --pid-file="$MYSQL/mariadbd.pid" --skip-networking \
    --log-error="$LOG/mariadbd.log" --innodb-buffer-pool-size=64M
wait_for mariadbd "$LOG/mariadbd.log" mariadb-admin --no-defaults --socket="$MYSQL_SOCKET" ping
export MYSQL_UNIX_PORT=$MYSQL_SOCKET

# --- slurmdbd, accounts, slurmctld, slurmd -----------------------------------------------------
launch slurmdbd slurmdbd -D
wait_for slurmdbd "$LOG/slurmdbd.log" sacctmgr -n list cluster

sacctmgr -i -Q add cluster "$CLUSTER" >/dev/null 2>&1 || true
sacctmgr -i -Q add account "$ACCOUNT" cluster="$CLUSTER" description="afternoon lab" \
    organization=afternoon >/dev/null 2>&1 || true
sacctmgr -i -Q add user root account="$ACCOUNT" defaultaccount="$ACCOUNT" cluster="$CLUSTER" \
    >/dev/null 2>&1 || true
sacctmgr -n -P list association cluster="$CLUSTER" user=root format=account | grep -qx "$ACCOUNT" ||
    die "sacctmgr did not record user root in account $ACCOUNT (log: $LOG/slurmdbd.log)"

launch slurmctld slurmctld -D -f "$SLURM_CONF"
wait_for slurmctld "$LOG/slurmctld.log" scontrol ping

launch slurmd slurmd -D -N localhost -f "$SLURM_CONF"
node_idle() { sinfo -h -n localhost -o %t | grep -qx idle; }
wait_for slurmd "$LOG/slurmd.log" node_idle

# --- loopback only -----------------------------------------------------------------------------
listeners=$(ss -Hltn "( sport = :6817 or sport = :6818 or sport = :6819 )" | awk '{print $4}')
for port in 6817 6818 6819; do
    grep -q ":$port\$" <<<"$listeners" || die "nothing listens on port $port"
done
if grep -v '^127\.' <<<"$listeners" | grep -q .; then
    die "a Slurm daemon listens beyond loopback: $(tr '\n' ' ' <<<"$listeners")"
fi

say "up in ${SECONDS}s: cluster $CLUSTER, partitions $CPU_PARTITION (default) + $GPU_PARTITION," \
    "account $ACCOUNT, $cpus CPUs, ${memory} MB, gpu:fake:$gpus; listening on $(tr '\n' ' ' <<<"$listeners")"
say "use it: source $STATE/env"
