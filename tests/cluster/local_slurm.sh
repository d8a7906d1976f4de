#!/usr/bin/env bash
# A real SLURM cluster on this one machine, for the test suite (tests/test_slurm_cluster.py):
# Debian's slurmctld + slurmd 22.05 and a munged of its own, all on 127.0.0.1, this host being
# both the controller and the only compute node. The node declares GPUs as a generic resource
# the scheduler counts (GresTypes=gpu, Gres=gpu:N), so `--gpus=1` requests are scheduled and
# recorded on a machine without GPUs. Slurm 22.05 drops a GPU without a device file from the
# node ("Removing file-less GPU") and wants a character device, so gres.conf names N links to
# /dev/null under $CFQA_SLURM_DIR/dev: Slurm allocates them and sets CUDA_VISIBLE_DEVICES in the job as on a
# real GPU node, and CUDA finds no device behind it. Two partitions over the node: `cpu` (the
# default) and `gpu`.
#
#   tests/cluster/local_slurm.sh start    # configure and start (idempotent); prints the export line
#   tests/cluster/local_slurm.sh stop     # stop the daemons this script started
#   tests/cluster/local_slurm.sh status   # exit 0 when the node answers and takes jobs
#
# Needs root (slurmd starts jobs as their user) and, from Debian bookworm:
#   apt-get install -y --no-install-recommends slurmctld slurmd slurm-client munge
# No systemd: the daemons are started directly. Everything lives under $CFQA_SLURM_DIR
# (configuration, state, logs, munge key and socket); /etc/slurm/slurm.conf, where Slurm's
# commands look by default, is a link to its slurm.conf. The link is needed: the Snakemake
# job step runs `srun` with every SLURM_* variable removed, SLURM_CONF included. An
# /etc/slurm/slurm.conf of another cluster is left alone and the script stops.
# No accounting daemon: the Snakemake SLURM executor polls job states with squeue when sacct
# has no database behind it, and MinJobAge keeps finished jobs visible to squeue and
# `scontrol show job` for an hour.
set -euo pipefail

DIR=${CFQA_SLURM_DIR:-/var/lib/cfqa-slurm}
GPUS=${CFQA_SLURM_GPUS:-2}
CONF=$DIR/slurm.conf
SYSTEM_CONF=/etc/slurm/slurm.conf
MUNGE_SOCKET=$DIR/munge/munge.socket
NODE=$(hostname -s)
export SLURM_CONF=$CONF

die() { echo "local_slurm.sh: $*" >&2; exit 1; }

