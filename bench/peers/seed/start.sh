#!/usr/bin/env bash
# Starts the seed topology: redis-server + four Node.js `ws` backends (app.js) + nginx in front.
#
#   bench/peers/seed/start.sh <port> <rundir>
#
# nginx listens on 127.0.0.1:<port>; redis and the backends take free loopback ports. Everything
# runs as the current user with its files (configs, logs, pid files, redis dir) in <rundir>.
# Exits 0 once nginx's /healthz answers 200 and each backend answers its own /healthz, leaving the
# processes running; their pids are in <rundir>/pids ("<name> <pid>" per line: redis, node0..node3,
# nginx) and the ports in <rundir>/ports (shell assignments). Stop with stop.sh <rundir>.
# On failure: a message on stderr, whatever it started is killed, exit status non-zero.
#
# Optional env: SEED_START_TIMEOUT (seconds per wait, default 30), SEED_REDIS_ARGS (extra
# redis-server arguments, word-split), NODE (node binary, default node).
set -euo pipefail

usage() { echo "usage: $0 <port> <rundir>" >&2; exit 2; }
[ $# -eq 2 ] || usage
PORT=$1
RUNDIR=$2
case $PORT in ''|*[!0-9]*) usage ;; esac
[ "$PORT" -ge 1 ] && [ "$PORT" -le 65535 ] || usage

HERE=$(cd "$(dirname "$0")" && pwd)
NODE=${NODE:-node}
TIMEOUT=${SEED_START_TIMEOUT:-30}
BACKENDS=4

die() { echo "seed start: $*" >&2; exit 1; }

mkdir -p "$RUNDIR"
RUNDIR=$(cd "$RUNDIR" && pwd)
PIDS="$RUNDIR/pids"

if [ -s "$PIDS" ]; then
    while read -r _name pid; do
        if [ -n "${pid:-}" ] && kill -0 "$pid" 2>/dev/null; then
            die "$PIDS lists a live process ($_name $pid): run stop.sh $RUNDIR first"
        fi
    done < "$PIDS"
    rm -f "$PIDS"
fi

# --- install what is missing --------------------------------------------------------------------
SUDO=
[ "$(id -u)" -eq 0 ] || SUDO=sudo
command -v "$NODE" >/dev/null || die "node not found (need Node.js >= 18 with npm)"

apt_install() { # tries each alternative package in turn
    local pkg
    for pkg in "$@"; do
        if $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$pkg" >&2; then return 0; fi
    done
    return 1
}
APT_UPDATED=
need_apt_update() {
    [ -n "$APT_UPDATED" ] && return 0
    $SUDO apt-get update -q >&2 || die "apt-get update failed"
    APT_UPDATED=1
}
NGINX_BIN=$(command -v nginx || true)
[ -n "$NGINX_BIN" ] || [ ! -x /usr/sbin/nginx ] || NGINX_BIN=/usr/sbin/nginx
if [ -z "$NGINX_BIN" ]; then
    echo "seed start: installing nginx" >&2
    need_apt_update
    apt_install nginx-light nginx || die "could not install nginx (apt-get install nginx-light / nginx)"
    NGINX_BIN=$(command -v nginx || echo /usr/sbin/nginx)
fi
REDIS_BIN=$(command -v redis-server || true)
if [ -z "$REDIS_BIN" ] || ! command -v redis-cli >/dev/null; then
    echo "seed start: installing redis-server" >&2
    need_apt_update
    apt_install redis-server || die "could not install redis-server"
    REDIS_BIN=$(command -v redis-server)
fi
if [ ! -f "$HERE/node_modules/ws/package.json" ] || [ ! -f "$HERE/node_modules/redis/package.json" ] \
   || [ ! -f "$HERE/node_modules/.package-lock.json" ] || [ "$HERE/package-lock.json" -nt "$HERE/node_modules/.package-lock.json" ]; then
    echo "seed start: npm ci in $HERE" >&2
    (cd "$HERE" && npm ci --no-audit --no-fund >&2) || die "npm ci failed in $HERE"
fi

# --- ports ----------------------------------------------------------------------------------------
# The front port must be free; the others are free ports the kernel hands out (held together so
# they are distinct, then released just before use).
"$NODE" -e '
const net = require("net");
const s = net.createServer();
s.once("error", (e) => { console.error(`seed start: 127.0.0.1:${process.argv[1]} is not free: ${e.code}`); process.exit(1); });
s.listen({ host: "127.0.0.1", port: Number(process.argv[1]), exclusive: true }, () => s.close());
' "$PORT" || exit 1
read -r -a FREE <<< "$("$NODE" -e '
const net = require("net");
const n = Number(process.argv[1]), servers = [], ports = [];
(async () => {
  while (ports.length < n) {
    const s = net.createServer();
    await new Promise((res, rej) => { s.once("error", rej); s.listen({ host: "127.0.0.1", port: 0, exclusive: true }, res); });
    servers.push(s);
    const p = s.address().port;
    if (p !== Number(process.argv[2])) ports.push(p);
  }
  for (const s of servers) s.close();
  console.log(ports.join(" "));
})().catch((e) => { console.error(e.message); process.exit(1); });
' $((BACKENDS + 1)) "$PORT")"
[ "${#FREE[@]}" -eq $((BACKENDS + 1)) ] || die "could not find $((BACKENDS + 1)) free loopback ports"
REDIS_PORT=${FREE[0]}
BACKEND_PORTS=("${FREE[@]:1}")

