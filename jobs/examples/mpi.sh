#!/bin/bash
# Compute the missing tiles of a prepared run directory on MPI ranks, then merge and plot.
# Rank 0 hands tiles out on request and computes too; each rank takes the node-local_rank-th visible
# GPU (or its share of the CPU cores) and writes its own tile files; rank 0 writes surface.h5.
#
# 1. Prepare the run directory on a filesystem every node sees (no tiles computed yet):
#      landscape-surface model=resnet56 data=cifar10 data.root=/shared/cifar-10-batches-py \
#          checkpoint=/shared/r56/last.pt grid.resolution=201 run.dir=/shared/runs/r56 launcher.dry_run=true
# 2. Submit:   sbatch jobs/examples/mpi.sh /shared/runs/r56
#    Without Slurm, on one workstation:   mpirun -n 4 python -m jobs.mpi /shared/runs/r56
# Resubmitting, or `landscape-surface run.dir=/shared/runs/r56` with any launcher, computes only
# the tiles still missing (a rank that died, a job that hit its time limit).
#
#SBATCH --job-name=landscape-mpi
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=4          # one rank per GPU
#SBATCH --gpus-per-node=4
#SBATCH --cpus-per-task=8            # each rank uses these for data and CPU work
#SBATCH --time=04:00:00
#SBATCH --output=landscape-mpi-%j.out
set -euo pipefail
run_dir=${1:?usage: sbatch mpi.sh RUN_DIR}

# Site set-up: the MPI that mpi4py loads must be the one srun/mpirun speaks to, and the
# environment must be on the shared filesystem too, e.g.:
# module load openmpi
# source /shared/envs/landscape/bin/activate

# --mpi=pmix: Debian's and most sites' Open MPI (pmi2 does not work with it);
# --kill-on-bad-exit=1: a rank that dies ends the step instead of leaving the others waiting.
srun --mpi=pmix --kill-on-bad-exit=1 python -m jobs.mpi "$run_dir"
landscape-plot "$run_dir"
