#!/usr/bin/env bash
# Reload (issue 5) or crash (issue 8) under load, sockherd next to its peers, one command, from
# anywhere:
#
#   bash bench/reload.sh                          # reload: sockherd, nginx, PM2
#   RELOAD_ACTION=crash bash bench/reload.sh      # crash:  sockherd, nginx, Node cluster
#
# Builds build-bench/ (Release; SOCKHERD_BIN / SOCKHERD_LOADGEN use those binaries instead), then
# for each target in turn: starts it on a free 127.0.0.1 port, runs the load generator's reload
# scenario (a paced loop of fresh sessions: open, one echo, close; plus long-lived echo sessions
# that are not reopened when closed) for RELOAD_DURATION seconds, and acts on the target every
# RELOAD_EVERY seconds meanwhile, then stops it. RELOAD_ACTION=reload:
#   sockherd  4 workers, `kill -HUP <supervisor>`
#   nginx     the seed topology (bench/peers/seed: nginx round robin -> 4 Node `ws` processes;
#             redis-server runs too, unused by /echo), `nginx -s reload`
#   pm2       PM2 cluster mode, 4 instances of bench/peers/pm2/echo.js, `pm2 reload <app>`
#             (PM2 installed by npm into bench/peers/pm2/node_modules, PM2_HOME in a temp dir)
# RELOAD_ACTION=crash: `kill -9` of one worker process (the one with the lowest pid at that moment):
#   sockherd  a worker (the supervisor starts a new one)
#   nginx     one of the seed's Node backends (nothing restarts it: the seed has no process
#             manager; nginx sends new connections to the other three)
#   pm2       one PM2 instance (PM2 starts a new one)
#   cluster   one worker of bench/peers/cluster (Node's cluster module, 4 workers; its primary
#             forks a new one)
# Writes the "## Reload under load" (or "## Crash under load") section of RELOAD_RESULTS (the other
# sections stay as they are). Traffic goes to 127.0.0.0/8 only; every wait has a deadline;
# whatever it starts is stopped on exit (trap), `pm2 kill` included.
#
# Knobs (environment):
#   RELOAD_ACTION=reload      reload | crash
#   RELOAD_TARGETS=           which targets, in this order (default: "sockherd nginx pm2" for
#                             reload, "sockherd nginx cluster" for crash)
#   RELOAD_DURATION=20        seconds of load per target
#   RELOAD_EVERY=4            seconds between actions (the first one RELOAD_EVERY s after the
#                             start; default for crash: RELOAD_DURATION / 2, so one crash)
#   RELOAD_SESSIONS=200       long-lived echo sessions
#   RELOAD_PROBES=8           loops opening fresh sessions
#   RELOAD_CONNECT_RATE=200   fresh sessions/s over all loops (0: as fast as they go)
#   RELOAD_SIZE=32            message bytes
#   RELOAD_PROCS=2            load generator processes
#   RELOAD_SOURCES=4          client source addresses 127.0.0.1 .. 127.0.0.K
#   RELOAD_RESULTS=           the report whose section is (re)written (default
#                             bench/results/reload.md, or bench/results/crash.md for crash)
#   RELOAD_EXPORT=DIR         also copy the raw results (results.jsonl, meta) into DIR (bench/suite.sh)
#   RELOAD_KEEP=1             keep the temporary directory (configs, logs, raw JSON)
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD="$ROOT/build-bench"
ACTION=${RELOAD_ACTION:-reload}
case $ACTION in
    reload) TARGETS=${RELOAD_TARGETS:-"sockherd nginx pm2"} ;;
    crash) TARGETS=${RELOAD_TARGETS:-"sockherd nginx cluster"} ;;
    *) echo "[reload] error: RELOAD_ACTION must be reload or crash, not '$ACTION'" >&2; exit 1 ;;
