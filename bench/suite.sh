#!/usr/bin/env bash
# sockherd's benchmark suite (issue 8), one command, from the repository root:
#
#   bash bench/suite.sh                  # about 15 minutes on 2 shared cores, plus the build; writes bench/RESULTS.md
#   BENCH_QUICK=1 bash bench/suite.sh    # smoke test, a few minutes; writes a report in $TMPDIR
#
# Builds build-bench/ (Release; SOCKHERD_BIN / SOCKHERD_LOADGEN use those binaries instead),
# installs the peers' npm packages when missing (npm ci from their package-lock.json), starts
# sockherd and its peers on free 127.0.0.1 ports, and runs the same load generator commands
# against each, the systems taking turns run by run:
#   connect  WebSocket handshakes/s (open + close), sockherd once per listener mode
#            (BENCH_MODES), each peer once; CPU of sockherd's supervisor and workers around it
#   echo     messages/s and round trip p50/p99, per message size and connection count; with perf's
#            software counters (task-clock, context switches, migrations, syscalls) of the system's
#            processes over the middle of each window, when `perf stat` works here; sockherd also
#            at the worker counts of BENCH_ECHO_WORKER_VARIANTS (echo only)
#   fanout   one channel, N subscribers, one publisher, closed loop: deliveries/s, p99, lost; then,
#            per N, the same at a fixed rate (open loop, BENCH_FANOUT_RATE_DELIVERIES deliveries/s
#            offered to every system): p99 and lost at equal load
#   idle     per system, freshly started: summed VmRSS of all its processes before and while N
#            idle WebSocket sessions are held (sampled every second of the hold)
#   reload   bench/reload.sh (SIGHUP / nginx -s reload / pm2 reload under load)
#   crash    bench/reload.sh with RELOAD_ACTION=crash (kill -9 of one worker under load)
# Systems: sockherd (4 workers, listener mode BENCH_MAIN_MODE for everything but connect), the
# seed topology (bench/peers/seed: nginx -> 4 Node `ws` -> Redis), Node's cluster module with
# `ws` (bench/peers/cluster) and Bun's WebSocket server (bench/peers/bun). Then writes the report
# (bench/suite_report.py): the issue's targets with PASS/MISS, the tables, the exact commands,
# versions and machine. Traffic goes to 127.0.0.0/8 only; every wait has a deadline; whatever it
# starts is stopped on exit (trap).
#
# Knobs (environment):
#   BENCH_QUICK=1                      small counts and 2 s windows, report to $TMPDIR (smoke test)
#   BENCH_DURATION=8                   seconds per measured window (connect, echo, fanout)
#   BENCH_SCENARIOS="connect echo fanout idle reload crash"   which scenarios run
#   BENCH_SYSTEMS="sockherd seed cluster bun"                 which systems (sockherd always runs)
#   BENCH_MODES="handoff shared reuseport"   sockherd listener modes for connect
#   BENCH_MAIN_MODE=handoff            sockherd's listener mode for echo, fanout and idle
#   BENCH_WORKERS=4                    sockherd workers (and the peers' processes stay at 4)
#   BENCH_CONNECT_CONCURRENCY=64       connect: loops opening and closing sessions
#   BENCH_CONNECT_ROUNDS=3             connect: rounds over all systems (the table has their mean)
#   BENCH_ECHO_CONNECTIONS="100 1000"  echo: connection counts
#   BENCH_ECHO_SIZES="32 1024"         echo: message sizes (bytes)
#   BENCH_ECHO_INFLIGHT=1              echo: messages in flight per connection
#   BENCH_ECHO_WORKER_VARIANTS="4n 2 1"  echo: sockherd also with these worker counts (main mode, else
#                                      the same config), each its own system in the rotation ("": none);
#                                      W followed by n: W workers under worker_scheduling = "normal"
#                                      and supervisor_scheduling = "normal" (the kernel's default)
#   BENCH_CONNECT_SUPERVISOR_NORMAL=1  connect: also sockherd handoff with supervisor_scheduling =
#                                      "normal" (system sockherd-handoff-sn), in the same rotation (0: not)
#   BENCH_FANOUT_SUBSCRIBERS="1000 10000"  fanout: subscriber counts
#   BENCH_FANOUT_INFLIGHT=1            fanout: messages not yet back at the publisher
#   BENCH_FANOUT_RATE_DELIVERIES=30000 fanout at a fixed rate: deliveries/s offered, the publisher
#                                      paced at this / N msgs/s for N subscribers (0: no such runs)
#   BENCH_IDLE_CONNECTIONS="10000 40000"   idle: sessions held
#   BENCH_IDLE_HOLD=10                 idle: seconds RSS is sampled while the sessions are held
#                                      (they are held 5 s longer)
#   BENCH_RELOAD_DURATION=16           reload and crash: seconds of load per target
#   BENCH_LOADGEN_PROCS=2              load generator processes (idle: at least one per 10,000)
#   BENCH_SOURCES=8                    client source addresses 127.0.0.1 .. 127.0.0.K
#   BENCH_REPORT=bench/RESULTS.md      where the report goes
#   BENCH_KEEP=1                       keep the temporary directory (configs, logs, raw JSON)
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD="$ROOT/build-bench"
QUICK=${BENCH_QUICK:-0}
if [ "$QUICK" = 1 ]; then
    q_duration=2 q_rounds=1 q_echo_conns=100 q_echo_sizes=32 q_subs=1000 q_idle=4000 q_hold=3 q_reload=6
    q_report="${TMPDIR:-/tmp}/sockherd-suite-quick.md"
else
    q_duration=8 q_rounds=3 q_echo_conns="100 1000" q_echo_sizes="32 1024" q_subs="1000 10000"
    q_idle="10000 40000" q_hold=10 q_reload=16 q_report="$ROOT/bench/RESULTS.md"
