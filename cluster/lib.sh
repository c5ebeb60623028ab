# Helpers shared by up.sh and down.sh (sourced, not run).

# running NAME: true if a live (non-zombie) process has exactly this name.
# Stopped daemons linger as zombies for about a second, so check the state.
running() {
    ps -C "$1" -o stat= 2>/dev/null | grep -qv '^Z'
}

# wait_for SECONDS WHAT CMD...: retry CMD every 0.2 s until it succeeds.
wait_for() {
    local limit=$1 what=$2; shift 2
    local end=$((SECONDS + limit))
    until "$@" >/dev/null 2>&1; do
        if ((SECONDS >= end)); then
            echo "cluster: timed out after ${limit}s waiting for $what" >&2
            return 1
        fi
        sleep 0.2
    done
}

stopped() { ! running "$1"; }

# stop NAME PIDFILE: SIGTERM the daemon (its pidfile's pid, plus any other
# live process of exactly that name, by pid) and wait until none is left;
# SIGKILL after 30 s.
stop() {
    local name=$1 pidfile=$2 sig pids
    for sig in TERM KILL; do
        running "$name" || break
        pids=$(ps -C "$name" -o pid=,stat= | awk '$2 !~ /^Z/ {print $1}')
        [[ -s $pidfile ]] && pids="$(<"$pidfile") $pids"
        for pid in $pids; do
            [[ $(ps -p "$pid" -o comm= 2>/dev/null) == "$name" ]] && kill "-$sig" "$pid" 2>/dev/null || true
        done
        wait_for 30 "$name to stop" stopped "$name" 2>/dev/null && break
    done
    stopped "$name" || { echo "cluster: could not stop $name" >&2; return 1; }
    rm -f "$pidfile"
}

# Root only; serialise up.sh/down.sh runs (e.g. from parallel test workers).
[[ $(id -u) == 0 ]] || { echo "cluster: must run as root" >&2; exit 1; }
exec 9>/run/landscape-cluster.lock
flock -w 300 9 || { echo "cluster: another up/down.sh holds the lock" >&2; exit 1; }
