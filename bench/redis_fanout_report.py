#!/usr/bin/env python3
"""Writes the "## Fan-out across nodes through Redis (issue 9)" section of
bench/results/redis_fanout.md from what bench/redis_fanout.sh collected in its temporary directory
(results.jsonl, commands, meta, status/*.json, the node configs and logs); the rest of that file
is left byte for byte as it is.

usage: redis_fanout_report.py <tmpdir> <report.md>
"""
import json
import os
import sys

SECTION = "## Fan-out across nodes through Redis (issue 9)"
NAMES = {
    "two": "sockherd, 2 nodes + Redis",
    "one": "sockherd, 1 node",
    "seed": "seed (nginx + 4 Node + Redis)",
}
BRIDGE_FIELDS = ("messages_in", "messages_out", "duplicates_skipped", "dropped_while_disconnected",
                 "dropped_backpressure", "publish_failures", "decode_errors", "reconnects", "connect_failures",
                 "timeouts")
BRIDGE_MUST_BE_ZERO = ("dropped_while_disconnected", "dropped_backpressure", "publish_failures", "decode_errors",
                       "reconnects", "connect_failures", "timeouts")
WORKER_FIELDS = ("deliveries_total", "publishes_total", "slow_consumer_disconnects_total",
                 "send_queue_drops_total", "publish_drops_total", "relay_drops_total")
WORKER_MUST_BE_ZERO = ("slow_consumer_disconnects_total", "send_queue_drops_total", "publish_drops_total",
                       "relay_drops_total")
NODE_LETTERS = "ABCDEFGH"


