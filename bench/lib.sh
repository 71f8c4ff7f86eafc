# Shell helpers shared by bench/run.sh, bench/fanout.sh, bench/reload.sh and
# bench/redis_fanout.sh (sourced, not run; POSIX sh).

# True when some socket on this host uses local TCP port $1.
port_in_use() {
    hex=$(printf ':%04X' "$1")
    awk -v p="$hex" 'substr($2, length($2) - 4) == p { found = 1 } END { exit !found }' \
        /proc/net/tcp /proc/net/tcp6 2>/dev/null
}

# A free port below the ephemeral range, so the load generator's own ports never collide.
pick_port() {
    i=0
    while [ $i -lt 100 ]; do
        p=$((20000 + $(od -An -N2 -tu2 /dev/urandom | tr -d ' ') % 10000))
        if ! port_in_use "$p"; then echo "$p"; return 0; fi
        i=$((i + 1))
    done
    return 1
}

# Configures the Release tree $1 of the sources in $2 (once) and builds sockherd and the load
# generator in it (or only the targets named after $3), output to the file $3; on failure shows
# the output's tail and returns 1.
build_bench() {
    bb_dir=$1 bb_src=$2 bb_log=$3
    shift 3
    [ $# -gt 0 ] || set -- sockherd sockherd-loadgen
    if ! { { [ -f "$bb_dir/CMakeCache.txt" ] || cmake -S "$bb_src" -B "$bb_dir" -DCMAKE_BUILD_TYPE=Release \
            -DSOCKHERD_BUILD_TESTS=OFF -DSOCKHERD_BUILD_BENCH=ON; } &&
            cmake --build "$bb_dir" -j"$(nproc)" --target "$@"; } >"$bb_log" 2>&1; then
        tail -30 "$bb_log" >&2
        return 1
    fi
}

# The start of a sockherd config: $1 workers listening on 127.0.0.1:$2, sharing no path with
# other nodes that run side by side; the admin listener on 127.0.0.1:$3 if given, else off. The
# caller appends the sections of its own.
node_config_head() {
    cat <<HEAD
[server]
workers = $1
control_socket = ""              # several nodes run side by side: no shared paths

[admin]
address = "${3:+127.0.0.1:$3}"

[[listener]]
address = "127.0.0.1:$2"
HEAD
}

# Waits (at most 15 s) until http://127.0.0.1:$1/healthz has answered from $2 different workers,
# or until process $3 (if given) has exited; prints how many workers answered.
wait_healthz() {
    wh_port=$1 wh_want=$2 wh_pid=${3:-} wh_seen=" " wh_count=0
    for _ in $(seq 1 150); do
        if [ -n "$wh_pid" ] && ! kill -0 "$wh_pid" 2>/dev/null; then break; fi
        if wh_body=$(curl -sf --max-time 1 "http://127.0.0.1:$wh_port/healthz" 2>/dev/null); then
            wh_w=$(printf '%s' "$wh_body" | sed -n 's/.*"worker":\([0-9]*\).*/\1/p')
            case "$wh_seen" in *" $wh_w "*) ;; *) wh_seen="$wh_seen$wh_w "; wh_count=$((wh_count + 1)) ;; esac
            [ "$wh_count" -ge "$wh_want" ] && break
        fi
        sleep 0.1
    done
    echo "$wh_count"
}

# Stops process $1, a child of this shell: SIGTERM, up to $2 tenths of a second to exit, SIGKILL,
# then reaps it.
stop_process() {
    kill -TERM "$1" 2>/dev/null || true
    for _ in $(seq 1 "$2"); do kill -0 "$1" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
}
