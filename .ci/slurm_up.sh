#!/usr/bin/env bash
# Start a single-node SLURM on this machine (as root), for the `launcher=slurm` tests (tests/test_slurm.py).
#
# Installs Debian's slurm-wlm and munge if missing, writes a minimal /etc/slurm/slurm.conf (one node with this
# machine's CPUs and a little less than its memory, one default partition `debug`, accounting off), creates the spool
# and log directories, starts munged, slurmctld and slurmd, and waits until `sinfo` shows the node idle.
# Idempotent: a SLURM that already answers with an idle or mixed node is left alone, and a slurm.conf this script did
# not write is never overwritten. Usage: bash .ci/slurm_up.sh [--help]
set -euo pipefail

if [ "${1:-}" = "--help" ] || [ "${1:-}" = "-h" ] || [ "${1:-}" = "help" ]; then
  sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//'
  exit 0
fi

MARK="# written by fine_yolo .ci/slurm_up.sh"
CONF=/etc/slurm/slurm.conf

node_up() { sinfo -h -o '%t' 2>/dev/null | grep -qE '^(idle|mix|alloc)'; }

if command -v sinfo >/dev/null && node_up; then
  echo "slurm_up: SLURM already answers: $(sinfo -h -o '%P %D %t' | tr '\n' ' ')"
  exit 0
fi
if [ "$(id -u)" != 0 ]; then
  echo "slurm_up: needs root (apt-get, munged, slurmctld and slurmd run as root here)" >&2
  exit 1
fi

if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q slurm-wlm munge >/dev/null 2>&1 || { apt-get update -q >/dev/null && \
    apt-get install -y -q slurm-wlm munge >/dev/null; }
fi

node=$(hostname -s)
cpus=$(nproc)
mem=$(free -m | awk '/^Mem:/ {print int($2 * 0.9)}')
if [ -f "$CONF" ] && ! grep -qF "$MARK" "$CONF"; then
  echo "slurm_up: $CONF exists and was not written by this script; using it as it is"
else
  mkdir -p /etc/slurm
  cat > "$CONF" <<EOF
$MARK
ClusterName=fineyolo
SlurmctldHost=$node(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
JobRequeue=1
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
SchedulerParameters=sched_interval=2
DefMemPerCPU=$((mem / cpus))
NodeName=$node NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=$node Default=YES MaxTime=INFINITE State=UP
EOF
fi
mkdir -p /var/spool/slurmctld /var/spool/slurmd /var/log/slurm /run/munge /var/lib/munge /var/log/munge
[ -s /etc/munge/munge.key ] || mungekey -c >/dev/null 2>&1 || mungekey --create
chown munge:munge /etc/munge/munge.key 2>/dev/null || true
chmod 400 /etc/munge/munge.key

pgrep -x munged >/dev/null || munged --force
pgrep -x slurmctld >/dev/null || slurmctld
pgrep -x slurmd >/dev/null || slurmd

for _ in $(seq 60); do
  if node_up; then
    echo "slurm_up: $(sinfo -h -o 'partition %P: %D node(s), %c CPUs, %m MB, %t' | head -1)"
    exit 0
  fi
  state=$(sinfo -h -o '%t' 2>/dev/null | head -1 || true)
  case "$state" in down*|drain*) scontrol update NodeName="$node" State=RESUME 2>/dev/null || true ;; esac
  sleep 1
done
echo "slurm_up: the node did not become idle within 60 s; sinfo says: $(sinfo 2>&1 | tail -n +2)" >&2
tail -n 20 /var/log/slurm/slurmctld.log /var/log/slurm/slurmd.log >&2 || true
exit 1
