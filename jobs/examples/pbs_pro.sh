#!/bin/bash
# Your own PBS Pro / OpenPBS job script around the compute-node entry, for a run directory prepared
# by the driver (run it from the directory the paths below are relative to: PBS starts jobs in $HOME):
#   landscape-surface <your settings> launcher=none run.dir=/shared/runs/r56    # plans; computes nothing
#   qsub -J 0-99%32 -v RUN_DIR=/shared/runs/r56,PER_TASK=10 jobs/examples/pbs_pro.sh   # 100 tasks, 10 tiles each
#   landscape-surface run.dir=/shared/runs/r56 launcher=none                    # reduce and plot
# %32 (at most 32 running) needs OpenPBS 20+; PBS Pro refuses a one-element -J: for a single task
# leave -J out (the index is then 0). Jobs get no environment of yours (no -V): pass what they need
# with -v (VENV below: the environment, on the shared filesystem). Any tile already done is skipped,
# so repeated tasks are harmless; at walltime PBS sends SIGTERM and the tile being written is removed.
#PBS -N landscape
#PBS -q gpu
#PBS -l select=1:ncpus=4:ngpus=1:mem=16gb
#PBS -l walltime=01:00:00
#PBS -j oe
set -euo pipefail
cd "$PBS_O_WORKDIR"
source "${VENV:-/shared/envs/landscape/.venv}/bin/activate"
export LANDSCAPE_THREADS=${NCPUS:-4}
INDEX=${PBS_ARRAY_INDEX:-0}
PER_TASK=${PER_TASK:-1}
total=$(python -c "from jobs.run import RunDir; print(len(RunDir('$RUN_DIR').tiles))")
first=$(( INDEX * PER_TASK ))
last=$(( first + PER_TASK - 1 < total - 1 ? first + PER_TASK - 1 : total - 1 ))
exec python -m jobs.tile "$RUN_DIR" --tiles "$(seq -s, "$first" "$last")"