fi
DURATION=${BENCH_DURATION:-$q_duration}
SCENARIOS=${BENCH_SCENARIOS:-"connect echo fanout idle reload crash"}
SYSTEMS=${BENCH_SYSTEMS:-"sockherd seed cluster bun"}
MODES=${BENCH_MODES:-"handoff shared reuseport"}
MAIN_MODE=${BENCH_MAIN_MODE:-handoff}
WORKERS=${BENCH_WORKERS:-4}
CONNECT_CONCURRENCY=${BENCH_CONNECT_CONCURRENCY:-64}
CONNECT_ROUNDS=${BENCH_CONNECT_ROUNDS:-$q_rounds}
ECHO_CONNECTIONS=${BENCH_ECHO_CONNECTIONS:-$q_echo_conns}
ECHO_SIZES=${BENCH_ECHO_SIZES:-$q_echo_sizes}
ECHO_INFLIGHT=${BENCH_ECHO_INFLIGHT:-1}
ECHO_WORKER_VARIANTS=${BENCH_ECHO_WORKER_VARIANTS-"4n 2 1"} # set but empty: no variants
CONNECT_SUPERVISOR_NORMAL=${BENCH_CONNECT_SUPERVISOR_NORMAL:-1}
FANOUT_SUBSCRIBERS=${BENCH_FANOUT_SUBSCRIBERS:-$q_subs}
FANOUT_INFLIGHT=${BENCH_FANOUT_INFLIGHT:-1}
FANOUT_RATE_DELIVERIES=${BENCH_FANOUT_RATE_DELIVERIES:-30000}
IDLE_CONNECTIONS=${BENCH_IDLE_CONNECTIONS:-$q_idle}
IDLE_HOLD=${BENCH_IDLE_HOLD:-$q_hold}
RELOAD_DURATION=${BENCH_RELOAD_DURATION:-$q_reload}
PROCS=${BENCH_LOADGEN_PROCS:-2}
SOURCES=${BENCH_SOURCES:-8}
REPORT=${BENCH_REPORT:-$q_report}
SOCKHERD=${SOCKHERD_BIN:-"$BUILD/sockherd"}
LOADGEN=${SOCKHERD_LOADGEN:-"$BUILD/bench/sockherd-loadgen"}
SEED="$ROOT/bench/peers/seed"
CLUSTER_DIR="$ROOT/bench/peers/cluster"
BUN_DIR="$ROOT/bench/peers/bun"
SEND_QUEUE_LIMIT=$((16 * 1024 * 1024)) # every system's per-connection send queue
FANOUT_SIZE=32
FANOUT_GRACE=2

say() { printf '[suite %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { say "error: $*"; exit 1; }
. "$ROOT/bench/lib.sh"
for tool in cmake curl awk od timeout python3 node npm pgrep; do
    command -v "$tool" >/dev/null 2>&1 || die "needs '$tool' on PATH"
done
has() { case " $1 " in *" $2 "*) return 0 ;; *) return 1 ;; esac; }
has "$SYSTEMS" sockherd || SYSTEMS="sockherd $SYSTEMS"
for s in $SYSTEMS; do case $s in sockherd|seed|cluster|bun) ;; *) die "unknown system '$s' (sockherd seed cluster bun)" ;; esac; done
for m in $MODES $MAIN_MODE; do case $m in handoff|shared|reuseport) ;; *) die "unknown listener mode '$m'" ;; esac; done
for s in $SCENARIOS; do case $s in connect|echo|fanout|idle|reload|crash) ;; *) die "unknown scenario '$s'" ;; esac; done
for w in $ECHO_WORKER_VARIANTS; do [[ $w =~ ^[1-9][0-9]*n?$ ]] || die "BENCH_ECHO_WORKER_VARIANTS: '$w' is not a worker count (W, or Wn for SCHED_OTHER)"; done
[[ $WORKERS =~ ^[1-9][0-9]*$ ]] || die "BENCH_WORKERS must be a worker count"
[[ $FANOUT_RATE_DELIVERIES =~ ^(0|[1-9][0-9]*)(\.[0-9]+)?$ ]] || die "BENCH_FANOUT_RATE_DELIVERIES must be a number of deliveries/s (0: none)"

