#!/usr/bin/env bash
# Tear the one-host Slurm test cluster down (idempotent; run as root): cancel jobs, stop every slurmd, slurmctld, and
# munged if up.sh started it (by pid file, never by name), remove our /etc/hosts line and slurm.conf.
# Keeps $PROXLAB_SLURM_ROOT/log for inspection (up.sh wipes it). Packages stay installed.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=slurm/testcluster/common.sh
source "$here/common.sh"

t0=$(date +%s.%N)
psc_require_root

psc_stop_daemons 1
psc_hosts_remove
if [[ -f $PSC_CONF ]] && psc_conf_is_ours; then
    rm -f "$PSC_CONF"
fi
if [[ -f $PSC_GRES_CONF ]] && grep -q "$PSC_MARK" "$PSC_GRES_CONF"; then
    rm -f "$PSC_GRES_CONF"
fi
rm -rf "${PSC_ROOT:?}/state" "${PSC_ROOT:?}/dev"

t1=$(date +%s.%N)
psc_log "down in $(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.1f", b - a}') s (logs kept in $PSC_ROOT/log)"
