#!/usr/bin/env bash
# A real one-node SLURM cluster on the loopback interface, for the launcher tests.
#
#   tests/launch/slurm_cluster.sh start STATE_DIR   # prints: SLURM_CONF=STATE_DIR/slurm.conf
#   tests/launch/slurm_cluster.sh stop STATE_DIR
#
# Needs root and Debian's slurm-wlm and munge packages (apt-get install slurm-wlm munge).
# Every address is 127.0.0.1 (SlurmctldHost=NAME(127.0.0.1), NodeAddr=127.0.0.1); the node
# declares 8 CPUs whatever the machine has (SlurmdParameters=config_overrides) so that
# several tiny test jobs run at once on a small machine.
set -euo pipefail

cmd=${1:?usage: slurm_cluster.sh start|stop STATE_DIR}
state=${2:?usage: slurm_cluster.sh start|stop STATE_DIR}

stop() {
    # end this cluster's jobs first, so that no job step outlives its slurmd
    if [[ -f "$state/slurmctld.pid" ]]; then
        SLURM_CONF=$state/slurm.conf scancel --quiet --full "--user=$(id -un)" 2>/dev/null || true
        for _ in $(seq 50); do
            [[ -z $(SLURM_CONF=$state/slurm.conf squeue -h 2>/dev/null) ]] && break
            sleep 0.2
        done
    fi
    for name in slurmd slurmctld; do
        if [[ -f "$state/$name.pid" ]]; then
            pid=$(cat "$state/$name.pid")
            kill "$pid" 2>/dev/null || true
            for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
            kill -9 "$pid" 2>/dev/null || true
            rm -f "$state/$name.pid"
        fi
    done
}

if [[ $cmd == stop ]]; then
    stop
    exit 0
fi
[[ $cmd == start ]] || { echo "unknown command $cmd (start or stop)" >&2; exit 2; }
[[ $(id -u) == 0 ]] || { echo "needs root" >&2; exit 3; }
for tool in munged slurmctld slurmd sbatch; do
    command -v "$tool" >/dev/null || { echo "missing $tool (apt-get install slurm-wlm munge)" >&2; exit 3; }
done

mkdir -p "$state/spool" "$state/ctld"
node=$(hostname -s)
# munge: one daemon per machine, shared by every cluster started here (also by other test
# sessions at the same time): started unless it answers already, and left running
if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
    mkdir -p /run/munge /var/log/munge /var/lib/munge
    chown munge:munge /run/munge /var/log/munge /var/lib/munge
    [[ -f /etc/munge/munge.key ]] || runuser -u munge -- mungekey --create
    runuser -u munge -- /usr/sbin/munged
    for _ in $(seq 50); do munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break; sleep 0.1; done
fi

read -r ctld_port slurmd_port < <(python3 - <<'EOF'
import socket
ports = []
socks = []
for _ in range(2):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
    ports.append(s.getsockname()[1])
print(*ports)
EOF
)
cat >"$state/slurm.conf" <<EOF
ClusterName=cbtest
SlurmctldHost=$node(127.0.0.1)
SlurmctldPort=$ctld_port
SlurmdPort=$slurmd_port
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$state/ctld
SlurmdSpoolDir=$state/spool
SlurmctldPidFile=$state/slurmctld.pid
SlurmdPidFile=$state/slurmd.pid
SlurmctldLogFile=$state/slurmctld.log
SlurmdLogFile=$state/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SlurmdParameters=config_overrides
MpiDefault=none
ReturnToService=2
JobRequeue=1
KillWait=10
SchedulerParameters=defer_batch
NodeName=$node NodeAddr=127.0.0.1 CPUs=8 RealMemory=8000 State=UNKNOWN
PartitionName=test Nodes=$node Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
EOF
export SLURM_CONF=$state/slurm.conf
/usr/sbin/slurmctld -c -f "$SLURM_CONF"
/usr/sbin/slurmd -f "$SLURM_CONF"
for _ in $(seq 100); do
    if sinfo -h -o %t 2>/dev/null | grep -qE '^(idle|mix|alloc)'; then
        echo "SLURM_CONF=$SLURM_CONF"
        exit 0
    fi
    sleep 0.2
done
echo "slurm did not come up; see $state/slurmctld.log and $state/slurmd.log" >&2
stop
exit 1
