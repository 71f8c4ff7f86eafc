#!/usr/bin/env bash
# Fan-out across nodes through Redis (issue 9), one command, from anywhere:
#
#   bash bench/redis_fanout.sh
#
# Starts three systems and runs the load generator's fanout scenario (paced and closed loop, at
# each subscriber count) with the same commands against each, the systems taking turns run by run:
#   two   sockherd, two nodes (two supervisors, 2 workers each, the same config apart from the
#         ports) sharing one redis-server that this script starts on a free loopback port;
#         subscribers alternate over the two nodes, the publisher is on node A. Before and after
#         each run both nodes' /status.json (admin listener) is read for the bridge counters.
#   one   sockherd, one node with 4 workers, no Redis: what the Redis hop costs.
#   seed  the seed topology (bench/peers/seed/start.sh: nginx round robin -> 4 Node `ws`
#         processes -> redis-server pub/sub), as bench/fanout.sh runs it.
# Then stops them and writes the "## Fan-out across nodes through Redis (issue 9)" section of
# bench/results/redis_fanout.md (the other sections stay as they are). Traffic goes to 127.0.0.0/8 only; every
# wait has a deadline; whatever it starts is stopped on exit (trap). About 4 minutes with the
# defaults on 2 shared cores, plus the build.
#
# Binaries: SOCKHERD_BIN=/path/to/sockherd uses that server (else build-bench/ is built, Release,
# as bench/fanout.sh does); SOCKHERD_LOADGEN=/path/to/sockherd-loadgen likewise the load generator.
#
# Knobs (environment):
#   REDIS_FANOUT_SYSTEMS="two one seed"   which systems, in this order
#   REDIS_FANOUT_SUBSCRIBERS="1000 5000"  subscriber counts
#   REDIS_FANOUT_DURATION=10              seconds of publishing per run
#   REDIS_FANOUT_PACED_DELIVERIES=20000   paced mode: offered deliveries/s (the publisher sends
#                                         this / subscribers messages/s), as in fanout.sh
#   REDIS_FANOUT_RATE=                    paced mode: a fixed messages/s instead
#   REDIS_FANOUT_INFLIGHT=1               closed loop: messages outstanding
#   REDIS_FANOUT_SIZE=32                  message bytes (>= 16)
#   REDIS_FANOUT_GRACE=2                  seconds subscribers keep reading after the last send
#   REDIS_FANOUT_RESULTS=bench/results/redis_fanout.md  the report whose section is (re)written
#   REDIS_FANOUT_KEEP=1                   keep the temporary directory (configs, logs, raw JSON)
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD="$ROOT/build-bench"
SYSTEMS=${REDIS_FANOUT_SYSTEMS:-"two one seed"}
SUBSCRIBERS=${REDIS_FANOUT_SUBSCRIBERS:-"1000 5000"}
DURATION=${REDIS_FANOUT_DURATION:-10}
RATE=${REDIS_FANOUT_RATE:-}
PACED_DELIVERIES=${REDIS_FANOUT_PACED_DELIVERIES:-20000}
INFLIGHT=${REDIS_FANOUT_INFLIGHT:-1}
SIZE=${REDIS_FANOUT_SIZE:-32}
GRACE=${REDIS_FANOUT_GRACE:-2}
RESULTS=${REDIS_FANOUT_RESULTS:-"$ROOT/bench/results/redis_fanout.md"}
SOCKHERD=${SOCKHERD_BIN:-"$BUILD/sockherd"}
LOADGEN=${SOCKHERD_LOADGEN:-"$BUILD/bench/sockherd-loadgen"}
SEED="$ROOT/bench/peers/seed"
NGINX_BIN=$(command -v nginx || echo /usr/sbin/nginx)

say() { printf '[redis-fanout] %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }
. "$ROOT/bench/lib.sh" # port_in_use, pick_port, build_bench, node_config_head, wait_healthz, stop_process
for tool in cmake curl awk od timeout python3 redis-server redis-cli; do
    command -v "$tool" >/dev/null 2>&1 || die "needs '$tool' on PATH (redis: apt-get install redis-server)"
done
for s in $SYSTEMS; do
    case $s in two|one|seed) ;; *) die "unknown system '$s' (two, one, seed)" ;; esac
