#!/bin/bash
# Your own Torque job script around the compute-node entry, for a run directory prepared by the
# driver (run it from the directory the paths below are relative to: Torque starts jobs in $HOME):
#   landscape-surface <your settings> launcher=none run.dir=/shared/runs/r56    # plans; computes nothing
#   qsub -t 0-99%32 -v RUN_DIR=/shared/runs/r56,PER_TASK=10 jobs/examples/torque.sh    # 100 tasks, 10 tiles each
#   landscape-surface run.dir=/shared/runs/r56 launcher=none                    # reduce and plot
# Jobs get no environment of yours (no -V): pass what they need with -v (VENV below: the environment,
# on the shared filesystem). Any tile already done is skipped, so repeated tasks are harmless; at
# walltime Torque sends SIGTERM and the tile being written is removed.
#PBS -N landscape
#PBS -q gpu
#PBS -l nodes=1:ppn=4:gpus=1
#PBS -l mem=16gb
#PBS -l walltime=01:00:00
#PBS -j oe
set -euo pipefail
cd "$PBS_O_WORKDIR"
source "${VENV:-/shared/envs/landscape/.venv}/bin/activate"
export LANDSCAPE_THREADS=${PBS_NUM_PPN:-4}
if [ -n "${PBS_GPUFILE:-}" ]; then   # Torque lists the job's GPUs as <host>-gpu<N>, one a line
    CUDA_VISIBLE_DEVICES=$(sed 's/.*-gpu//' "$PBS_GPUFILE" | paste -sd,)
    export CUDA_VISIBLE_DEVICES
fi
INDEX=${PBS_ARRAYID:-${PBS_ARRAY_INDEX:-0}}
PER_TASK=${PER_TASK:-1}
total=$(python -c "from jobs.run import RunDir; print(len(RunDir('$RUN_DIR').tiles))")
first=$(( INDEX * PER_TASK ))
last=$(( first + PER_TASK - 1 < total - 1 ? first + PER_TASK - 1 : total - 1 ))
exec python -m jobs.tile "$RUN_DIR" --tiles "$(seq -s, "$first" "$last")"
