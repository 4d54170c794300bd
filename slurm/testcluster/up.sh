#!/usr/bin/env bash
# Bring the one-host Slurm test cluster up (idempotent; run as root): install the Debian packages if missing, stop
# whatever a previous up.sh started, wipe state, start munged, slurmctld and one slurmd per node, wait until every node
# is idle. Prints a summary on success; on failure prints why (and the daemon logs) and exits non-zero:
#   20  Slurm cannot be had here (not root, not Debian/apt, install failed): callers (tests) may skip
#   1   anything else (a bug or a broken host): do not skip
# Knobs: see common.sh. Teardown: down.sh.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=slurm/testcluster/common.sh
source "$here/common.sh"

t0=$(date +%s.%N)
psc_require_root

[[ $PSC_NODES =~ ^[1-9][0-9]*$ ]] || psc_die "PROXLAB_SLURM_NODES must be a positive integer, got '$PSC_NODES'"
[[ $PSC_GPUS =~ ^(0|[1-9][0-9]*)$ ]] || psc_die "PROXLAB_SLURM_GPUS must be a non-negative integer, got '$PSC_GPUS'"

# --- 1. packages -------------------------------------------------------------------------------------------------
missing=()
for pkg in "${PSC_PACKAGES[@]}"; do
    if [[ $(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true) != "install ok installed" ]]; then
        missing+=("$pkg")
    fi
