# shellcheck shell=bash
# Shared by slurm/run.sh, slurm/refine_array.sh and slurm/eval_checkpoints.sh (sourced, from the repository root):
# environment setup, launching one srun step, and the preemption / requeue protocol. docs/slurm.md explains it.
#
# The protocol, in short:
#   * USR1 reaches the batch shell before the time limit (#SBATCH --signal=B:USR1@300). The shell forwards it to every
#     task of the running srun step (srun relays USR1), waits for the step, then `scontrol requeue`s the job, unless
#     the step exited 0 (it finished in time).
#   * Exit code 3 from the step means "checkpointed on a signal (or asked to stop), requeue me": requeued likewise.
#   * TERM when Slurm ends the job (time limit, preemption, scancel; slurmd signals every step itself and kills the
#     shell KillWait seconds later): the job is requeued at once if PROXLAB_REQUEUE_ON_TERM allows:
#       auto (default): for a time limit or a preemption (Reason=TimeLimit / Preempt*), never after a user's scancel
#                       (Reason=None), so `scancel` still cancels;  1: always;  0: never.
#     TERM for the batch shell alone (job still RUNNING: scancel --batch, --signal=B:TERM@N) is forwarded to the
#     steps (scancel --signal=TERM) and treated like USR1 under the same policy once the step has ended.
#   * Any other exit code ends the job with that code.
#   * On restart (SLURM_RESTART_COUNT >= 1) the same command runs again: the orchestrator skips finished stages and
#     pretraining resumes from its last checkpoint.
#
# Knobs (environment, all optional):
#   PROXLAB_PYTHON         interpreter of the main environment          (default .venv/bin/python)
#   PROXLAB_SETUP          shell lines eval'ed before launching (module loads, venv activation; `proxlab submit`
#                          fills it from cluster.setup)
#   PROXLAB_SETUP_FILE     a file sourced before launching (site setup)
#   PROXLAB_SRUN_ARGS      extra srun options, split on whitespace     (e.g. "--cpu-bind=none")
#   PROXLAB_NO_REQUEUE=1   never requeue (debugging)
#   PROXLAB_MAX_RESTARTS   stop requeueing after this many restarts    (default 20)
#   PROXLAB_REQUEUE_ON_TERM  auto | 1 | 0                              (default auto, see above)

PROXLAB_EXIT_REQUEUE=3

_proxlab_sig=""          # what asked us to stop: USR1 | TERM_BATCH (TERM to the shell alone) | TERM; empty if none
_proxlab_step_pid=""     # pid of the running srun
_proxlab_requeued=0      # set once we asked for a requeue: later signals (the requeue's own TERM) are ignored

# printf's own clock, not $(date): a subprocess may be killed by the TERM that a requeue sends the process group.
proxlab_log() { printf '[proxlab-slurm %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }

# One field (e.g. JobState, Reason) of this job as slurmctld sees it now; empty when unknown.
proxlab_job_field() {
    [[ -n ${SLURM_JOB_ID:-} ]] || return 0
    scontrol show job -o "$SLURM_JOB_ID" 2>/dev/null | tr ' ' '\n' | sed -n "s/^$1=//p" | head -n 1 || true
}

_proxlab_on_signal() {
    local sig=$1 state
    if ((_proxlab_requeued)); then
        proxlab_log "received SIG$sig after the requeue; exiting"
        exit 0
    fi
    proxlab_log "received SIG$sig (restart count ${SLURM_RESTART_COUNT:-0})"
    if [[ -z $_proxlab_sig || $sig == USR1 ]]; then _proxlab_sig=$sig; fi
    case $sig in
    USR1)
        if [[ -n $_proxlab_step_pid ]] && kill -0 "$_proxlab_step_pid" 2>/dev/null; then
            # srun relays USR1 to every task of its step (TERM it would turn into SIGKILL: never `kill -TERM` srun).
            proxlab_log "forwarding USR1 to every task of the step (srun pid $_proxlab_step_pid)"
            kill -USR1 "$_proxlab_step_pid" 2>/dev/null || true
        fi
        ;;
    TERM)
        state=$(proxlab_job_field JobState)
        if [[ $state == RUNNING ]]; then
            # TERM for the batch shell alone (scancel --batch, --signal=B:TERM): pass it on; like USR1 after the step.
            [[ $_proxlab_sig == USR1 ]] || _proxlab_sig=TERM_BATCH
            if [[ -n $_proxlab_step_pid ]] && kill -0 "$_proxlab_step_pid" 2>/dev/null; then
                proxlab_log "forwarding TERM to the job's steps (scancel --signal=TERM)"
                scancel --signal=TERM "$SLURM_JOB_ID" 2>/dev/null || true
            fi
        else
            # Slurm is ending the job (time limit, preemption, scancel): it signals every step itself and kills us
            # after KillWait, possibly before the step is done, so decide about the requeue now.
            proxlab_log "Slurm is ending the job (state ${state:-?}); steps are signalled by Slurm"
            local why
            why=$(_proxlab_term_requeue_reason)
            if [[ -n $why ]]; then
                _proxlab_requeue "$why" || true
            fi
        fi
        ;;
    esac
}