TMP=$(mktemp -d "${TMPDIR:-/tmp}/sockherd-suite.XXXXXX")
mkdir -p "$TMP/raw" "$TMP/logs"
: >"$TMP/results.jsonl"
: >"$TMP/commands"
# What runs now: per system name, its main pid ("" when stopped); the seed's run directory.
declare -A PID PORT ADMIN
SEED_RUN=""
LG_PID="" # the running `timeout … sockherd-loadgen` or `timeout … bench/reload.sh`
cleanup() {
    local n
    if [ -n "${PERF_PID:-}" ] && kill -0 "$PERF_PID" 2>/dev/null; then stop_process "$PERF_PID" 20; fi
    # TERM to timeout(1) reaches the load generator (or reload.sh, whose own trap stops what it started).
    if [ -n "$LG_PID" ] && kill -0 "$LG_PID" 2>/dev/null; then stop_process "$LG_PID" 100; fi
    for n in "${!PID[@]}"; do
        if [ -n "${PID[$n]}" ] && kill -0 "${PID[$n]}" 2>/dev/null; then stop_process "${PID[$n]}" 50; fi
    done
    if [ -n "$SEED_RUN" ]; then "$SEED/stop.sh" "$SEED_RUN" >/dev/null 2>&1 || true; fi
    if [ "${BENCH_KEEP:-0}" = 1 ]; then say "kept $TMP"; else rm -rf "$TMP"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

T0=$SECONDS
STARTED=$(date -u '+%Y-%m-%d %H:%M UTC')
LOADAVG_START=$(cut -d' ' -f1-3 /proc/loadavg)

# ---- build and install ---------------------------------------------------------------------
targets=()
[ -n "${SOCKHERD_BIN:-}" ] || targets+=(sockherd)
[ -n "${SOCKHERD_LOADGEN:-}" ] || targets+=(sockherd-loadgen)
if [ ${#targets[@]} -gt 0 ]; then
    say "building ${targets[*]} (Release) in $BUILD (log: $TMP/logs/build.log)"
    build_bench "$BUILD" "$ROOT" "$TMP/logs/build.log" "${targets[@]}" || die "build failed"
fi
[ -x "$SOCKHERD" ] || die "no sockherd binary at $SOCKHERD"
[ -x "$LOADGEN" ] || die "no load generator at $LOADGEN"
"$LOADGEN" --help 2>/dev/null | grep -q 'idle:' || die "$LOADGEN has no idle scenario (an old build?)"

if has "$SYSTEMS" cluster || has "$SCENARIOS" crash; then
    say "npm packages of bench/peers/cluster"
    npm_ci_if_needed "$CLUSTER_DIR" "$TMP/logs/npm-cluster.log" ||
        { tail -20 "$TMP/logs/npm-cluster.log" >&2; die "npm ci failed in $CLUSTER_DIR"; }
fi
BUN=""
if has "$SYSTEMS" bun; then
    say "npm packages of bench/peers/bun"
    npm_ci_if_needed "$BUN_DIR" "$TMP/logs/npm-bun.log" ||
        { tail -20 "$TMP/logs/npm-bun.log" >&2; die "npm ci failed in $BUN_DIR"; }
    # The package's postinstall links the platform binary over node_modules/.bin/bun; where
    # install scripts did not run, the binary is in the platform package itself.
    for b in "$BUN_DIR/node_modules/.bin/bun" "$BUN_DIR"/node_modules/@oven/bun-linux-*/bin/bun; do
        if [ -x "$b" ] && timeout 20 "$b" --version >/dev/null 2>&1; then BUN=$b; break; fi
    done
    [ -n "$BUN" ] || die "no working bun binary under $BUN_DIR/node_modules (npm ci there; see README.md)"
fi
# The seed installs its own (apt nginx/redis, npm ci) in start.sh.

# ---- perf's software counters (echo) -------------------------------------------------------
# msgs/s alone does not say what is in the way when sockherd is slower than a peer; perf's
# software counters over all of a system's processes do: CPU time, sleeps and wake-ups (context
# switches) and syscalls per message. Checked once here; without a working perf the echo runs are
# as they were and the report says why the counters are missing. raw_syscalls:sys_enter is a
# tracepoint (tracefs, more privilege): without it the first three are still worth having.
PERF_EVENTS="" PERF_WHY=""
if ! command -v perf >/dev/null 2>&1; then
    PERF_WHY="no perf on PATH"
else
    for ev in task-clock,context-switches,cpu-migrations,raw_syscalls:sys_enter task-clock,context-switches,cpu-migrations; do
        if timeout 20 perf stat -x, -o /dev/null -e "$ev" -- true >>"$TMP/logs/perf-check.log" 2>&1; then
            PERF_EVENTS=$ev
            break
        fi
    done
    [ -n "$PERF_EVENTS" ] ||
        PERF_WHY="perf stat -e task-clock -- true failed: $(grep -v '^[[:space:]]*$' "$TMP/logs/perf-check.log" | tail -1)"
fi
if [ -n "$PERF_EVENTS" ]; then say "echo runs get perf stat -e $PERF_EVENTS"; else say "no perf counters: $PERF_WHY"; fi
# The counters cover the window less PERF_MARGIN s at each end (1 s; a quarter of a short window),
# so connection setup and the drain after the window are not in them.
PERF_MARGIN=$(awk -v d="$DURATION" 'BEGIN { m = d / 4; if (m > 1) m = 1; print m }')
PERF_MS=$(awk -v d="$DURATION" -v m="$PERF_MARGIN" 'BEGIN { printf "%d", (d - 2 * m) * 1000 }')
PERF_PID=""

# ---- systems -------------------------------------------------------------------------------
TAKEN=" "
take_port() { # prints a free port not handed out before in this run
    local p
    for _ in $(seq 1 20); do
        p=$(pick_port) || break
        case "$TAKEN" in *" $p "*) continue ;; esac
        TAKEN="$TAKEN$p "
        echo "$p"
        return 0
    done
    die "no free port"
}

# sockherd's config for the suite: $1 listener mode, $2 port, $3 admin port (the admin listener:
# readiness, and per-worker counters around each run), $4 workers (default BENCH_WORKERS), $5 "normal":
# [server] worker_scheduling and supervisor_scheduling = "normal" (the kernel's SCHED_OTHER) instead
# of sockherd's default SCHED_BATCH; "supervisor-normal": supervisor_scheduling = "normal" alone.
sockherd_config() {
    if [ "${5:-}" = normal ]; then
        node_config_head "${4:-$WORKERS}" "$2" "$3" "$1" |
            sed '/^workers = /a worker_scheduling = "normal"\nsupervisor_scheduling = "normal"'
    elif [ "${5:-}" = supervisor-normal ]; then
        node_config_head "${4:-$WORKERS}" "$2" "$3" "$1" | sed '/^workers = /a supervisor_scheduling = "normal"'
    else
        node_config_head "${4:-$WORKERS}" "$2" "$3" "$1"
    fi
    cat <<EOF

[supervisor]
drain_timeout = "1s"

[log]
level = "warn"

[websocket]
send_queue_limit = "16MiB"       # as the peers here

[[route]]
path = "/echo"
kind = "echo"

[[route]]
path = "/ws/"
kind = "pubsub"
EOF
}

# sockherd's systems are named sockherd-<mode> (BENCH_WORKERS workers), sockherd-<mode>-w<W>[n]
# (the same with W workers: echo's worker count variants) or sockherd-<mode>-sn (the supervisor
# under SCHED_OTHER: a connect variant). Their listener mode and worker count:
sockherd_mode() { local m=${1#sockherd-}; m=${m%-sn}; echo "${m%-w[0-9]*}"; }
sockherd_workers() {
    case $1 in
        sockherd-*-w[0-9]*) local w=${1##*-w}; echo "${w%n}" ;;
        *) echo "$WORKERS" ;;
    esac
}

# Starts system $1 (sockherd-<mode>[-w<W>], seed, cluster, bun) on a fresh port; sets PID[$1],
# PORT[$1]. False (with the reason in $TMP/logs/$1.refused) when it does not come up.
start_system() {
    local name=$1 port n want=4 log="$TMP/logs/$1.log"
    port=$(take_port)
    case $name in
        sockherd-*)
            want=$(sockherd_workers "$name")
            ADMIN[$name]=$(take_port)
            sockherd_config "$(sockherd_mode "$name")" "$port" "${ADMIN[$name]}" "$want" \
                "$(case $name in *-w[0-9]*n) echo normal ;; *-sn) echo supervisor-normal ;; esac)" >"$TMP/$name.toml"
            "$SOCKHERD" run --config "$TMP/$name.toml" >"$log" 2>&1 &
            PID[$name]=$!
            PORT[$name]=$port
            if ! n=$(wait_sockherd "$name"); then
                wait "${PID[$name]}" 2>/dev/null || true
                grep -v '^\s*$' "$log" | tail -3 >"$TMP/logs/$name.refused"
                PID[$name]=""
                return 1
            fi
            if [ "$n" -lt "$want" ]; then
                echo "only $n of $want workers up within 15 s" >"$TMP/logs/$name.refused"
                stop_system "$name"
                return 1
            fi
            say "$name ready on 127.0.0.1:$port ($n workers up, /healthz answered; admin on ${ADMIN[$name]})"
            return 0
            ;;
        seed)
            SEED_RUN="$TMP/seed-run"
            rm -rf "$SEED_RUN"
            if ! SEED_SEND_QUEUE_LIMIT=$SEND_QUEUE_LIMIT "$SEED/start.sh" "$port" "$SEED_RUN" >"$log" 2>&1; then
                tail -5 "$log" >"$TMP/logs/$name.refused"
                SEED_RUN=""
                return 1
            fi
            PID[$name]=$(awk '$1 == "nginx" { print $2 }' "$SEED_RUN/pids")
            ;;
        cluster)
            CLUSTER_SEND_QUEUE_LIMIT=$SEND_QUEUE_LIMIT node "$CLUSTER_DIR/app.js" "$port" 4 >"$log" 2>&1 &
            PID[$name]=$!
            ;;
        bun)
            BUN_PEER_SEND_QUEUE_LIMIT=$SEND_QUEUE_LIMIT "$BUN" "$BUN_DIR/server.js" "$port" >"$log" 2>&1 &
            PID[$name]=$!
            want=1
            ;;
    esac
    PORT[$name]=$port
    n=$(wait_healthz "$port" "$want" "$([ "$name" = seed ] || echo "${PID[$name]}")")
    if [ "$name" != seed ] && ! kill -0 "${PID[$name]}" 2>/dev/null; then
        wait "${PID[$name]}" 2>/dev/null || true
        grep -v '^\s*$' "$log" | tail -3 >"$TMP/logs/$name.refused"
        PID[$name]=""
        return 1
    fi
    if [ "$n" -lt "$want" ]; then
        echo "only $n of $want workers answered /healthz within 15 s" >"$TMP/logs/$name.refused"
        stop_system "$name"
        return 1
    fi
    say "$name ready on 127.0.0.1:$port ($n worker(s) answered /healthz)"
}

