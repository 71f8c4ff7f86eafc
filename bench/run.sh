#!/bin/sh
# sockherd benchmark, one command, from the repository root:
#
#   sh bench/run.sh
#
# Builds a Release tree in build-bench/ (SOCKHERD_BIN / SOCKHERD_LOADGEN use those binaries
# instead), then for 1, 2 and 4 workers starts sockherd on a free loopback port, runs the load
# generator's connect and echo scenarios against it, stops it with SIGTERM and writes
# bench/results/run.md (machine, commands, table, what limits the numbers). The suite against the
# peers is bench/suite.sh.
# Traffic goes to 127.0.0.0/8 only. Every wait has a deadline.
#
# Knobs (environment):
#   BENCH_DURATION=10             seconds per measured window (BENCH_DURATION=2 for a smoke run)
#   BENCH_WORKERS="1 2 4"         worker counts
#   BENCH_CONNECT_CONCURRENCY=50  connect: loops opening and closing WebSocket sessions
#   BENCH_ECHO_CONNECTIONS=100    echo: connections
#   BENCH_ECHO_INFLIGHT=1         echo: messages in flight per connection
#   BENCH_ECHO_SIZE=32            echo: payload bytes
#   BENCH_LOADGEN_PROCS=2         load generator processes (one single-threaded io_context each)
#   BENCH_SOURCES=4               client source addresses 127.0.0.1 .. 127.0.0.K
#   BENCH_RESULTS=bench/results/run.md  where the report goes
#   BENCH_KEEP=1                  keep the temporary directory (configs, logs, raw JSON)

set -eu

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD="$ROOT/build-bench"
DURATION=${BENCH_DURATION:-10}
WORKERS_LIST=${BENCH_WORKERS:-"1 2 4"}
CONNECT_CONCURRENCY=${BENCH_CONNECT_CONCURRENCY:-50}
ECHO_CONNECTIONS=${BENCH_ECHO_CONNECTIONS:-100}
ECHO_INFLIGHT=${BENCH_ECHO_INFLIGHT:-1}
ECHO_SIZE=${BENCH_ECHO_SIZE:-32}
LOADGEN_PROCS=${BENCH_LOADGEN_PROCS:-2}
SOURCES=${BENCH_SOURCES:-4}
RESULTS=${BENCH_RESULTS:-"$ROOT/bench/results/run.md"}

SOCKHERD=${SOCKHERD_BIN:-"$BUILD/sockherd"}
LOADGEN=${SOCKHERD_LOADGEN:-"$BUILD/bench/sockherd-loadgen"}
NPROC=$(nproc)
HZ=$(getconf CLK_TCK)