# Why a TERM should requeue the job under PROXLAB_REQUEUE_ON_TERM (printed), or nothing.
_proxlab_term_requeue_reason() {
    local policy=${PROXLAB_REQUEUE_ON_TERM:-auto} reason
    reason=$(proxlab_job_field Reason)
    case $policy in
    1) echo "SIGTERM (Reason=${reason:-?}; PROXLAB_REQUEUE_ON_TERM=1)" ;;
    auto)
        if [[ $reason == TimeLimit || $reason == Preempt* ]]; then
            echo "SIGTERM for $reason"
        else
            proxlab_log "SIGTERM with Reason=${reason:-?} (a cancel, not a time limit or preemption): not requeueing"
        fi
        ;;
    *) proxlab_log "SIGTERM: PROXLAB_REQUEUE_ON_TERM=$policy: not requeueing" ;;
    esac
}

# Requeue this job for reason $1 unless forbidden; 0 when requeued.
_proxlab_requeue() {
    local why=$1 restarts=${SLURM_RESTART_COUNT:-0} max=${PROXLAB_MAX_RESTARTS:-20}
    if ((_proxlab_requeued)); then return 0; fi
    if [[ ${PROXLAB_NO_REQUEUE:-0} == 1 ]]; then
        proxlab_log "$why; PROXLAB_NO_REQUEUE=1: not requeueing"
        return 1
    fi
    if ((restarts >= max)); then
        proxlab_log "$why; already restarted $restarts times (PROXLAB_MAX_RESTARTS=$max): not requeueing"
        return 1
    fi
    if [[ -z ${SLURM_JOB_ID:-} ]]; then
        proxlab_log "$why; not inside a Slurm job: nothing to requeue"
        return 1
    fi
    _proxlab_requeued=1
    # Logged before the call: the requeue TERMs this shell, and bash runs the trap (which exits) as soon as
    # scontrol returns, so a line after it may never be written.
    proxlab_log "$why: requeueing job $SLURM_JOB_ID (restart $((restarts + 1)) will run the same command)"
    if scontrol requeue "$SLURM_JOB_ID"; then
        return 0
    fi
    _proxlab_requeued=0
    proxlab_log "$why; scontrol requeue failed (submitted with --no-requeue?)"
    return 1
}

proxlab_install_traps() {
    trap '_proxlab_on_signal USR1' USR1
    trap '_proxlab_on_signal TERM' TERM
}

# cd to the submit directory (the repository root), check the library is there.
proxlab_workdir() {
    local dir=${PROXLAB_WORKDIR:-${SLURM_SUBMIT_DIR:-$PWD}}
    cd "$dir" || { proxlab_log "ERROR: cannot cd to $dir"; exit 2; }
}

