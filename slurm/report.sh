#!/bin/bash
# Build a sweep's report once its experiments' jobs have ended, however they ended: `proxlab submit -m` submits it
# with --dependency=afterany:<every experiment job> (a failed experiment is a row of the report, marked failed).
#
#   sbatch --dependency=afterany:101:102:103 slurm/report.sh sweep=table2 runs_dir=$PWD/runs
#
# Arguments are `proxlab report` options (sweep=NAME, runs_dir=DIR, report.*=..., wandb=...). One CPU, no srun, no
# requeue: the report reads only the run directories. Knobs (PROXLAB_PYTHON, PROXLAB_SETUP, ...): slurm/lib.sh.
#
#SBATCH --job-name=proxlab-report
#SBATCH --nodes=1
#SBATCH --ntasks=1
#SBATCH --cpus-per-task=1
#SBATCH --time=00:30:00
#SBATCH --open-mode=append
#SBATCH --output=logs/slurm/%x-%j.out
#SBATCH --error=logs/slurm/%x-%j.out
set -euo pipefail

cd "${PROXLAB_WORKDIR:-${SLURM_SUBMIT_DIR:-$PWD}}" || exit 2
if [[ ! -f slurm/lib.sh ]]; then
    echo "[proxlab-slurm] ERROR: $PWD/slurm/lib.sh not found: submit from the repository root (or PROXLAB_WORKDIR)" >&2
    exit 2
fi
# shellcheck source=slurm/lib.sh
source slurm/lib.sh
proxlab_banner
proxlab_setup_env

proxlab_log "report: $PROXLAB_PY -m proxlab.cli report $*"
exec "$PROXLAB_PY" -m proxlab.cli report "$@"
