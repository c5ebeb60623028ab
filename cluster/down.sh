#!/bin/bash
# Stop the daemons started by up.sh (OpenPBS, then Slurm), in reverse order. Idempotent.
# Job state and the accounting database are kept (wipe both or neither).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
bash "$here/pbs.sh" down  # takes the lock itself
. "$here/lib.sh"  # also takes the lock

stop slurmd    /run/slurmd.pid
stop slurmctld /run/slurmctld.pid
stop slurmdbd  /run/slurmdbd.pid
stop mariadbd  /run/mysqld/mysqld.pid
stop munged    /run/munge/munged.pid
echo "cluster down"