done

TMP=$(mktemp -d "${TMPDIR:-/tmp}/sockherd-redis-fanout.XXXXXX")
NODES="" REDIS_PID="" SEED_DIR="" # what runs now: sockherd supervisors, redis-server, the seed
cleanup() {
    for p in $NODES; do
        if kill -0 "$p" 2>/dev/null; then stop_process "$p" 50; fi
    done
    if [ -n "$REDIS_PID" ] && kill -0 "$REDIS_PID" 2>/dev/null; then stop_process "$REDIS_PID" 50; fi
    if [ -n "$SEED_DIR" ]; then "$SEED/stop.sh" "$SEED_DIR" >/dev/null 2>&1 || true; fi
    if [ "${REDIS_FANOUT_KEEP:-0}" = 1 ]; then say "kept $TMP"; else rm -rf "$TMP"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

LOADAVG_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
STARTED=$(date -u '+%Y-%m-%d %H:%M UTC')
T0=$SECONDS

# ---- build -------------------------------------------------------------------------------
targets=()
[ -n "${SOCKHERD_BIN:-}" ] || targets+=(sockherd)
[ -n "${SOCKHERD_LOADGEN:-}" ] || targets+=(sockherd-loadgen)
if [ ${#targets[@]} -gt 0 ]; then
    say "building ${targets[*]} (Release) in $BUILD (log: $TMP/build.log)"
    build_bench "$BUILD" "$ROOT" "$TMP/build.log" "${targets[@]}" || die "build failed"
fi
[ -x "$SOCKHERD" ] || die "no sockherd binary at $SOCKHERD"
[ -x "$LOADGEN" ] || die "no load generator at $LOADGEN"

# ---- helpers -----------------------------------------------------------------------------
# Sets the variable named $1 to a free port that is not among the ones already handed out in
# this run.
TAKEN=" "
take_port() {
    local p
    for _ in $(seq 1 20); do
        p=$(pick_port) || break
        case "$TAKEN" in *" $p "*) continue ;; esac
        TAKEN="$TAKEN$p "
        printf -v "$1" '%s' "$p"
        return 0
    done
    die "no free port"
}

# The load generator arguments of run $1 (paced|closed) at $2 subscribers; the targets are added.
loadgen_args() {
    local mode=$1 subs=$2 sources=4 rate args
    if [ "$subs" -gt 2000 ]; then sources=8; fi
    rate=${RATE:-$(awk -v d="$PACED_DELIVERIES" -v s="$subs" 'BEGIN { printf "%g", d / s }')}
    args="--scenario fanout --path /ws/bench --connections $subs --procs 2 --sources $sources --size $SIZE"
    args="$args --duration $DURATION --grace $GRACE --setup-timeout 120"
    if [ "$mode" = paced ]; then args="$args --rate $rate"; else args="$args --rate 0 --inflight $INFLIGHT"; fi
    echo "$args"
}

# Saves http://127.0.0.1:$1/status.json to the file $2 (bounded); false when it does not answer.
snapshot() {
    curl -sf --max-time 2 "http://127.0.0.1:$1/status.json" >"$2.part" 2>/dev/null && mv "$2.part" "$2"
}

# The redis messages_in of the node whose admin listener is on port $1 ("?" when unknown).
redis_in() {
    curl -sf --max-time 2 "http://127.0.0.1:$1/status.json" 2>/dev/null |
        python3 -c 'import json, sys; r = json.load(sys.stdin).get("redis") or {}; print(r.get("messages_in", "?"))' \
            2>/dev/null || echo '?'
}

# Waits (at most 15 s) until the bridge of the node with admin port $1 says "connected" and has
# confirmed $2 subscribed channels or more.
wait_bridge() {
    local st
    for _ in $(seq 1 150); do
        st=$(curl -sf --max-time 1 "http://127.0.0.1:$1/status.json" 2>/dev/null |
            python3 -c 'import json, sys; r = json.load(sys.stdin).get("redis") or {}
print(r.get("state"), r.get("subscribed_channels", 0))' 2>/dev/null || true)
        case $st in "connected "*) [ "${st#connected }" -ge "$2" ] && return 0 ;; esac
        sleep 0.1
    done
    return 1
}

# Starts a sockherd node: name $1, $2 workers, listener port $3, admin port $4, redis port $5 (or
# empty: no Redis). Sets NODE_PID; the config is $TMP/$1.toml, the log $TMP/$1.log.
start_node() {
    local name=$1 workers=$2 port=$3 admin=$4 rport=$5 n
    {
        node_config_head "$workers" "$port" "$admin"
        cat <<EOF

[supervisor]
drain_timeout = "1s"

[log]
level = "warn"

[websocket]
send_queue_limit = "16MiB"
EOF
        if [ -n "$rport" ]; then
            cat <<EOF

[redis]
url = "redis://127.0.0.1:$rport"
EOF
        fi
        cat <<EOF

[[route]]
path = "/ws/"
kind = "pubsub"
EOF
    } >"$TMP/$name.toml"
    "$SOCKHERD" run --config "$TMP/$name.toml" >"$TMP/$name.log" 2>&1 &
    NODE_PID=$!
    NODES="$NODES $NODE_PID"
    n=$(wait_healthz "$port" "$workers" "$NODE_PID")
    kill -0 "$NODE_PID" 2>/dev/null || { tail -20 "$TMP/$name.log" >&2; die "sockherd node $name exited"; }
    [ "$n" -ge "$workers" ] || die "node $name: only $n of $workers workers answered /healthz"
}

# Stops every sockherd node started so far (SIGTERM, at most 15 s each, then SIGKILL).
stop_nodes() {
    local p
    for p in $NODES; do stop_process "$p" 150; done
    NODES=""
}

# Per system: the ports the load generator targets (space separated; node A first) and the admin
# ports to read /status.json from around each run (same order; empty for the seed).
declare -A TARGET_PORTS ADMIN_PORTS

# One fanout run: system $1, $2 subscribers, mode $3 (paced|closed). The raw line goes to
# $TMP/results.jsonl, the /status.json snapshots to $TMP/status/.
run_one() {
    local sys=$1 subs=$2 mode=$3 args key out p a i last now stable tgt=()
    local ports=${TARGET_PORTS[$sys]} admins=${ADMIN_PORTS[$sys]}
    for p in $ports; do tgt+=(--target "127.0.0.1:$p"); done
    args=$(loadgen_args "$mode" "$subs")
    key="$sys-$subs-$mode"
    say "$sys: $subs subscribers, $mode"
    {
        printf '%s %s %s sockherd-loadgen' "$sys" "$subs" "$mode"
        i=0
        for p in $ports; do printf ' --target 127.0.0.1:PORT_%s' "${NODE_LETTERS:$i:1}"; i=$((i + 1)); done
        printf ' %s\n' "$args"
    } >>"$TMP/commands"
    i=0
    for a in $admins; do snapshot "$a" "$TMP/status/$key-$i-before.json" || say "no /status.json from admin port $a"; i=$((i + 1)); done
    # shellcheck disable=SC2086
    if out=$(timeout $((DURATION + 180)) "$LOADGEN" "${tgt[@]}" $args 2>>"$TMP/loadgen.err"); then
        printf '{"system":"%s","subscribers":%s,"mode":"%s","key":"%s","result":%s}\n' \
            "$sys" "$subs" "$mode" "$key" "$out" >>"$TMP/results.jsonl"
        say "$sys $subs $mode: $(printf '%s' "$out" | python3 -c 'import json, sys
r = json.load(sys.stdin)
print("sent %d, %.0f deliveries/s, p99 %.1f ms, lost %d; " % (r["sent"], r["rate"], r["p99_us"] / 1000, r["lost"])
      + ", ".join("%s: %d subscribers, %d deliveries" % (t["target"], t["subscribers"], t["delivered"])
                  for t in r["per_target"]))' || true)"
    else
        say "$sys $subs $mode: load generator failed:"
        tail -5 "$TMP/loadgen.err" >&2 || true
        printf '{"system":"%s","subscribers":%s,"mode":"%s","key":"%s","result":null}\n' \
            "$sys" "$subs" "$mode" "$key" >>"$TMP/results.jsonl"
    fi
    if [ -n "$admins" ]; then
        # Until the last node's bridge input and the workers' heartbeats (1 s) have settled:
        # messages_in unchanged over 1.2 s, at most 15 s.
        last=$(redis_in "${admins##* }") stable=0
        for _ in $(seq 1 12); do
            sleep 1.2
            now=$(redis_in "${admins##* }")
            if [ "$now" = "$last" ]; then stable=1; break; fi
            last=$now
        done
        [ $stable -eq 1 ] || say "$sys $subs $mode: the bridge counters were still moving after 15 s"
        i=0
        for a in $admins; do snapshot "$a" "$TMP/status/$key-$i-after.json" || say "no /status.json from admin port $a"; i=$((i + 1)); done
        sleep 1
    else
        sleep 3 # let the server finish writing any backlog before the next run connects
    fi
}

# ---- start every system ------------------------------------------------------------------
# All of them run for the whole measurement (idle while another one is measured), so that the
# systems can take turns cell by cell: a change of the machine's load over the few minutes of the
# run then shifts all three alike instead of one system's block of runs.
NODE_LETTERS=ABCDEFGH
mkdir -p "$TMP/status"
: >"$TMP/results.jsonl"
: >"$TMP/commands"
for sys in $SYSTEMS; do
    case $sys in
        two)
            take_port RPORT
            say "two: redis-server on 127.0.0.1:$RPORT"
            redis-server --port "$RPORT" --bind 127.0.0.1 --save '' --appendonly no --daemonize no \
                --dir "$TMP" --logfile "$TMP/redis.log" </dev/null >>"$TMP/redis.log" 2>&1 &
            REDIS_PID=$!
            ok=0
            for _ in $(seq 1 100); do
                kill -0 "$REDIS_PID" 2>/dev/null || break
                if redis-cli -h 127.0.0.1 -p "$RPORT" ping 2>/dev/null | grep -q PONG; then ok=1; break; fi
                sleep 0.1
            done
            [ $ok -eq 1 ] || { tail -5 "$TMP/redis.log" >&2; die "redis-server did not answer PING within 10 s"; }
            take_port PORT_A; take_port ADMIN_A; take_port PORT_B; take_port ADMIN_B
            start_node node-a 2 "$PORT_A" "$ADMIN_A" "$RPORT"
            start_node node-b 2 "$PORT_B" "$ADMIN_B" "$RPORT"
            wait_bridge "$ADMIN_A" 0 || die "node A's Redis bridge did not connect"
            wait_bridge "$ADMIN_B" 0 || die "node B's Redis bridge did not connect"
            TARGET_PORTS[two]="$PORT_A $PORT_B" ADMIN_PORTS[two]="$ADMIN_A $ADMIN_B"
            say "two: node A on 127.0.0.1:$PORT_A (admin $ADMIN_A), node B on 127.0.0.1:$PORT_B (admin $ADMIN_B)"
            ;;
        one)
            take_port PORT_ONE; take_port ADMIN_ONE
            start_node one 4 "$PORT_ONE" "$ADMIN_ONE" ""
            TARGET_PORTS[one]=$PORT_ONE ADMIN_PORTS[one]=$ADMIN_ONE
            say "one: node on 127.0.0.1:$PORT_ONE (admin $ADMIN_ONE)"
            ;;
        seed)
            take_port SEED_PORT
            SEED_DIR="$TMP/seed"
            say "seed: starting on 127.0.0.1:$SEED_PORT"
            "$SEED/start.sh" "$SEED_PORT" "$SEED_DIR" >"$TMP/seed-start.log" 2>&1 ||
                { tail -20 "$TMP/seed-start.log" >&2; die "the seed topology did not start"; }
            TARGET_PORTS[seed]=$SEED_PORT ADMIN_PORTS[seed]=""
            ;;
    esac