say() { printf '[bench] %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

for tool in cmake curl awk sed od timeout; do
    command -v "$tool" >/dev/null 2>&1 || die "needs '$tool' on PATH"
done

TMP=$(mktemp -d "${TMPDIR:-/tmp}/sockherd-bench.XXXXXX")
SUP_PID=""
cleanup() {
    if [ -n "$SUP_PID" ] && kill -0 "$SUP_PID" 2>/dev/null; then
        kill -TERM "$SUP_PID" 2>/dev/null || true
        sleep 2
        kill -KILL "$SUP_PID" 2>/dev/null || true
    fi
    if [ "${BENCH_KEEP:-0}" = 1 ]; then say "kept $TMP"; else rm -rf "$TMP"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

now() { date +%s.%N; }

# ---- build -------------------------------------------------------------------------------
. "$ROOT/bench/lib.sh" # port_in_use, pick_port, build_bench, git_head, src_of, machine_ticks
if [ -z "${SOCKHERD_BIN:-}" ] || [ -z "${SOCKHERD_LOADGEN:-}" ]; then
    say "building Release in $BUILD (log: $TMP/build.log)"
    build_bench "$BUILD" "$ROOT" "$TMP/build.log" || die "build failed"
fi
[ -x "$SOCKHERD" ] && [ -x "$LOADGEN" ] || die "no binary at $SOCKHERD or $LOADGEN"

# ---- helpers -----------------------------------------------------------------------------

# utime+stime of pid $1 in clock ticks (0 if it is gone).
ticks() {
    t=$(sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null | awk '{ print $12 + $13 }') || true
    echo "${t:-0}"
}

# The worker pids: the supervisor's children.
worker_pids() { pgrep -P "$SUP_PID" 2>/dev/null | sort -n | tr '\n' ' ' || true; }

worker_ticks() {
    sum=0
    for p in $1; do sum=$((sum + $(ticks "$p"))); done
    echo "$sum"
}


# Starts sockherd with $1 workers on a free port; sets SUP_PID, PORT, CONFIG, LOG.
start_sockherd() {
    sw_workers=$1
    sw_attempt=1
    while [ $sw_attempt -le 3 ]; do
        PORT=$(pick_port) || die "no free port found"
        CONFIG="$TMP/sockherd-w$sw_workers.toml"
        LOG="$TMP/sockherd-w$sw_workers.log"
        cat >"$CONFIG" <<EOF
[server]
workers = $sw_workers
control_socket = ""              # several nodes run side by side: no shared paths

[admin]
address = ""

[[listener]]
address = "127.0.0.1:$PORT"

[supervisor]
drain_timeout = "1s"

[log]
level = "warn"

[websocket]
idle_timeout = "60s"

[[route]]
path = "/echo"
kind = "echo"
EOF
        "$SOCKHERD" run --config "$CONFIG" >"$LOG" 2>&1 &
        SUP_PID=$!
        sw_rc=0
        wait_ready "$sw_workers" || sw_rc=$?
        [ $sw_rc -eq 0 ] && return 0
        if [ $sw_rc -eq 2 ]; then
            say "only saw $SEEN_COUNT of $sw_workers workers answer /healthz within 15 s; going on"
            NOTES="$NOTES
- workers=$sw_workers: only $SEEN_COUNT of $sw_workers workers answered /healthz within 15 s of the start."
            return 0
        fi
        say "sockherd did not come up on port $PORT (attempt $sw_attempt); log:"
        cat "$LOG" >&2
        kill -KILL "$SUP_PID" 2>/dev/null || true
        wait "$SUP_PID" 2>/dev/null || true
        SUP_PID=""
        sw_attempt=$((sw_attempt + 1))
    done
    die "sockherd would not start"
}

# Waits until /healthz has answered from $1 different workers: 0 = all, 2 = some (deadline),
# 1 = the process died or never answered.
wait_ready() {
    wr_want=$1
    wr_seen=" "
    SEEN_COUNT=0
    wr_deadline=$(($(date +%s) + 15))
    while [ "$(date +%s)" -lt "$wr_deadline" ]; do
        kill -0 "$SUP_PID" 2>/dev/null || return 1
        if wr_body=$(curl -sf --max-time 1 "http://127.0.0.1:$PORT/healthz" 2>/dev/null); then
            wr_w=$(printf '%s' "$wr_body" | sed -n 's/.*"worker":\([0-9]*\).*/\1/p')
            case "$wr_seen" in *" $wr_w "*) ;; *) wr_seen="$wr_seen$wr_w "; SEEN_COUNT=$((SEEN_COUNT + 1)) ;; esac
            [ "$SEEN_COUNT" -ge "$wr_want" ] && return 0
        fi
        sleep 0.1
    done
    [ "$SEEN_COUNT" -gt 0 ] && return 2
    return 1
}

