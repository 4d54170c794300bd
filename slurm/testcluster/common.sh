# shellcheck shell=bash
# Shared settings and helpers of the one-host Slurm test cluster (sourced by up.sh, down.sh, status.sh).
#
# A real Slurm (Debian 12's slurmctld/slurmd 22.05, munge) on this host: one slurmctld and N slurmd named n1..nN,
# all on 127.0.0.1, run as root, no systemd, no cgroups, no accounting. Recipe and reasons:
# docs/slurm.md ("The test cluster").
#
# Environment knobs (all optional):
#   PROXLAB_SLURM_ROOT     state, logs, pid files            (default /var/lib/proxlab-slurm)
#   PROXLAB_SLURM_NODES    number of slurmd "nodes"            (default 2: n1, n2)
#   PROXLAB_SLURM_CPUS     CPUs advertised per node            (default: nproc, at least 2)
#   PROXLAB_SLURM_GPUS     GPU GRES per node, on dummy files   (default 2; 0: no GRES)
#   PROXLAB_SLURM_TIMEOUT  seconds to wait for all nodes idle  (default 30)
#   PROXLAB_SLURM_NO_INSTALL=1  never run apt-get; fail (exit 20) when packages are missing
#   PROXLAB_SLURM_FORCE=1  overwrite an /etc/slurm/slurm.conf that this recipe did not write

PSC_ROOT=${PROXLAB_SLURM_ROOT:-/var/lib/proxlab-slurm}
PSC_NODES=${PROXLAB_SLURM_NODES:-2}
# shellcheck disable=SC2034  # used by the scripts that source this file
PSC_TIMEOUT=${PROXLAB_SLURM_TIMEOUT:-30}
# shellcheck disable=SC2034
PSC_GPUS=${PROXLAB_SLURM_GPUS:-2}
PSC_CONF=/etc/slurm/slurm.conf
# shellcheck disable=SC2034
PSC_GRES_CONF=/etc/slurm/gres.conf
PSC_MARK="proxlab-slurm-testcluster"            # in slurm.conf's header and on our /etc/hosts line
# shellcheck disable=SC2034
PSC_PACKAGES=(slurmctld slurmd slurm-client munge tini)
# Exit code meaning "Slurm cannot be had on this machine" (not root, no apt, install failed): callers may skip.
PSC_EXIT_UNAVAILABLE=20

export SLURM_CONF=$PSC_CONF
export DEBIAN_FRONTEND=noninteractive

psc_log() { printf '[slurm-testcluster] %s\n' "$*" >&2; }
# Name the failing command instead of exiting silently under set -e.
trap 'psc_log "ERROR: command failed (exit $?) at ${BASH_SOURCE[0]}:${LINENO}: ${BASH_COMMAND}"' ERR
psc_die() { psc_log "ERROR: $1"; exit "${2:-1}"; }

psc_node_names() {
    local i
    for ((i = 1; i <= PSC_NODES; i++)); do printf 'n%d\n' "$i"; done
}

psc_require_root() {
    [[ $(id -u) -eq 0 ]] || psc_die "must run as root (it installs packages, writes /etc/slurm and /etc/hosts)" "$PSC_EXIT_UNAVAILABLE"
}

# The pid in file $1, or nothing (daemons remove their pid files while exiting: never fail on a vanished file).
psc_read_pid() {
    local pid=""
    pid=$(cat -- "$1" 2>/dev/null) || true
    [[ $pid =~ ^[0-9]+$ ]] && printf '%s' "$pid"
    return 0
}

# True when process $1 is alive (not a zombie: PID 1 may reap late) and its comm is $2.
psc_proc_alive() {
    local pid=$1 comm=$2 state
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    [[ $(cat "/proc/$pid/comm" 2>/dev/null) == "$comm" ]] || return 1
    # Field 3 of /proc/PID/stat is the state; the comm in field 2 may contain spaces, so cut after ") ".
    state=$(sed -E 's/^.*\) ([A-Za-z]).*$/\1/' "/proc/$pid/stat" 2>/dev/null) || return 1
    [[ -n $state && $state != Z && $state != X ]]
}