done

# ---- runs: per subscriber count and mode, each system in turn ----------------------------
for subs in $SUBSCRIBERS; do
    for mode in paced closed; do
        for sys in $SYSTEMS; do run_one "$sys" "$subs" "$mode"; done
    done
done

# ---- stop ----------------------------------------------------------------------------------
stop_nodes
if [ -n "$REDIS_PID" ]; then
    redis-cli -h 127.0.0.1 -p "$RPORT" info >"$TMP/redis-info.txt" 2>/dev/null || true
    stop_process "$REDIS_PID" 50
    REDIS_PID=""
fi
if [ -n "$SEED_DIR" ]; then
    cp "$SEED_DIR"/*.log "$TMP/" 2>/dev/null || true
    "$SEED/stop.sh" "$SEED_DIR" >"$TMP/seed-stop.log" 2>&1 || say "seed stop reported a failure"
    SEED_DIR=""
fi

# ---- report ------------------------------------------------------------------------------
# git_head, build_of, src_of: lib.sh
SRC=$(src_of "$SOCKHERD")
[ -n "$SRC" ] || SRC=$ROOT
MACHINE="$(nproc) CPUs ($(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)), $(awk '/MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo) RAM, Linux $(uname -r)"
VERSIONS="sockherd: \`$("$SOCKHERD" --version 2>&1 | head -1)\` at commit $(git_head "$SRC") of \`$SRC\`"
VERSIONS="$VERSIONS ($(sed -n 's/^CMAKE_BUILD_TYPE:STRING=//p' "$(build_of "$SOCKHERD")/CMakeCache.txt" 2>/dev/null || echo '?') build)"
VERSIONS="$VERSIONS; load generator: built from \`$(src_of "$LOADGEN" | sed 's/^$/?/')\`"
VERSIONS="$VERSIONS; redis-server: $(redis-server --version | sed -n 's/.* v=\([^ ]*\).*/\1/p')"
VERSIONS="$VERSIONS; Node.js: $(node --version 2>/dev/null || echo '?')"
VERSIONS="$VERSIONS; ws: $(node -p 'require(process.argv[1]).version' "$SEED/node_modules/ws/package.json" 2>/dev/null || echo '?')"
VERSIONS="$VERSIONS; nginx: $("$NGINX_BIN" -v 2>&1 | sed 's/^nginx version: //')"
{
    echo "MACHINE=$MACHINE"
    echo "VERSIONS=$VERSIONS"
    echo "WHEN=$STARTED"
    echo "LOADAVG=$LOADAVG_BEFORE / $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "ELAPSED=$((SECONDS - T0))"
    echo "SYSTEMS=$SYSTEMS"
    echo "DURATION=$DURATION"
    echo "GRACE=$GRACE"
    echo "COMMAND=${SOCKHERD_BIN:+SOCKHERD_BIN=$SOCKHERD_BIN }${SOCKHERD_LOADGEN:+SOCKHERD_LOADGEN=$SOCKHERD_LOADGEN }bash bench/redis_fanout.sh"
} >"$TMP/meta"
for n in node-a node-b one; do
    [ -f "$TMP/$n.toml" ] && sed -e 's/127\.0\.0\.1:[0-9]*"/127.0.0.1:PORT"/' "$TMP/$n.toml" >"$TMP/$n.toml.txt"
done
mkdir -p "$(dirname "$RESULTS")"
python3 "$ROOT/bench/redis_fanout_report.py" "$TMP" "$RESULTS"
say "wrote the Redis fan-out section of $RESULTS ($((SECONDS - T0)) s in all)"
