#pragma once
// The worker process: receives connected sockets from the supervisor over its channel and
// serves them (HTTP/1.1, WebSocket) on one single-threaded io_context until told to drain.
// Sessions reach their worker through this class; it outlives every session.

#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <unordered_set>

#include "common/config.hpp"
#include "common/ipc/channel.hpp"
#include "common/net.hpp"
#include "worker/connection.hpp"
#include "worker/router.hpp"

namespace sockherd::worker {

// Counters a worker keeps for its own health report.
struct worker_stats {
    std::uint64_t connections_total = 0;
    std::uint64_t http_requests = 0;
    std::uint64_t ws_sessions_total = 0;
    std::uint64_t ws_messages_in = 0;
    std::uint64_t ws_messages_out = 0;
    std::uint64_t bytes_in = 0;
    std::uint64_t bytes_out = 0;
    std::uint64_t limit_hits = 0;     // header/body/message size limits and timeouts
    std::uint64_t bad_requests = 0;   // requests rejected as malformed
};

// Runs the worker process to completion; returns its exit code.
int run_worker(int channel_fd, unsigned slot);

class worker {
public:
    worker(net::io_context& ioc, unique_fd channel_fd, unsigned slot);
    int run();

    unsigned slot() const { return slot_; }
    pid_t pid() const { return pid_; }
    const config& cfg() const { return *config_; }
    std::shared_ptr<const router> routes() const { return router_; }
    bool draining() const { return draining_; }
    worker_stats& stats() { return stats_; }

    // Session bookkeeping; `websocket` sessions are counted separately.
    void add(connection& c, bool websocket);
    void remove(connection& c, bool websocket);
    std::size_t connection_count() const { return connections_.size(); }
    std::size_t websocket_count() const { return websockets_; }

private:
    void on_message(ipc::message&& m);
    void on_channel_error(error_code ec, std::string_view what);
    void apply_config(ipc::config_msg&& m);
    void accept_handoff(ipc::handoff_msg&& m);
    void begin_drain(std::chrono::milliseconds timeout);
    void maybe_finish_drain();
    void report_load();
    void exit_now(int code);

    net::io_context& ioc_;
    unsigned slot_;
    pid_t pid_;
    std::shared_ptr<ipc::channel> channel_;
    std::shared_ptr<const config> config_;
    std::shared_ptr<const router> router_;
    std::uint64_t generation_ = 0;
    net::signal_set signals_;
    net::steady_timer drain_timer_;

    std::unordered_set<connection*> connections_;
    std::size_t websockets_ = 0;
    std::uint64_t handoffs_received_ = 0;
    bool load_report_posted_ = false;
    bool draining_ = false;
    bool drained_sent_ = false;
    int exit_code_ = 0;
    worker_stats stats_;
};

} // namespace sockherd::worker
