#!/bin/bash
# Install (if needed) and start a single-node Slurm with accounting (slurmdbd
# + MariaDB), Open MPI and Debian's PBS-style qsub wrappers, then a real
# OpenPBS server beside it (pbs.sh: built once, about 4-10 min). Idempotent: a
# second run only checks, and restarts a daemon only if its config changed.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"  # also takes the lock

# --- packages -------------------------------------------------------------
pkgs=(slurmctld slurmd slurm-client munge slurmdbd mariadb-server
      openmpi-bin libopenmpi-dev slurm-wlm-torque)
missing=()
for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p")
done
if ((${#missing[@]})); then
    echo "up.sh: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# --- config files (rewritten only when their content changes) ---------------
changed=()  # daemons whose config changed and must be restarted
put() {  # put FILE MODE OWNER DAEMON... < content
    local file=$1 mode=$2 owner=$3 new; shift 3
    new=$(cat)
    if [[ ! -f $file ]] || [[ $(<"$file") != "$new" ]]; then
        printf '%s\n' "$new" >"$file"
        changed+=("$@")
    fi
    chmod "$mode" "$file"; chown "$owner" "$file"
}

host=$(hostname -s)
mkdir -p /etc/slurm/plugstack.conf.d /var/log/slurm /var/lib/slurm/slurmctld \
         /var/lib/slurm/slurmd /run/munge /run/mysqld /var/log/mysql
chown slurm:slurm /var/log/slurm /var/lib/slurm /var/lib/slurm/slurmctld
chown munge:munge /run/munge && chmod 755 /run/munge
chown mysql:mysql /run/mysqld /var/log/mysql

put /etc/slurm/slurm.conf 644 root:root slurmctld slurmd <<EOF
# Written by landscape cluster/up.sh: single node, no cgroups, accounting.
ClusterName=landscape
SlurmctldHost=$host(127.0.0.1)
SlurmUser=slurm
AuthType=auth/munge
StateSaveLocation=/var/lib/slurm/slurmctld
SlurmdSpoolDir=/var/lib/slurm/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
SchedulerParameters=batch_sched_delay=0
SlurmdParameters=config_overrides
ReturnToService=2
MpiDefault=pmix
MailProg=/bin/true
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
JobAcctGatherType=jobacct_gather/linux
NodeName=$host NodeAddr=127.0.0.1 CPUs=8 State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF

put /etc/slurm/slurmdbd.conf 600 slurm:slurm slurmdbd <<EOF
# Written by landscape cluster/up.sh: MariaDB over its socket, unix_socket auth.
AuthType=auth/munge
DbdHost=localhost
SlurmUser=slurm
LogFile=/var/log/slurm/slurmdbd.log
PidFile=/run/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=slurm
StorageLoc=slurm_acct_db
EOF

# spank_pbs sets PBS_ARRAY_INDEX, PBS_JOBID, PBS_O_WORKDIR ... in job tasks.
pbs_so=$(dpkg -L slurm-wlm-torque slurm-wlm-basic-plugins 2>/dev/null | grep -m1 '/spank_pbs\.so$') \
    || { echo "up.sh: spank_pbs.so not found" >&2; exit 1; }
put /etc/slurm/plugstack.conf.d/pbs.conf 644 root:root slurmctld slurmd <<EOF
required $pbs_so
EOF
[[ -f /etc/slurm/plugstack.conf ]] && grep -q plugstack.conf.d /etc/slurm/plugstack.conf \
    || put /etc/slurm/plugstack.conf 644 root:root slurmctld slurmd <<EOF
include /etc/slurm/plugstack.conf.d/*.conf
EOF

if [[ ! -s /etc/munge/munge.key ]]; then
    mungekey --create --keyfile=/etc/munge/munge.key
    changed+=(munged slurmdbd slurmctld slurmd)
fi
chown munge:munge /etc/munge/munge.key && chmod 400 /etc/munge/munge.key

# Restart daemons whose configuration changed (down order).
for d in slurmd slurmctld slurmdbd munged; do
    [[ " ${changed[*]} " == *" $d "* ]] || continue
    case $d in
        munged) stop munged /run/munge/munged.pid ;;
        *) stop "$d" "/run/$d.pid" ;;
    esac
done

# --- daemons, in order ----------------------------------------------------
tail_log() { echo "--- $1" >&2; tail -n 20 "$1" >&2 || true; exit 1; }

if ! running munged; then
    runuser -u munge -- /usr/sbin/munged 9>&-  # daemons must not keep the lock fd
fi
wait_for 20 munged munge -n || tail_log /var/log/munge/munged.log

if ! running mariadbd; then
    [[ -d /var/lib/mysql/mysql ]] || mariadb-install-db --user=mysql >/dev/null
    setsid nohup mariadbd --user=mysql --skip-networking \
        --log-error=/var/log/mysql/error.log </dev/null >/dev/null 2>&1 9>&- &
fi
wait_for 60 mariadbd mariadb-admin ping || tail_log /var/log/mysql/error.log
mariadb -e "CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED VIA unix_socket;
            GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';"

running slurmdbd || slurmdbd 9>&- || tail_log /var/log/slurm/slurmdbd.log
wait_for 60 slurmdbd sacctmgr -n list cluster || tail_log /var/log/slurm/slurmdbd.log

running slurmctld || slurmctld 9>&- || tail_log /var/log/slurm/slurmctld.log
ctld_up() { scontrol ping | grep -q UP; }
wait_for 60 slurmctld ctld_up || tail_log /var/log/slurm/slurmctld.log

running slurmd || slurmd 9>&- || tail_log /var/log/slurm/slurmd.log
# idle, or busy with jobs (mixed/allocated) on a re-run; not "idle*" (no answer).
node_idle() { [[ $(sinfo -h -o %T) =~ ^(idle|mixed|allocated|completing)$ ]]; }
wait_for 60 "node idle" node_idle || { sinfo >&2; tail_log /var/log/slurm/slurmd.log; }
wait_for 60 "sacct" sacct -n -X || tail_log /var/log/slurm/slurmdbd.log

ompi=$(mpirun --version 2>/dev/null | head -n1 | awk '{print $NF}')
echo "cluster up: slurm $(sinfo -V | awk '{print $2}') (partition debug, 8 cpus), slurmdbd, openmpi $ompi, qsub wrappers"

# --- OpenPBS beside it (its own lock for the build; exit 3: no source to build from) ---
exec 9>&-
rc=0
bash "$here/pbs.sh" up || rc=$?
if ((rc == 3)) && [[ ${LANDSCAPE_REQUIRE_CLUSTER:-0} != 1 ]]; then
    echo "up.sh: the real-PBS tests will be skipped (no OpenPBS)"
elif ((rc != 0)); then
    exit "$rc"
fi
