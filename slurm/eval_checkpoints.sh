#!/bin/bash
# Evaluate many checkpoints as a Slurm job array: array task i evaluates checkpoint i of a list.
#
#   mkdir -p logs/slurm
#   bash slurm/eval_checkpoints.sh --list runs/prox_1b > ckpts.txt       # every run of the sweep: its checkpoints
#   sbatch --array=0-$(($(wc -l < ckpts.txt) - 1))%8 slurm/eval_checkpoints.sh ckpts.txt eval=general
#   sbatch --array=3 slurm/eval_checkpoints.sh ckpts.txt eval=general        # redo checkpoint 3 alone
#   bash slurm/eval_checkpoints.sh --submit ckpts.txt eval=general          # sizes the array itself
#   bash slurm/eval_checkpoints.sh --submit runs/prox_1b/RUN eval=general   # one run's step-*/ and final/
#   bash slurm/eval_checkpoints.sh --submit artifacts/pretrain/KEY eval=general   # the same, named by artifact
#
# Checkpoints live in the pretrain artifact, artifacts/pretrain/<key>/{step-XXXXXXXX,final}/, not in the run
# directory: a run directory's plan.json names it (the entry whose "stage" is "pretrain", its "out_dir").
# LIST: a file with one checkpoint (directory or HF id) per line ('#' comments and blank lines skipped), or a
# directory: a run directory (with plan.json: its pretrain artifact's checkpoints), a sweep directory (the same for
# every run directory in it, each artifact once), or any other directory whose step-*/ and final/ subdirectories are
# the checkpoints (a pretrain artifact). Sorted. --list prints them and exits. --submit freezes the list into
# logs/slurm/ first, so checkpoints written later do not shift the indices. For --submit, extra sbatch options come
# from PROXLAB_SBATCH_ARGS (split on whitespace, e.g. "-p gpu -A acct") and PROXLAB_EVAL_PARALLEL=8 runs at most 8
# tasks at once (--array=0-N%8).
# Each task runs: <python> -m proxlab.cli evaluate model=<checkpoint> ARGS...
# Preemption/requeue: as slurm/run.sh (slurm/lib.sh).
#
#SBATCH --job-name=proxlab-eval
#SBATCH --nodes=1
#SBATCH --ntasks=1
#SBATCH --gpus-per-node=1
#SBATCH --cpus-per-task=8
#SBATCH --time=04:00:00
#SBATCH --requeue
#SBATCH --signal=B:USR1@120
#SBATCH --open-mode=append
#SBATCH --output=logs/slurm/%x-%A_%a.out
#SBATCH --error=logs/slurm/%x-%A_%a.out
set -euo pipefail

# --- how one checkpoint is evaluated (to be settled with the CLI) ---------------------------------------------------
EVAL_CMD=(-m proxlab.cli evaluate)
EVAL_MODEL_KEY=${PROXLAB_EVAL_MODEL_KEY:-model}
# -------------------------------------------------------------------------------------------------------------------

# Print the out_dir of the "pretrain" entries of plan.json ($1): [{"stage": ..., "key": ..., "out_dir": ...}, ...]
# as proxlab.runner.run writes it (json.dumps(indent=2): one field per line, "stage" before "out_dir").
plan_pretrain_dirs() {
    awk '/"stage": *"/ { p = ($0 ~ /"stage": *"pretrain"/) }
         p && /"out_dir": *"/ { sub(/.*"out_dir": *"/, ""); sub(/",?[[:space:]]*$/, ""); print; p = 0 }' "$1"
}

