# Shell helpers shared by bench/suite.sh, bench/run.sh, bench/fanout.sh, bench/reload.sh and
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
# other nodes that run side by side; the admin listener on 127.0.0.1:$3 if given (non-empty),
# else off; the listener mode $4 (handoff, shared, reuseport) if given, else the default. The
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
    if [ -n "${4:-}" ]; then echo "mode = \"$4\""; fi
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

# $1 and every process below it (children, grandchildren, … up to 4 levels), one pid a line.
proc_tree() {
    pt_level=$*
    pt_depth=0
    while [ -n "$pt_level" ] && [ $pt_depth -lt 5 ]; do
        pt_next=""
        for pt_p in $pt_level; do
            [ -d "/proc/$pt_p" ] || continue
            echo "$pt_p"
            pt_next="$pt_next $(pgrep -P "$pt_p" 2>/dev/null | tr '\n' ' ')"
        done
        pt_level=$(echo $pt_next)
        pt_depth=$((pt_depth + 1))
    done
}

# The summed VmRSS in KiB of the processes $@ (pids; gone ones count 0).
rss_kib() {
    rk_sum=0
    for rk_p in "$@"; do
        rk_v=$(awk '/^VmRSS:/ { print $2 }' "/proc/$rk_p/status" 2>/dev/null) || true
        rk_sum=$((rk_sum + ${rk_v:-0}))
    done
    echo "$rk_sum"
}

# utime+stime in clock ticks of the processes $@, summed (gone ones count 0).
cpu_ticks() {
    ct_sum=0
    for ct_p in "$@"; do
        ct_v=$(sed 's/^.*) //' "/proc/$ct_p/stat" 2>/dev/null | awk '{ print $12 + $13 }') || true
        ct_sum=$((ct_sum + ${ct_v:-0}))
    done
    echo "$ct_sum"
}

# Busy and total ticks of the whole machine (all CPUs), from the first line of /proc/stat.
machine_ticks() { awk '/^cpu / { t = 0; for (i = 2; i <= NF; i++) t += $i; print t - $5 - $6, t; exit }' /proc/stat; }

# Waits (at most $2 seconds) until the file $1 exists, or until process $3 (if given) has exited;
# true when it exists.
wait_file() {
    wf_n=$(($2 * 10))
    while [ "$wf_n" -gt 0 ]; do
        [ -e "$1" ] && return 0
        if [ -n "${3:-}" ] && ! kill -0 "$3" 2>/dev/null; then [ -e "$1" ]; return; fi
        sleep 0.1
        wf_n=$((wf_n - 1))
    done
    [ -e "$1" ]
}

# The commit (12 hex digits) checked out in the source tree $1 (a checkout or a worktree), read
# from its .git without running git; "?" when unknown. Uncommitted changes are not detected.
git_head() {
    gh_dir=$1
    if [ -f "$gh_dir/.git" ]; then
        gh_gd=$(sed -n 's/^gitdir: //p' "$gh_dir/.git")
        case $gh_gd in /*) ;; *) gh_gd="$gh_dir/$gh_gd" ;; esac
    elif [ -d "$gh_dir/.git" ]; then gh_gd="$gh_dir/.git"
    else echo '?'; return 0; fi
    gh_head=$(cat "$gh_gd/HEAD" 2>/dev/null || echo '?')
    case $gh_head in
        "ref: "*)
            gh_ref=${gh_head#ref: }
            gh_common=$gh_gd
            [ -f "$gh_gd/commondir" ] && gh_common="$gh_gd/$(cat "$gh_gd/commondir")"
            if [ -f "$gh_common/$gh_ref" ]; then gh_head=$(cat "$gh_common/$gh_ref")
            else gh_head=$(awk -v r="$gh_ref" '$2 == r { print $1 }' "$gh_common/packed-refs" 2>/dev/null | head -1); fi ;;
    esac
    printf '%s\n' "${gh_head:-?}" | cut -c1-12
}

# The CMake build directory that holds binary $1 (its directory or the parent; "" if none).
build_of() {
    bo_d=$(dirname "$1")
    if [ -f "$bo_d/CMakeCache.txt" ]; then (cd "$bo_d" && pwd)
    elif [ -f "$bo_d/../CMakeCache.txt" ]; then (cd "$bo_d/.." && pwd); fi
}

# The source tree of the CMake build that holds binary $1 ("" if unknown).
src_of() {
    so_b=$(build_of "$1")
    [ -z "$so_b" ] || sed -n 's/^CMAKE_HOME_DIRECTORY:INTERNAL=//p' "$so_b/CMakeCache.txt" 2>/dev/null || true
}

# npm ci in the peer directory $1 when its node_modules is missing or older than its
# package-lock.json (bounded, 300 s); output to the file $2. False on failure.
npm_ci_if_needed() {
    if [ -f "$1/node_modules/.package-lock.json" ] && [ ! "$1/package-lock.json" -nt "$1/node_modules/.package-lock.json" ]; then
        return 0
    fi
    (cd "$1" && timeout 300 npm ci --no-audit --no-fund) >"$2" 2>&1
}
