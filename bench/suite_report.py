#!/usr/bin/env python3
"""Writes bench/RESULTS.md from what bench/suite.sh collected in its temporary directory:
results.jsonl (one line per load generator run; echo runs with perf's counters when the suite
could collect them), meta, commands, raw/*.before and raw/*.during
(RSS samples of the idle runs), the sockherd configs, *.refused (why a system did not start) and
reload/ and crash/ (bench/reload.sh's raw results).

usage: suite_report.py <tmpdir> <RESULTS.md>
"""
import json
import os
import re
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import reload_report  # noqa: E402  (analyse() for the reload and crash tables)

PEER_NAMES = {
    "seed": "seed (nginx → 4 Node `ws` + Redis)",
    "cluster": "Node cluster + `ws` (4 workers)",
    "bun": "Bun (1 process)",
}
MODE_NOTE = {
    "handoff": "the supervisor accepts and hands each socket to a worker",
    "shared": "every worker accepts on the one listening socket",
    "reuseport": "one SO_REUSEPORT socket per worker",
}
# perf's counters as suite.sh names them (perf stat -x, event names).
TASK_CLOCK, SWITCHES, SYSCALLS = "task-clock", "context-switches", "raw_syscalls:sys_enter"


def variant_workers(system):
    """W when `system` is sockherd-<mode>-w<W>[n] (sockherd with W workers, echo only; a trailing n:
    under [server] worker_scheduling and supervisor_scheduling = "normal"), else None."""
    m = re.fullmatch(r"sockherd-[a-z]+-w([0-9]+)n?", system)
    return int(m.group(1)) if m else None


def workers_text(w):
    return f"{w} worker" + ("" if w == 1 else "s")


def variant_label(system):
    """"2 workers", or "4 workers, SCHED_OTHER" for a variant under worker_scheduling and
    supervisor_scheduling = "normal"."""
    return workers_text(variant_workers(system)) + (", SCHED_OTHER" if system.endswith("n") else "")


def name_of(system):
    w = variant_workers(system)
    if w is not None:
        return f"sockherd ({system[len('sockherd-'):].rsplit('-w', 1)[0]}, {variant_label(system)})"
    if system.startswith("sockherd-") and system.endswith("-sn"):
        return f"sockherd ({system[len('sockherd-'):-len('-sn')]}, supervisor SCHED_OTHER)"
    if system.startswith("sockherd-"):
        return f"sockherd ({system[len('sockherd-'):]})"
    return PEER_NAMES.get(system, system)


def big(x):
    return f"{x:,.0f}"


def ms(us):
    if us is None:
        return "n/a"
    return f"{us / 1000:.2f} ms" if us < 10_000 else f"{us / 1000:.1f} ms" if us < 100_000 else f"{us / 1000:,.0f} ms"


def ratio(a, b):
    return None if a is None or b is None or b == 0 else a / b


def fx(r, digits=2):
    return "n/a" if r is None else f"{r:.{digits}f}×"


def cell_name(c):
    """An echo cell (connections, size) in words."""
    return f"{big(c[0])} conns × {c[1]} B"


def per_text(x, digits):
    """A per-message figure (perf counter / messages); "n/a" when not counted."""
    return "n/a" if x is None else f"{x:.{digits}f}"


def num(x):
    """A count or rate that may have a fraction (a paced rate: deliveries/s ÷ subscribers)."""
    return big(x) if x == int(x) else f"{x:,.2f}"


def kib(k):
    return f"{k / 1024:,.1f} MiB" if k >= 10240 else f"{k:,.0f} KiB"


def errors_text(res):
    if not res["errors"]:
        return "0"
    items = sorted(res["error_kinds"].items(), key=lambda kv: -kv[1])
    text = ", ".join(f"{k} {v}" for k, v in items[:3])
    return text + (", …" if len(items) > 3 else "")


class Run:
    """One load generator run with the CPU measured around it."""

    def __init__(self, line):
        self.phase = line["phase"]
        self.system = line["system"]
        self.key = line["key"]
        self.cell = line["cell"]
        self.res = line["result"]
        # echo: perf stat over the middle of the window ({"events", "seconds", …} or {"error"});
        # None for the other phases, without perf, and in results of older suites
        self.perf = line.get("perf")
        cpu = line.get("cpu")
        self.server_cpu = self.sup_cpu = self.lg_cpu = self.other_cpu = None
        if cpu and cpu["wall_s"] > 0:
            hz, wall = cpu["hz"], cpu["wall_s"]
            self.server_cpu = cpu["server_ticks"] / hz / wall * 100  # % of one core
            self.sup_cpu = cpu["supervisor_ticks"] / hz / wall * 100
            self.sup_ticks, self.server_ticks = cpu["supervisor_ticks"], cpu["server_ticks"]
            if self.res:
                self.lg_cpu = (self.res["cpu_user_s"] + self.res["cpu_sys_s"]) / wall * 100
            if cpu["machine_total_ticks"] > 0:
                machine = cpu["machine_busy_ticks"] / cpu["machine_total_ticks"] * cpu["ncpu"] * 100
                self.other_cpu = max(0.0, machine - self.server_cpu - (self.lg_cpu or 0))

    @property
    def rate(self):
        return self.res["rate"] if self.res else None

    @property
    def p99(self):
        return self.res["p99_us"] if self.res else None

    def per_cpu_s(self):
        if not self.res or not self.server_cpu:
            return None
        return self.res["rate"] / (self.server_cpu / 100)

    @property
    def counted(self):
        return bool(self.res and self.perf and self.perf.get("events") and self.perf.get("seconds"))

    def per_msg(self, event):
        """perf's `event` summed over the system's processes, per message: the counters cover
        perf["seconds"] in the middle of the window, in which the messages are estimated as the
        run's msgs/s × those seconds. None when not counted."""
        if not self.counted or not self.res["rate"]:
            return None
        v = self.perf["events"].get(event)
        return None if v is None else v / (self.res["rate"] * self.perf["seconds"])

    def cpu_us_per_msg(self):
        x = self.per_msg(TASK_CLOCK)  # task-clock is in ms
        return None if x is None else x * 1000


def keep_worst(worst, key, x, where, lower_is_worse):
    """worst[key] = (x, where) when x is worse than what is there (lower or higher)."""
    cur = worst.get(key)
    if cur is None or (x < cur[0] if lower_is_worse else x > cur[0]):
        worst[key] = (x, where)


def mean_of(values):
    values = [v for v in values if v is not None]
    return statistics.mean(values) if values else None


def load_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def worker_spread(tmp, key, field="connections_total"):
    """How run `key` spread over sockherd's workers: the change of each worker slot's `field`
    between the /status.json snapshots around it, as "a / b / c / d %" (None when unknown)."""
    before = load_json(os.path.join(tmp, "raw", f"{key}.status-before.json"))
    after = load_json(os.path.join(tmp, "raw", f"{key}.status-after.json"))
    if not before or not after:
        return None
    b = {w["id"]: w.get(field) or 0 for w in before.get("workers", [])}
    d = {}
    for w in after.get("workers", []):
        d[w["id"]] = d.get(w["id"], 0) + (w.get(field) or 0) - b.get(w["id"], 0)
    total = sum(d.values())
    if total <= 0:
        return None
    return " / ".join(f"{100 * d[i] / total:.0f}" for i in sorted(d)) + " %"


def pct(x):
    return "n/a" if x is None else f"{x:.0f} %"


def load(tmp):
    runs = []
    with open(os.path.join(tmp, "results.jsonl")) as f:
        for line in f:
            if line.strip():
                runs.append(Run(json.loads(line)))
    meta = {}
    with open(os.path.join(tmp, "meta")) as f:
        for line in f:
            if "=" in line:
                k, v = line.rstrip("\n").split("=", 1)
                meta[k] = v
    return runs, meta


