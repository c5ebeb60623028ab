#!/bin/bash
# A real single-node OpenPBS 23.06.06 (server, scheduler, comm, mom, datastore)
# in its own network namespace, for testing launcher=pbs against a real server.
#   pbs.sh up    build into /opt/pbs if missing (about 9 min on 2 cores), then
#                start and configure; idempotent, a second call takes seconds.
#                Exit 3 (one "skip" line) when there is no source tarball.
#   pbs.sh down  stop the daemons; the build and the spool are kept.
# PBS rejects loopback host addresses, and tests may talk only to loopback or
# to a namespace they made: so it lives on 192.0.2.77 on the namespace's own lo.
# Reach it through cluster/pbs-bin (qsub, qstat, ... run inside the namespace).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"  # root check; takes the cluster lock on fd 9

ns=landscape-pbs
addr=192.0.2.77
spool=/var/spool/pbs
built=/opt/pbs/.landscape-built  # written last: a half-done build is redone
buildlog=/var/log/landscape-pbs-build.log
# The init script lays the caller's PBS_* variables over /etc/pbs.conf.
for v in $(compgen -e | grep '^PBS_' || true); do unset "$v"; done

in_ns() { ip netns exec "$ns" "$@" 9>&-; }
qmgr() { in_ns /opt/pbs/bin/qmgr -c "$1"; }

build() {
    local vendored tarball
    vendored=$(realpath -m "$here/../../shared/vendor/openpbs-23.06.06.tar.gz")
    for tarball in "${LANDSCAPE_OPENPBS_TARBALL:-}" "$vendored"; do [[ -f $tarball ]] && break; done
    if [[ ! -f $tarball ]]; then
        echo "pbs.sh: skip: OpenPBS is not built, and neither \$LANDSCAPE_OPENPBS_TARBALL nor $vendored exists"
        exit 3
    fi
    # Minutes of build: let Slurm's up.sh/down.sh run meanwhile, but one build at a time.
    flock -u 9
    exec 8>/run/landscape-pbs-build.lock
    flock 8
    [[ -f $built ]] && { flock -w 300 9; return; }
    echo "pbs.sh: building OpenPBS from $tarball (about 9 min; log $buildlog)"
    local src
    src=$(mktemp -d /var/tmp/openpbs.XXXXXX)
    (
        set -e
        export DEBIAN_FRONTEND=noninteractive PATH=/usr/sbin:/usr/bin:/sbin:/bin  # no pyenv shims
        apt-get update -qq
        apt-get install -y -qq build-essential autoconf automake libtool pkg-config libssl-dev \
            libxt-dev libpq-dev libexpat1-dev libedit-dev libncurses-dev libical-dev libhwloc-dev \
            tcl-dev tk-dev python3-dev swig expat zlib1g-dev postgresql postgresql-contrib sudo
        tar -xzf "$tarball" -C "$src" --strip-components=1
        cd "$src"
        # Python 3.11 removed eval.h (fixed upstream after the 23.06.06 tag).
        sed -i 's|#include <eval.h>|#include <Python.h>|' src/lib/Libpython/pbs_python_external.c
        ./autogen.sh
        ./configure --prefix=/opt/pbs --with-python=/usr
        make -j2
        make install
        chmod 4755 /opt/pbs/sbin/pbs_iff /opt/pbs/sbin/pbs_rcp
        /opt/pbs/libexec/pbs_postinstall </dev/null || true  # complains about systemd/update-rc.d
        [[ -x /etc/init.d/pbs ]]
    ) >"$buildlog" 2>&1 8>&- 9>&- || {
        echo "pbs.sh: build failed (sources kept in $src); last lines of $buildlog:" >&2
        tail -n 30 "$buildlog" >&2
        exit 1
    }
    rm -rf "$src"
    touch "$built"
    flock -w 300 9 || { echo "pbs.sh: could not retake the cluster lock" >&2; exit 1; }
}

# write FILE < content: true if the file changed (the daemons must restart).
write() {
    local new
    new=$(cat)
    [[ -f $1 && $(<"$1") == "$new" ]] && return 1
    printf '%s\n' "$new" >"$1"
}

