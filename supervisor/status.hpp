#pragma once
// One consistent picture of the node, built by the supervisor from its slots and the workers'
// heartbeats, and the renderers that turn it into what operators read: the HTML status page,
// status.json, Prometheus text, and the table `sockherd status` prints. The renderers are pure
// functions of the snapshot, so they are tested without a running node.

#include <sys/types.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "common/rejections.hpp"
#include "supervisor/redis_bridge.hpp"

namespace sockherd::supervisor {

// What a worker reported in its last heartbeat (all zero before the first one).
struct worker_counters {
    std::uint64_t connections = 0;               // open now (HTTP + WebSocket)
    std::uint64_t connections_total = 0;         // accepted since the worker started
    std::uint64_t ws_sessions = 0;               // open WebSocket sessions now
    std::uint64_t ws_sessions_total = 0;
    std::uint64_t http_requests_total = 0;
    std::uint64_t messages_in_total = 0;         // WebSocket messages received
    std::uint64_t messages_out_total = 0;        // WebSocket messages sent
    std::uint64_t bytes_in_total = 0;
    std::uint64_t bytes_out_total = 0;
    std::uint64_t send_queue_drops_total = 0;    // messages dropped from cut-off consumers' queues
    std::uint64_t slow_consumer_disconnects_total = 0;
    std::uint64_t publishes_total = 0;           // published on this worker (WebSocket or HTTP)
    std::uint64_t publish_drops_total = 0;       // publishes the worker could not pass on
    std::uint64_t deliveries_total = 0;          // messages handed to local subscribers
    std::uint64_t limit_hits_total = 0;          // size limits and timeouts hit by clients
    std::uint64_t bad_requests_total = 0;        // malformed requests / handshakes rejected
    rejection_counts rejections_total{};         // the two above (and more) per reason
    std::uint64_t rss_bytes = 0;
    std::uint64_t uptime_ms = 0;                 // the worker's own clock
};

// One row of the worker table: a slot and the process in it, or a draining process that left
// its slot (replaced, or its slot was removed by scaling down).
struct worker_row {
    unsigned id = 0;                 // slot
    std::optional<pid_t> pid;        // none while the slot waits to restart
    std::string state;               // "up" | "starting" | "draining" | "failing" | "stopped"
    std::uint64_t generation = 0;
    double uptime_seconds = 0;       // since this process was started; 0 without a process
    std::optional<double> heartbeat_age_seconds; // none before the first heartbeat
    worker_counters counters;
    unsigned restarts = 0;           // processes the slot started after its first
    std::string last_exit;           // "" | "exited with status 1" | "killed by watchdog: ..." ...
    std::uint64_t relay_drops_total = 0; // relays the supervisor dropped for this worker (channel full)
};

struct listener_row {
    std::string address;             // as configured
    std::string mode;                // "handoff" | "shared" | "reuseport"
    bool accepting = false;
    std::uint64_t accepted_total = 0;
};

struct reload_result {
    std::string result = "none";     // "none" | "ok" | "failed" | "unavailable"
    std::string message;             // why it failed, or what changed
    std::optional<std::int64_t> at_unix; // seconds since the epoch
};

struct node_snapshot {
    std::string version;
    pid_t pid = 0;
    std::string state = "running";   // "running" | "draining" | "stopping"
    std::int64_t started_at_unix = 0;
    double uptime_seconds = 0;
    std::uint64_t generation = 1;
    std::string config_source;       // file path or "<embedded default>"
    reload_result last_reload;
    unsigned workers_configured = 0; // slots wanted
    unsigned workers_up = 0;         // rows in state "up"
    std::vector<worker_row> workers; // by slot, then draining leftovers
    std::vector<listener_row> listeners;
    std::uint64_t handoffs_total = 0;        // connections handed to workers
    std::uint64_t relays_total = 0;          // pub/sub messages relayed to workers
    std::uint64_t worker_restarts_total = 0;
    std::uint64_t watchdog_kills_total = 0;
    std::uint64_t memory_replacements_total = 0;
    std::uint64_t pubsub_channels = 0;       // channels some worker has subscribers for
    std::optional<redis_bridge::stats_snapshot> redis; // nullopt: [redis] off

    // Healthy for a load balancer: running and at least one worker up.
    bool healthy() const { return state == "running" && workers_up > 0; }
};

// The JSON document served at /status.json (field names documented in the README).
std::string render_status_json(const node_snapshot&);
// A self-contained HTML page (inline CSS, no scripts or external assets, meta refresh).
std::string render_status_html(const node_snapshot&);
// Prometheus text exposition format 0.0.4.
std::string render_metrics(const node_snapshot&);
// The plain-text summary + worker table `sockherd status` prints.
std::string render_status_text(const node_snapshot&);

} // namespace sockherd::supervisor
