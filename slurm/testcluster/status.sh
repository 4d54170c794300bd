#!/usr/bin/env bash
# Show the one-host Slurm test cluster: daemons, nodes, queue. Exit 0 when slurmctld answers and every node is idle
# or allocated (usable), 1 otherwise.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=slurm/testcluster/common.sh
source "$here/common.sh"

ok=0
show() {  # show NAME PIDFILE COMM
    if psc_pid_alive "$2" "$3"; then
        printf '  %-16s running (pid %s)\n' "$1" "$(<"$2")"
    else
        printf '  %-16s stopped\n' "$1"
        ok=1
    fi
}

echo "daemons (state in $PSC_ROOT):"
if psc_munge_answers; then
    who=" (not started by up.sh)"
    [[ ! -f $PSC_ROOT/run/munged.ours ]] || who=" (started by up.sh)"
    printf '  %-16s answers%s\n' munged "$who"
else
    printf '  %-16s not answering\n' munged
    ok=1
fi
show slurmctld "$PSC_ROOT/run/slurmctld.pid" slurmctld
while read -r node; do
    show "slurmd $node" "$PSC_ROOT/run/slurmd-$node.pid" slurmd
done < <(psc_node_names)

if psc_ctld_answers; then
    echo "nodes:"
    sinfo -N -o '  %N %T %c CPUs %m MB %E' 2>&1 || ok=1
    bad=$(sinfo -h -N -o '%N %T' 2>/dev/null | awk '$2 !~ /^(idle|mixed|allocated|completing)$/' || true)
    [[ -z $bad ]] || ok=1
    echo "queue:"
    squeue -o '  %i %j %T %M %R' 2>&1 || true
else
    echo "slurmctld does not answer (scontrol ping)"
    ok=1
fi
exit "$ok"