# SIGTERM, then wait (bounded); records the exit status and how long the stop took.
stop_sockherd() {
    st_workers=$1
    st_t0=$(now)
    kill -TERM "$SUP_PID" 2>/dev/null || true
    st_deadline=$(($(date +%s) + 15))
    while kill -0 "$SUP_PID" 2>/dev/null && [ "$(date +%s)" -lt "$st_deadline" ]; do sleep 0.05; done
    st_killed=""
    if kill -0 "$SUP_PID" 2>/dev/null; then
        kill -KILL "$SUP_PID" 2>/dev/null || true
        st_killed=" (did not exit within 15 s of SIGTERM: killed)"
    fi
    st_rc=0
    wait "$SUP_PID" 2>/dev/null || st_rc=$?
    st_t1=$(now)
    SUP_PID=""
    echo "exit $st_rc after $(awk -v a="$st_t0" -v b="$st_t1" 'BEGIN { printf "%.2f", b - a }') s$st_killed" >"$TMP/w$st_workers.stop"
}

# Runs one load generator scenario against the running sockherd and measures the CPU time of
# every process around it. Writes $TMP/w<workers>-<scenario>.{json,cpu,cmd}.
run_loadgen() {
    rl_workers=$1
    rl_scenario=$2
    shift 2
    rl_base="$TMP/w$rl_workers-$rl_scenario"
    set -- "$LOADGEN" --scenario "$rl_scenario" --target "127.0.0.1:$PORT" --path /echo --duration "$DURATION" \
        --procs "$LOADGEN_PROCS" --sources "$SOURCES" "$@"
    echo "$*" | sed "s|$BUILD/|build-bench/|" >"$rl_base.cmd"
    rl_pids0=$(worker_pids)
    rl_sup0=$(ticks "$SUP_PID")
    rl_wk0=$(worker_ticks "$rl_pids0")
    rl_m0=$(machine_ticks)
    rl_t0=$(now)
    if ! timeout $((${DURATION%.*} + 120)) "$@" >"$rl_base.json" 2>"$rl_base.err"; then
        say "load generator failed (workers=$rl_workers, $rl_scenario):"
        cat "$rl_base.err" >&2
    fi
    rl_t1=$(now)
    rl_m1=$(machine_ticks)
    rl_pids1=$(worker_pids)
    rl_sup1=$(ticks "$SUP_PID")
    rl_wk1=$(worker_ticks "$rl_pids0")
    if [ "$rl_pids0" != "$rl_pids1" ]; then
        NOTES="$NOTES
- workers=$rl_workers, $rl_scenario: the worker processes changed during the run (before: $rl_pids0; after: $rl_pids1); a replaced worker's CPU time is missing."
    fi
    echo "$rl_t0 $rl_t1 $rl_sup0 $rl_sup1 $rl_wk0 $rl_wk1 $rl_m0 $rl_m1" >"$rl_base.cpu"
    say "workers=$rl_workers $rl_scenario: $(cat "$rl_base.json")"
}

# ---- runs --------------------------------------------------------------------------------
NOTES=""
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
STARTED=$(date -u '+%Y-%m-%d %H:%M:%S UTC')
T_START=$(date +%s)
for w in $WORKERS_LIST; do
    say "workers=$w: starting sockherd"
    start_sockherd "$w"
    run_loadgen "$w" connect --concurrency "$CONNECT_CONCURRENCY"
    run_loadgen "$w" echo --connections "$ECHO_CONNECTIONS" --inflight "$ECHO_INFLIGHT" --size "$ECHO_SIZE"
    stop_sockherd "$w"
    say "workers=$w: sockherd $(cat "$TMP/w$w.stop")"
done
T_END=$(date +%s)
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)

# ---- report ------------------------------------------------------------------------------