esac
DURATION=${RELOAD_DURATION:-20}
if [ "$ACTION" = crash ]; then EVERY=${RELOAD_EVERY:-$(((DURATION + 1) / 2))}; else EVERY=${RELOAD_EVERY:-4}; fi
SESSIONS=${RELOAD_SESSIONS:-200}
PROBES=${RELOAD_PROBES:-8}
CONNECT_RATE=${RELOAD_CONNECT_RATE:-200}
SIZE=${RELOAD_SIZE:-32}
PROCS=${RELOAD_PROCS:-2}
SOURCES=${RELOAD_SOURCES:-4}
RESULTS=${RELOAD_RESULTS:-"$ROOT/bench/results/$ACTION.md"}
SOCKHERD=${SOCKHERD_BIN:-"$BUILD/sockherd"}
LOADGEN=${SOCKHERD_LOADGEN:-"$BUILD/bench/sockherd-loadgen"}
SEED="$ROOT/bench/peers/seed"
CLUSTER_DIR="$ROOT/bench/peers/cluster"
PM2_DIR="$ROOT/bench/peers/pm2"
PM2="$PM2_DIR/node_modules/.bin/pm2"
PM2_APP=sockherd-bench-echo
NGINX_BIN=$(command -v nginx || echo /usr/sbin/nginx)

say() { printf '[reload] %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }
. "$ROOT/bench/lib.sh" # port_in_use, pick_port, build_bench, node_config_head, wait_healthz, stop_process
for tool in cmake curl awk od timeout python3 node npm pgrep; do
    command -v "$tool" >/dev/null 2>&1 || die "needs '$tool' on PATH"
done

TMP=$(mktemp -d "${TMPDIR:-/tmp}/sockherd-reload.XXXXXX")
SUP_PID=""
SEED_DIR=""
PM2_STARTED=""
CLUSTER_PID=""
LG_PID=""
export PM2_HOME="$TMP/pm2-home" # never the user's ~/.pm2
cleanup() {
    if [ -n "$LG_PID" ] && kill -0 "$LG_PID" 2>/dev/null; then kill -KILL "$LG_PID" 2>/dev/null || true; fi
    if [ -n "$SUP_PID" ] && kill -0 "$SUP_PID" 2>/dev/null; then stop_process "$SUP_PID" 50; fi
    if [ -n "$SEED_DIR" ]; then "$SEED/stop.sh" "$SEED_DIR" >/dev/null 2>&1 || true; fi
    if [ -n "$PM2_STARTED" ]; then timeout 30 "$PM2" kill >/dev/null 2>&1 || true; fi
    if [ -n "$CLUSTER_PID" ] && kill -0 "$CLUSTER_PID" 2>/dev/null; then stop_process "$CLUSTER_PID" 50; fi
    if [ "${RELOAD_KEEP:-0}" = 1 ]; then say "kept $TMP"; else rm -rf "$TMP"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

LOADAVG=$(cut -d' ' -f1-3 /proc/loadavg)
STARTED=$(date -u '+%Y-%m-%d %H:%M UTC')

for t in $TARGETS; do
    case $ACTION:$t in
        reload:sockherd|reload:nginx|reload:pm2|crash:sockherd|crash:nginx|crash:pm2|crash:cluster) ;;
        reload:cluster) die "target 'cluster' has no reload (Node's cluster module has none; PM2 is the reload peer)" ;;
        *) die "unknown target '$t' (sockherd, nginx, pm2, cluster)" ;;
    esac
done

# ---- build -------------------------------------------------------------------------------
targets=()
[ -n "${SOCKHERD_BIN:-}" ] || targets+=(sockherd)
[ -n "${SOCKHERD_LOADGEN:-}" ] || targets+=(sockherd-loadgen)
if [ ${#targets[@]} -gt 0 ]; then
    say "building ${targets[*]} (Release) in $BUILD (log: $TMP/build.log)"
    build_bench "$BUILD" "$ROOT" "$TMP/build.log" "${targets[@]}" || die "build failed"
fi
[ -x "$SOCKHERD" ] && [ -x "$LOADGEN" ] || die "no binary at $SOCKHERD or $LOADGEN"

case " $TARGETS " in *" pm2 "*)
    if [ ! -x "$PM2" ] || [ ! -f "$PM2_DIR/node_modules/ws/package.json" ] ||
       [ ! -f "$PM2_DIR/node_modules/.package-lock.json" ] ||
       [ "$PM2_DIR/package-lock.json" -nt "$PM2_DIR/node_modules/.package-lock.json" ]; then
        say "npm ci in $PM2_DIR"
        (cd "$PM2_DIR" && timeout 300 npm ci --no-audit --no-fund) >"$TMP/npm.log" 2>&1 ||
            { tail -20 "$TMP/npm.log" >&2; die "npm ci failed in $PM2_DIR"; }
    fi ;;
esac
case " $TARGETS " in *" cluster "*)
    npm_ci_if_needed "$CLUSTER_DIR" "$TMP/npm-cluster.log" ||
        { tail -20 "$TMP/npm-cluster.log" >&2; die "npm ci failed in $CLUSTER_DIR"; } ;;