# Print the directories whose step-*/ and final/ are the checkpoints of directory $1: the pretrain artifact of a run
# directory, those of every run directory of a sweep directory, else the directory itself.
checkpoint_roots() {
    local src=$1 plan found=0
    if [[ -f $src/plan.json ]]; then
        plan_pretrain_dirs "$src/plan.json"
        return
    fi
    for plan in "$src"/*/plan.json; do
        [[ -f $plan ]] || continue
        found=1
        plan_pretrain_dirs "$plan"
    done
    ((found)) || printf '%s\n' "$src"
}

# Print the checkpoints of LIST ($1), one per line.
list_checkpoints() {
    local src=$1 line root
    if [[ -d $src ]]; then
        checkpoint_roots "$src" | LC_ALL=C sort -u | while IFS= read -r root; do
            if [[ ! -d $root ]]; then
                echo "[proxlab-slurm] note: $root (named by a plan.json) does not exist yet" >&2
                continue
            fi
            find "$root" -mindepth 1 -maxdepth 1 -type d \( -name 'step-*' -o -name final \)
        done | LC_ALL=C sort
    elif [[ -f $src ]]; then
        while IFS= read -r line || [[ -n $line ]]; do
            line=${line%%#*}
            line=${line#"${line%%[![:space:]]*}"}
            line=${line%"${line##*[![:space:]]}"}
            [[ -z $line ]] || printf '%s\n' "$line"
        done <"$src"
    else
        echo "[proxlab-slurm] ERROR: checkpoint list '$src' is neither a file nor a directory" >&2
        return 2
    fi
}

if [[ ${1:-} == --list ]]; then
    [[ $# -eq 2 ]] || { echo "usage: $0 --list LIST" >&2; exit 2; }
    list_checkpoints "$2"
    exit
fi

if [[ ${1:-} == --submit ]]; then
    shift
    [[ $# -ge 1 ]] || { echo "usage: $0 --submit LIST [overrides...]" >&2; exit 2; }
    src=$1
    shift
    mkdir -p logs/slurm
    frozen=logs/slurm/eval-checkpoints-$(date +%Y%m%d-%H%M%S)-$$.txt
    list_checkpoints "$src" >"$frozen"
    n=$(wc -l <"$frozen")
    ((n > 0)) || { echo "[proxlab-slurm] ERROR: no checkpoints in $src" >&2; rm -f "$frozen"; exit 2; }
    array="0-$((n - 1))${PROXLAB_EVAL_PARALLEL:+%$PROXLAB_EVAL_PARALLEL}"
    # shellcheck disable=SC2206  # whitespace splitting of PROXLAB_SBATCH_ARGS is intended
    extra=(${PROXLAB_SBATCH_ARGS:-})
    echo "[proxlab-slurm] $n checkpoints (list frozen in $frozen)" >&2
    set -x
    exec sbatch --array="$array" "${extra[@]}" "$0" "$frozen" "$@"
fi

cd "${PROXLAB_WORKDIR:-${SLURM_SUBMIT_DIR:-$PWD}}" || exit 2
if [[ ! -f slurm/lib.sh ]]; then
    echo "[proxlab-slurm] ERROR: $PWD/slurm/lib.sh not found: submit from the repository root (or set PROXLAB_WORKDIR)" >&2
    exit 2
fi
# shellcheck source=slurm/lib.sh
source slurm/lib.sh
proxlab_install_traps
proxlab_banner

[[ $# -ge 1 ]] || { proxlab_log "ERROR: usage: sbatch --array=0-<N-1> $0 LIST [overrides...]"; exit 2; }
src=$1
shift
mapfile -t ckpts < <(list_checkpoints "$src")
idx=${SLURM_ARRAY_TASK_ID:-0}
if ((idx >= ${#ckpts[@]})); then
    proxlab_log "ERROR: array index $idx, but $src lists ${#ckpts[@]} checkpoints"
    exit 2
fi
ckpt=${ckpts[$idx]}
proxlab_log "evaluating checkpoint $idx of ${#ckpts[@]}: $ckpt"

proxlab_setup_env
proxlab_launch "$PROXLAB_PY" "${EVAL_CMD[@]}" "$EVAL_MODEL_KEY=$ckpt" "$@"