# One line per run for awk: workers scenario rate p99_us errors failed lg% sup% wk% machine% other%
jget() { sed -n "s/.*\"$2\":\([-0-9.e+]*\).*/\1/p" "$1"; }
DATA="$TMP/data.txt"
: >"$DATA"
for w in $WORKERS_LIST; do
    for s in connect echo; do
        base="$TMP/w$w-$s"
        if [ ! -s "$base.json" ]; then
            echo "$w $s 0 0 -1 0 0 0 0 0 0" >>"$DATA"
            continue
        fi
        read -r t0 t1 sup0 sup1 wk0 wk1 mb0 mt0 mb1 mt1 <"$base.cpu"
        awk -v w="$w" -v s="$s" -v rate="$(jget "$base.json" rate)" -v p99="$(jget "$base.json" p99_us)" \
            -v err="$(jget "$base.json" errors)" -v failed="$(jget "$base.json" failed_connects)" \
            -v lgu="$(jget "$base.json" cpu_user_s)" -v lgs="$(jget "$base.json" cpu_sys_s)" \
            -v t0="$t0" -v t1="$t1" -v sup0="$sup0" -v sup1="$sup1" -v wk0="$wk0" -v wk1="$wk1" \
            -v mb0="$mb0" -v mt0="$mt0" -v mb1="$mb1" -v mt1="$mt1" -v hz="$HZ" -v ncpu="$NPROC" 'BEGIN {
                wall = t1 - t0
                lg = (lgu + lgs) / wall * 100
                sup = (sup1 - sup0) / hz / wall * 100
                wk = (wk1 - wk0) / hz / wall * 100
                machine = (mt1 > mt0) ? (mb1 - mb0) / (mt1 - mt0) * ncpu * 100 : 0
                other = machine - lg - sup - wk
                if (other < 0) other = 0
                printf "%s %s %.1f %d %d %d %.0f %.0f %.0f %.0f %.0f\n", w, s, rate, p99, err, failed, lg, sup, wk, machine, other
            }' >>"$DATA"
    done
done

