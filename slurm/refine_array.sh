#!/bin/bash
# Refine a corpus as a Slurm job array: array task i runs refine shard i of N (one process, one GPU by default).
#
#   mkdir -p logs/slurm
#   sbatch --array=0-7 slurm/refine_array.sh exp=prox_1b refine=prox                 # 8 shards, all at once
#   sbatch --array=0-63%16 slurm/refine_array.sh exp=prox_1b refine=prox             # 64 shards, 16 at a time
#   sbatch --array=5 slurm/refine_array.sh exp=prox_1b refine=prox refine.num_shards=8   # redo shard 5 of 8 alone
#   sbatch --dependency=afterok:<array job id> slurm/run.sh exp=prox_1b refine=prox   # then the rest of the graph
#
# The number of shards N is, in order: an explicit `<NUM_SHARDS_KEY>=N` argument, $PROXLAB_NUM_SHARDS, or the size
# of a full 0-based array (--array=0-7 → 8). A partial array (a re-submitted task, a step, a start above 0) must
# name N explicitly: guessing it would silently give shards other boundaries.
# Preemption/requeue: as slurm/run.sh (slurm/lib.sh); each array task is requeued on its own.
#
#SBATCH --job-name=proxlab-refine
#SBATCH --array=0-7
#SBATCH --nodes=1
#SBATCH --ntasks=1
#SBATCH --gpus-per-node=1
#SBATCH --cpus-per-task=8
#SBATCH --time=24:00:00
#SBATCH --requeue
#SBATCH --signal=B:USR1@300
#SBATCH --open-mode=append
#SBATCH --output=logs/slurm/%x-%A_%a.out
#SBATCH --error=logs/slurm/%x-%A_%a.out
set -euo pipefail

# --- the orchestrator's names for "this shard" and "how many shards" (to be settled with the orchestrator) ---------
SHARD_RANK_KEY=${PROXLAB_SHARD_RANK_KEY:-refine.shard_rank}
NUM_SHARDS_KEY=${PROXLAB_NUM_SHARDS_KEY:-refine.num_shards}
# Run the graph only up to the refine stages; the rest runs once, after all shards (see the dependency example).
STAGE_ARGS=(stop_after=refine)
# -------------------------------------------------------------------------------------------------------------------

cd "${PROXLAB_WORKDIR:-${SLURM_SUBMIT_DIR:-$PWD}}" || exit 2
if [[ ! -f slurm/lib.sh ]]; then
    echo "[proxlab-slurm] ERROR: $PWD/slurm/lib.sh not found: submit from the repository root (or set PROXLAB_WORKDIR)" >&2
    exit 2
fi
# shellcheck source=slurm/lib.sh
source slurm/lib.sh
proxlab_install_traps
proxlab_banner

if [[ -z ${SLURM_ARRAY_TASK_ID:-} ]]; then
    proxlab_log "ERROR: not an array task (submit with sbatch --array=0-<N-1>)"
    exit 2
fi
rank=$SLURM_ARRAY_TASK_ID
num_shards=""
for a in "$@"; do
    case $a in "$NUM_SHARDS_KEY="*) num_shards=${a#*=} ;; esac
done
explicit_arg=${num_shards:+1}
if [[ -z $num_shards ]]; then num_shards=${PROXLAB_NUM_SHARDS:-}; fi
if [[ -z $num_shards ]]; then
    amin=${SLURM_ARRAY_TASK_MIN:-0} amax=${SLURM_ARRAY_TASK_MAX:-0} acount=${SLURM_ARRAY_TASK_COUNT:-0}
    if ((amin != 0 || acount != amax + 1)); then
        proxlab_log "ERROR: array $amin-$amax has $acount tasks: not a full 0-based array, so the number of shards" \
            "is unknown. Pass $NUM_SHARDS_KEY=N (or PROXLAB_NUM_SHARDS=N)."
        exit 2
    fi
    num_shards=$acount
fi
if ! [[ $num_shards =~ ^[1-9][0-9]*$ ]] || ((rank >= num_shards)); then
    proxlab_log "ERROR: shard $rank of '$num_shards': need 0 <= shard < number of shards"
    exit 2
fi
proxlab_log "refine shard $rank of $num_shards"

proxlab_setup_env
shard_args=("$SHARD_RANK_KEY=$rank")
[[ -n $explicit_arg ]] || shard_args+=("$NUM_SHARDS_KEY=$num_shards")
proxlab_launch "$PROXLAB_PY" -m proxlab.runner.run "$@" cluster=slurm cluster.num_nodes=1 cluster.devices=1 \
    "${STAGE_ARGS[@]}" "${shard_args[@]}"
