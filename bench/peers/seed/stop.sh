#!/usr/bin/env bash
# Stops what start.sh started: bench/peers/seed/stop.sh <rundir>
# Reads <rundir>/pids ("<name> <pid>" per line) and stops, in turn, the Node backends (which close
# their WebSockets with 1001), nginx and redis: TERM, up to SEED_STOP_TIMEOUT seconds (default 10)
# per group, then KILL for whatever is left, nginx's worker processes included. A pid whose process is no longer the expected program
# (nginx / node / redis-server) is skipped. Exits 0 when nothing listed is left running.
set -uo pipefail

[ $# -eq 1 ] || { echo "usage: $0 <rundir>" >&2; exit 2; }
RUNDIR=$1
PIDS="$RUNDIR/pids"
TIMEOUT=${SEED_STOP_TIMEOUT:-10}
[ -f "$PIDS" ] || { echo "seed stop: no $PIDS; nothing to stop" >&2; exit 0; }

# is_ours <name> <pid>: the pid is alive and runs the program its name says.
is_ours() {
    local name=$1 pid=$2 cmd
    [ -r "/proc/$pid/cmdline" ] || return 1
    cmd=$( { tr '\0' ' ' < "/proc/$pid/cmdline"; } 2>/dev/null) || return 1
    case $name in
        nginx*) [[ $cmd == nginx* ]] ;;
        node*)  [[ $cmd == *app.js* ]] ;;
        redis*) [[ $cmd == *redis-server* ]] ;;
        *) return 1 ;;
    esac
}

# stop_phase <prefix>: TERM every listed process whose name starts with <prefix>, wait for them
# (bounded), KILL what is left. nginx's workers are collected first in case the master needs KILL.
STOPPED=0
FAILED=0
stop_phase() {
    local prefix=$1 name pid w t
    local targets=()
    while read -r name pid; do
        [ -n "${pid:-}" ] || continue
        [[ $name == "$prefix"* ]] || continue
        is_ours "$name" "$pid" || continue
        targets+=("$name $pid")
        if [ "$prefix" = nginx ]; then
            for w in $(pgrep -P "$pid" 2>/dev/null); do targets+=("nginx-worker $w"); done
        fi
    done < "$PIDS"
    [ ${#targets[@]} -gt 0 ] || return 0
    for t in "${targets[@]}"; do
        [[ ${t% *} == nginx-worker ]] || kill -TERM "${t#* }" 2>/dev/null || true
    done
    local left=("${targets[@]}") deadline=$((SECONDS + TIMEOUT)) killed=
    while :; do
        local still=()
        for t in "${left[@]}"; do is_ours "${t% *}" "${t#* }" && still+=("$t"); done
        left=("${still[@]}")
        [ ${#left[@]} -gt 0 ] || break
        if [ $SECONDS -ge $deadline ]; then
            [ -z "$killed" ] || { echo "seed stop: could not stop: ${left[*]}" >&2; FAILED=1; break; }
            echo "seed stop: still running after ${TIMEOUT}s, sending KILL: ${left[*]}" >&2
            for t in "${left[@]}"; do kill -KILL "${t#* }" 2>/dev/null || true; done
            killed=1
            deadline=$((SECONDS + 2))
        fi
        sleep 0.1
    done
    STOPPED=$((STOPPED + ${#targets[@]}))
}

# Node backends first (they close their WebSockets with 1001 through nginx), then nginx, then redis.
stop_phase node
stop_phase nginx
stop_phase redis
[ $FAILED -eq 0 ] || exit 1
rm -f "$PIDS"
echo "seed stop: stopped ($STOPPED processes)" >&2
exit 0