netns() {
    [[ -e /run/netns/$ns ]] || ip netns add "$ns"
    ip -n "$ns" link set lo up
    [[ $(ip -n "$ns" addr show dev lo) == *" $addr/32 "* ]] || ip -n "$ns" addr add "$addr/32" dev lo
    mkdir -p "/etc/netns/$ns"
    # Bind-mounted over /etc/hosts inside the namespace only; the mom resolves $(hostname).
    write "/etc/netns/$ns/hosts" <<EOF || true
127.0.0.1 localhost
$addr pbshost $(hostname) $(hostname -s)
EOF
}

configure() {  # true if a config file changed
    local changed=1
    write /etc/pbs.conf <<EOF && changed=0
PBS_SERVER=pbshost
PBS_START_SERVER=1
PBS_START_SCHED=1
PBS_START_COMM=1
PBS_START_MOM=1
PBS_EXEC=/opt/pbs
PBS_HOME=$spool
PBS_MOM_NODE_NAME=pbshost
PBS_LEAF_NAME=pbshost
EOF
    # usecp: copy .o/.e files locally (no sshd); check_poll: walltime checked every 1-2 s;
    # restrict_user_maxsysid: what the init script appends at each start (else: a change).
    write $spool/mom_priv/config <<EOF && changed=0
\$clienthost pbshost
\$usecp *:/ /
\$min_check_poll 1
\$max_check_poll 2
\$restrict_user_maxsysid 999
EOF
    # Let the scheduler schedule the site-defined ngpus resource.
    if ! grep -q '^resources:.*ngpus' $spool/sched_priv/sched_config; then
        sed -i 's/^resources: "\(.*\)"/resources: "\1, ngpus"/' $spool/sched_priv/sched_config
        changed=0
    fi
    return $changed
}

server_up() { in_ns /opt/pbs/bin/qstat -B >/dev/null 2>&1; }
node_ready() { in_ns /opt/pbs/bin/pbsnodes pbshost 2>/dev/null | grep -Eq 'state = (free|job-busy)$'; }
daemons_up() {  # server, mom, sched and comm all alive (by their lock files' pids)
    local s
    s=$(in_ns /etc/init.d/pbs status 2>&1) || return 1
    [[ $s == *"pbs_server is pid"* && $s != *"not running"* ]]
}

up() {
    [[ -f $built ]] || build
    netns
    if configure && daemons_up; then
        echo "pbs.sh: configuration changed: restarting"
        in_ns /etc/init.d/pbs stop >/dev/null 2>&1 || true
    fi
    if ! daemons_up; then  # starts only the missing ones
        in_ns /etc/init.d/pbs start >/dev/null 2>&1 || true
        wait_for 60 "pbs_server" server_up || {
            echo "pbs.sh: server did not start; after a failed first start wipe $spool and rerun" >&2
            tail -n 20 "$spool/server_logs/$(date +%Y%m%d)" >&2 || true
            exit 1
        }
    fi
    qmgr "set server acl_roots = root"          # else root's jobs: "Bad UID for job execution"
    qmgr "set server job_history_enable = True"  # finished jobs stay visible to qstat -x
    qmgr "set server scheduler_iteration = 10"
    qmgr "list resource ngpus" >/dev/null 2>&1 || qmgr "create resource ngpus type=long, flag=nh"
    # 8 CPUs (like the Slurm node) and 2 declared GPUs: a count to schedule, not devices.
    qmgr "set node pbshost resources_available.ncpus = 8"
    qmgr "set node pbshost resources_available.ngpus = 2"
    wait_for 60 "node pbshost free" node_ready || {
        in_ns /opt/pbs/bin/pbsnodes -a >&2
        tail -n 20 "$spool/mom_logs/$(date +%Y%m%d)" >&2 || true
        exit 1
    }
    echo "pbs up: OpenPBS $(in_ns /opt/pbs/bin/qstat --version | awk '{print $NF}') in netns $ns ($addr, server pbshost, 8 cpus, 2 ngpus)"
}

down() {
    if [[ -x /etc/init.d/pbs && -e /run/netns/$ns ]]; then
        in_ns /etc/init.d/pbs stop >/dev/null 2>&1 || true
    fi
    echo "pbs down"
}

case ${1:-} in
    up) up ;;
    down) down ;;
    *) echo "usage: pbs.sh up|down" >&2; exit 2 ;;
esac