# --- start, with cleanup on failure ---------------------------------------------------------------
STARTED=() # "name pid"
cleanup_on_failure() {
    local status=$?
    [ $status -ne 0 ] || return 0
    trap - EXIT
    echo "seed start: failed; stopping what was started" >&2
    local entry pid
    for entry in "${STARTED[@]}"; do kill -TERM "${entry#* }" 2>/dev/null || true; done
    for _ in $(seq 50); do
        local alive=0
        for entry in "${STARTED[@]}"; do kill -0 "${entry#* }" 2>/dev/null && alive=1; done
        [ $alive -eq 1 ] || break
        sleep 0.1
    done
    for entry in "${STARTED[@]}"; do kill -KILL "${entry#* }" 2>/dev/null || true; done
    for f in redis.log node0.log node1.log node2.log node3.log nginx-error.log; do
        if [ -s "$RUNDIR/$f" ]; then echo "--- $RUNDIR/$f (last lines)" >&2; tail -n 5 "$RUNDIR/$f" >&2; fi
    done
    rm -f "$PIDS"
    exit $status
}
trap cleanup_on_failure EXIT
trap 'exit 130' INT TERM

alive_or_die() { kill -0 "$2" 2>/dev/null || die "$1 (pid $2) exited during startup; see $3"; }

# wait_until <what> <logfile> <pid> <command...>: polls until the command succeeds, bounded.
wait_until() {
    local what=$1 logf=$2 pid=$3; shift 3
    local deadline=$((SECONDS + TIMEOUT))
    until "$@" >/dev/null 2>&1; do
        alive_or_die "$what" "$pid" "$logf"
        [ $SECONDS -lt $deadline ] || die "$what not ready after ${TIMEOUT}s; see $logf"
        sleep 0.1
    done
}

# Prints the body of GET http://127.0.0.1:<port>/healthz; fails unless 200.
healthz() {
    "$NODE" -e '
const http = require("http");
const req = http.get({ host: "127.0.0.1", port: Number(process.argv[1]), path: "/healthz", timeout: 2000 }, (res) => {
  let body = ""; res.setEncoding("utf8"); res.on("data", (d) => (body += d));
  res.on("end", () => { process.stdout.write(body); process.exit(res.statusCode === 200 ? 0 : 1); });
});
req.on("timeout", () => req.destroy(new Error("timeout")));
req.on("error", () => process.exit(1));
' "$1"
}

for f in redis.log node0.log node1.log node2.log node3.log nginx-error.log; do : > "$RUNDIR/$f"; done

# redis: no persistence, loopback only, in the foreground (as a background job of this script)
# shellcheck disable=SC2086
"$REDIS_BIN" --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no --daemonize no \
    --dir "$RUNDIR" --logfile "$RUNDIR/redis.log" --pidfile '' ${SEED_REDIS_ARGS:-} \
    </dev/null >>"$RUNDIR/redis.log" 2>&1 &
REDIS_PID=$!
STARTED+=("redis $REDIS_PID")
wait_until "redis-server" "$RUNDIR/redis.log" "$REDIS_PID" \
    sh -c "redis-cli -h 127.0.0.1 -p $REDIS_PORT ping | grep -q PONG"

# four Node.js backends, workers 0..3
NODE_PIDS=()
for i in $(seq 0 $((BACKENDS - 1))); do
    REDIS_URL="redis://127.0.0.1:$REDIS_PORT" "$NODE" "$HERE/app.js" "${BACKEND_PORTS[$i]}" "$i" \
        </dev/null >>"$RUNDIR/node$i.log" 2>&1 &
    NODE_PIDS+=($!)
    STARTED+=("node$i $!")
done
for i in $(seq 0 $((BACKENDS - 1))); do
    wait_until "node backend $i (port ${BACKEND_PORTS[$i]})" "$RUNDIR/node$i.log" "${NODE_PIDS[$i]}" \
        healthz "${BACKEND_PORTS[$i]}"
done

# nginx, unprivileged as the current user (as root: workers run as root too, not nobody)
mkdir -p "$RUNDIR/nginx-tmp"
USER_LINE=
[ "$(id -u)" -ne 0 ] || USER_LINE="user root root;"
sed -e "s|@RUNDIR@|$RUNDIR|g" -e "s|@PORT@|$PORT|g" -e "s|@USER_LINE@|$USER_LINE|g" \
    -e "s|@P1@|${BACKEND_PORTS[0]}|g" -e "s|@P2@|${BACKEND_PORTS[1]}|g" \
    -e "s|@P3@|${BACKEND_PORTS[2]}|g" -e "s|@P4@|${BACKEND_PORTS[3]}|g" \
    "$HERE/nginx.conf.in" > "$RUNDIR/nginx.conf"
"$NGINX_BIN" -t -q -p "$RUNDIR" -c "$RUNDIR/nginx.conf" -e "$RUNDIR/nginx-error.log" \
    || die "nginx -t rejected $RUNDIR/nginx.conf"
"$NGINX_BIN" -p "$RUNDIR" -c "$RUNDIR/nginx.conf" -e "$RUNDIR/nginx-error.log" \
    </dev/null >>"$RUNDIR/nginx-error.log" 2>&1 &
NGINX_PID=$!
STARTED+=("nginx $NGINX_PID")
wait_until "nginx on 127.0.0.1:$PORT" "$RUNDIR/nginx-error.log" "$NGINX_PID" healthz "$PORT"

printf '%s\n' "${STARTED[@]}" > "$PIDS"
cat > "$RUNDIR/ports" <<EOF
SEED_PORT=$PORT
SEED_REDIS_PORT=$REDIS_PORT
SEED_BACKEND_PORTS="${BACKEND_PORTS[*]}"
EOF
echo "seed: nginx on 127.0.0.1:$PORT -> node backends ${BACKEND_PORTS[*]}, redis on $REDIS_PORT; pids in $PIDS" >&2
trap - EXIT
exit 0
