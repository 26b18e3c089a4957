#!/usr/bin/env bash
# A two-node Slurm cluster on this one machine, to try launch/slurm/tag_ray.sbatch without a real cluster:
# munged, slurmctld and two slurmd (nodes n1 and n2) as root, without systemd (Debian's slurm-wlm and munge:
# `apt-get install -y slurm-wlm munge`, or `bash scripts/setup.sh --slurm`).
#
#   bash scripts/slurm_local.sh start    # idempotent: a running cluster is left as it is
#   export SLURM_CONF=/tmp/tag-slurm/slurm.conf   # (start prints it) then sbatch, squeue, sacct as usual
#   bash scripts/slurm_local.sh stop     # every daemon it started is gone when it returns (exit 1 if not)
#   bash scripts/slurm_local.sh status
#
# TAG_SLURM_DIR (default /tmp/tag-slurm) holds the config, state, logs and pid files; TAG_SLURM_CPUS the CPUs of
# each node (default: all of this machine's, so two jobs may share them: fine for a try, not for measurements);
# TAG_SLURM_PORT (slurmctld, default 6817) and TAG_SLURM_NODE_PORTS (the two slurmd, default "6818 6819").
set -euo pipefail

DIR=${TAG_SLURM_DIR:-/tmp/tag-slurm}
CPUS=${TAG_SLURM_CPUS:-$(nproc)}
NODES=(n1 n2)
CONF=$DIR/slurm.conf

die() { echo "slurm_local: $*" >&2; exit 1; }

pid_alive() { [[ -f $1 ]] && kill -0 "$(cat "$1" 2>/dev/null)" 2>/dev/null; }

write_conf() {
    local port=${TAG_SLURM_PORT:-6817} i=0
    local -a node_ports
    read -r -a node_ports <<< "${TAG_SLURM_NODE_PORTS:-6818 6819}"
    mkdir -p "$DIR/state" "$DIR/log" "$DIR/munge"
    cat > "$CONF" <<EOF
# written by scripts/slurm_local.sh: two nodes on one machine
ClusterName=tag
SlurmctldHost=localhost
SlurmctldPort=$port
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$DIR/munge/munge.socket
CredType=cred/munge
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool-%n
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd-%n.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd-%n.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
MpiDefault=none
ReturnToService=2
SlurmdTimeout=30
InactiveLimit=0
KillWait=5
EOF
    for n in "${NODES[@]}"; do
        echo "NodeName=$n NodeHostname=localhost NodeAddr=127.0.0.1 Port=${node_ports[$i]} CPUs=$CPUS State=UNKNOWN" >> "$CONF"
        i=$((i + 1))
    done
    echo "PartitionName=debug Nodes=$(IFS=,; echo "${NODES[*]}") Default=YES MaxTime=INFINITE State=UP OverSubscribe=YES" >> "$CONF"
}

start() {
    command -v slurmctld >/dev/null && command -v munged >/dev/null \
        || die "slurmctld or munged is missing: apt-get install -y slurm-wlm munge (or bash scripts/setup.sh --slurm)"
    [[ $(id -u) == 0 ]] || die "the daemons run as root here (no systemd): run as root"
    mkdir -p "$DIR"
    [[ -f $CONF ]] && pid_alive "$DIR/slurmctld.pid" || write_conf  # a running cluster keeps its config
    if [[ ! -f $DIR/munge/munge.key ]]; then
        dd if=/dev/urandom of="$DIR/munge/munge.key" bs=1024 count=1 status=none
        chmod 0400 "$DIR/munge/munge.key"
    fi
    chmod 0700 "$DIR/munge"
    if ! pid_alive "$DIR/munged.pid"; then
        munged --force --key-file="$DIR/munge/munge.key" --socket="$DIR/munge/munge.socket" \
            --pid-file="$DIR/munged.pid" --log-file="$DIR/log/munged.log" --seed-file="$DIR/munge/seed"
    fi
    export SLURM_CONF=$CONF
    if ! pid_alive "$DIR/slurmctld.pid"; then
        slurmctld -i -f "$CONF"  # -i: ignore state left by an earlier cluster in $DIR
    fi
    for n in "${NODES[@]}"; do
        pid_alive "$DIR/slurmd-$n.pid" || slurmd -N "$n" -f "$CONF"
    done
    local deadline=$((SECONDS + 60))
    until [[ $(sinfo -h -N -o '%T' 2>/dev/null | grep -cE '^(idle|mixed|allocated)') == "${#NODES[@]}" ]]; do
        (( SECONDS < deadline )) || { sinfo -N 2>&1 >&2 || true; die "the nodes did not come up within 60 s (logs: $DIR/log)"; }
        sleep 0.5
    done
    echo "slurm_local: nodes ${NODES[*]} up; export SLURM_CONF=$CONF"
}

daemon_pids() {
    local f
    for f in "$DIR"/slurmd-*.pid "$DIR/slurmctld.pid" "$DIR/munged.pid"; do
        pid_alive "$f" && cat "$f" 2>/dev/null
    done
    return 0
}

stop() {
    [[ -d $DIR ]] || { echo "slurm_local: nothing to stop ($DIR does not exist)"; return 0; }
    if [[ -f $CONF ]] && pid_alive "$DIR/slurmctld.pid"; then
        SLURM_CONF=$CONF scancel --full --user=root 2>/dev/null || true  # jobs first: their steps end with them
    fi
    local pids
    pids=$(daemon_pids)
    [[ -z $pids ]] || kill $pids 2>/dev/null || true
    local deadline=$((SECONDS + 20))
    while [[ -n $(daemon_pids) ]] && (( SECONDS < deadline )); do sleep 0.2; done
    pids=$(daemon_pids)
    [[ -z $pids ]] || { kill -9 $pids 2>/dev/null || true; sleep 0.5; }
    [[ -z $(daemon_pids) ]] || die "daemons still running: $(daemon_pids)"
    rm -f "$DIR"/*.pid
    echo "slurm_local: stopped"
}

status() {
    local pids
    pids=$(daemon_pids)
    if [[ -z $pids ]]; then echo "slurm_local: not running"; return 3; fi
    echo "slurm_local: running (pids $(echo $pids)); SLURM_CONF=$CONF"
    SLURM_CONF=$CONF sinfo -N || true
}

case ${1:-} in
    start) start ;;
    stop) stop ;;
    status) status ;;
    *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