done
if ((${#missing[@]})); then
    [[ ${PROXLAB_SLURM_NO_INSTALL:-0} != 1 ]] ||
        psc_die "missing packages: ${missing[*]} (PROXLAB_SLURM_NO_INSTALL=1 forbids installing)" "$PSC_EXIT_UNAVAILABLE"
    command -v apt-get >/dev/null 2>&1 ||
        psc_die "missing packages: ${missing[*]}, and no apt-get here (a Debian 12 host is expected)" "$PSC_EXIT_UNAVAILABLE"
    psc_log "installing ${missing[*]}"
    apt_log=$(mktemp)
    apt_install() {
        apt-get install -y -q --no-install-recommends -o DPkg::Lock::Timeout=300 -o Dpkg::Options::=--force-confdef \
            -o Dpkg::Options::=--force-confold "${missing[@]}" >>"$apt_log" 2>&1
    }
    # Package lists may be absent or stale: install first (fast when the lists are fine), else update and retry.
    if ! compgen -G '/var/lib/apt/lists/*_Packages*' >/dev/null || ! apt_install; then
        if ! { apt-get update -q -o DPkg::Lock::Timeout=300 >>"$apt_log" 2>&1 && apt_install; }; then
            tail -n 30 "$apt_log" >&2
            rm -f "$apt_log"
            psc_die "apt-get could not install: ${missing[*]}" "$PSC_EXIT_UNAVAILABLE"
        fi
    fi
    rm -f "$apt_log"
fi
for bin in munged slurmctld slurmd sbatch tini; do
    command -v "$bin" >/dev/null 2>&1 || psc_die "$bin not found on PATH after install" "$PSC_EXIT_UNAVAILABLE"
done

# On a systemd host, Debian's units would start their own daemons once slurm.conf exists (and collide with ours).
if [[ -d /run/systemd/system ]] && command -v systemctl >/dev/null 2>&1; then
    systemctl disable --now slurmctld slurmd >/dev/null 2>&1 || true
fi

if ! psc_conf_is_ours && [[ ${PROXLAB_SLURM_FORCE:-0} != 1 ]]; then
    psc_die "$PSC_CONF exists and was not written by this recipe (a real Slurm setup?); refusing to overwrite it. Set PROXLAB_SLURM_FORCE=1 to override."
fi

# --- 2. stop what a previous up started; fresh state -------------------------------------------------------------
psc_stop_daemons 0
rm -rf "$PSC_ROOT/state" "$PSC_ROOT/log"
install -d -m 0755 "$PSC_ROOT" "$PSC_ROOT/state" "$PSC_ROOT/state/ctld" "$PSC_ROOT/log" "$PSC_ROOT/run"
mapfile -t nodes < <(psc_node_names)
for node in "${nodes[@]}"; do install -d -m 0755 "$PSC_ROOT/state/$node"; done

# --- 3. munge ----------------------------------------------------------------------------------------------------
if psc_munge_answers; then
    : # reuse the running munged (ours from an earlier up, or the host's); down.sh stops it only if ours
else
    if [[ ! -s /etc/munge/munge.key ]]; then
        install -d -m 0700 -o munge -g munge /etc/munge
        mungekey --create --keyfile=/etc/munge/munge.key >/dev/null
    fi
    chown munge:munge /etc/munge/munge.key
    chmod 0600 /etc/munge/munge.key
    install -d -o munge -g munge -m 0755 /run/munge
    for d in /var/log/munge /var/lib/munge; do
        [[ -d $d ]] || install -d -o munge -g munge -m 0700 "$d"
    done
    runuser -u munge -- /usr/sbin/munged </dev/null >/dev/null 2>&1 ||
        psc_die "munged failed to start: $(tail -n 5 /var/log/munge/munged.log 2>/dev/null)"
    touch "$PSC_ROOT/run/munged.ours"
    for ((i = 0; i < 50; i++)); do
        psc_munge_answers && break
        sleep 0.1
    done
    psc_munge_answers || psc_die "munged does not answer 'munge -n | unmunge' after 5 s: $(tail -n 5 /var/log/munge/munged.log 2>/dev/null)"
fi

# --- 4. slurm.conf and /etc/hosts --------------------------------------------------------------------------------
ncpu=$(nproc)
cpus=${PROXLAB_SLURM_CPUS:-$((ncpu < 2 ? 2 : ncpu))}
[[ $cpus =~ ^[1-9][0-9]*$ ]] || psc_die "PROXLAB_SLURM_CPUS must be a positive integer, got '$cpus'"
mem_kb=$(awk '/^MemTotal:/ {print $2}' /proc/meminfo)
mem_mb=$((mem_kb * 9 / 10 / 1024 / PSC_NODES))   # must not exceed what slurmd detects, or the node is INVAL
((mem_mb >= 1)) || mem_mb=1

install -d -m 0755 /etc/slurm
tmp_conf=$(mktemp /etc/slurm/.slurm.conf.XXXXXX)
{
    cat <<EOF
# $PSC_MARK: written by slurm/testcluster/up.sh; removed by down.sh. Do not edit (rewritten on every up).
ClusterName=proxlabci
SlurmctldHost=localhost
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
# A requeued job gets BeginTime = now + cred_expire (default 120 s): 10 s makes requeue-to-restart take ~12-16 s.
AuthInfo=cred_expire=10
MailProg=/bin/true
MpiDefault=none
# pgid, not linuxproc: with linuxproc a background child left by a task keeps the step's stdout open and hangs it.
ProctrackType=proctrack/pgid
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
PreemptType=preempt/none
JobRequeue=1
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=$PSC_ROOT/log/jobcomp.log
ReturnToService=2
# Nodes may advertise more CPUs than the host has.
SlurmdParameters=config_overrides
SchedulerParameters=batch_sched_delay=0,sched_interval=2
KillWait=5
MinJobAge=300
InactiveLimit=0
StateSaveLocation=$PSC_ROOT/state/ctld
SlurmdSpoolDir=$PSC_ROOT/state/%n
SlurmctldPidFile=$PSC_ROOT/run/slurmctld.pid
SlurmdPidFile=$PSC_ROOT/run/slurmd-%n.pid
SlurmctldLogFile=$PSC_ROOT/log/slurmctld.log
SlurmdLogFile=$PSC_ROOT/log/slurmd-%n.log
SlurmctldDebug=info
SlurmdDebug=info
EOF
    # Fake GPUs: Slurm tracks GPU GRES by the files gres.conf names (no GPU or NVML needed) and, without cgroups,
    # hands them to jobs through CUDA_VISIBLE_DEVICES alone, which is what the orchestrator's GPU binding reads.
    gres=""
    if ((PSC_GPUS > 0)); then
        echo "GresTypes=gpu"
        gres=" Gres=gpu:$PSC_GPUS"
    fi
    port=17001
    for node in "${nodes[@]}"; do
        echo "NodeName=$node NodeHostname=localhost NodeAddr=127.0.0.1 Port=$port CPUs=$cpus RealMemory=$mem_mb$gres State=UNKNOWN"
        port=$((port + 1))
    done
    echo "PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP"
} >"$tmp_conf"
chmod 0644 "$tmp_conf"
mv -f "$tmp_conf" "$PSC_CONF"

# gres.conf: one dummy device per GPU and node (distinct paths per node), no autodetection (there is no NVML).
# Slurm drops a File= that is not a character or block device (and then sets no CUDA_VISIBLE_DEVICES), so each dummy
# is a character device with the numbers of /dev/null: harmless should anything open it.
rm -rf "${PSC_ROOT:?}/dev"
if ((PSC_GPUS > 0)); then
    tmp_gres=$(mktemp /etc/slurm/.gres.conf.XXXXXX)
    {
        echo "# $PSC_MARK: written by slurm/testcluster/up.sh; removed by down.sh. Do not edit (rewritten on every up)."
        echo "AutoDetect=off"
        for node in "${nodes[@]}"; do
            install -d -m 0755 "$PSC_ROOT/dev/$node"
            for ((g = 0; g < PSC_GPUS; g++)); do
                mknod -m 0666 "$PSC_ROOT/dev/$node/nvidia$g" c 1 3 ||
                    psc_die "mknod $PSC_ROOT/dev/$node/nvidia$g failed (a fake GPU); PROXLAB_SLURM_GPUS=0 goes without"
            done
            echo "NodeName=$node Name=gpu File=$PSC_ROOT/dev/$node/nvidia[0-$((PSC_GPUS - 1))]"
        done
    } >"$tmp_gres"
    chmod 0644 "$tmp_gres"
    mv -f "$tmp_gres" "$PSC_GRES_CONF"
elif [[ -f $PSC_GRES_CONF ]] && grep -q "$PSC_MARK" "$PSC_GRES_CONF"; then
    rm -f "$PSC_GRES_CONF"
fi

# Node names must resolve (rendezvous code connects to the first host of SLURM_JOB_NODELIST).
if [[ -w /etc/hosts ]]; then
    hosts=$(grep -v "# $PSC_MARK" /etc/hosts || true)
    printf '%s\n%s\n' "$hosts" "127.0.0.1 ${nodes[*]} # $PSC_MARK" >/etc/hosts
else
    psc_log "warning: /etc/hosts is not writable; node names ${nodes[*]} will not resolve"
fi

# --- 5. daemons: foreground under 'tini -s' (reaps orphans at once), detached from our stdio ---------------------
setsid tini -s -- slurmctld -D -f "$PSC_CONF" </dev/null >>"$PSC_ROOT/log/slurmctld.stderr" 2>&1 &
echo $! >"$PSC_ROOT/run/tini-slurmctld.pid"
for node in "${nodes[@]}"; do
    setsid tini -s -- slurmd -D -N "$node" -f "$PSC_CONF" </dev/null >>"$PSC_ROOT/log/slurmd-$node.stderr" 2>&1 &
    echo $! >"$PSC_ROOT/run/tini-slurmd-$node.pid"
done

# --- 6. wait until every node is idle ----------------------------------------------------------------------------
want=$(printf '%s\n' "${nodes[@]}" | sort | tr '\n' ' ')
deadline=$(($(date +%s) + PSC_TIMEOUT))
while :; do
    have=$(sinfo -h -N -t idle -o %N 2>/dev/null | sort -u | tr '\n' ' ' || true)
    [[ $have == "$want" ]] && break
    if (($(date +%s) >= deadline)); then
        psc_log "ERROR: nodes not idle after ${PSC_TIMEOUT}s (want: $want; idle: ${have:-none})"
        sinfo -N -l >&2 2>&1 || true
        for f in "$PSC_ROOT"/log/slurmctld.log "$PSC_ROOT"/log/slurmd-*.log "$PSC_ROOT"/log/*.stderr; do
            [[ -s $f ]] || continue
            echo "--- tail $f" >&2
            tail -n 15 "$f" >&2
        done
        exit 1
    fi
    sleep 0.2
done

t1=$(date +%s.%N)
psc_log "up in $(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.1f", b - a}') s: nodes ${nodes[*]} idle (${cpus} CPUs, ${mem_mb} MB, ${PSC_GPUS} GPUs each), state in $PSC_ROOT, conf $PSC_CONF"