# Run the configured setup (module loads, venv activation). Sourced code often reads unset variables: no `set -u`.
proxlab_setup_env() {
    set +u
    if [[ -n ${PROXLAB_SETUP_FILE:-} ]]; then
        proxlab_log "sourcing $PROXLAB_SETUP_FILE"
        # shellcheck disable=SC1090
        source "$PROXLAB_SETUP_FILE"
    fi
    if [[ -n ${PROXLAB_SETUP:-} ]]; then
        proxlab_log "setup: $(printf '%s' "$PROXLAB_SETUP" | tr '\n' ';')"
        eval "$PROXLAB_SETUP"
    fi
    set -u
    PROXLAB_PY=${PROXLAB_PYTHON:-.venv/bin/python}
    if ! command -v "$PROXLAB_PY" >/dev/null 2>&1; then
        proxlab_log "ERROR: python '$PROXLAB_PY' not found from $PWD (set PROXLAB_PYTHON, or submit from the repository root)"
        exit 2
    fi
    # Slurm 22.05's srun does not inherit --cpus-per-task from the allocation; this makes it.
    if [[ -n ${SLURM_CPUS_PER_TASK:-} ]]; then export SRUN_CPUS_PER_TASK=$SLURM_CPUS_PER_TASK; fi
}

proxlab_banner() {
    proxlab_log "job ${SLURM_JOB_ID:-?}${SLURM_ARRAY_TASK_ID:+ (array ${SLURM_ARRAY_JOB_ID:-?}_$SLURM_ARRAY_TASK_ID)}" \
        "restart ${SLURM_RESTART_COUNT:-0} on ${SLURM_JOB_NODELIST:-?}: nodes ${SLURM_NNODES:-?}," \
        "tasks ${SLURM_NTASKS:-?} (${SLURM_NTASKS_PER_NODE:-?} per node), cpus/task ${SLURM_CPUS_PER_TASK:-?}, in $PWD"
}

# Decide, after the step ended with $1, whether to requeue; exits the script either way.
proxlab_finish() {
    local rc=$1 why=""
    if ((_proxlab_requeued)); then
        proxlab_log "step ended (exit $rc); the job is already requeued"
        exit 0
    fi
    if [[ $rc -eq 0 ]]; then
        proxlab_log "step finished (exit 0)"
        exit 0
    fi
    if [[ $_proxlab_sig == USR1 || $_proxlab_sig == TERM_BATCH ]]; then
        why="SIG${_proxlab_sig%_BATCH} to the batch shell, step exit $rc"
    elif [[ $_proxlab_sig == TERM ]]; then
        :  # Slurm is ending the job: the signal handler has already decided (and did not requeue)
    elif [[ $rc -eq $PROXLAB_EXIT_REQUEUE ]]; then
        why="step exit $rc (checkpointed, requeue requested)"
    fi
    if [[ -z $why ]]; then
        proxlab_log "step failed (exit $rc)"
        exit "$rc"
    fi
    if _proxlab_requeue "$why"; then exit 0; fi
    exit "$rc"
}

# proxlab_launch CMD...: run `srun --kill-on-bad-exit=1 [PROXLAB_SRUN_ARGS] CMD...` as one step, relay signals to
# it, then requeue or exit (never returns).
proxlab_launch() {
    local rc=0 again
    if [[ -n $_proxlab_sig ]]; then
        proxlab_log "SIG$_proxlab_sig arrived before the step started"
        proxlab_finish "$PROXLAB_EXIT_REQUEUE"
    fi
    local -a srun_args=(--kill-on-bad-exit=1)
    # shellcheck disable=SC2206  # whitespace splitting of PROXLAB_SRUN_ARGS is intended
    [[ -z ${PROXLAB_SRUN_ARGS:-} ]] || srun_args+=($PROXLAB_SRUN_ARGS)
    proxlab_log "srun ${srun_args[*]} $*"
    srun "${srun_args[@]}" "$@" &
    _proxlab_step_pid=$!
    while :; do
        rc=0
        wait "$_proxlab_step_pid" || rc=$?
        # `wait` returns >128 when a trapped signal interrupts it: the step is still running then.
        if ((rc > 128)) && kill -0 "$_proxlab_step_pid" 2>/dev/null; then continue; fi
        break
    done
    if ((rc > 128)); then  # the step may have ended right after the signal: ask for its real status once more
        again=0
        wait "$_proxlab_step_pid" 2>/dev/null || again=$?
        ((again == 127)) || rc=$again
    fi
    _proxlab_step_pid=""
    proxlab_finish "$rc"
}
