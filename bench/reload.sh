#!/usr/bin/env bash
# Reload under load (issue 5), sockherd next to nginx and PM2, one command, from anywhere:
#
#   bash bench/reload.sh
#
# Builds build-bench/ (Release), then for each target in turn: starts it on a free 127.0.0.1 port,
# runs the load generator's reload scenario (a paced loop of fresh sessions: open, one echo,
# close; plus long-lived echo sessions that are not reopened when closed) for RELOAD_DURATION
# seconds, and reloads the target every RELOAD_EVERY seconds meanwhile:
#   sockherd  4 workers, `kill -HUP <supervisor>`
#   nginx     the seed topology (bench/peers/seed: nginx round robin -> 4 Node `ws` processes;
#             redis-server runs too, unused by /echo), `nginx -s reload`
#   pm2       PM2 cluster mode, 4 instances of bench/peers/pm2/echo.js, `pm2 reload <app>`
#             (PM2 installed by npm into bench/peers/pm2/node_modules, PM2_HOME in a temp dir)
# then stops it. Writes the "## Reload under load" section of bench/RESULTS.md (the other sections
# stay as they are). Traffic goes to 127.0.0.0/8 only; every wait has a deadline; whatever it
# starts is stopped on exit (trap), `pm2 kill` included.
#
# Knobs (environment):
#   RELOAD_TARGETS="sockherd nginx pm2"  which targets, in this order
#   RELOAD_DURATION=20        seconds of load per target
#   RELOAD_EVERY=4            seconds between reloads (the first one RELOAD_EVERY s after the start)
#   RELOAD_SESSIONS=200       long-lived echo sessions
#   RELOAD_PROBES=8           loops opening fresh sessions
#   RELOAD_CONNECT_RATE=200   fresh sessions/s over all loops (0: as fast as they go)
#   RELOAD_SIZE=32            message bytes
#   RELOAD_PROCS=2            load generator processes
#   RELOAD_SOURCES=4          client source addresses 127.0.0.1 .. 127.0.0.K
#   RELOAD_RESULTS=bench/RESULTS.md  the report whose reload section is (re)written
#   RELOAD_KEEP=1             keep the temporary directory (configs, logs, raw JSON)
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD="$ROOT/build-bench"
TARGETS=${RELOAD_TARGETS:-"sockherd nginx pm2"}
DURATION=${RELOAD_DURATION:-20}
EVERY=${RELOAD_EVERY:-4}
SESSIONS=${RELOAD_SESSIONS:-200}
PROBES=${RELOAD_PROBES:-8}
CONNECT_RATE=${RELOAD_CONNECT_RATE:-200}
SIZE=${RELOAD_SIZE:-32}
PROCS=${RELOAD_PROCS:-2}
SOURCES=${RELOAD_SOURCES:-4}
RESULTS=${RELOAD_RESULTS:-"$ROOT/bench/RESULTS.md"}
SOCKHERD="$BUILD/sockherd"
LOADGEN="$BUILD/bench/sockherd-loadgen"
SEED="$ROOT/bench/peers/seed"
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
LG_PID=""
export PM2_HOME="$TMP/pm2-home" # never the user's ~/.pm2
cleanup() {
    if [ -n "$LG_PID" ] && kill -0 "$LG_PID" 2>/dev/null; then kill -KILL "$LG_PID" 2>/dev/null || true; fi
    if [ -n "$SUP_PID" ] && kill -0 "$SUP_PID" 2>/dev/null; then stop_process "$SUP_PID" 50; fi
    if [ -n "$SEED_DIR" ]; then "$SEED/stop.sh" "$SEED_DIR" >/dev/null 2>&1 || true; fi
    if [ -n "$PM2_STARTED" ]; then timeout 30 "$PM2" kill >/dev/null 2>&1 || true; fi
    if [ "${RELOAD_KEEP:-0}" = 1 ]; then say "kept $TMP"; else rm -rf "$TMP"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

LOADAVG=$(cut -d' ' -f1-3 /proc/loadavg)
STARTED=$(date -u '+%Y-%m-%d %H:%M UTC')

# ---- build -------------------------------------------------------------------------------
say "building Release in $BUILD (log: $TMP/build.log)"
build_bench "$BUILD" "$ROOT" "$TMP/build.log" || die "build failed"
[ -x "$SOCKHERD" ] && [ -x "$LOADGEN" ] || die "build produced no $SOCKHERD or $LOADGEN"

case " $TARGETS " in *" pm2 "*)
    if [ ! -x "$PM2" ] || [ ! -f "$PM2_DIR/node_modules/ws/package.json" ] ||
       [ ! -f "$PM2_DIR/node_modules/.package-lock.json" ] ||
       [ "$PM2_DIR/package-lock.json" -nt "$PM2_DIR/node_modules/.package-lock.json" ]; then
        say "npm ci in $PM2_DIR"
        (cd "$PM2_DIR" && timeout 300 npm ci --no-audit --no-fund) >"$TMP/npm.log" 2>&1 ||
            { tail -20 "$TMP/npm.log" >&2; die "npm ci failed in $PM2_DIR"; }
    fi ;;