mkdir -p "$(dirname "$RESULTS")"
{
    echo "# sockherd benchmark: hand-off connections and echo"
    echo
    echo "Generated by \`sh bench/run.sh\` on $STARTED; the runs took $((T_END - T_START)) s."
    echo "Regenerate with the same command; \`BENCH_DURATION=2 sh bench/run.sh\` is a quick smoke run."
    echo
    echo "## Machine"
    echo
    echo "- CPUs: $NPROC ($(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1))"
    echo "- Kernel: $(uname -srm)"
    CXX=$(sed -n 's/^CMAKE_CXX_COMPILER:[A-Z]*=//p' "$BUILD/CMakeCache.txt")
    echo "- Compiler: $("${CXX:-c++}" --version 2>/dev/null | head -1)"
    SRC=$(src_of "$SOCKHERD"); [ -n "$SRC" ] || SRC=$ROOT
    echo "- sockherd: \`$("$SOCKHERD" --version 2>&1 | head -1)\` (commit $(git_head "$SRC") of \`$SRC\`; uncommitted changes not detected), Release build in \`$(build_of "$SOCKHERD")\`"
    echo "- Open files per process: $(ulimit -n); load average before/after the runs: $LOAD_BEFORE / $LOAD_AFTER"
    echo
    echo "## Commands"
    echo
    echo "For each worker count, sockherd ran with this config (\`PORT\` a free loopback port, \`N\` the workers):"
    echo
    echo '```toml'
    sed -e 's/^workers = .*/workers = N/' -e 's/127\.0\.0\.1:[0-9]*/127.0.0.1:PORT/' "$TMP/sockherd-$(echo "$WORKERS_LIST" | awk '{ print "w" $1 }').toml"
    echo '```'
    echo
    echo "and the load generator ran once per scenario, while sockherd was up:"
    echo
    echo '```sh'
    for w in $WORKERS_LIST; do
        echo "build-bench/sockherd run --config sockherd-w$w.toml &   # workers = $w, wait for /healthz"
        cat "$TMP/w$w-connect.cmd" "$TMP/w$w-echo.cmd"
        echo "kill -TERM <sockherd pid>"
    done
    echo '```'
    echo
    echo "## Results"
    echo
    echo "CPU % is CPU time over wall time of the load generator run, summed over the processes of that"
    echo "kind: 100 % is one core, this machine has $((NPROC * 100)) %. CPU cells read \"connect / echo\"."
    echo "\"other\" is what the rest of the machine used meanwhile (it is shared)."
    echo
    echo "| workers | handshakes/s | connect p99 | echo msg/s | echo p99 | loadgen CPU % | supervisor CPU % | workers CPU % | other CPU % |"
    echo "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    awk -v NPROC="$NPROC" '
        { rate[$1, $2] = $3; p99[$1, $2] = $4; lg[$1, $2] = $7; sup[$1, $2] = $8; wk[$1, $2] = $9; oth[$1, $2] = $11
          if (!($1 in seen)) { seen[$1] = 1; order[++n] = $1 } }
        function ms(us) { return us < 0 ? "n/a" : sprintf("%.2f ms", us / 1000) }
        function big(r,   s, o, i, k) { s = sprintf("%.0f", r); k = length(s); o = ""
            for (i = 1; i <= k; i++) { o = o substr(s, i, 1); if ((k - i) % 3 == 0 && i < k) o = o "," } return o }
        END { for (i = 1; i <= n; i++) { w = order[i]
            printf "| %s | %s | %s | %s | %s | %s / %s | %s / %s | %s / %s | %s / %s |\n", w,
                big(rate[w, "connect"]), ms(p99[w, "connect"]), big(rate[w, "echo"]), ms(p99[w, "echo"]),
                lg[w, "connect"], lg[w, "echo"], sup[w, "connect"], sup[w, "echo"], wk[w, "connect"], wk[w, "echo"],
                oth[w, "connect"], oth[w, "echo"] } }' "$DATA"
    echo
    echo "Ratios against 1 worker, measured in this same run:"
    echo
    echo "| workers | handshakes/s | echo msg/s |"
    echo "|---:|---:|---:|"
    awk '{ rate[$1, $2] = $3; if (!($1 in seen)) { seen[$1] = 1; order[++n] = $1 } }
        function ratio(a, b) { return b > 0 ? sprintf("%.2fx", a / b) : "n/a" }
        END { b = order[1]; for (i = 1; i <= n; i++) { w = order[i]
            printf "| %s | %s | %s |\n", w, ratio(rate[w, "connect"], rate[b, "connect"]), ratio(rate[w, "echo"], rate[b, "echo"]) } }' "$DATA"
    if [ "$(echo "$WORKERS_LIST" | awk '{ print $1 }')" != 1 ]; then
        echo
        echo "(The first worker count, $(echo "$WORKERS_LIST" | awk '{ print $1 }'), is the baseline: BENCH_WORKERS did not start with 1.)"
    fi
    echo
    echo "Work per CPU-second (rate divided by the CPU it took; less sensitive to other load on a shared"
    echo "machine than the rates, and the number to compare with other servers later):"
    echo
    echo "| workers | handshakes per sockherd CPU-s | echo msgs per sockherd CPU-s | handshakes per loadgen CPU-s | echo msgs per loadgen CPU-s |"
    echo "|---:|---:|---:|---:|---:|"
    awk '{ k = $1 SUBSEP $2; rate[k] = $3; lg[k] = $7; srv[k] = $8 + $9; if (!($1 in seen)) { seen[$1] = 1; order[++n] = $1 } }
        function per(r, cpu,   s, o, i, m) { if (cpu <= 0) return "n/a"; s = sprintf("%.0f", r / (cpu / 100)); m = length(s); o = ""
            for (i = 1; i <= m; i++) { o = o substr(s, i, 1); if ((m - i) % 3 == 0 && i < m) o = o "," } return o }
        END { for (i = 1; i <= n; i++) { w = order[i]; c = w SUBSEP "connect"; e = w SUBSEP "echo"
            printf "| %s | %s | %s | %s | %s |\n", w, per(rate[c], srv[c]), per(rate[e], srv[e]), per(rate[c], lg[c]), per(rate[e], lg[e]) } }' "$DATA"
    echo
    echo "Errors counted by the load generator, and how each sockherd stopped:"
    echo
    echo "| workers | connect errors | echo errors | sockherd on SIGTERM | sockherd log lines (level warn) |"
    echo "|---:|---|---|---|---:|"
    for w in $WORKERS_LIST; do
        ce=$(sed -n 's/.*"errors":\([0-9]*\),"error_kinds":\({[^}]*}\).*/\1 \2/p' "$TMP/w$w-connect.json" 2>/dev/null)
        ee=$(sed -n 's/.*"errors":\([0-9]*\),"error_kinds":\({[^}]*}\).*/\1 \2/p' "$TMP/w$w-echo.json" 2>/dev/null)
        lines=$(wc -l <"$TMP/sockherd-w$w.log" | tr -d ' ')
        echo "| $w | ${ce:-no result} | ${ee:-no result} | $(cat "$TMP/w$w.stop") | $lines |"
    done
    echo
    echo "## What limits this"
    echo
    awk -v NPROC="$NPROC" -v PROCS="$LOADGEN_PROCS" '
        { k = $1 SUBSEP $2; rate[k] = $3; lg[k] = $7; sup[k] = $8; wk[k] = $9; mach[k] = $10; oth[k] = $11
          if (!($1 in seen)) { seen[$1] = 1; order[++n] = $1 } }
        function pct(x) { return sprintf("%.0f %%", x) }
        function srv(k) { return sup[k] + wk[k] }
        function minv(s, a,   i, m, v) { m = -1; for (i = 1; i <= n; i++) { v = a[order[i] SUBSEP s]; if (m < 0 || v < m) m = v } return m }
        function maxv(s, a,   i, m, v) { m = 0; for (i = 1; i <= n; i++) { v = a[order[i] SUBSEP s]; if (v > m) m = v } return m }
        function describe(s, name, unit,   i, k, b, kn, line, satur, lgcap, r, rr, cr, follows, e1, en, g1, gn) {
            b = order[1] SUBSEP s; kn = order[n] SUBSEP s
            satur = 0; lgcap = 0
            for (i = 1; i <= n; i++) { k = order[i] SUBSEP s
                if (mach[k] >= 0.9 * NPROC * 100) satur++
                if (lg[k] >= 0.85 * 100 * PROCS) lgcap++ }
            line = "- **" name "**: "
            if (satur == n) line = line sprintf("the machine was CPU-bound in every run (%d cores, at least 90 %% of %d %% busy). ", NPROC, NPROC * 100)
            else if (satur > 0) line = line sprintf("the machine was CPU-bound in %d of %d runs. ", satur, n)
            else line = line sprintf("the machine was not CPU-bound (below 90 %% of %d %% busy): latency and the closed loop, not CPU, set the rate. ", NPROC * 100)
            # The load generator as the limit: its share of the CPU, and its own ceiling.
            if (srv(b) > 0) {
                r = lg[b] / srv(b)
                line = line sprintf("The load generator used %s to %s CPU and needs %.1fx the CPU sockherd needs for the same work, so on a machine the two share it leaves sockherd at most about %.0f %% of the CPU: in that sense the load generator is the limit here. ", pct(minv(s, lg)), pct(maxv(s, lg)), r, 100 / (1 + r))
            }
            if (lgcap > 0) line = line sprintf("In %d run(s) it was also at its own ceiling (%d single-threaded process(es)), so those rates are a lower bound for sockherd. ", lgcap, PROCS)
            if (s == "connect") {
                if (maxv(s, sup) >= 85) line = line sprintf("The supervisor (one thread that accepts and hands off every connection) reached %s: it is a ceiling for handshakes/s. ", pct(maxv(s, sup)))
                else line = line sprintf("The supervisor (one thread that accepts and hands off every connection) used at most %s, so it was not the limit. ", pct(maxv(s, sup)))
            }
            # Scaling: compare the rate with the CPU sockherd actually got.
            if (n > 1 && rate[b] > 0 && srv(b) > 0) {
                line = line "Against 1 worker:"
                follows = 1
                for (i = 2; i <= n; i++) { k = order[i] SUBSEP s
                    rr = rate[k] / rate[b]; cr = srv(k) / srv(b)
                    line = line sprintf(" %s workers %.2fx the rate with %.2fx the sockherd CPU;", order[i], rr, cr)
                    if (rr / cr < 0.8 || rr / cr > 1.25) follows = 0 }
                sub(/;$/, ".", line)
                if (follows) line = line sprintf(" The rate follows the CPU sockherd got, not the worker count, and that CPU moved with the other load on this shared machine (other work: %s with %s worker(s), %s with %s). ", pct(oth[b]), order[1], pct(oth[kn]), order[n])
                else line = line " The rate did not simply follow the sockherd CPU: the worker count itself changed the cost per operation (see the work per CPU-second). "
            }
            # Work per CPU-second, first and last worker count.
            if (srv(b) > 0 && srv(kn) > 0 && lg[b] > 0 && lg[kn] > 0) {
                e1 = rate[b] / (srv(b) / 100); en = rate[kn] / (srv(kn) / 100)
                g1 = rate[b] / (lg[b] / 100); gn = rate[kn] / (lg[kn] / 100)
                line = line sprintf("Per CPU-second, sockherd (supervisor + workers) did %.0f %s with %s worker(s) and %.0f with %s; the load generator did %.0f and %.0f.", e1, unit, order[1], en, order[n], g1, gn)
                if (en < 0.8 * e1 && gn < 0.9 * g1)
                    line = line " Both got less done per CPU-second with more processes on the same cores, which points at fewer events per wake-up and more scheduling rather than at sockherd itself."
                else if (en < 0.8 * e1)
                    line = line sprintf(" sockherd needed noticeably more CPU per operation with %s workers.", order[n])
            }
            if (maxv(s, oth) - minv(s, oth) >= 30)
                line = line sprintf(" Other work on the machine used between %s and %s during these runs (see the \"other\" column): that alone moves the rates and the ratios above, so read them together with it.", pct(minv(s, oth)), pct(maxv(s, oth)))
            else if (maxv(s, oth) >= 10) line = line sprintf(" Other work on the machine used up to %s during these runs, so single numbers are noisy.", pct(maxv(s, oth)))
            print line
        }
        END {
            describe("connect", "Connections (open + close through the hand-off)", "handshakes")
            describe("echo", "Echo", "messages")
            print "- On " NPROC " cores the load generator, the supervisor and the workers share the same CPUs: more workers than cores cannot add CPU, and showing what a faster sockherd can do needs the load generator on other cores or another machine."
        }' "$DATA"
    if [ -n "$NOTES" ]; then
        echo
        echo "## Notes from this run"
        echo "$NOTES"
    fi
    echo
    echo "## sockherd log lines (level warn and above)"
    echo
    any=0
    for w in $WORKERS_LIST; do
        if [ -s "$TMP/sockherd-w$w.log" ]; then
            any=1
            echo "workers=$w (first 10 of $(wc -l <"$TMP/sockherd-w$w.log" | tr -d ' ')):"
            echo
            echo '```'
            head -10 "$TMP/sockherd-w$w.log"
            echo '```'
            echo
        fi
    done
    [ $any = 1 ] || { echo "None."; echo; }
    echo "## Raw load generator output"
    echo
    echo '```json'
    for w in $WORKERS_LIST; do cat "$TMP/w$w-connect.json" "$TMP/w$w-echo.json" 2>/dev/null || true; done
    echo '```'
} >"$RESULTS.tmp"
mv "$RESULTS.tmp" "$RESULTS"
say "wrote $RESULTS"
