#!/bin/bash
# Run a proxlab experiment on Slurm: one orchestrator per task (SPMD), requeue-safe.
#
#   mkdir -p logs/slurm    # Slurm does not create the log directory; the job fails without it
#   sbatch slurm/run.sh exp=prox_1b                                    # 1 node x 8 GPUs (the defaults below)
#   sbatch --nodes=4 -p gpu -A myacct slurm/run.sh exp=prox_1b train=tlm_25k
#   sbatch --nodes=2 --ntasks-per-node=1 --gpus-per-node=0 --cpus-per-task=2 slurm/run.sh exp=smoke   # CPU test
#
# Options on the sbatch command line override the #SBATCH defaults; arguments after the script are Hydra overrides.
# Every task runs: <python> -m proxlab.runner.run ARGS... cluster=slurm cluster.num_nodes=$SLURM_NNODES \
#                  cluster.devices=<tasks per node>
# so Fabric's SLURM detection sees --nodes = num_nodes and --ntasks-per-node = devices. One task per GPU: a job whose
# GPUs per node differ from its tasks per node stops here, before any work (docs/slurm.md, "GPU binding": Fabric pairs
# local rank i with GPU i; the orchestrator gives every other stage its task's own GPU, or k GPUs per engine of a
# refiner with tensor_parallel_size=k). `cluster=slurm` is added only when ARGS select no cluster config of their own.
# Preemption/requeue protocol and knobs (PROXLAB_PYTHON, PROXLAB_SETUP, ...): slurm/lib.sh, docs/slurm.md.
#
#SBATCH --job-name=proxlab
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=8
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=8
#SBATCH --time=48:00:00
#SBATCH --requeue
#SBATCH --signal=B:USR1@300
#SBATCH --open-mode=append
#SBATCH --output=logs/slurm/%x-%j.out
#SBATCH --error=logs/slurm/%x-%j.out
set -euo pipefail

cd "${PROXLAB_WORKDIR:-${SLURM_SUBMIT_DIR:-$PWD}}" || exit 2
if [[ ! -f slurm/lib.sh ]]; then
    echo "[proxlab-slurm] ERROR: $PWD/slurm/lib.sh not found: submit from the repository root (or set PROXLAB_WORKDIR)" >&2
    exit 2
fi
# shellcheck source=slurm/lib.sh
source slurm/lib.sh
proxlab_install_traps
proxlab_banner
proxlab_setup_env

nnodes=${SLURM_NNODES:-${SLURM_JOB_NUM_NODES:-1}}
# Tasks per node as srun will launch them: SLURM_NTASKS / nodes. (SLURM_NTASKS_PER_NODE may be unset, read "8(x2)",
# or be only a maximum when --ntasks was given too.)
per_node=${SLURM_NTASKS_PER_NODE:-}
per_node=${per_node%%(*}
per_node=${per_node%%,*}
ntasks=${SLURM_NTASKS:-}
if [[ -n $ntasks ]]; then
    if ((ntasks % nnodes == 0)); then
        if [[ -n $per_node ]] && ((per_node != ntasks / nnodes)); then
            proxlab_log "note: $ntasks tasks on $nnodes nodes: $((ntasks / nnodes)) per node (not SLURM_NTASKS_PER_NODE=$per_node)"
        fi
        per_node=$((ntasks / nnodes))
    else
        proxlab_log "WARNING: $ntasks tasks on $nnodes nodes is uneven; Fabric needs the same number of tasks on every node"
    fi
fi
[[ -n $per_node ]] || per_node=1
# GPUs this job holds on the node (unset without GPUs); each task of a plain srun step sees all of them.
gpus_per_node=${SLURM_GPUS_ON_NODE:-0}
[[ $gpus_per_node =~ ^[0-9]+$ ]] || gpus_per_node=0
if ((gpus_per_node > 0 && gpus_per_node != per_node)); then
    proxlab_log "ERROR: $per_node task(s) per node but $gpus_per_node GPU(s) per node: run one task per GPU" \
        "(sbatch --ntasks-per-node=$gpus_per_node --gpus-per-node=$gpus_per_node; engines of several GPUs:" \
        "refine.<level>.tensor_parallel_size), or --gpus-per-node=0 on CPU (docs/slurm.md, \"GPU binding\")"
    exit 2
fi

args=("$@")
cluster_args=()
have_cluster=0
for a in "${args[@]}"; do
    case $a in
    cluster=* | +cluster=* | ++cluster=*) have_cluster=1 ;;
    cluster.num_nodes=* | cluster.devices=*)
        proxlab_log "note: '$a' is overridden by the allocation (nodes $nnodes, $per_node tasks per node)" ;;
    esac
done
((have_cluster)) || cluster_args+=(cluster=slurm)
cluster_args+=("cluster.num_nodes=$nnodes" "cluster.devices=$per_node")

proxlab_launch "$PROXLAB_PY" -m proxlab.runner.run "${args[@]}" "${cluster_args[@]}"