running() {  # running PIDFILE: the pid in the file is alive
    [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null
}

node_state() {
    sinfo --noheader --responding --nodes "$NODE" --format '%T' 2>/dev/null | head -n 1
}

write_config() {
    # The node as slurmd measures it (CPUs, memory): declaring more than the machine has
    # would drain the node.
    local measured cpus memory
    measured=$(slurmd -C | head -n 1)
    cpus=$(sed -n 's/.*CPUs=\([0-9]*\).*/\1/p' <<<"$measured")
    memory=$(sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' <<<"$measured")
    [ -n "$cpus" ] && [ -n "$memory" ] || die "slurmd -C gave no CPUs or RealMemory: $measured"
    mkdir -p "$DIR/state" "$DIR/spool" "$DIR/log"
    cat >"$CONF.tmp" <<EOF
# Written by tests/cluster/local_slurm.sh: one host, controller and compute node, on 127.0.0.1.
ClusterName=cfqa-local
SlurmctldHost=$NODE(127.0.0.1)
SlurmctldPort=6817
SlurmdPort=6818
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$MUNGE_SOCKET
SlurmUser=root
SlurmdUser=root
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
# No cgroups in a container without systemd: processes tracked through /proc, no binding.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
# cons_tres schedules --gpus requests and counts cores and memory.
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
GresTypes=gpu
ReturnToService=2
# Finished jobs stay in squeue --states=all and scontrol show job for an hour.
MinJobAge=3600
InactiveLimit=0
KillWait=10
Waittime=0
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$memory Gres=gpu:$GPUS State=UNKNOWN
PartitionName=cpu Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
PartitionName=gpu Nodes=$NODE MaxTime=INFINITE State=UP
EOF
    # Stand-in device files (character devices, as Slurm requires): the scheduler allocates
    # them; nothing is bound (no cgroups).
    mkdir -p "$DIR/dev"
    local last=$((GPUS - 1))
    for index in $(seq 0 "$last"); do ln -sfn /dev/null "$DIR/dev/gpu$index"; done
    printf 'NodeName=%s Name=gpu File=%s/dev/gpu[0-%s]\n' "$NODE" "$DIR" "$last" >"$DIR/gres.conf.tmp"
    mv "$DIR/gres.conf.tmp" "$DIR/gres.conf"
    mv "$CONF.tmp" "$CONF"
    if [ -e "$SYSTEM_CONF" ] && [ "$(readlink "$SYSTEM_CONF")" != "$CONF" ]; then
        die "$SYSTEM_CONF exists and is not this cluster's (a link to $CONF): not replacing it"
    fi
    mkdir -p "$(dirname "$SYSTEM_CONF")"
    ln -sfn "$CONF" "$SYSTEM_CONF"
}

start_munge() {
    mkdir -p "$DIR/munge"
    chmod 0700 "$DIR/munge"
    [ -s "$DIR/munge/munge.key" ] || mungekey --create --keyfile "$DIR/munge/munge.key"
    if ! running "$DIR/munge/munged.pid"; then
        # Root owns this munged's files, so it runs as root (--force): it only signs and
        # checks this cluster's credentials, on its own socket.
        munged --force --socket "$MUNGE_SOCKET" --key-file "$DIR/munge/munge.key" \
            --pid-file "$DIR/munge/munged.pid" --log-file "$DIR/log/munged.log" \
            --seed-file "$DIR/munge/munged.seed"
    fi
    for _ in $(seq 50); do
        munge --socket "$MUNGE_SOCKET" --no-input | unmunge --socket "$MUNGE_SOCKET" >/dev/null 2>&1 && return
        sleep 0.2
    done
    die "munged did not answer on $MUNGE_SOCKET (log: $DIR/log/munged.log)"
}

start() {
    [ "$(id -u)" = 0 ] || die "must run as root (slurmd starts jobs as their user)"
    for tool in slurmctld slurmd sinfo scontrol munged mungekey; do
        command -v "$tool" >/dev/null || die "$tool not found: apt-get install -y --no-install-recommends slurmctld slurmd slurm-client munge"
    done
    write_config
    start_munge
    running "$DIR/slurmctld.pid" || slurmctld -f "$CONF"
    for _ in $(seq 100); do scontrol ping >/dev/null 2>&1 && break; sleep 0.2; done
    scontrol ping >/dev/null 2>&1 || die "slurmctld did not answer (log: $DIR/log/slurmctld.log)"
    # A running controller reads a rewritten slurm.conf only when told.
    scontrol reconfigure >/dev/null
    running "$DIR/slurmd.pid" || slurmd -f "$CONF" -N "$NODE"
    local state=""
    for _ in $(seq 150); do
        state=$(node_state)
        case $state in
            idle*|mixed*|allocated*|completing*) echo "export SLURM_CONF=$CONF"; return ;;
            down*|drain*|fail*) scontrol update NodeName="$NODE" State=RESUME >/dev/null 2>&1 || true ;;
        esac
        sleep 0.2
    done
    die "node $NODE is '$state', not idle (logs: $DIR/log/)"
}

stop() {
    local pidfile
    [ "$(readlink "$SYSTEM_CONF" 2>/dev/null)" != "$CONF" ] || rm -f "$SYSTEM_CONF"
    for pidfile in "$DIR/slurmd.pid" "$DIR/slurmctld.pid" "$DIR/munge/munged.pid"; do
        if running "$pidfile"; then
            kill "$(cat "$pidfile")"
            for _ in $(seq 50); do running "$pidfile" || break; sleep 0.2; done
        fi
    done
}

status() {
    [ -s "$CONF" ] || return 1
    case $(node_state) in
        idle*|mixed*|allocated*|completing*) echo "export SLURM_CONF=$CONF" ;;
        *) return 1 ;;
    esac
}

case ${1:-start} in
    start) start ;;
    stop) stop ;;
    status) status ;;
    *) die "usage: $0 start|stop|status" ;;
esac