esac

# ---- helpers -----------------------------------------------------------------------------
now() { date +%s.%N; }

# The server processes whose replacement a reload may cause, as a sorted pid list.
server_pids() {
    case $1 in
        sockherd) pgrep -P "$SUP_PID" 2>/dev/null | sort -n | tr '\n' ' ' || true ;;
        nginx) pgrep -P "$(awk '$1 == "nginx" { print $2 }' "$SEED_DIR/pids")" 2>/dev/null | sort -n | tr '\n' ' ' || true ;;
        pm2) timeout 20 "$PM2" jlist 2>/dev/null | python3 -c 'import json, sys
print(" ".join(str(p["pid"]) for p in sorted(json.load(sys.stdin), key=lambda p: p["pid"]) if p["pid"]))' || true ;;
    esac
}

# Sends one reload to target $1 and waits for the command (bounded).
reload_target() {
    case $1 in
        sockherd) kill -HUP "$SUP_PID" ;;
        nginx) timeout 20 "$NGINX_BIN" -p "$SEED_DIR" -c "$SEED_DIR/nginx.conf" -e "$SEED_DIR/nginx-error.log" -s reload ;;
        pm2) timeout 60 "$PM2" reload "$PM2_APP" ;;
    esac
}

reload_command() {
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
    esac
}

# ---- runs --------------------------------------------------------------------------------
: >"$TMP/results.jsonl"
for t in $TARGETS; do
    case $t in sockherd|nginx|pm2) ;; *) die "unknown target '$t' (sockherd, nginx, pm2)" ;; esac
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
        say "$t: reload $i (exit $rc, $(awk -v a="$r0" -v b="$r1" 'BEGIN { printf "%.2f", b - a }') s)"
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
GIT="$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')$(git -C "$ROOT" diff --quiet HEAD -- 2>/dev/null || echo ', with uncommitted changes')"
VERSIONS="sockherd: \`$("$SOCKHERD" --version 2>&1 | head -1)\` (git $GIT), Release build in \`build-bench/\`"
VERSIONS="$VERSIONS; nginx: $("$NGINX_BIN" -v 2>&1 | sed 's/^nginx version: //'); Node.js: $(node --version)"
VERSIONS="$VERSIONS; ws: $(node -p 'require(process.argv[1]).version' "$SEED/node_modules/ws/package.json" 2>/dev/null || echo '?')"
VERSIONS="$VERSIONS; PM2: $(node -p 'require(process.argv[1]).version' "$PM2_DIR/node_modules/pm2/package.json" 2>/dev/null || echo '?')"
{
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
grep -i 'reload\|SIGHUP' "$TMP/sockherd.log" 2>/dev/null | sed 's/^[0-9-]* [0-9:.]* //' | head -12 >"$TMP/sockherd-reload.log" || true
python3 "$ROOT/bench/reload_report.py" "$TMP" "$RESULTS"
say "wrote the reload section of $RESULTS"