esac

# ---- helpers -----------------------------------------------------------------------------
now() { date +%s.%N; }

# The server processes whose replacement a reload may cause, as a sorted pid list.
server_pids() {
    case $1 in
        sockherd) pgrep -P "$SUP_PID" 2>/dev/null | sort -n | tr '\n' ' ' || true ;;
        nginx)
            if [ "$ACTION" = crash ]; then # the Node backends: one of them is what a crash kills
                for p in $(awk '$1 ~ /^node/ { print $2 }' "$SEED_DIR/pids"); do kill -0 "$p" 2>/dev/null && echo "$p"; done |
                    sort -n | tr '\n' ' ' || true
            else
                pgrep -P "$(awk '$1 == "nginx" { print $2 }' "$SEED_DIR/pids")" 2>/dev/null | sort -n | tr '\n' ' ' || true
            fi ;;
        pm2) timeout 20 "$PM2" jlist 2>/dev/null | python3 -c 'import json, sys
print(" ".join(str(p["pid"]) for p in sorted(json.load(sys.stdin), key=lambda p: p["pid"]) if p["pid"]))' || true ;;
        cluster) pgrep -P "$CLUSTER_PID" 2>/dev/null | sort -n | tr '\n' ' ' || true ;;
    esac
}

# The worker process a crash kills: the lowest pid among target $1's workers (for nginx: the
# seed's first Node backend); empty when there is none.
crash_victim() {
    case $1 in
        nginx) awk '$1 == "node0" { print $2 }' "$SEED_DIR/pids" ;;
        *) server_pids "$1" | awk '{ print $1 }' ;;
    esac
}

# Sends one reload (or, for crash, kill -9 of one worker) to target $1 and waits for the command
# (bounded).
reload_target() {
    if [ "$ACTION" = crash ]; then
        local victim
        victim=$(crash_victim "$1")
        [ -n "$victim" ] || { echo "no worker process to kill"; return 1; }
        echo "kill -9 $victim"
        kill -KILL "$victim"
        return
    fi
    case $1 in
        sockherd) kill -HUP "$SUP_PID" ;;
        nginx) timeout 20 "$NGINX_BIN" -p "$SEED_DIR" -c "$SEED_DIR/nginx.conf" -e "$SEED_DIR/nginx-error.log" -s reload ;;
        pm2) timeout 60 "$PM2" reload "$PM2_APP" ;;
    esac
}

reload_command() {
    if [ "$ACTION" = crash ]; then
        case $1 in
            sockherd) echo 'kill -9 <the lowest worker pid: a child of the supervisor>' ;;
            nginx) echo 'kill -9 <the Node backend node0 (RUNDIR/pids)>' ;;
            pm2) echo 'kill -9 <the lowest PM2 instance pid (pm2 jlist)>' ;;
            cluster) echo 'kill -9 <the lowest worker pid: a child of the cluster primary>' ;;
        esac
        return
    fi
    case $1 in
        sockherd) echo 'kill -HUP <supervisor pid>' ;;
        nginx) echo 'nginx -p RUNDIR -c RUNDIR/nginx.conf -e RUNDIR/nginx-error.log -s reload' ;;
        pm2) echo "PM2_HOME=<temp dir> bench/peers/pm2/node_modules/.bin/pm2 reload $PM2_APP" ;;
    esac
}