# True when the process in pid file $1 is alive and its comm is $2.
psc_pid_alive() {
    psc_proc_alive "$(psc_read_pid "$1")" "$2"
}

# Stop the process in pid file $1 if it is a live $2: TERM, up to 5 s, then KILL. Never by name.
psc_stop_pidfile() {
    local pidfile=$1 comm=$2 pid i
    pid=$(psc_read_pid "$pidfile")
    if psc_proc_alive "$pid" "$comm"; then
        kill -TERM "$pid" 2>/dev/null || true
        for ((i = 0; i < 50; i++)); do
            psc_proc_alive "$pid" "$comm" || break
            sleep 0.1
        done
        if psc_proc_alive "$pid" "$comm"; then
            psc_log "$comm (pid $pid) ignored TERM for 5 s; sending KILL"
            kill -KILL "$pid" 2>/dev/null || true
            for ((i = 0; i < 20; i++)); do
                psc_proc_alive "$pid" "$comm" || break
                sleep 0.1
            done
        fi
    fi
    rm -f "$pidfile"
}

psc_ctld_answers() {
    command -v scontrol >/dev/null 2>&1 || return 1
    [[ -f $PSC_CONF ]] || return 1
    timeout 5 scontrol ping 2>/dev/null | grep -q 'is UP'
}

psc_munge_answers() {
    command -v munge >/dev/null 2>&1 || return 1
    munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1
}

# Cancel every job and wait (bounded) until the queue is empty: stopping daemons under running jobs leaves slurmstepd
# processes behind that ignore TERM.
psc_cancel_all_jobs() {
    psc_ctld_answers || return 0
    local jobs i
    mapfile -t jobs < <(squeue -h -o %i 2>/dev/null || true)
    ((${#jobs[@]})) || return 0
    psc_log "cancelling jobs: ${jobs[*]}"
    scancel "${jobs[@]}" 2>/dev/null || true
    for ((i = 0; i < 200; i++)); do
        [[ -z $(squeue -h -o %i 2>/dev/null) ]] && return 0
        sleep 0.1
    done
    psc_log "warning: jobs still listed after 20 s: $(squeue -h -o '%i %T' 2>/dev/null | tr '\n' ' ')"
}

# Stop every daemon a previous up.sh started (slurmd, slurmctld; munged only with stop_munge=1).
psc_stop_daemons() {
    local stop_munge=${1:-0} node
    [[ -d $PSC_ROOT/run ]] || return 0
    psc_cancel_all_jobs
    for node in "$PSC_ROOT"/run/slurmd-*.pid; do
        [[ -e $node ]] || continue
        psc_stop_pidfile "$node" slurmd
    done
    psc_stop_pidfile "$PSC_ROOT/run/slurmctld.pid" slurmctld
    # tini exits with its child; clear what may be left of its pid files.
    for node in "$PSC_ROOT"/run/tini-*.pid; do
        [[ -e $node ]] || continue
        psc_stop_pidfile "$node" tini
    done
    if [[ $stop_munge == 1 && -f $PSC_ROOT/run/munged.ours ]]; then
        psc_stop_pidfile /run/munge/munged.pid munged
        rm -f "$PSC_ROOT/run/munged.ours"
    fi
}

# Remove our line from /etc/hosts, in place (it may be a bind mount: never rename over it).
psc_hosts_remove() {
    [[ -w /etc/hosts ]] || return 0
    grep -q "# $PSC_MARK" /etc/hosts || return 0
    local content
    content=$(grep -v "# $PSC_MARK" /etc/hosts || true)
    printf '%s\n' "$content" >/etc/hosts
}

psc_conf_is_ours() {
    [[ ! -e $PSC_CONF ]] || grep -q "$PSC_MARK" "$PSC_CONF"
}
