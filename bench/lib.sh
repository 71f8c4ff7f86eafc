# Shell helpers shared by bench/run.sh and bench/fanout.sh (sourced, not run).

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