def load(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def node_delta(tmp, key, i):
    """The change of node i's bridge and worker counters over run `key` (None if unknown)."""
    before = load(os.path.join(tmp, "status", f"{key}-{i}-before.json"))
    after = load(os.path.join(tmp, "status", f"{key}-{i}-after.json"))
    if before is None or after is None:
        return None
    d = {"redis": None}
    if before.get("redis") and after.get("redis"):
        d["redis"] = {f: after["redis"].get(f, 0) - before["redis"].get(f, 0) for f in BRIDGE_FIELDS}
        d["redis_state"] = after["redis"].get("state")
    for f in WORKER_FIELDS:
        d[f] = sum(w.get(f) or 0 for w in after.get("workers", [])) - sum(w.get(f) or 0 for w in before.get("workers", []))
    d["worker_restarts"] = after.get("totals", {}).get("worker_restarts", 0) - before.get("totals", {}).get(
        "worker_restarts", 0)
    return d


def ms(us):
    return f"{us / 1000:.1f} ms" if us < 100_000 else f"{us / 1000:,.0f} ms"


def big(x):
    return f"{x:,.0f}"


def problems(row, deltas):
    """What does not add up in one run, as short phrases (empty: consistent)."""
    res = row["result"]
    out = []
    if res is None:
        return ["the load generator gave no result"]
    if res["lost"] != 0:
        out.append(f"lost {big(res['lost'])}")
    if res["dup"] or res["out_of_order"]:
        out.append(f"dup {res['dup']} / out of order {res['out_of_order']}")
    if res["errors"]:
        out.append("errors: " + ", ".join(f"{k} {v}" for k, v in sorted(res["error_kinds"].items())))
    if res["subscribers"] != res["connections"] or res["subscribers"] != row["subscribers"]:
        out.append(f"{res['subscribers']} of {row['subscribers']} subscribers connected")
    if res["publisher_received"] != res["sent"]:
        out.append(f"the publisher got {big(res['publisher_received'])} of its {big(res['sent'])} messages back")
    for t, pt in enumerate(res.get("per_target", [])):
        if pt["lost"] != 0 and len(res["per_target"]) > 1:
            out.append(f"node {NODE_LETTERS[t]}: lost {big(pt['lost'])}")
    if deltas is None:
        if row["system"] != "seed":
            out.append("no /status.json before and after the run")
        return out
    sent = res["sent"]
    for i, d in enumerate(deltas):
        n = NODE_LETTERS[i] if len(deltas) > 1 else "node"
        if d is None:
            out.append(f"{n}: no /status.json")
            continue
        for f in WORKER_MUST_BE_ZERO:
            if d[f]:
                out.append(f"{n}: workers' {f} +{d[f]}")
        if d["worker_restarts"]:
            out.append(f"{n}: {d['worker_restarts']} worker restarts")
        r = d["redis"]
        if r is None:
            continue
        for f in BRIDGE_MUST_BE_ZERO:
            if r[f]:
                out.append(f"{n}: redis {f} +{r[f]}")
        if d.get("redis_state") != "connected":
            out.append(f"{n}: bridge {d.get('redis_state')} after the run")
    # What the nodes' workers handed to their subscribers against what the load generator received
    # (the publisher is a subscriber of node A, or of the only node, too).
    per = res.get("per_target", [])
    for i, d in enumerate(deltas):
        if d is None or i >= len(per):
            continue
        want = per[i]["delivered"] + (res["publisher_received"] if i == 0 else 0)
        if d["deliveries_total"] != want:
            n = NODE_LETTERS[i] if len(deltas) > 1 else "the node"
            out.append(f"{n}'s workers counted {big(d['deliveries_total'])} deliveries, the load generator "
                       f"received {big(want)} there (publisher's copies included)")
    if row["system"] == "two" and len(deltas) == 2 and all(d and d["redis"] for d in deltas):
        a, b = deltas[0]["redis"], deltas[1]["redis"]
        if b["messages_in"] != sent:
            out.append(f"B messages_in {big(b['messages_in'])} ≠ sent {big(sent)}")
        if a["messages_out"] != sent:
            out.append(f"A messages_out {big(a['messages_out'])} ≠ sent {big(sent)}")
        if a["messages_in"] or b["messages_out"]:
            out.append(f"A messages_in {a['messages_in']}, B messages_out {b['messages_out']} (expected 0)")
    return out


def bridge_cell(row, deltas):
    if row["system"] != "two":
        return "–"
    if not deltas or len(deltas) != 2 or not all(d and d["redis"] for d in deltas):
        return "n/a"
    a, b = deltas[0]["redis"], deltas[1]["redis"]
    dropped = sum(a[f] + b[f] for f in ("dropped_while_disconnected", "dropped_backpressure", "publish_failures"))
    return (f"A out {big(a['messages_out'])}, B in {big(b['messages_in'])}, A own skipped "
            f"{big(a['duplicates_skipped'])}, dropped {dropped}")


def main():
    tmp, results = sys.argv[1], sys.argv[2]
    rows = [json.loads(l) for l in open(os.path.join(tmp, "results.jsonl")) if l.strip()]
    meta = dict(l.rstrip("\n").split("=", 1) for l in open(os.path.join(tmp, "meta")) if "=" in l)
    cmds = {}
    for l in open(os.path.join(tmp, "commands")):
        sysname, _subs, _mode, cmd = l.rstrip("\n").split(" ", 3)
        cmds.setdefault(sysname, []).append(cmd)
    deltas = {}
    for r in rows:
        n = 2 if r["system"] == "two" else 1 if r["system"] == "one" else 0
        deltas[r["key"]] = [node_delta(tmp, r["key"], i) for i in range(n)] if n else None
    by = {(r["system"], r["subscribers"], r["mode"]): r for r in rows}
    systems = [s for s in ("two", "one", "seed") if any(r["system"] == s for r in rows)]

    o = [SECTION, ""]
    o.append(f"Generated by `{meta['COMMAND']}` on {meta['WHEN']} ({meta['ELAPSED']} s in all). The systems "
             "ran in that one run, with the same load generator commands, all started first and then taking "
             "turns (for each subscriber count and mode: 2 nodes, 1 node, seed), so the ratios below are side "
             "by side; numbers from different runs on this shared machine are not comparable.")
    o.append("")
    o.append(f"- Machine: {meta['MACHINE']}; load average before / after: {meta['LOADAVG']}. The load "
             "generator (2 processes) runs on the same cores as the systems under test.")
    o.append(f"- Versions: {meta['VERSIONS']}.")
    o.append("- Systems: **sockherd, 2 nodes**: two supervisors with 2 workers each, the same config apart "
             "from the ports, sharing one `redis-server --port P --bind 127.0.0.1 --save '' --appendonly no` "
             "(defaults otherwise, so `client-output-buffer-limit pubsub 32mb 8mb 60`) started by the script; "
             "subscribers alternate over the two nodes, the publisher is on node A, so every message reaches "
             "node B through Redis. **sockherd, 1 node**: 4 workers, no `[redis]`: the same work without the "
             "Redis hop. **seed**: `bench/peers/seed/start.sh` (nginx, 2 workers, round robin -> 4 Node `ws` "
             "processes; every delivery, local ones included, goes through its redis-server).")
    o.append("")
    o.append("Configs (PORT = a free loopback port; node B's is node A's with its own ports):")
    o.append("")
    for name, title in (("node-a", "sockherd, 2 nodes: node A"), ("one", "sockherd, 1 node")):
        p = os.path.join(tmp, name + ".toml.txt")
        if os.path.exists(p):
            o.append(f"```toml\n# {title}\n{open(p).read().rstrip()}\n```")
            o.append("")
    o.append("Load generator commands (`build-bench/bench/sockherd-loadgen`, or `SOCKHERD_LOADGEN`), the same "
             "arguments for every system; only the targets differ:")
    o.append("")
    o.append("```sh")
    for s in systems:
        for c in cmds.get(s, []):
            o.append(f"{c}   # {s}")
    o.append("```")
    o.append("")
    o.append(f"Each run: every subscriber connects (handshakes done), then one publisher on the same channel "
             f"sends for `--duration` {meta['DURATION']} s; paced = `--rate` msg/s (20,000 offered deliveries/s), "
             f"closed = at most `--inflight` 1 message not yet received back by the publisher. Subscribers read for "
             f"`--grace` {meta['GRACE']} s more. deliveries/s = deliveries / (first send to last delivery); latency "
             "= publish (CLOCK_MONOTONIC at the write) to receive; lost = sent × subscribers − delivered "
             "(received within the grace period). Bridge counters: the change of each node's `/status.json` "
             "`redis` counters over the run (read before it, and after it once node B's `messages_in` has not "
             "moved for 1.2 s): A out = `messages_out` of node A (PUBLISHes Redis acknowledged), B in = "
             "`messages_in` of node B, A own skipped = `duplicates_skipped` of node A (its own messages coming "
             "back from Redis), dropped = `dropped_while_disconnected` + `dropped_backpressure` + "
             "`publish_failures` of both.")
    o.append("")

    o.append("### Results")
    o.append("")
    o.append("| system | subscribers | mode | sent | deliveries/s | p50 | p99 | max | lost | dup/ooo | errors | "
             "bridge counters (Δ over the run) |")
    o.append("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for s in systems:
        for r in rows:
            if r["system"] != s:
                continue
            res = r["result"]
            if res is None:
                o.append(f"| {NAMES[s]} | {r['subscribers']} | {r['mode']} | failed | | | | | | | | |")
                continue
            errs = ", ".join(f"{k} {v}" for k, v in sorted(res["error_kinds"].items())) or "0"
            o.append(f"| {NAMES[s]} | {big(r['subscribers'])} | {r['mode']} | {big(res['sent'])} | "
                     f"{big(res['rate'])} | {ms(res['p50_us'])} | {ms(res['p99_us'])} | {ms(res['max_us'])} | "
                     f"{big(res['lost'])} | {res['dup']}/{res['out_of_order']} | {errs} | "
                     f"{bridge_cell(r, deltas[r['key']])} |")
    o.append("")

    two_rows = [r for r in rows if r["system"] == "two" and r["result"] is not None]
    if two_rows:
        o.append("Per node, sockherd 2 nodes (from the load generator's `per_target`; node deliveries = the "
                 "change of the node's workers' `deliveries_total`, as of their last heartbeat, which on node A "
                 "includes the publisher's own copies):")
        o.append("")
        o.append("| subscribers | mode | node | subscribers | deliveries | lost | p50 | p99 | max | node deliveries |")
        o.append("|---|---|---|---|---|---|---|---|---|---|")
        for r in two_rows:
            d = deltas[r["key"]] or []
            for t, pt in enumerate(r["result"].get("per_target", [])):
                nd = d[t]["deliveries_total"] if t < len(d) and d[t] else None
                o.append(f"| {big(r['subscribers'])} | {r['mode']} | {NODE_LETTERS[t]}"
                         f"{' (publisher)' if t == 0 else ''} | {big(pt['subscribers'])} | {big(pt['delivered'])} | "
                         f"{big(pt['lost'])} | {ms(pt['p50_us'])} | {ms(pt['p99_us'])} | {ms(pt['max_us'])} | "
                         f"{'n/a' if nd is None else big(nd)} |")
        o.append("")

    o.append("### Ratios (same run)")
    o.append("")
    o.append("| subscribers | mode | 2 nodes / seed, deliveries/s | 2 nodes / seed, p99 | 2 nodes / 1 node, "
             "deliveries/s | 2 nodes / 1 node, p99 |")
    o.append("|---|---|---|---|---|---|")

    def ratio(a, b, field):
        if a is None or b is None or a["result"] is None or b["result"] is None:
            return "n/a"
        x, y = a["result"][field], b["result"][field]
        return f"{x / y:.2f}×" if y else "n/a"

    for r in rows:
        if r["system"] != "two":
            continue
        k = (r["subscribers"], r["mode"])
        seed, one = by.get(("seed",) + k), by.get(("one",) + k)
        o.append(f"| {big(r['subscribers'])} | {r['mode']} | {ratio(r, seed, 'rate')} | {ratio(r, seed, 'p99_us')} | "
                 f"{ratio(r, one, 'rate')} | {ratio(r, one, 'p99_us')} |")
    o.append("")
    o.append("deliveries/s: higher is better; p99: lower is better. In paced mode every system is offered the "
             "same 20,000 deliveries/s, so the deliveries/s ratio is about 1 by construction there and the "
             "comparison is latency and loss; the closed loop shows how far each one goes.")
    o.append("")

    o.append("### Consistency")
    o.append("")
    o.append("Checked per run: lost = 0, no dup / out of order, no errors, every subscriber connected, the "
             "publisher got each message back; for sockherd, the workers' slow-consumer, send-queue, publish "
             "and relay drop counters did not move, no worker restarted, and each node's workers counted as "
             "many deliveries as the load generator received from it; for 2 nodes, node B's "
             "`messages_in` and node A's `messages_out` equal the messages sent, node A's `messages_in` and "
             "node B's `messages_out` are 0, and no bridge drop, failure, reconnect or timeout.")
    o.append("")
    bad = 0
    for r in rows:
        p = problems(r, deltas[r["key"]])
        if p:
            bad += 1
            o.append(f"- **{NAMES[r['system']]}, {big(r['subscribers'])}, {r['mode']}: inconsistent**: " + "; ".join(p) + ".")
    if bad == 0:
        o.append("- Every run is consistent.")
    else:
        o.append(f"- The other {len(rows) - bad} runs are consistent.")
    o.append("")
    for name, title in (("node-a", "node A"), ("node-b", "node B"), ("one", "1 node")):
        p = os.path.join(tmp, name + ".log")
        if os.path.exists(p):
            lines = [l.rstrip() for l in open(p, errors="replace") if l.strip()]
            if lines:
                o.append(f"sockherd {title} logged {len(lines)} lines at warn or above (first 8):")
                o.append("")
                o.append("```")
                o.extend(l[:300] for l in lines[:8])
                o.append("```")
                o.append("")

    o.append("### What limits this")
    o.append("")
    cpu = [r["result"]["cpu_user_s"] + r["result"]["cpu_sys_s"] for r in rows if r["result"] and r["mode"] == "closed"]
    cpu_text = f" (here {min(cpu):.1f}–{max(cpu):.1f} CPU s per closed-loop run)" if cpu else ""
    o.append("Everything ran on one shared 2-core machine (load average above; other jobs' builds and tests "
             "ran beside it): the load generator reads every delivery on the same two cores as the systems "
             f"under test{cpu_text}, so a system that delivers more also leaves itself less CPU, and two "
             "sockherd nodes plus redis-server are more processes competing for the same two cores than one "
             "node, while on real hardware each node would have its own machine. Closed loop means the "
             "publisher waits for its own copy: with sockherd that comes back from node A's own workers, "
             "before node B has had its copy from Redis, so the 2-node loop's pace never waits for node B, "
             "node B could fall behind unnoticed by the pace (its deliveries and latency are in the per-node "
             "table), and what the Redis hop costs shows in the B rows' latency, not in the pace; with the seed every copy, the publisher's included, goes "
             "through Redis. Redis is on loopback, so its hop costs "
             "CPU and a context switch here, not a network round trip. One run per cell: on this machine a "
             "p99 can move several-fold between two runs of the same command, so read the ratios as rough "
             "and repeat before concluding from one row.")
    o.append("")

    old = open(results).read() if os.path.exists(results) else ""
    text = replace_section(old, "\n".join(o).rstrip("\n") + "\n")
    with open(results + ".tmp", "w") as f:
        f.write(text)
    os.replace(results + ".tmp", results)


def replace_section(old, section):
    """old with the section (from its heading to the next "## " heading or the end) replaced by
    `section`, or with it appended; every byte outside the section stays as it was."""
    lines = old.splitlines(keepends=True)
    start = next((i for i, l in enumerate(lines) if l.rstrip("\r\n") == SECTION), None)
    if start is None:
        if old == "" or old.endswith("\n\n"):
            sep = ""
        elif old.endswith("\n"):
            sep = "\n"
        else:
            sep = "\n\n"
        return old + sep + section
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
    after = "".join(lines[end:])
    return "".join(lines[:start]) + section + ("\n" + after if after else "")


if __name__ == "__main__":
    main()