# Waits (at most 15 s) until sockherd system $1 has all its workers up (its /status.json) and its
# listener answers /healthz; prints the workers up. False when the process exited.
wait_sockherd() {
    local name=$1 up=0 want
    want=$(sockherd_workers "$1")
    for _ in $(seq 1 150); do
        kill -0 "${PID[$name]}" 2>/dev/null || return 1
        up=$(curl -sf --max-time 1 "http://127.0.0.1:${ADMIN[$name]}/status.json" 2>/dev/null |
            python3 -c 'import json, sys; print(json.load(sys.stdin).get("workers_up", 0))' 2>/dev/null || echo 0)
        if [ "$up" -ge "$want" ] && curl -sf --max-time 1 "http://127.0.0.1:${PORT[$name]}/healthz" >/dev/null 2>&1; then
            break
        fi
        sleep 0.1
    done
    echo "$up"
}

# Saves sockherd system $1's /status.json to the file $2 (bounded); nothing for the peers.
status_snapshot() {
    case $1 in sockherd-*) ;; *) return 0 ;; esac
    curl -sf --max-time 2 "http://127.0.0.1:${ADMIN[$1]}/status.json" >"$2" 2>/dev/null || rm -f "$2"
}

stop_system() {
    local name=$1
    if [ "$name" = seed ]; then
        if [ -n "$SEED_RUN" ]; then
            cp "$SEED_RUN"/*.log "$TMP/logs/" 2>/dev/null || true
            "$SEED/stop.sh" "$SEED_RUN" >>"$TMP/logs/seed-stop.log" 2>&1 || say "seed stop reported a failure"
            SEED_RUN=""
        fi
    elif [ -n "${PID[$name]:-}" ]; then
        stop_process "${PID[$name]}" 150
    fi
    PID[$name]=""
}

# Every process of system $1 (one pid a line).
system_pids() {
    if [ "$1" = seed ]; then
        proc_tree $(awk '{ print $2 }' "$SEED_RUN/pids" 2>/dev/null)
    else
        proc_tree "${PID[$1]}"
    fi
}

is_up() { [ -n "${PID[$1]:-}" ]; }

# Microseconds since the epoch, without a fork.
now_us() { echo "${EPOCHREALTIME//[!0-9]/}"; }

# perf stat on the processes $3 (pids separated by spaces) of echo run $1 while the load generator
# (LG_PID) runs: from PERF_MARGIN s after its window opened (it writes the ready file $2 then) for
# PERF_MS ms, so the counters see the steady state only. Never past the window's end: still running
# then, perf gets SIGINT (it writes what it counted), then SIGKILL. Writes one JSON object to
# $TMP/raw/$1.perf.json: the counters, the seconds they cover, or why there are none.
perf_window() {
    local key=$1 ready=$2 pids=$3 start_us end_us wait_us t0 t1 prc=0 cut=0 n
    local out="$TMP/raw/$key.perf.json"
    if ! wait_file "$ready" 400 "$LG_PID"; then
        echo '{"error":"the load generator never opened its window"}' >"$out"
        return 0
    fi
    start_us=$(awk '{ printf "%.0f", $2 * 1e6 }' "$ready")
    end_us=$(awk -v s="$start_us" -v d="$DURATION" 'BEGIN { printf "%.0f", s + d * 1e6 }')
    wait_us=$((start_us + $(awk -v m="$PERF_MARGIN" 'BEGIN { printf "%.0f", m * 1e6 }') - $(now_us)))
    [ "$wait_us" -le 0 ] || sleep "$(awk -v w="$wait_us" 'BEGIN { printf "%.3f", w / 1e6 }')"
    if ! kill -0 "$LG_PID" 2>/dev/null; then
        echo '{"error":"the load generator ended before the counters started"}' >"$out"
        return 0
    fi
    t0=$(now_us)
    perf stat -x, -o "$TMP/raw/$key.perf" -e "$PERF_EVENTS" -p "$(echo $pids | tr ' ' ,)" --timeout "$PERF_MS" \
        >/dev/null 2>"$TMP/raw/$key.perf.err" &
    PERF_PID=$!
    while kill -0 "$PERF_PID" 2>/dev/null && [ "$(now_us)" -lt "$end_us" ]; do sleep 0.1; done
    if kill -0 "$PERF_PID" 2>/dev/null; then
        cut=1
        kill -INT "$PERF_PID" 2>/dev/null || true
        for _ in $(seq 1 20); do kill -0 "$PERF_PID" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$PERF_PID" 2>/dev/null || true
    fi
    wait "$PERF_PID" || prc=$?
    PERF_PID=""
    t1=$(now_us)
    n=$(echo $pids | wc -w)
    # perf -x, lines: value,unit,event,… ("<not counted>": no process of the list ran; "<not
    # supported>": no such counter). The counters cover PERF_MS unless perf was cut short.
    python3 - "$TMP/raw/$key.perf" "$TMP/raw/$key.perf.err" "$PERF_MS" "$t0" "$t1" "$n" "$prc" "$cut" >"$out" <<'PY' ||
import json, sys
path, err, ms, t0, t1, npids, rc, cut = sys.argv[1:]
events = {}
try:
    for line in open(path):
        f = line.rstrip("\n").split(",")
        if line.startswith("#") or len(f) < 3 or not f[2]:
            continue
        v = f[0]
        events[f[2]] = 0 if v.startswith("<not counted") else None if v.startswith("<") else float(v)
except OSError:
    pass
wall = (int(t1) - int(t0)) / 1e6
if not events:
    why = [l.strip() for l in open(err) if l.strip()] if err else []
    print(json.dumps({"error": f"perf stat exited with status {rc}" + (": " + why[0] if why else "")}))  # then usage
else:
    print(json.dumps({"events": events, "seconds": round(wall, 3) if cut == "1" or rc != "0" else int(ms) / 1000,
                      "wall_s": round(wall, 3), "pids": int(npids), "rc": int(rc), "cut": cut == "1"}))
PY
        echo '{"error":"could not read perf stat output"}' >"$out"
}

# The load generator against system $1: phase $2, key $3 (unique per run), cell $4 (a JSON object
# for the report), then its arguments without --target. Appends one line to results.jsonl with
# the result (or null), the CPU time of the system's processes (and, for sockherd, of the
# supervisor alone) over the run and, for echo, perf's counters over the middle of the window
# (perf_window; null without them).
measure() {
    local sys=$1 phase=$2 key=$3 cell=$4 pids sup t0 t1 c0 c1 s0=0 s1=0 m0 m1 out rc=0 ready="" perf=null
    shift 4
    local args=("$@") shown="$*"
    pids=$(system_pids "$sys" | tr '\n' ' ')
    sup=""
    case $sys in sockherd-*) sup=${PID[$sys]} ;; esac
    if [ "$phase" = echo ] && [ -n "$PERF_EVENTS" ]; then
        ready="$TMP/raw/$key.ready"
        rm -f "$ready"
        args+=(--ready-file "$ready")
        shown="$shown --ready-file READY_FILE"
    fi
    printf '%s %s %s sockherd-loadgen --target 127.0.0.1:PORT %s\n' "$phase" "$key" "$sys" "$shown" >>"$TMP/commands"
    status_snapshot "$sys" "$TMP/raw/$key.status-before.json"
    c0=$(cpu_ticks $pids)
    [ -z "$sup" ] || s0=$(cpu_ticks "$sup")
    m0=$(machine_ticks)
    t0=$(date +%s.%N)
    timeout $((${DURATION%.*} + 300)) "$LOADGEN" --target "127.0.0.1:${PORT[$sys]}" "${args[@]}" \
        >"$TMP/raw/$key.json" 2>>"$TMP/logs/loadgen.err" &
    LG_PID=$!
    if [ -n "$ready" ]; then
        perf_window "$key" "$ready" "$pids"
        perf=$(cat "$TMP/raw/$key.perf.json" 2>/dev/null || true)
        [ -n "$perf" ] || perf='{"error":"no perf result"}'
    fi
    wait "$LG_PID" || rc=$?
    LG_PID=""
    t1=$(date +%s.%N)
    m1=$(machine_ticks)
    c1=$(cpu_ticks $pids)
    [ -z "$sup" ] || s1=$(cpu_ticks "$sup")
    if [ -n "$sup" ]; then
        sleep 1.2 # the workers' counters in /status.json are as of their last heartbeat (1 s)
        status_snapshot "$sys" "$TMP/raw/$key.status-after.json"
    fi
    out=$(tail -1 "$TMP/raw/$key.json" 2>/dev/null || true)
    if [ $rc -ne 0 ] || [ -z "$out" ]; then
        say "$key: the load generator failed (exit $rc)"
        tail -3 "$TMP/logs/loadgen.err" >&2 || true
        out=null
    fi
    printf '{"phase":"%s","system":"%s","key":"%s","cell":%s,"result":%s,"perf":%s,"cpu":{"hz":%s,"server_ticks":%s,"supervisor_ticks":%s,"wall_s":%s,"machine_busy_ticks":%s,"machine_total_ticks":%s,"ncpu":%s}}\n' \
        "$phase" "$sys" "$key" "$cell" "$out" "$perf" "$(getconf CLK_TCK)" "$((c1 - c0))" "$((s1 - s0))" \
        "$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')" \
        "$(($(echo "$m1" | cut -d' ' -f1) - $(echo "$m0" | cut -d' ' -f1)))" \
        "$(($(echo "$m1" | cut -d' ' -f2) - $(echo "$m0" | cut -d' ' -f2)))" "$(nproc)" >>"$TMP/results.jsonl"
    [ "$out" = null ] || say "$key: $(printf '%s\n%s' "$out" "$perf" | python3 -c 'import json, sys
r, p = (json.loads(l) for l in sys.stdin.read().split("\n"))
e = (p or {}).get("events")
per = ""
if e and r["rate"] and p["seconds"]:
    n = r["rate"] * p["seconds"]
    per = ", per msg: %.2f us CPU, %.3f cs" % (e["task-clock"] * 1000 / n, e["context-switches"] / n)
    if e.get("raw_syscalls:sys_enter") is not None:
        per += ", %.2f syscalls" % (e["raw_syscalls:sys_enter"] / n)
elif p and "error" in p:
    per = ", no counters: " + p["error"]
print("rate %.0f/s, p50 %.2f ms, p99 %.2f ms, errors %d%s%s" % (r["rate"], r["p50_us"] / 1000, r["p99_us"] / 1000, r["errors"],
      ", lost %d" % r["lost"] if "lost" in r else "", per))' 2>/dev/null || echo '?')"
}

# The systems of the main phases, in turn order: sockherd in its main mode, then the peers.
MAIN="sockherd-$MAIN_MODE"
PEERS=""
for s in $SYSTEMS; do [ "$s" = sockherd ] || PEERS="$PEERS $s"; done
PEERS=$(echo $PEERS)

# ---- connect, echo, fan-out: every system up, taking turns ---------------------------------
if has "$SCENARIOS" connect || has "$SCENARIOS" echo || has "$SCENARIOS" fanout; then
    for s in $MAIN $PEERS; do
        start_system "$s" || { [ "$s" = "$MAIN" ] && die "$s did not start: $(cat "$TMP/logs/$s.refused")"; say "$s did not start: $(cat "$TMP/logs/$s.refused")"; }
    done
fi

if has "$SCENARIOS" connect; then
    CONNECT_SYSTEMS=""
    for m in $MODES; do
        if [ "sockherd-$m" != "$MAIN" ]; then
            start_system "sockherd-$m" || { say "sockherd-$m did not start: $(cat "$TMP/logs/sockherd-$m.refused")"; continue; }
        fi
        CONNECT_SYSTEMS="$CONNECT_SYSTEMS sockherd-$m"
        # handoff's supervisor under SCHED_OTHER, right after handoff in every round: what the
        # default supervisor_scheduling = "batch" changes, side by side.
        if [ "$m" = handoff ] && [ "$CONNECT_SUPERVISOR_NORMAL" = 1 ]; then
            if start_system sockherd-handoff-sn; then
                CONNECT_SYSTEMS="$CONNECT_SYSTEMS sockherd-handoff-sn"
            else
                say "sockherd-handoff-sn did not start: $(cat "$TMP/logs/sockherd-handoff-sn.refused")"
            fi
        fi
    done
    for s in $PEERS; do is_up "$s" && CONNECT_SYSTEMS="$CONNECT_SYSTEMS $s"; done
    for round in $(seq 1 "$CONNECT_ROUNDS"); do
        for s in $CONNECT_SYSTEMS; do
            is_up "$s" || continue
            measure "$s" connect "connect-$s-r$round" "{\"round\":$round}" --scenario connect --path /echo \
                --duration "$DURATION" --concurrency "$CONNECT_CONCURRENCY" --procs "$PROCS" --sources "$SOURCES"
        done
    done
    for m in $MODES; do [ "sockherd-$m" = "$MAIN" ] || stop_system "sockherd-$m"; done
    if has "$CONNECT_SYSTEMS" sockherd-handoff-sn; then stop_system sockherd-handoff-sn; fi
fi

# sockherd at other worker counts, echo only: with 4 workers on 2 cores shared with the load
# generator each worker drains its sockets and sleeps, so the same server at 2 and 1 workers, in
# the same rotation, shows what the worker count itself costs next to the peers.
ECHO_VARIANTS="" # the variants' system names (started or not), in BENCH_ECHO_WORKER_VARIANTS order
for w in $ECHO_WORKER_VARIANTS; do
    if [ "$w" = "$WORKERS" ]; then say "BENCH_ECHO_WORKER_VARIANTS: $w is the main system's worker count; skipped"; continue; fi
    has "$ECHO_VARIANTS" "$MAIN-w$w" || ECHO_VARIANTS="$ECHO_VARIANTS $MAIN-w$w"
done
ECHO_VARIANTS=$(echo $ECHO_VARIANTS)

if has "$SCENARIOS" echo; then
    # Up for the echo runs alone (as the other modes for connect), so that fan-out and idle see
    # the same systems as without them.
    UP_VARIANTS=""
    for v in $ECHO_VARIANTS; do
        if start_system "$v"; then UP_VARIANTS="$UP_VARIANTS $v"; else say "$v did not start: $(cat "$TMP/logs/$v.refused")"; fi
    done
    for conns in $ECHO_CONNECTIONS; do
        for size in $ECHO_SIZES; do
            for s in $MAIN $UP_VARIANTS $PEERS; do
                is_up "$s" || continue
                measure "$s" echo "echo-$s-c$conns-s$size" "{\"connections\":$conns,\"size\":$size}" --scenario echo \
                    --path /echo --duration "$DURATION" --connections "$conns" --inflight "$ECHO_INFLIGHT" --size "$size" \
                    --procs "$PROCS" --sources "$SOURCES" --setup-timeout 60
            done
        done
    done
    for v in $UP_VARIANTS; do stop_system "$v"; done
fi

if has "$SCENARIOS" fanout; then
    for subs in $FANOUT_SUBSCRIBERS; do
        for s in $MAIN $PEERS; do
            is_up "$s" || continue
            measure "$s" fanout "fanout-$s-n$subs" "{\"subscribers\":$subs}" --scenario fanout --path "/ws/bench-$subs" \
                --duration "$DURATION" --connections "$subs" --rate 0 --inflight "$FANOUT_INFLIGHT" --size "$FANOUT_SIZE" \
                --grace "$FANOUT_GRACE" --procs "$PROCS" --sources "$SOURCES" --setup-timeout 120
            sleep 2 # let the server finish writing any backlog before the next run connects
        done
        # The closed loop runs each system at its own maximum rate, so its p99s are taken at
        # different loads; here every system gets the same offered load (paced publisher, open
        # loop), well below the slowest one's closed-loop rate, so the p99s compare as latency.
        awk -v d="$FANOUT_RATE_DELIVERIES" 'BEGIN { exit !(d > 0) }' || continue
        rate=$(awk -v d="$FANOUT_RATE_DELIVERIES" -v n="$subs" 'BEGIN { printf "%.6g", d / n }')
        for s in $MAIN $PEERS; do
            is_up "$s" || continue
            measure "$s" fanout_rate "fanout-rate-$s-n$subs" \
                "{\"subscribers\":$subs,\"rate\":$rate,\"deliveries\":$FANOUT_RATE_DELIVERIES}" --scenario fanout \
                --path "/ws/bench-$subs" --duration "$DURATION" --connections "$subs" --rate "$rate" --size "$FANOUT_SIZE" \
                --grace "$FANOUT_GRACE" --procs "$PROCS" --sources "$SOURCES" --setup-timeout 120
            sleep 2 # as above
        done
    done
fi

for s in $MAIN $PEERS; do stop_system "$s"; done

# ---- idle memory: each system freshly started, alone ---------------------------------------
# Samples the summed VmRSS (KiB) of system $1's processes, and per process "pid:rss:fds", into
# the file $2 (one line per sample: "<unix time> <sum> <pid:rss:fds>...").
rss_sample() {
    local p line sum=0 v f
    line=""
    for p in $(system_pids "$1"); do
        v=$(awk '/^VmRSS:/ { print $2 }' "/proc/$p/status" 2>/dev/null) || v=""
        [ -n "$v" ] || continue
        f=$(ls "/proc/$p/fd" 2>/dev/null | wc -l)
        sum=$((sum + v))
        line="$line $p:$v:$f"
    done
    echo "$(date +%s.%N) $sum$line" >>"$2"
}

if has "$SCENARIOS" idle; then
    for n in $IDLE_CONNECTIONS; do
        procs=$(((n + 9999) / 10000))
        [ "$procs" -ge "$PROCS" ] || procs=$PROCS
        for s in $MAIN $PEERS; do
            key="idle-$s-n$n"
            start_system "$s" || { say "$s did not start: $(cat "$TMP/logs/$s.refused")"; continue; }
            sleep 2 # let the freshly started processes settle before the baseline
            for _ in 1 2 3; do rss_sample "$s" "$TMP/raw/$key.before"; sleep 0.3; done
            ready="$TMP/raw/$key.ready"
            # Held 5 s longer than sampled, so that no sample falls after the window (one sample
            # can take a second on a loaded machine; the report drops any that did).
            args=(--scenario idle --path /echo --duration "$((IDLE_HOLD + 5))" --connections "$n" --procs "$procs"
                  --sources "$SOURCES" --connect-timeout 5 --setup-timeout 240 --drain-timeout 30 --ready-file "$ready")
            shown=""
            for x in "${args[@]}"; do [ "$x" = "$ready" ] && shown="$shown READY_FILE" || shown="$shown $x"; done
            printf '%s %s %s sockherd-loadgen --target 127.0.0.1:PORT%s\n' idle "$key" "$s" "$shown" >>"$TMP/commands"
            timeout $((IDLE_HOLD + 400)) "$LOADGEN" --target "127.0.0.1:${PORT[$s]}" "${args[@]}" \
                >"$TMP/raw/$key.json" 2>>"$TMP/logs/loadgen.err" &
            LG_PID=$!
            if wait_file "$ready" 300 "$LG_PID"; then
                # A sample a second until IDLE_HOLD s after the window opened (it ends 5 s later).
                until_s=$(awk -v h="$IDLE_HOLD" '{ printf "%d", $2 + h }' "$ready")
                for _ in $(seq 1 $((IDLE_HOLD * 2))); do
                    kill -0 "$LG_PID" 2>/dev/null || break
                    sleep 1
                    rss_sample "$s" "$TMP/raw/$key.during"
                    [ "$(date +%s)" -lt "$until_s" ] || break
                done
                status_snapshot "$s" "$TMP/raw/$key.status-held.json"
            else
                say "$key: the load generator never opened its window"
            fi
            rc=0
            wait "$LG_PID" || rc=$?
            LG_PID=""
            out=$(tail -1 "$TMP/raw/$key.json" 2>/dev/null || true)
            [ $rc -eq 0 ] && [ -n "$out" ] || { say "$key: the load generator failed (exit $rc)"; out=null; }
            printf '{"phase":"idle","system":"%s","key":"%s","cell":{"connections":%s,"procs":%s},"result":%s}\n' \
                "$s" "$key" "$n" "$procs" "$out" >>"$TMP/results.jsonl"
            [ "$out" = null ] || say "$key: $(printf '%s' "$out" | python3 -c 'import json, sys
r = json.load(sys.stdin)
print("held %d of %s (opened %d, failed %d, not attempted %d)" % (r["held"], sys.argv[1], r["opened"], r["failed"], r["not_attempted"]))' "$n" 2>/dev/null || echo '?')"
            stop_system "$s"
        done
    done
fi

# ---- reload and crash under load: bench/reload.sh ------------------------------------------
run_reload() { # $1 reload|crash, $2 targets
    say "$1 under load: bench/reload.sh (RELOAD_ACTION=$1, targets: $2)"
    local rc=0
    RELOAD_ACTION=$1 RELOAD_TARGETS=$2 RELOAD_DURATION=$RELOAD_DURATION SOCKHERD_BIN=$SOCKHERD \
        SOCKHERD_LOADGEN=$LOADGEN RELOAD_RESULTS="$TMP/$1.md" RELOAD_EXPORT="$TMP/$1" \
        timeout 900 bash "$ROOT/bench/reload.sh" >"$TMP/logs/$1.log" 2>&1 &
    LG_PID=$!
    wait "$LG_PID" || rc=$?
    LG_PID=""
    if [ $rc -ne 0 ]; then
        say "bench/reload.sh ($1) failed (exit $rc):"
        tail -10 "$TMP/logs/$1.log" >&2
    fi
}
if has "$SCENARIOS" reload; then
    t="sockherd"; has "$SYSTEMS" seed && t="$t nginx"; t="$t pm2"
    run_reload reload "$t"
fi
if has "$SCENARIOS" crash; then
    t="sockherd"; has "$SYSTEMS" seed && t="$t nginx"; has "$SYSTEMS" cluster && t="$t cluster"
    run_reload crash "$t"
fi

# ---- report --------------------------------------------------------------------------------
CXX=$(sed -n 's/^CMAKE_CXX_COMPILER:[A-Z]*=//p' "$(build_of "$SOCKHERD")/CMakeCache.txt" 2>/dev/null || true)
SRC=$(src_of "$SOCKHERD")
[ -n "$SRC" ] || SRC=$ROOT
command_line=""
for v in $(env | sed -n 's/^\(BENCH_[A-Z_]*\|SOCKHERD_BIN\|SOCKHERD_LOADGEN\)=.*/\1/p' | grep -v '^BENCH_KEEP$' | sort); do
    command_line="$command_line$v=$(printf '%q' "${!v}") "
done
{
    echo "COMMAND=${command_line}bash bench/suite.sh"
    echo "WHEN=$STARTED"
    echo "ELAPSED=$((SECONDS - T0))"
    echo "QUICK=$QUICK"
    echo "NPROC=$(nproc)"
    echo "CPU_MODEL=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)"
    echo "MEMORY=$(awk '/MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)"
    echo "KERNEL=$(uname -sr)"
    echo "NOFILE=$(ulimit -Sn) soft / $(ulimit -Hn) hard"
    echo "LOADAVG_START=$LOADAVG_START"
    echo "LOADAVG_END=$(cut -d' ' -f1-3 /proc/loadavg)"
    echo "SOCKHERD=$("$SOCKHERD" --version 2>&1 | head -1)"
    echo "SOCKHERD_COMMIT=$(git_head "$SRC")"
    echo "SOCKHERD_SRC=$SRC"
    echo "SOCKHERD_BUILD=$(sed -n 's/^CMAKE_BUILD_TYPE:STRING=//p' "$(build_of "$SOCKHERD")/CMakeCache.txt" 2>/dev/null || echo '?')"
    echo "SOCKHERD_BIN=${SOCKHERD#$ROOT/}"
    echo "LOADGEN_BIN=${LOADGEN#$ROOT/}"
    echo "CXX=$("${CXX:-c++}" --version 2>/dev/null | head -1)"
    echo "NODE=$(node --version)"
    echo "WS=$(node -p 'require(process.argv[1]).version' "$CLUSTER_DIR/node_modules/ws/package.json" 2>/dev/null || echo '?')"
    echo "BUN=$([ -n "$BUN" ] && "$BUN" --revision 2>/dev/null || echo 'not run')"
    echo "NGINX=$( (command -v nginx >/dev/null && nginx -v 2>&1 || /usr/sbin/nginx -v 2>&1) | sed 's/^nginx version: //')"
    echo "REDIS=$(redis-server --version 2>/dev/null | sed -n 's/.* v=\([^ ]*\).*/\1/p')"
    echo "PM2=$(node -p 'require(process.argv[1]).version' "$ROOT/bench/peers/pm2/node_modules/pm2/package.json" 2>/dev/null || echo '?')"
    echo "SYSTEMS=$MAIN $PEERS"
    echo "MAIN=$MAIN"
    echo "MODES=$MODES"
    echo "SCENARIOS=$SCENARIOS"
    echo "DURATION=$DURATION"
    echo "WORKERS=$WORKERS"
    echo "CONNECT_CONCURRENCY=$CONNECT_CONCURRENCY"
    echo "CONNECT_ROUNDS=$CONNECT_ROUNDS"
    echo "CONNECT_SUPERVISOR_NORMAL=$CONNECT_SUPERVISOR_NORMAL"
    echo "ECHO_INFLIGHT=$ECHO_INFLIGHT"
    echo "ECHO_WORKER_VARIANTS=$ECHO_WORKER_VARIANTS"
    echo "ECHO_VARIANTS=$ECHO_VARIANTS"
    echo "PERF_EVENTS=$PERF_EVENTS"
    echo "PERF_WHY=$PERF_WHY"
    echo "PERF_MARGIN=$PERF_MARGIN"
    echo "PERF_MS=$PERF_MS"
    echo "PERF=$(perf --version 2>/dev/null || echo 'not found')"
    echo "FANOUT_INFLIGHT=$FANOUT_INFLIGHT"
    echo "FANOUT_RATE_DELIVERIES=$FANOUT_RATE_DELIVERIES"
    echo "IDLE_HOLD=$IDLE_HOLD"
    echo "RELOAD_DURATION=$RELOAD_DURATION"
    echo "SEND_QUEUE_LIMIT=$SEND_QUEUE_LIMIT"
    echo "REPORT=$REPORT"
} >"$TMP/meta"
for f in "$TMP"/sockherd-*.toml; do
    [ -f "$f" ] && sed 's/127\.0\.0\.1:[0-9]*/127.0.0.1:PORT/' "$f" >"$f.txt"
done
for f in "$TMP"/logs/*.refused; do [ -f "$f" ] && cp "$f" "$TMP/"; done
mkdir -p "$(dirname "$REPORT")"
python3 "$ROOT/bench/suite_report.py" "$TMP" "$REPORT"
say "wrote $REPORT ($((SECONDS - T0)) s in all)"
