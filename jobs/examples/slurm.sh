#!/bin/bash
# Your own sbatch file around the compute-node entry, for a run directory prepared by the driver:
#   landscape-surface <your settings> launcher=none run.dir=/shared/runs/r56    # plans; computes nothing
#   sbatch --array=0-99%32 jobs/examples/slurm.sh /shared/runs/r56 10           # 100 tasks, 10 tiles each
#   landscape-surface run.dir=/shared/runs/r56 launcher=none                    # reduce and plot
# Any tile already done is skipped, so overlapping or repeated tasks are harmless.
#SBATCH --job-name=landscape
#SBATCH --partition=gpu
#SBATCH --gpus-per-task=1
#SBATCH --cpus-per-task=4
#SBATCH --time=01:00:00
#SBATCH --output=logs/%A_%a.out
set -euo pipefail
RUN_DIR=$1
PER_TASK=${2:-1}
source /shared/envs/landscape/.venv/bin/activate       # the environment, on the shared filesystem
cd /shared/landscape                                   # the repository (for python -m jobs.tile)
first=$(( SLURM_ARRAY_TASK_ID * PER_TASK ))
total=$(python -c "from jobs.run import RunDir; print(len(RunDir('$RUN_DIR').tiles))")
ids=$(seq -s, $first $(( first + PER_TASK - 1 < total - 1 ? first + PER_TASK - 1 : total - 1 )))
python -m jobs.tile "$RUN_DIR" --tiles "$ids"