start_target() {
    local t=$1 port=$2 n
    case $t in
        sockherd)
            {
                node_config_head 4 "$port"
                cat <<EOF

[log]
level = "info"                   # the reload lines

[[route]]
path = "/echo"
kind = "echo"
EOF
            } >"$TMP/sockherd.toml"
            "$SOCKHERD" run --config "$TMP/sockherd.toml" >"$TMP/sockherd.log" 2>&1 &
            SUP_PID=$!
            n=$(wait_healthz "$port" 4 "$SUP_PID")
            kill -0 "$SUP_PID" 2>/dev/null || { cat "$TMP/sockherd.log" >&2; die "sockherd exited"; }
            ;;
        nginx)
            SEED_DIR="$TMP/seed"
            "$SEED/start.sh" "$port" "$SEED_DIR" >"$TMP/seed-start.log" 2>&1 ||
                { tail -20 "$TMP/seed-start.log" >&2; die "the seed topology did not start"; }
            n=$(wait_healthz "$port" 4)
            ;;
        pm2)
            PM2_STARTED=1
            timeout 60 "$PM2" start "$PM2_DIR/echo.js" -i 4 --name "$PM2_APP" -- "$port" >"$TMP/pm2-start.log" 2>&1 ||
                { tail -20 "$TMP/pm2-start.log" >&2; die "pm2 start failed"; }
            n=$(wait_healthz "$port" 4)
            ;;
        cluster)
            node "$CLUSTER_DIR/app.js" "$port" 4 >"$TMP/cluster.log" 2>&1 &
            CLUSTER_PID=$!
            n=$(wait_healthz "$port" 4 "$CLUSTER_PID")
            kill -0 "$CLUSTER_PID" 2>/dev/null || { cat "$TMP/cluster.log" >&2; die "the cluster peer exited"; }
            ;;
    esac
    [ "$n" -ge 1 ] || die "$t never answered /healthz on port $port"
    say "$t ready on 127.0.0.1:$port ($n of 4 workers answered /healthz)"
}

