#!/usr/bin/env bash
# A single-node SLURM (munge, slurmctld, slurmd) on this machine, for tests/test_slurm.py.
#
# Idempotent: when SLURM already answers with an idle node, nothing is changed (unless it runs with
# a slurm.conf written by an older version of this script: then the daemons are restarted with the
# current one). Otherwise the Debian packages are installed (apt-get), a munge key and
# /etc/slurm/slurm.conf are written (an existing slurm.conf not written by this script is never
# replaced) and the daemons are started.
# State, spool, pid and log files live under $FASTSCAN_SLURM_STATE (default /var/tmp/fastscan-slurm).
#
# Exit status: 0 ready (the last line of stdout is the default partition), 77 this machine cannot
# host it (not root, no apt-get, install failed, a foreign SLURM config), anything else: the
# daemons did not come up (their logs are printed).
set -uo pipefail

STATE=${FASTSCAN_SLURM_STATE:-/var/tmp/fastscan-slurm}
CONF=/etc/slurm/slurm.conf
MARKER="# written by fastscan tests/slurm/setup_slurm.sh"
PARTITION=fastscan
NODE=$(hostname -s)

cannot() {
    echo "cannot set up SLURM: $*" >&2
    exit 77
}

log() {
    echo "setup_slurm: $*" >&2
}

default_partition() {
    # sinfo marks the default partition with a trailing '*'.
    sinfo -h -o '%P' 2>/dev/null | sed -n 's/\*$//p' | head -n 1
}

node_ready() {
    # At least one node idle (or running jobs): ready to take work.
    sinfo -h -N -r -o '%T' 2>/dev/null | grep -Eq '^(idle|mixed|allocated|completing)$'
}

# The configuration this script runs SLURM with. The node offers at least 4 CPUs even on a
# smaller machine: the test runs up to 4 one-CPU jobs at once (a stage's two FOV jobs beside a
# slide's two part jobs), so that whether jobs can run side by side depends on the workflow and
# the plugin, not on the size of the test machine. Memory (90 % of the machine's) is not inflated.
write_conf() {
    local cpus mem_mb
    cpus=$(nproc)
    [ "$cpus" -ge 4 ] || cpus=4
    mem_mb=$(awk '/^MemTotal:/ {print int($2 / 1024 * 0.9)}' /proc/meminfo)
    cat >"$1" <<EOF
$MARKER
ClusterName=fastscan
SlurmctldHost=$NODE(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
# Finished jobs stay visible to squeue/scontrol for an hour: there is no accounting (sacct).
MinJobAge=3600
ReturnToService=2
# Trust the node line below rather than the detected sockets/cores layout.
SlurmdParameters=config_overrides
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/spool
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
SlurmctldLogFile=$STATE/slurmctld.log
SlurmdLogFile=$STATE/slurmd.log
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=$PARTITION Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF
}
new_conf=$(mktemp)
trap 'rm -f "$new_conf"' EXIT
write_conf "$new_conf"

if command -v sinfo >/dev/null && scontrol ping 2>/dev/null | grep -q 'is UP' && node_ready; then
    if [ -e "$CONF" ] && grep -qF "$MARKER" "$CONF" && ! cmp -s "$new_conf" "$CONF"; then
        # Node definitions are read at start: stop both daemons, they are started again below.
        log "SLURM runs with an older slurm.conf of this script, restarting it with the current one"
        scontrol shutdown >/dev/null 2>&1 || true
        for _ in $(seq 30); do
            if ! scontrol ping 2>/dev/null | grep -q 'is UP' \
                && ! { [ -s "$STATE/slurmd.pid" ] && kill -0 "$(cat "$STATE/slurmd.pid")" 2>/dev/null; }; then
                break
            fi
            sleep 1
        done
    else
        log "SLURM is already up, reusing it"
        default_partition
        exit 0
    fi
fi

[ "$(id -u)" -eq 0 ] || cannot "not running as root (uid $(id -u))"

if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null \
    || ! command -v sinfo >/dev/null || ! command -v munged >/dev/null; then
    command -v apt-get >/dev/null || cannot "apt-get not found and SLURM is not installed"
    log "installing slurmctld slurmd slurm-client munge with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    apt-get -o DPkg::Lock::Timeout=300 update -qq >&2 || cannot "apt-get update failed"
    apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends \
        slurmctld slurmd slurm-client munge >&2 || cannot "apt-get install of the SLURM packages failed"
fi

if [ -e "$CONF" ] && ! grep -qF "$MARKER" "$CONF"; then
    cannot "$CONF exists and was not written by this script; not replacing a site configuration"
fi

# munge: one key shared by the controller and the node daemon.
mkdir -p /etc/munge /var/lib/munge /var/log/munge /run/munge
if [ ! -s /etc/munge/munge.key ]; then
    dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
fi
chown -R munge:munge /etc/munge /var/lib/munge /var/log/munge /run/munge 2>/dev/null || true
chmod 400 /etc/munge/munge.key
if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
    log "starting munged"
    munged --force </dev/null >/dev/null 2>&1 || true
fi

mkdir -p "$STATE/ctld" "$STATE/spool" /etc/slurm
if ! cmp -s "$new_conf" "$CONF"; then
    install -m 644 "$new_conf" "$CONF"
    # Daemons started with an older version of this file must re-read it.
    scontrol reconfigure >/dev/null 2>&1 || true
fi

if ! scontrol ping 2>/dev/null | grep -q 'is UP'; then
    log "starting slurmctld"
    slurmctld </dev/null >>"$STATE/start.log" 2>&1
fi
if ! { [ -s "$STATE/slurmd.pid" ] && kill -0 "$(cat "$STATE/slurmd.pid")" 2>/dev/null; }; then
    log "starting slurmd"
    slurmd </dev/null >>"$STATE/start.log" 2>&1
fi

for _ in $(seq 60); do
    if node_ready; then
        log "node $NODE is ready"
        sinfo >&2
        default_partition
        exit 0
    fi
    # A node left down or drained by an earlier start takes work again.
    if sinfo -h -N -o '%T' 2>/dev/null | grep -Eq '^(down|drain)'; then
        scontrol update NodeName="$NODE" State=RESUME >/dev/null 2>&1 || true
    fi
    sleep 1
done

log "the node did not become idle within 60 s"
sinfo >&2 || true
for f in "$STATE/start.log" "$STATE/slurmctld.log" "$STATE/slurmd.log"; do
    [ -f "$f" ] && { echo "--- $f" >&2; tail -n 30 "$f" >&2; }
done
exit 1