def read_samples(path, until=None):
    """RSS samples: [(sum_kib, {pid: (rss_kib, fds)})], those taken before the unix time `until`
    if given."""
    out = []
    if not os.path.exists(path):
        return out
    for line in open(path):
        parts = line.split()
        if len(parts) < 2 or (until is not None and float(parts[0]) >= until):
            continue
        procs = {}
        for p in parts[2:]:
            pid, rss, fds = p.split(":")
            procs[pid] = (int(rss), int(fds))
        out.append((int(parts[1]), procs))
    return out


class Report:
    def __init__(self, tmp):
        self.tmp = tmp
        self.runs, self.meta = load(tmp)
        self.o = []
        self.targets = []  # (target, measured, reference, ratio text, verdict)
        self.main = self.meta["MAIN"]
        self.systems = self.meta["SYSTEMS"].split()
        self.peers = [s for s in self.systems if s != self.main]
        self.workers = int(self.meta.get("WORKERS") or 4)
        # sockherd at other worker counts (echo only; not a peer: no target is evaluated on them)
        self.variants = self.meta.get("ECHO_VARIANTS", "").split()
        for r in self.runs:
            if variant_workers(r.system) is not None and r.system not in self.variants:
                self.variants.append(r.system)
        self.refused = {}
        for f in os.listdir(tmp):
            if f.endswith(".refused"):
                self.refused[f[: -len(".refused")]] = open(os.path.join(tmp, f)).read().strip()

    def add(self, *lines):
        self.o.extend(lines)

    def of(self, phase, system=None, **cell):
        return [r for r in self.runs if r.phase == phase and (system is None or r.system == system)
                and all(r.cell.get(k) == v for k, v in cell.items())]

    def target(self, what, measured, reference, r, ok):
        verdict = "NOT RUN" if ok is None else ("**PASS**" if ok else "**MISS**")
        self.targets.append((what, measured, reference, r, verdict))

    # ---- 1. connect ---------------------------------------------------------------------------
    def connect(self):
        runs = self.of("connect")
        if not runs and not any(k.startswith("sockherd-") and variant_workers(k) is None for k in self.refused):
            return
        self.add("## 1. Connect rate", "")
        self.add(f"WebSocket sessions opened and closed per second (connect, handshake on `/echo`, close 1000, "
                 f"wait for the server's close): `--concurrency {self.meta['CONNECT_CONCURRENCY']}` loops over "
                 f"`--procs` processes, {self.meta['DURATION']} s windows, {self.meta['CONNECT_ROUNDS']} round(s) over "
                 "all systems in turn; the rate is the mean over the rounds (each round in brackets). CPU columns: "
                 "CPU time over wall time, 100 % = one core, summed over the system's processes (sockherd: "
                 "supervisor + workers; the seed: nginx, Node, Redis). *Supervisor share* = supervisor CPU / "
                 "(supervisor + workers) CPU. *Spread over workers*: each worker's share of the connections of "
                 "the last round (from the change of its `connections_total` in `/status.json`).", "")
        self.add("| system | handshakes/s | p50 | p99 | server CPU | supervisor share | spread over workers | "
                 "handshakes per server CPU-s | load generator CPU | rest of the machine | errors |",
                 "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
        order = []
        for r in runs:
            if r.system not in order:
                order.append(r.system)
        self.connect_mean = {}
        for s in order:
            rs = [r for r in runs if r.system == s]
            ok = [r for r in rs if r.res]
            if not ok:
                self.add(f"| {name_of(s)} | no result | | | | | | | | | |")
                continue
            mean = statistics.mean(r.rate for r in ok)
            self.connect_mean[s] = mean
            each = " (" + ", ".join(big(r.rate) for r in ok) + ")" if len(ok) > 1 else ""
            sup_share = None
            if s.startswith("sockherd-"):
                tot = sum(r.server_ticks for r in ok)
                sup_share = 100 * sum(r.sup_ticks for r in ok) / tot if tot else None
            server = mean_of(r.server_cpu for r in ok)
            per = statistics.mean(r.per_cpu_s() or 0 for r in ok)
            spread = worker_spread(self.tmp, ok[-1].key) if s.startswith("sockherd-") else None
            self.add(f"| {name_of(s)} | {big(mean)}{each} | {ms(statistics.median(r.res['p50_us'] for r in ok))} | "
                     f"{ms(max(r.p99 for r in ok))} | {pct(server)} | {pct(sup_share) if sup_share is not None else '–'} | "
                     f"{spread or '–'} | {big(per)} | {pct(mean_of(r.lg_cpu for r in ok))} | "
                     f"{pct(mean_of(r.other_cpu for r in ok))} | {'; '.join(errors_text(r.res) for r in ok)} |")
            if s == "sockherd-handoff":
                self.sup_share = sup_share
            if s == "sockherd-handoff-sn":
                self.sup_share_sn = sup_share
        for s, why in sorted(self.refused.items()):
            if s.startswith("sockherd-") and variant_workers(s) is None and s not in order:
                self.add(f"| {name_of(s)} | did not start: {why.splitlines()[-1] if why else '?'} | | | | | | | | | |")
        self.add("")
        # ratios
        m = self.connect_mean
        h, rp, sh = m.get("sockherd-handoff"), m.get("sockherd-reuseport"), m.get("sockherd-shared")
        rows = []
        if h is not None:
            if rp is not None:
                rows.append(("handoff / reuseport", fx(ratio(h, rp))))
            if sh is not None:
                rows.append(("handoff / shared", fx(ratio(h, sh))))
            for p in self.peers:
                if p in m:
                    rows.append((f"handoff / {p}", fx(ratio(h, m[p]))))
        hn = m.get("sockherd-handoff-sn")
        if hn is not None:
            if rp is not None:
                rows.append(("handoff with the supervisor under SCHED_OTHER / reuseport", fx(ratio(hn, rp))))
            if h is not None:
                rows.append(("handoff (supervisor SCHED_BATCH, the default) / the same under SCHED_OTHER",
                             fx(ratio(h, hn))))
        if rows:
            self.add("Ratios (same run; above 1: sockherd handoff opens more sessions per second):", "",
                     "| | ratio |", "|---|---:|")
            for a, b in rows:
                self.add(f"| {a} | {b} |")
            self.add("")
        r = ratio(h, rp)
        why = self.refused.get("sockherd-reuseport")
        self.target("connect rate: handoff ≥ 0.9× reuseport",
                    f"{big(h)}/s" if h else "n/a", f"reuseport {big(rp)}/s" if rp else
                    ("reuseport " + ("refused by the server" if why else "not run")), fx(r),
                    None if r is None else r >= 0.9)
        share = getattr(self, "sup_share", None)
        self.target("supervisor CPU ≤ 15 % of the node's CPU at the maximum connect rate (handoff)",
                    pct(share) if share is not None else "n/a", "15 %",
                    "n/a" if share is None else f"{share / 15:.2f}× the limit", None if share is None else share <= 15)
        if hn is not None:
            sn = getattr(self, "sup_share_sn", None)
            self.targets.append(("connect, handoff with `supervisor_scheduling = \"normal\"` (SCHED_OTHER; "
                                 "the default is \"batch\")",
                                 f"{big(hn)}/s, supervisor share {pct(sn) if sn is not None else 'n/a'}",
                                 f"reuseport {big(rp)}/s" if rp else "reuseport: no result",
                                 fx(ratio(hn, rp)), "info"))

    # ---- 2. echo ------------------------------------------------------------------------------
    def echo(self):
        runs = self.of("echo")
        if not runs:
            return
        counted = any(r.counted for r in runs)
        with_syscalls = any(r.per_msg(SYSCALLS) is not None for r in runs)
        variants = [v for v in self.variants if any(r.system == v for r in runs)]
        variants.sort(key=lambda v: (-variant_workers(v), v))
        self.add("## 2. Echo", "")
        self.add(f"`--connections` sessions on `/echo`, each with `--inflight {self.meta['ECHO_INFLIGHT']}` binary "
                 f"message(s) of `--size` bytes outstanding (closed loop; every echo checked), "
                 f"{self.meta['DURATION']} s windows. Round trip = write start to echo read.", "")
        if variants:
            self.add(f"Below sockherd's main row ({self.workers} workers), the same sockherd at other worker counts "
                     f"(`BENCH_ECHO_WORKER_VARIANTS`: {', '.join(variant_label(v) for v in variants)}): "
                     "the same config but for `workers` (and, in a SCHED_OTHER row, `worker_scheduling` and "
                     "`supervisor_scheduling = \"normal\"`: "
                     "the kernel's default policy instead of sockherd's `SCHED_BATCH`), up for the echo runs only and "
                     "taking its turns in the same rotation. They are for comparison; the targets are evaluated on the "
                     "main system.", "")
        if counted:
            m = self.meta
            self.add(f"*Per msg* columns: `perf stat` software counters ({self.perf_events_text()}) of every process "
                     f"of the system, from {m.get('PERF_MARGIN', '?')} s after the window opened for "
                     f"{self.perf_seconds_text()} s, divided by the messages in that span (the run's msgs/s × its "
                     "length). *Server CPU µs/msg* = task-clock / messages: the same CPU as the server CPU column, "
                     "per message. *Context switches/msg*: a server thread leaving its CPU (going to sleep, e.g. "
                     "in `epoll_wait`, or preempted), per message. "
                     + ("*Syscalls/msg*: every system call the server's processes entered (`raw_syscalls:sys_enter`)."
                        if with_syscalls else "No syscalls/msg: perf could not count `raw_syscalls:sys_enter` here "
                        "(a tracepoint; it needs tracefs and more privilege)."), "")
        cols = "| connections | size | system | msgs/s | p50 | p99 | p99.9 | server CPU | msgs per server CPU-s | "
        align = "|---:|---:|---|---:|---:|---:|---:|---:|---:|"
        if counted:
            cols += "server CPU µs/msg | context switches/msg | " + ("syscalls/msg | " if with_syscalls else "")
            align += "---:|---:|" + ("---:|" if with_syscalls else "")
        self.add(cols + "load generator CPU | rest of the machine | errors |", align + "---:|---:|---|")
        cells = []
        for r in runs:
            c = (r.cell["connections"], r.cell["size"])
            if c not in cells:
                cells.append(c)
        by = {(r.cell["connections"], r.cell["size"], r.system): r for r in runs}
        width = 12 + (2 + with_syscalls if counted else 0)
        for conns, size in cells:
            for s in [self.main] + variants + self.peers:
                r = by.get((conns, size, s))
                if r is None:
                    continue
                if not r.res:
                    self.add(f"| {big(conns)} | {size} B | {name_of(s)} | no result |" + " |" * (width - 4))
                    continue
                per = ""
                if counted:
                    per = (f"{per_text(r.cpu_us_per_msg(), 2)} | {per_text(r.per_msg(SWITCHES), 3)} | "
                           + (f"{per_text(r.per_msg(SYSCALLS), 2)} | " if with_syscalls else ""))
                self.add(f"| {big(conns)} | {size} B | {name_of(s)} | {big(r.rate)} | {ms(r.res['p50_us'])} | "
                         f"{ms(r.p99)} | {ms(r.res['p999_us'])} | {pct(r.server_cpu)} | {big(r.per_cpu_s() or 0)} | "
                         f"{per}{pct(r.lg_cpu)} | {pct(r.other_cpu)} | {errors_text(r.res)} |")
        self.add("")
        missing = sorted({f"{name_of(r.system)}: {r.perf['error']}" for r in runs if r.perf and r.perf.get("error")})
        cut = [r for r in runs if r.counted and r.perf.get("cut")]
        if counted and (missing or cut):
            self.add("Counters: " + "; ".join(
                (["no counters for " + "; ".join(missing)] if missing else [])
                + (["perf stopped at the window's end, so counting less: " + ", ".join(
                    f"{name_of(r.system)} at {cell_name((r.cell['connections'], r.cell['size']))} "
                    f"({r.perf['seconds']:.2f} s)" for r in cut)] if cut else [])) + ".", "")
        self.add("sockherd against each peer, per cell (msgs/s: above 1 is better; p99: below 1 is better):", "")
        self.add("| connections | size | " + " | ".join(f"msgs/s vs {p}" for p in self.peers) + " | "
                 + " | ".join(f"p99 vs {p}" for p in self.peers) + " |",
                 "|---:|---:|" + "---:|" * (2 * len(self.peers)))
        worst = {}
        for conns, size in cells:
            a = by.get((conns, size, self.main))
            row = [big(conns), f"{size} B"]
            for kind in ("rate", "p99"):
                for p in self.peers:
                    b = by.get((conns, size, p))
                    x = ratio(getattr(a, kind) if a else None, getattr(b, kind) if b else None)
                    row.append(fx(x))
                    if x is not None:
                        keep_worst(worst, (kind, p), x, (conns, size), kind == "rate")
            self.add("| " + " | ".join(row) + " |")
        self.add("")
        self.echo_workers(cells, by, variants, counted)
        self.echo_in_the_way(cells, by, variants, counted, worst)

        def t(label, kind, peer, limit, higher):
            w = worst.get((kind, peer))
            n = sum(1 for c in cells if (c[0], c[1], self.main) in by and (c[0], c[1], peer) in by)
            if w is None:
                self.target(label, "n/a", f"{peer} not run", "n/a", None)
                return
            x, c = w
            mine, theirs = by[(c[0], c[1], self.main)], by[(c[0], c[1], peer)]
            show = (lambda r: f"{big(r.rate)} msgs/s") if kind == "rate" else (lambda r: f"p99 {ms(r.p99)}")
            self.target(label, f"{show(mine)} ({cell_name(c)}" + (f": the worst of {n} cells)" if n > 1 else ")"), f"{peer}: {show(theirs)}",
                        fx(x), x >= limit if higher else x <= limit)

        t("echo msgs/s ≥ 3× the seed topology", "rate", "seed", 3.0, True)
        t("echo msgs/s ≥ 1.0× Bun", "rate", "bun", 1.0, True)
        t("echo p99 ≤ Bun's", "p99", "bun", 1.0, False)
        # sockherd at other worker counts against Bun: not a target (the configuration is
        # the main one), but it says how much of the gap the worker count is
        label = "echo msgs/s, sockherd at other worker counts vs Bun (worst cell)"
        if variants and "bun" not in {r.system for r in runs}:
            self.targets.append((label, "n/a", "bun not run", "n/a", "info"))
        elif not variants:
            why = ("BENCH_ECHO_WORKER_VARIANTS is empty" if self.meta.get("ECHO_WORKER_VARIANTS") == "" else
                   "none started" if self.meta.get("ECHO_VARIANTS") else "this suite's results have none")
            self.targets.append((label, f"not run ({why})", "–", "–", "info"))
        else:
            parts, ratios = [], []
            for v in variants:
                xs = [(ratio(by[(c[0], c[1], v)].rate, by[(c[0], c[1], "bun")].rate), c) for c in cells
                      if (c[0], c[1], v) in by and (c[0], c[1], "bun") in by]
                xs = [(x, c) for x, c in xs if x is not None]
                if not xs:
                    parts.append(f"{variant_label(v)}: n/a")
                    ratios.append("n/a")
                    continue
                x, c = min(xs)
                parts.append(f"{variant_label(v)}: {big(by[(c[0], c[1], v)].rate)} msgs/s "
                             f"({cell_name(c)}" + (f": the worst of {len(xs)} cells)" if len(xs) > 1 else ")"))
                ratios.append(f"{variant_label(v)}: {fx(x)}")
            self.targets.append((label, "; ".join(parts), "bun, same cell" if "bun" in self.peers else "bun not run",
                                 "; ".join(ratios), "info"))

    def perf_events_text(self):
        events = self.meta.get("PERF_EVENTS") or ",".join(
            sorted({e for r in self.runs if r.counted for e in r.perf["events"]}))
        return ", ".join(f"`{e}`" for e in events.split(",") if e)

    def perf_seconds_text(self):
        secs = sorted({round(r.perf["seconds"], 2) for r in self.runs if r.counted and not r.perf.get("cut")})
        return "/".join(f"{x:g}" for x in secs) or "?"

    def echo_workers(self, cells, by, variants, counted):
        """Per cell: sockherd's msgs/s at each worker count over Bun's, and context switches per
        message of each next to Bun's."""
        if not variants:
            return
        systems = [self.main] + variants
        label = {self.main: workers_text(self.workers), **{v: variant_label(v) for v in variants}}
        self.add(f"### sockherd by worker count, against Bun", "")
        if "bun" not in self.peers:
            self.add("Bun was not run, so there is no ratio to show; the rows are in the table above.", "")
            return
        head = "| connections | size | " + " | ".join(f"msgs/s {label[s]} / Bun" for s in systems)
        align = "|---:|---:|" + "---:|" * len(systems)
        if counted:
            head += " | " + " | ".join(f"context switches/msg {label[s]}" for s in systems) + " | context switches/msg Bun"
            align += "---:|" * (len(systems) + 1)
        self.add("msgs/s over Bun's in the same cell (above 1: sockherd echoes more), and the context switches per "
                 "message of each:" if counted else "msgs/s over Bun's in the same cell (above 1: sockherd echoes "
                 "more; no perf counters in this run):", "")
        self.add(head + " |", align)
        for conns, size in cells:
            b = by.get((conns, size, "bun"))
            row = [big(conns), f"{size} B"]
            for s in systems:
                a = by.get((conns, size, s))
                row.append(fx(ratio(a.rate if a else None, b.rate if b else None)))
            if counted:
                for s in systems + ["bun"]:
                    a = by.get((conns, size, s))
                    row.append(per_text(a.per_msg(SWITCHES) if a else None, 3))
            self.add("| " + " | ".join(row) + " |")
        self.add("")

    def echo_in_the_way(self, cells, by, variants, counted, worst):
        """The paragraph the issue asks for where an echo target is missed: what perf's counters
        show for the worst cell against Bun. Numbers only from this run; no cause claimed that
        they do not show."""
        self.add("### What is in the way (perf software counters, this run)", "")
        if not counted:
            why = self.meta.get("PERF_WHY")
            if "PERF_EVENTS" not in self.meta:
                why = "this suite's results have no perf counters (an older suite.sh)"
            elif not why:
                errors = sorted({r.perf["error"] for r in self.of("echo") if r.perf and r.perf.get("error")})
                why = "; ".join(errors) or "no echo run has them"
            self.add(f"perf's counters were not collected in this run: {why}. Without them this section has nothing "
                     "to say beyond the ratios above.", "")
            return
        w = worst.get(("rate", "bun"))
        if w is None:
            self.add("Bun was not run (or gave no result), so there is no cell to compare against; the counters are "
                     "in the table above.", "")
            return
        x, c = w
        a, b = by[(c[0], c[1], self.main)], by[(c[0], c[1], "bun")]

        def figures(r):
            if not r.counted:
                return None
            calls = r.per_msg(SYSCALLS)
            return (f"{per_text(r.cpu_us_per_msg(), 2)} µs of server CPU"
                    + (f", {per_text(r.per_msg(SWITCHES), 3)} context switches and {per_text(calls, 2)} syscalls"
                       if calls is not None else f" and {per_text(r.per_msg(SWITCHES), 3)} context switches")
                    + " per message")

        n = sum(1 for k in cells if (k[0], k[1], self.main) in by and (k[0], k[1], "bun") in by)
        text = [f"The lowest msgs/s ratio against Bun" + (f" of the {n} cells" if n > 1 else "") + " is "
                f"{cell_name(c)}: sockherd ({workers_text(self.workers)}) {big(a.rate)} msgs/s against Bun's "
                f"{big(b.rate)}, {fx(x)}" + (" (the target, ≥ 1.0×, is met)." if x >= 1 else
                                             f", {100 * (1 - x):.0f} % short of the target.")]
        if figures(a) and figures(b):
            text.append(f"Over the counted span sockherd's processes used {figures(a)}; Bun (one process) used "
                        f"{figures(b)}.")
        else:
            text.append("The counters are missing for " + " and ".join(name_of(r.system) for r in (a, b)
                                                                         if not r.counted) + " in this cell.")
        ca, cb = a.cpu_us_per_msg(), b.cpu_us_per_msg()
        sa, sb = a.per_msg(SWITCHES), b.per_msg(SWITCHES)
        if ca is not None and cb is not None and cb > 0:
            if ca <= cb:
                text.append(f"sockherd spent {fx(ca / cb)} Bun's server CPU per message, so here the shortfall is not "
                            "more CPU work per message" if x < 1 else
                            f"sockherd spent {fx(ca / cb)} Bun's server CPU per message.")
                if x < 1:
                    text[-1] += (f"; it made {fx(sa / sb, 1)} Bun's context switches per message." if sa is not None
                                 and sb else ".")
            else:
                text.append(f"sockherd spent {fx(ca / cb)} Bun's server CPU per message"
                            + (f" and made {fx(sa / sb, 1)} its context switches per message." if sa is not None and sb
                               else "."))
        for v in variants:
            r = by.get((c[0], c[1], v))
            if r is None or not r.res:
                text.append(f"With {variant_label(v)} there is no result in this cell.")
                continue
            text.append(f"With {variant_label(v)}, in the same cell: {big(r.rate)} msgs/s, "
                        f"{fx(ratio(r.rate, b.rate))} Bun's, " + (f"and {figures(r)}." if figures(r) else
                                                                   "no perf counters."))
        # How the counters move with the worker count in this cell, as numbers; "rose"/"fell" only
        # when every step agrees.
        chain = sorted([(self.workers, a)] + [(variant_workers(v), by[(c[0], c[1], v)]) for v in variants
                                              if (c[0], c[1], v) in by and by[(c[0], c[1], v)].res
                                              and not v.endswith("n")],
                       key=lambda t: -t[0])
        sw = [r.per_msg(SWITCHES) for _, r in chain]
        if len(chain) > 1 and None not in sw:
            steps = list(zip(sw, sw[1:]))
            way = ("rose" if all(q > p for p, q in steps) else "fell" if all(q < p for p, q in steps) else "moved")
            text.append(f"From {' to '.join(str(k) for k, _ in chain)} workers in this cell the context switches per "
                        f"message {way} ({' → '.join(per_text(x, 3) for x in sw)}, Bun "
                        f"{per_text(b.per_msg(SWITCHES), 3)}) and msgs/s went "
                        f"{' → '.join(big(r.rate) for _, r in chain)} (Bun {big(b.rate)}).")
        text.append(f"All on one {self.meta.get('NPROC', '?')}-core machine shared by the server, the load generator "
                    "and other jobs (see *rest of the machine*). Messages in the counted span are estimated from the "
                    "whole window's msgs/s"
                    + ("; counting syscalls adds a small cost to each, so a server making more syscalls per message "
                       "pays more of it." if a.per_msg(SYSCALLS) is not None else "."))
        self.add(" ".join(text), "")
        self.add("Not in the suite: where the CPU goes inside a process (`valgrind --tool=callgrind` or `perf record` "
                 "on one worker under the same load generator command).", "")

    # ---- 3. fan-out ---------------------------------------------------------------------------
    def fanout(self):
        runs = self.of("fanout")
        paced = self.of("fanout_rate")
        if not runs and not paced:
            return
        self.add("## 3. Fan-out", "")
        self.add("The same scenario under two loads. In the closed loop the publisher sends its next message as soon "
                 "as the previous one is back, so each system runs at its own maximum rate and a faster one publishes "
                 "more messages in the same window: its p99 there is taken at a higher load than a slower peer's, so "
                 "it mixes throughput and latency, and a p99 ratio between systems means something only next to "
                 "their deliveries/s ratio. At a fixed rate every system is offered the same load, below each one's "
                 "closed-loop rate, so the p99s there compare as latency alone. The issue's fan-out targets are "
                 "evaluated on the closed loop (the issue's own reference figures were closed-loop); the p99 at the "
                 "same offered load is in the Targets table for information.", "")
        self.add("### Closed loop", "")
        subs_list = []
        for r in runs:
            if r.cell["subscribers"] not in subs_list:
                subs_list.append(r.cell["subscribers"])
        by = {(r.cell["subscribers"], r.system): r for r in runs}
        if not runs:
            self.add("Not run (no closed-loop fan-out results).", "")
        else:
            self.add(f"One channel (`/ws/bench-<N>`), N subscribers spread over the processes (and so over every "
                     f"worker), one publisher on the same channel sending 32 B messages (sequence number and send "
                     f"time) in a closed loop: at most `--inflight {self.meta['FANOUT_INFLIGHT']}` message not yet back "
                     f"at the publisher, {self.meta['DURATION']} s of publishing, subscribers read 2 s longer. "
                     "deliveries/s = deliveries / (first send to last delivery); latency = publish to receive; "
                     "lost = sent × subscribers − delivered.", "")
            self.add("| subscribers | system | sent | deliveries/s | p50 | p99 | max | lost | dup / out of order | "
                     "server CPU | load generator CPU | errors |",
                     "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
            for n in subs_list:
                for s in self.systems:
                    r = by.get((n, s))
                    if r is None:
                        continue
                    if not r.res:
                        self.add(f"| {big(n)} | {name_of(s)} | no result | | | | | | | | | |")
                        continue
                    self.add(f"| {self.subs_text(n, r)} | {name_of(s)} | {self.fanout_columns(r)} |")
            self.add("")
            self.add("sockherd against each peer (deliveries/s: above 1 is better; p99: below 1 is better):", "")
            self.add("| subscribers | " + " | ".join(f"deliveries/s vs {p}" for p in self.peers) + " | "
                     + " | ".join(f"p99 vs {p}" for p in self.peers) + " |",
                     "|---:|" + "---:|" * (2 * len(self.peers)))
        worst = {}
        for n in subs_list:
            a = by.get((n, self.main))
            row = [big(n)]
            for kind in ("rate", "p99"):
                for p in self.peers:
                    b = by.get((n, p))
                    x = ratio(getattr(a, kind) if a else None, getattr(b, kind) if b else None)
                    row.append(fx(x))
                    if x is not None:
                        keep_worst(worst, (kind, p), x, n, kind == "rate")
            self.add("| " + " | ".join(row) + " |")
        if runs:
            self.add("")

        def t(label, kind, peer, limit, higher):
            w = worst.get((kind, peer))
            if w is None:
                self.target(label, "n/a", f"{peer} not run", "n/a", None)
                return
            x, n = w
            mine, theirs = by[(n, self.main)], by[(n, peer)]
            show = (lambda r: f"{big(r.rate)} deliveries/s") if kind == "rate" else (lambda r: f"p99 {ms(r.p99)}")
            self.target(label, f"{show(mine)} ({big(n)} subscribers" + (f": the worst of {len(subs_list)})" if len(subs_list) > 1 else ")"),
                        f"{peer}: {show(theirs)}", fx(x), x >= limit if higher else x <= limit)

        t("fan-out deliveries/s ≥ 1.0× Bun", "rate", "bun", 1.0, True)
        t("fan-out deliveries/s ≥ 2× the seed topology", "rate", "seed", 2.0, True)
        t("fan-out p99 ≤ Bun's", "p99", "bun", 1.0, False)
        self.fanout_paced(paced, by)
        mine = [by[(n, self.main)] for n in subs_list if (n, self.main) in by]
        lost = [r.res["lost"] for r in mine if r.res]
        ok = None if not lost or len(lost) < len(mine) else all(l == 0 for l in lost)
        self.target("fan-out: 0 lost", ", ".join(f"{big(r.res['lost'])} at {big(r.cell['subscribers'])}" for r in mine if r.res)
                    or "n/a", "0", "–", ok)

    @staticmethod
    def subs_text(n, r):
        """The subscribers cell: N, and how many were connected when not all of them were."""
        return big(n) + ("" if r.res["subscribers"] == n else f" ({big(r.res['subscribers'])} connected)")

    @staticmethod
    def fanout_columns(r, mark=""):
        """A fan-out run's columns from `sent` to `errors` (both tables); `mark` goes after `sent`."""
        x = r.res
        return (f"{big(x['sent'])}{mark} | {big(x['rate'])} | {ms(x['p50_us'])} | {ms(x['p99_us'])} | {ms(x['max_us'])} | "
                f"{big(x['lost'])} | {x['dup']} / {x['out_of_order']} | {pct(r.server_cpu)} | {pct(r.lg_cpu)} | "
                f"{errors_text(x)}")

    def fanout_paced(self, runs, closed):
        """The fixed-rate (open loop) runs: the same offered load for every system; `closed` is the
        closed-loop runs by (subscribers, system), to show that the offered load is below each one's."""
        self.add("### At the same offered load", "")
        setting = self.meta.get("FANOUT_RATE_DELIVERIES")
        offered = runs[0].cell["deliveries"] if runs else float(setting) if setting else None
        label = ("fan-out p99 at the same offered load"
                 + (f" ({num(offered)} deliveries/s)" if offered else "")
                 + ", sockherd vs Bun")
        if not runs:
            why = ("this suite's results have no fixed-rate runs" if setting is None else
                   "BENCH_FANOUT_RATE_DELIVERIES=0" if float(setting) == 0 else "no results")
            self.add(f"Not run ({why}).", "")
            self.targets.append((label, "not run", "–", "–", "info"))
            return
        self.add(f"The same scenario, run after the closed-loop runs of each subscriber count, with the publisher paced "
                 f"at `--rate R` messages/s (open loop: it sends on schedule whether or not its earlier messages are "
                 f"back), R = {num(offered)} deliveries/s ÷ N subscribers, the same R for every system; "
                 f"{self.meta['DURATION']} s of publishing, subscribers read 2 s longer. deliveries/s achieved = "
                 "deliveries / (first send to last delivery, at least the window): the offered rate when every "
                 "message reaches every subscriber within the window, less when the last ones arrive after it or "
                 "are lost. A publisher that fell behind its schedule "
                 "(sent below 95 % of R × the window: the server did not read it in time) is marked ⚠, its p99 is "
                 "then not at the offered load. Server CPU is comparable here too: every system did the same work.", "")
        self.add("| subscribers | system | offered msgs/s | offered deliveries/s | sent | deliveries/s | p50 | p99 | max | "
                 "lost | dup / out of order | server CPU | load generator CPU | errors |",
                 "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
        subs_list = []
        for r in runs:
            if r.cell["subscribers"] not in subs_list:
                subs_list.append(r.cell["subscribers"])
        by = {(r.cell["subscribers"], r.system): r for r in runs}
        behind = []
        for n in subs_list:
            for s in self.systems:
                r = by.get((n, s))
                if r is None:
                    continue
                load = f"{num(r.cell['rate'])} | {num(r.cell['rate'] * n)}"
                if not r.res:
                    self.add(f"| {big(n)} | {name_of(s)} | {load} | no result | | | | | | | | | |")
                    continue
                due = r.cell["rate"] * r.res["duration_s"]
                mark = ""
                if r.res["sent"] < 0.95 * due:
                    mark = " ⚠"
                    behind.append(f"{name_of(s)} at {big(n)} ({big(r.res['sent'])} of {big(due)})")
                self.add(f"| {self.subs_text(n, r)} | {name_of(s)} | {load} | {self.fanout_columns(r, mark)} |")
        self.add("")
        notes = []
        if behind:
            notes.append("⚠ Publisher behind its schedule: " + "; ".join(behind) + ".")
        # The premise of the comparison: the offered load is below every system's closed-loop rate
        # in this same run (the highest share of it says how close anyone came).
        shares = [(r.cell["rate"] * n / closed[(n, s)].rate, s, n) for (n, s), r in by.items()
                  if (n, s) in closed and closed[(n, s)].rate]
        if shares:
            top = max(shares)
            notes.append(f"The offered load was at most {100 * top[0]:.0f} % of a system's closed-loop deliveries/s at "
                         f"the same subscriber count ({name_of(top[1])} at {big(top[2])})"
                         + (": at or over its maximum, so its p99 here is not latency at a load it sustains."
                            if top[0] >= 1 else "."))
        mine = [by[(n, self.main)] for n in subs_list if (n, self.main) in by and by[(n, self.main)].res]
        lost_text = ", ".join(f"{big(r.res['lost'])} at {big(r.cell['subscribers'])}" for r in mine)
        if mine:
            bad = any(r.res["lost"] for r in mine)
            notes.append(("**sockherd lost messages at the fixed rate**: " if bad else
                          "sockherd lost nothing at the fixed rate: ") + lost_text + ".")
        for note in notes:
            self.add(note, "")
        self.add("sockherd's p99 against each peer's at the same offered load (below 1 is better):", "")
        self.add("| subscribers | " + " | ".join(f"p99 vs {p}" for p in self.peers) + " |",
                 "|---:|" + "---:|" * len(self.peers))
        worst = {}
        for n in subs_list:
            a = by.get((n, self.main))
            row = [big(n)]
            for p in self.peers:
                b = by.get((n, p))
                x = ratio(a.p99 if a else None, b.p99 if b else None)
                row.append(fx(x))
                if x is not None:
                    keep_worst(worst, p, x, n, False)
            self.add("| " + " | ".join(row) + " |")
        self.add("")
        w = worst.get("bun")
        if w is None:
            self.targets.append((label, "n/a" + (f"; lost {lost_text}" if mine else ""),
                                 "bun not run" if "bun" not in self.peers else "bun: no result", "n/a", "info"))
            return
        x, n = w
        k = sum(1 for m in subs_list if (m, self.main) in by and (m, "bun") in by)
        self.targets.append((label, f"p99 {ms(by[(n, self.main)].p99)} ({big(n)} subscribers"
                             + (f": the worst of {k})" if k > 1 else ")") + f"; lost {lost_text}",
                             f"bun: p99 {ms(by[(n, 'bun')].p99)}", fx(x), "info"))

    # ---- 4. idle memory -----------------------------------------------------------------------
    def held_samples(self, r):
        """The RSS samples of idle run r taken while its sessions were held (inside its window)."""
        until = None
        start = r.res.get("window_start_unix") if r.res else None
        ready = os.path.join(self.tmp, "raw", f"{r.key}.ready")
        if not start and os.path.exists(ready):
            start = float(open(ready).read().split()[1])
        if start and r.res:
            until = start + r.res["duration_s"] - 0.2
        return read_samples(os.path.join(self.tmp, "raw", f"{r.key}.during"), until)

    def idle(self):
        runs = self.of("idle")
        if not runs:
            return
        self.add("## 4. Idle memory", "")
        self.add(f"Each system started afresh for each row and measured alone: the summed VmRSS of all its "
                 f"processes (sockherd: supervisor + workers; seed: nginx master and workers, 4 Node, Redis; cluster: "
                 f"primary + 4 workers; Bun: its one process) before (median of 3 samples after a 2 s settle) and "
                 f"while N idle WebSocket sessions on `/echo` are held (median of the samples taken once a second "
                 f"for {self.meta['IDLE_HOLD']} s from the moment every session is open; the sessions stay open 5 s "
                 f"longer, and a sample that still fell after them is dropped; pings answered); per session = (while − before) / sessions "
                 f"held. VmRSS is user-space memory (the kernel's socket buffers are not in it). Open files per "
                 f"process here: {self.meta['NOFILE']}, so 40,000 sessions need the load generator in 4 processes "
                 "and a server that spreads them over processes.", "")
        self.add("| sessions | system | held | opened / failed / not tried | RSS before | RSS while held | "
                 "per session | processes (open fds while held) |",
                 "|---:|---|---:|---:|---:|---:|---:|---|")
        self.idle_per = {}
        notes = []
        for r in runs:
            n, s = r.cell["connections"], r.system
            before = read_samples(os.path.join(self.tmp, "raw", f"{r.key}.before"))
            during = self.held_samples(r)
            if not r.res or not before:
                why = self.refused.get(s)
                self.add(f"| {big(n)} | {name_of(s)} | {'did not start: ' + why.splitlines()[-1] if why else 'no result'} | | | | | |")
                continue
            x = r.res
            b = statistics.median(v for v, _ in before)
            d = statistics.median(v for v, _ in during) if during else None
            held = x["held"]
            per = (d - b) / held if d is not None and held else None
            self.idle_per[(n, s)] = (per, held)
            last = during[-1][1] if during else {}
            fds = sorted((f for _, f in last.values()), reverse=True)
            proc_text = f"{len(last)}: " + ", ".join(big(f) for f in fds[:6]) + (", …" if len(fds) > 6 else "")
            self.add(f"| {big(n)} | {name_of(s)} | {big(held)}{'' if held == n else ' ⚠'} | {big(x['opened'])} / "
                     f"{big(x['failed'])} / {big(x['not_attempted'])} | {kib(b)} | {kib(d) if d is not None else 'n/a'} | "
                     f"{'n/a' if per is None else f'{per:.2f} KiB'} | {proc_text} |")
            if held < n:
                kinds = ", ".join(f"{k} {v}" for k, v in sorted(x["error_kinds"].items(), key=lambda kv: -kv[1])[:3])
                if s == "bun":
                    why = (f"Bun is one process and one process may open {self.meta['NOFILE'].split()[-2]} files "
                           "here (`ulimit -Hn`), so it cannot hold more sessions than that")
                elif s == "seed":
                    why = ("the seed's nginx has 2 worker processes with `worker_connections 20000` and "
                           "`worker_rlimit_nofile 20000`, and each proxied WebSocket takes two of them (client and "
                           "upstream), so the topology as configured holds about 20,000")
                else:
                    why = "see the error kinds"
                notes.append(f"- {name_of(s)} at {big(n)}: held {big(held)} ({kinds}); {why}. The load generator "
                             "stops trying after 128 failures in a row per process (\"not tried\"), so the run stays "
                             "short. Its per-session figure is over the sessions it did hold.")
        self.add("")
        if notes:
            self.add(*notes)
            self.add("")
        # sockherd's processes while held, per process
        for r in runs:
            if r.system != self.main or not r.res:
                continue
            during = self.held_samples(r)
            before = read_samples(os.path.join(self.tmp, "raw", f"{r.key}.before"))
            if not during or not before:
                continue
            b, d = before[-1][1], during[-1][1]
            parts = []
            for pid in sorted(d, key=int):
                rb = b.get(pid, (0, 0))[0]
                parts.append(f"pid {pid}: {big(d[pid][1])} fds, {kib(d[pid][0])} ({'+' if d[pid][0] >= rb else ''}"
                             f"{kib(d[pid][0] - rb)})")
            self.add(f"sockherd's processes at {big(r.cell['connections'])} sessions (last sample; the first is the "
                     "supervisor): " + "; ".join(parts) + ".", "")
        mine = sorted((n, v) for (n, s), v in self.idle_per.items() if s == self.main)
        if mine:
            worst = max(mine, key=lambda kv: kv[1][0] if kv[1][0] is not None else -1)
            per = worst[1][0]
            self.target("idle memory ≤ 4 KiB RSS per WebSocket session (all sockherd processes)",
                        "worst: " + ("n/a" if per is None else f"{per:.2f} KiB at {big(worst[0])}"), "4 KiB",
                        "n/a" if per is None else f"{per / 4:.2f}× the limit", None if per is None else per <= 4)
        sizes = [r.cell["connections"] for r in runs if r.system == self.main]
        big_n = max(sizes) if sizes else None
        held = self.idle_per.get((big_n, self.main), (None, None))[1] if big_n else None
        self.target(f"{big(40000)} concurrent sessions held", f"{big(held)} of {big(big_n)}" if held is not None else "n/a",
                    "40,000", "–", None if held is None or big_n < 40000 else held >= 40000)

    # ---- 5. reload and crash ------------------------------------------------------------------
    def reload(self):
        for action, title in (("reload", "## 5. Reload under load"), ("crash", "## 6. Crash under load")):
            d = os.path.join(self.tmp, action)
            if not os.path.exists(os.path.join(d, "results.jsonl")):
                if action in self.meta.get("SCENARIOS", "").split():
                    self.add(title, "", f"bench/reload.sh ({action}) gave no results; see the suite's log.", "")
                continue
            rows = [json.loads(l) for l in open(os.path.join(d, "results.jsonl")) if l.strip()]
            meta = dict(l.rstrip("\n").split("=", 1) for l in open(os.path.join(d, "meta")) if "=" in l)
            a = {r["target"]: reload_report.analyse(r, float(meta["EVERY"])) for r in rows}
            targets = [r["target"] for r in rows]
            self.add(title, "")
            if action == "reload":
                self.add(f"bench/reload.sh's scenario, run by the suite (`{meta['COMMAND']}` with RELOAD_TARGETS="
                         f"\"{' '.join(targets)}\" RELOAD_DURATION={meta['DURATION']}): {meta['PROBES']} loops opening "
                         f"fresh sessions (open, one echo, close) at {meta['CONNECT_RATE']}/s in all, and "
                         f"{meta['SESSIONS']} long-lived echo sessions that are not reopened when closed; a reload every "
                         f"{meta['EVERY']} s (sockherd `kill -HUP`, nginx `-s reload`, `pm2 reload`). The full report "
                         "with every reload is what `bash bench/reload.sh` writes to "
                         "[results/reload.md](results/reload.md).", "")
            else:
                self.add(f"The same load, with one `kill -9` of a worker process {meta['EVERY']} s into the "
                         f"{meta['DURATION']} s window (`{meta['COMMAND']}`): sockherd's lowest-pid worker (the "
                         "supervisor starts a new one), the seed's first Node backend (nothing restarts it; nginx "
                         "sends new connections to the other three), a Node cluster worker (its primary forks a new "
                         "one). Bun is not in it: it is one process, so a kill -9 is the whole server down with "
                         "nothing to restart it.", "")
            self.add("| | " + " | ".join(reload_report.NAMES.get(t, t) for t in targets) + " |",
                     "|---|" + "---:|" * len(targets))

            def line(label, f):
                self.add(f"| {label} | " + " | ".join("no result" if a[t] is None else f(a[t]) for t in targets) + " |")

            word = "reload" if action == "reload" else "crash"
            line("reloads sent" if action == "reload" else "kills sent", lambda x: f"{sum(1 for r in x['reloads'] if r['rc'] == 0)} of {len(x['reloads'])}")
            if action == "reload":
                line("server processes replaced", lambda x: f"{x['replaced']} of {x['procs_before']}")
            else:
                line("worker processes: gone / new / running at the end", lambda x: f"{x['replaced']} / "
                     f"{x['procs_after'] - (x['procs_before'] - x['replaced'])} / {x['procs_after']} of {x['procs_before']}")
            line("fresh sessions: ok / attempted", lambda x: f"{big(x['res']['connects_ok'])} / {big(x['res']['connect_attempts'])}")
            line("**failed connects**", lambda x: f"**{x['res']['connects_failed']}**")
            line("long-lived sessions", lambda x: f"{x['res']['sessions']}")
            line("sessions closed: clean / other / **abnormal**", lambda x: f"{x['res']['sessions_closed_clean']} / "
                 f"{x['res']['sessions_closed_other']} / **{x['res']['sessions_closed_abnormal']}**")
            line("echo msgs/s, normal", lambda x: f"{big(x['echo_normal'])}/s")
            line(f"echo, worst 100 ms after a {word}", lambda x: reload_report.share(x["echo_worst"]))
            line("echo round trip p99 (whole window)", lambda x: ms(x["res"]["p99_us"]))
            self.add("")
            base = a.get("sockherd")
            if action == "reload":
                if base:
                    r = base["res"]
                    closed = reload_report.closed_of(r)
                    self.target("reload under load: 0 failed connects, 0 abnormal closes, 0 sessions closed (issue 5)",
                                f"{r['connects_failed']} failed, {r['sessions_closed_abnormal']} abnormal, {closed} closed",
                                "0 / 0 / 0", "–",
                                r["connects_failed"] == 0 and r["sessions_closed_abnormal"] == 0 and closed == 0)
            elif base:
                r = base["res"]
                self.targets.append(("crash under load (no target in the issues: informational)",
                                     f"{r['connects_failed']} failed connect(s), {r['sessions_closed_abnormal']} of "
                                     f"{r['sessions']} sessions closed abnormally, the killed worker "
                                     + ("replaced" if base["procs_after"] >= base["procs_before"] else "not replaced"),
                                     "–", "–", "info"))

    # ---- the whole report ---------------------------------------------------------------------
    def write(self, path):
        m = self.meta
        body_start = len(self.o)
        self.connect()
        self.echo()
        self.fanout()
        self.idle()
        self.reload()
        body = self.o[body_start:]
        self.o = self.o[:body_start]
        self.add("# sockherd benchmark suite (issue 8)", "")
        if m.get("QUICK") == "1":
            self.add("> **Quick mode (BENCH_QUICK=1): a smoke test with small counts and short windows; not the "
                     "numbers to quote.**", "")
        self.add(f"Generated by `{m['COMMAND']}` on {m['WHEN']} ({int(m['ELAPSED']) // 60} min {int(m['ELAPSED']) % 60} s). "
                 "Every number and every ratio below comes from this one run: the systems ran side by side, started "
                 "together and taking turns run by run, with the same load generator commands, on one shared "
                 f"{m['NPROC']}-core machine where the load generator runs on the same cores as the server under "
                 "test. Numbers from different runs are not comparable.", "")
        self.add("## Targets (issue 8)", "")
        self.add("| target | sockherd | against | ratio | result |", "|---|---|---|---:|---|")
        for t in self.targets:
            self.add("| " + " | ".join(t) + " |")
        self.add("")
        misses = [t for t in self.targets if t[4] == "**MISS**"]
        notrun = [t for t in self.targets if t[4] == "NOT RUN"]
        self.add(f"{sum(1 for t in self.targets if t[4] == '**PASS**')} passed, {len(misses)} missed, "
                 f"{len(notrun)} not run. A ratio is sockherd's number over the reference's (for p99 and memory: "
                 "below 1 is better). Where a target is missed the ratio says by how much. "
                 + ("For echo, perf's software counters of every system in this run (server CPU, context switches "
                    "and syscalls per message) are in section 2, *What is in the way*; where the CPU goes inside a "
                    "process needs `valgrind --tool=callgrind` / `perf record` on the server under the same load "
                    "generator command (below)." if any(r.counted for r in self.of("echo")) else
                    "This run has no perf counters (section 2 says why); what is in the way needs "
                    "`perf stat -e task-clock,context-switches` / `valgrind --tool=callgrind` on the server under "
                    "the same load generator command (below)."), "")
        self.add("## Systems", "")
        self.add(f"- **sockherd** {m['SOCKHERD']}, {m['WORKERS']} workers, listener mode `{self.main.split('-', 1)[1]}` "
                 f"({MODE_NOTE.get(self.main.split('-', 1)[1], '')}) for echo, fan-out and idle; every mode in "
                 f"`BENCH_MODES` ({m['MODES']}) for the connect rate. Config (PORT a free loopback port):", "")
        conf = os.path.join(self.tmp, f"{self.main}.toml.txt")
        if os.path.exists(conf):
            self.add("```toml", open(conf).read().rstrip(), "```", "")
        if self.variants:
            self.add(f"- **sockherd at other worker counts** (echo only; `BENCH_ECHO_WORKER_VARIANTS`): the config "
                     "above with " + ", ".join(f"`workers = {variant_workers(v)}`"
                                                 + (' and `worker_scheduling = "normal"`, `supervisor_scheduling = "normal"` in `[server]`'
                                                    if v.endswith("n") else "")
                                                 for v in self.variants)
                     + ", each its own system, started before the echo runs and stopped after them, taking its "
                     "turns in the same rotation.")
        if any(r.system.endswith("-sn") for r in self.runs):
            self.add("- **sockherd, supervisor under SCHED_OTHER** (connect only; `BENCH_CONNECT_SUPERVISOR_NORMAL`): "
                     "the config above with `supervisor_scheduling = \"normal\"` in `[server]`, up for the connect "
                     "runs only, right after handoff in every round.")
        self.add("- **seed**: `bench/peers/seed/start.sh PORT RUNDIR` with `SEED_SEND_QUEUE_LIMIT=16777216`: nginx "
                 "(2 worker processes, round robin) → 4 Node.js `ws` processes, every message through redis-server "
                 "pub/sub (`bench/peers/seed/README.md`).",
                 "- **cluster**: `node bench/peers/cluster/app.js PORT 4` with `CLUSTER_SEND_QUEUE_LIMIT=16777216`: "
                 "Node's `cluster` module, the primary accepts and hands connections to 4 `ws` workers round robin; "
                 "broadcast through the primary's IPC channels (`bench/peers/cluster/README.md`).",
                 "- **bun**: `bench/peers/bun/node_modules/.bin/bun bench/peers/bun/server.js PORT` with "
                 "`BUN_PEER_SEND_QUEUE_LIMIT=16777216`: `Bun.serve` with its built-in pub/sub (`ws.subscribe`, "
                 "`server.publish`), one process (`bench/peers/bun/README.md`).",
                 "- Every system: no permessage-deflate, 1 MiB maximum message, 16 MiB per-connection send queue "
                 "(over it: the connection is closed), `/echo` and `/ws/<channel>` as in sockherd's default config.", "")
        for s, why in sorted(self.refused.items()):
            self.add(f"- {name_of(s)} did not start in this run: `{why.splitlines()[-1] if why else '?'}`")
        if self.refused:
            self.add("")
        self.o.extend(body)
        self.commands()
        self.machine()
        self.add("## Earlier results", "",
                 "Reports of the single-purpose scripts, each written by its own script (their own runs, not "
                 "comparable with the numbers above):", "",
                 "- [results/run.md](results/run.md): hand-off connections and echo by worker count (`sh bench/run.sh`)",
                 "- [results/fanout.md](results/fanout.md): fan-out against the seed topology, issue 3 (`bash bench/fanout.sh`)",
                 "- [results/reload.md](results/reload.md): reload under load against nginx and PM2, issue 5 (`bash bench/reload.sh`)",
                 "- [results/crash.md](results/crash.md): crash under load (`RELOAD_ACTION=crash bash bench/reload.sh`)",
                 "- [results/redis_fanout.md](results/redis_fanout.md): fan-out across nodes through Redis, issue 9 "
                 "(`bash bench/redis_fanout.sh`)", "")
        with open(path + ".tmp", "w") as f:
            f.write("\n".join(self.o).rstrip("\n") + "\n")
        os.replace(path + ".tmp", path)

    def commands(self):
        m = self.meta
        self.add("## Commands", "")
        self.add(f"The suite: `{m['COMMAND']}`. Binaries: `{m['SOCKHERD_BIN']}`, `{m['LOADGEN_BIN']}`. Each load "
                 "generator command below ran once per system (PORT = that system's port), the systems in turn:", "")
        seen = []
        path = os.path.join(self.tmp, "commands")
        for line in open(path) if os.path.exists(path) else []:
            phase, key, system, cmd = line.rstrip("\n").split(" ", 3)
            if (phase, cmd) not in seen:
                seen.append((phase, cmd))
        self.add("```sh")
        for phase, cmd in seen:
            self.add(cmd)
        for action in ("reload", "crash"):
            meta = os.path.join(self.tmp, action, "meta")
            if os.path.exists(meta):
                mm = dict(l.rstrip("\n").split("=", 1) for l in open(meta) if "=" in l)
                self.add(f"# {action}: {mm['COMMAND']} runs, per target:", mm["LOADGEN"].replace("build-bench/bench/", ""))
                for k, v in mm.items():
                    if k.startswith("RELOAD_") and k != "RELOAD_ACTION":
                        self.add(f"{v}   # {k[len('RELOAD_'):]}")
        self.add("```", "")
        self.add("idle: READY_FILE is written by the load generator when its window opens; the script samples "
                 "`VmRSS` in `/proc/<pid>/status` of every process of the system every second from then on.", "")
        if m.get("PERF_EVENTS"):
            self.add(f"echo: from {m.get('PERF_MARGIN', '?')} s after READY_FILE appears (the window opened), "
                     f"`perf stat -x, -e {m['PERF_EVENTS']} -p PIDS --timeout {m.get('PERF_MS', '?')}` with PIDS every "
                     "process of the system under test (sockherd: supervisor and workers; the seed: nginx, Node, "
                     f"redis-server), stopped at the window's end if still running ({m.get('PERF', 'perf')}).", "")

    def machine(self):
        m = self.meta
        self.add("## Machine and versions", "")
        self.add(f"- Machine: {m['NPROC']} CPUs ({m['CPU_MODEL']}), {m['MEMORY']} RAM, {m['KERNEL']}; open files "
                 f"per process {m['NOFILE']}. Shared with other jobs (builds, tests): load average "
                 f"{m['LOADAVG_START']} at the start, {m['LOADAVG_END']} at the end. The \"rest of the machine\" "
                 "columns say how much CPU they took during each run.",
                 f"- sockherd: `{m['SOCKHERD']}`, commit {m['SOCKHERD_COMMIT']} of `{m['SOCKHERD_SRC']}` "
                 f"(uncommitted changes in the tree are not detected), {m['SOCKHERD_BUILD']} build; compiler: {m['CXX']}.",
                 f"- Node.js {m['NODE']}, ws {m['WS']}; Bun {m['BUN']}; nginx {m['NGINX']}; redis-server {m['REDIS']}; "
                 f"PM2 {m['PM2']}.",
                 f"- Windows: {m['DURATION']} s (connect, echo, fan-out), idle hold {m['IDLE_HOLD']} s, reload/crash "
                 f"{m['RELOAD_DURATION']} s per target.", "")


def main():
    tmp, path = sys.argv[1], sys.argv[2]
    Report(tmp).write(path)


if __name__ == "__main__":
    main()