stop_target() {
    case $1 in
        sockherd)
            stop_process "$SUP_PID" 150
            SUP_PID=""
            ;;
        nginx)
            cp "$SEED_DIR"/*.log "$TMP/" 2>/dev/null || true
            "$SEED/stop.sh" "$SEED_DIR" >"$TMP/seed-stop.log" 2>&1 || say "seed stop reported a failure"
            SEED_DIR=""
            ;;
        pm2)
            timeout 30 "$PM2" kill >"$TMP/pm2-kill.log" 2>&1 || say "pm2 kill reported a failure"
            PM2_STARTED=""
            ;;
        cluster)
            stop_process "$CLUSTER_PID" 50
            CLUSTER_PID=""
            ;;
    esac
}

# ---- runs --------------------------------------------------------------------------------
: >"$TMP/results.jsonl"
for t in $TARGETS; do
    port=$(pick_port) || die "no free port"
    say "$t: starting on 127.0.0.1:$port"
    start_target "$t" "$port"
    pids_before=$(server_pids "$t")
    args=(--scenario reload --target "127.0.0.1:$port" --path /echo --duration "$DURATION" --procs "$PROCS"
          --sources "$SOURCES" --concurrency "$PROBES" --connections "$SESSIONS" --connect-rate "$CONNECT_RATE"
          --size "$SIZE")
    echo "${args[*]}" | sed "s/127\.0\.0\.1:$port/127.0.0.1:PORT/" >"$TMP/loadgen.cmd"
    : >"$TMP/$t.reloads"
    t_launch=$(now)
    timeout $((DURATION + 120)) "$LOADGEN" "${args[@]}" >"$TMP/$t.json" 2>"$TMP/$t.err" &
    LG_PID=$!
    i=1
    while [ $((i * EVERY)) -lt "$DURATION" ]; do
        wait_s=$(awk -v a="$t_launch" -v b="$(now)" -v k=$((i * EVERY)) 'BEGIN { d = a + k - b; print (d > 0 ? d : 0) }')
        sleep "$wait_s"
        kill -0 "$LG_PID" 2>/dev/null || break
        r0=$(now)
        rc=0
        reload_target "$t" >>"$TMP/$t.reload.log" 2>&1 || rc=$?
        r1=$(now)
        echo "$r0 $r1 $rc" >>"$TMP/$t.reloads"
        say "$t: $ACTION $i (exit $rc, $(awk -v a="$r0" -v b="$r1" 'BEGIN { printf "%.2f", b - a }') s)"
        i=$((i + 1))
    done
    lg_rc=0
    wait "$LG_PID" || lg_rc=$?
    LG_PID=""
    [ $lg_rc -eq 0 ] || { say "$t: load generator failed (exit $lg_rc):"; cat "$TMP/$t.err" >&2; }
    sleep 0.5 # a replaced process may still be on its way out
    pids_after=$(server_pids "$t")
    python3 - "$t" "$TMP/$t.json" "$TMP/$t.reloads" "$pids_before" "$pids_after" >>"$TMP/results.jsonl" <<'PY'
import json, sys
t, jpath, rpath, before, after = sys.argv[1:6]
try:
    res = json.loads(open(jpath).read().strip().splitlines()[-1])
except (OSError, ValueError, IndexError):
    res = None
reloads = [dict(zip(("start", "end", "rc"), (float(a), float(b), int(c))))
           for a, b, c in (l.split() for l in open(rpath) if l.strip())]
print(json.dumps({"target": t, "result": res, "reloads": reloads,
                  "pids_before": before.split(), "pids_after": after.split()}))
PY
    say "$t: $(tail -1 "$TMP/results.jsonl" | cut -c1-300)…"
    stop_target "$t"
    sleep 2 # let sockets in TIME_WAIT and the last processes settle before the next target
done

# ---- report ------------------------------------------------------------------------------
MACHINE="$(nproc) CPUs ($(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)), $(awk '/MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo) RAM, Linux $(uname -r)"
SRC=$(src_of "$SOCKHERD")
[ -n "$SRC" ] || SRC=$ROOT
VERSIONS="sockherd: \`$("$SOCKHERD" --version 2>&1 | head -1)\` at commit $(git_head "$SRC") of \`$SRC\` (uncommitted changes not detected), $(sed -n 's/^CMAKE_BUILD_TYPE:STRING=//p' "$(build_of "$SOCKHERD")/CMakeCache.txt" 2>/dev/null || echo '?') build"
VERSIONS="$VERSIONS; nginx: $("$NGINX_BIN" -v 2>&1 | sed 's/^nginx version: //'); Node.js: $(node --version)"
VERSIONS="$VERSIONS; ws: $(node -p 'require(process.argv[1]).version' "$SEED/node_modules/ws/package.json" 2>/dev/null || echo '?')"
VERSIONS="$VERSIONS; PM2: $(node -p 'require(process.argv[1]).version' "$PM2_DIR/node_modules/pm2/package.json" 2>/dev/null || echo '?')"
{
    echo "ACTION=$ACTION"
    echo "COMMAND=${RELOAD_ACTION:+RELOAD_ACTION=$RELOAD_ACTION }bash bench/reload.sh"
    echo "MACHINE=$MACHINE"
    echo "VERSIONS=$VERSIONS"
    echo "WHEN=$STARTED"
    echo "LOADAVG=$LOADAVG / $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "LOADGEN=build-bench/bench/sockherd-loadgen $(cat "$TMP/loadgen.cmd")"
    echo "EVERY=$EVERY"
    echo "DURATION=$DURATION"
    echo "PROBES=$PROBES"
    echo "CONNECT_RATE=$CONNECT_RATE"
    echo "SESSIONS=$SESSIONS"
    echo "SIZE=$SIZE"
    for t in $TARGETS; do echo "RELOAD_$t=$(reload_command "$t")"; done
} >"$TMP/meta"
[ -f "$TMP/sockherd.toml" ] && sed 's/127\.0\.0\.1:[0-9]*/127.0.0.1:PORT/' "$TMP/sockherd.toml" >"$TMP/sockherd.toml.txt"
if [ "$ACTION" = crash ]; then # from the first warning (the crash) on
    sed -n '/ warn: \| error: /,$p' "$TMP/sockherd.log" 2>/dev/null | sed '/SIGTERM/,$d' |
        sed 's/^[0-9-]* [0-9:.]* //' | head -12 >"$TMP/sockherd-reload.log" || true
else
    grep -i 'reload\|SIGHUP' "$TMP/sockherd.log" 2>/dev/null | sed 's/^[0-9-]* [0-9:.]* //' | head -12 >"$TMP/sockherd-reload.log" || true
fi
mkdir -p "$(dirname "$RESULTS")"
python3 "$ROOT/bench/reload_report.py" "$TMP" "$RESULTS"
say "wrote the $ACTION section of $RESULTS"
if [ -n "${RELOAD_EXPORT:-}" ]; then
    mkdir -p "$RELOAD_EXPORT"
    cp "$TMP/results.jsonl" "$TMP/meta" "$RELOAD_EXPORT/"
    cp "$TMP/sockherd-reload.log" "$RELOAD_EXPORT/" 2>/dev/null || true
    [ -f "$TMP/sockherd.toml.txt" ] && cp "$TMP/sockherd.toml.txt" "$RELOAD_EXPORT/"
fi
