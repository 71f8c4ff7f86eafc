#pragma once
// The worker process: receives connected sockets from the supervisor over its channel and
// serves them (HTTP/1.1, WebSocket) on one single-threaded io_context until told to drain.
// Sessions reach their worker through this class; it outlives every session.

#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <deque>
#include <functional>
#include <optional>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "common/config.hpp"
#include "common/ipc/channel.hpp"
#include "common/net.hpp"
#include "common/rejections.hpp"
#include "common/tls_stream.hpp"
#include "worker/connection.hpp"
#include "worker/hub.hpp"
#include "worker/poller.hpp"
#include "worker/router.hpp"
#include "worker/self_acceptor.hpp"

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
    rejection_counts rejections{};    // clients turned away or cut off, per reason
    std::uint64_t bad_ops = 0;        // JSON pub/sub ops answered with an error
    std::uint64_t publishes = 0;      // messages published on this worker (WebSocket or HTTP)
    std::uint64_t relays_in = 0;      // messages relayed here from other workers
    std::uint64_t deliveries = 0;     // messages handed to local subscribers
    std::uint64_t slow_consumer_disconnects = 0;
    std::uint64_t send_queue_drops = 0; // messages dropped from the queues of cut-off consumers
    std::uint64_t publish_drops = 0;    // publishes not sent on: the channel to the supervisor was full
};

class worker;

// One connection counted against [limits] max_connections_per_ip for its client address; the
// count goes down when the claim is destroyed. An empty claim (exempt address, no limit) counts
// nothing. Movable, so an upgraded connection's WebSocket session takes it over.
class ip_claim {
public:
    ip_claim() = default;
    ip_claim(ip_claim&& other) noexcept { *this = std::move(other); }
    ip_claim& operator=(ip_claim&& other) noexcept;
    ~ip_claim() { release(); }
    void release();

private:
    friend class worker;
    worker* owner_ = nullptr;
    net::ip::address address_;
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
    // Draining because the whole node stops, not because this worker alone retires.
    bool node_stopping() const { return node_stopping_; }
    // When draining: the time by which every WebSocket is closed.
    connection::clock::time_point drain_deadline() const { return drain_deadline_; }
    worker_stats& stats() { return stats_; }
    // Counts one client turned away or cut off for `why`.
    void reject(rejection why) { ++stats_.rejections[static_cast<std::size_t>(why)]; }

    // Session bookkeeping; `websocket` sessions are counted separately.
    void add(connection& c, bool websocket);
    void remove(connection& c, bool websocket);
    std::size_t connection_count() const { return connections_.size(); }
    // [limits] max_connections_per_worker, resolved (0 in the config: the open-file limit less a
    // reserve for the channel, logs and static files).
    std::size_t connection_limit() const;
    // A claim on one connection from `client` (IPv4-mapped addresses count as IPv4); nullopt when
    // that address already holds max_connections_per_ip here. Trusted proxies are exempt.
    std::optional<ip_claim> claim_ip(const net::ip::address& client);
    std::size_t websocket_count() const { return websockets_; }
    // Watches the sockets of plain WebSocket sessions (worker/poller.hpp).
    poller& readiness() { return poller_; }

    // Pub/sub. subscribe/unsubscribe must not be called from inside subscriber::deliver().
    void subscribe(const std::string& channel, subscriber& s);
    void unsubscribe(const std::string& channel, subscriber& s);
    // delivery::local_first: deliver `m` to local subscribers now (the publisher's own session
    // included) and send it once to the supervisor for the other workers: the fastest path, and
    // one WebSocket publisher's messages stay in order everywhere.
    // delivery::through_supervisor: every worker, this one included, gets it from the supervisor,
    // so publishes from one source that land on different workers (HTTP) keep their order.
    // `on_relayed`, if given, gets the number of workers that received it, or nullopt if it could
    // not be passed on (channel full, or no answer in time).
    enum class delivery { local_first, through_supervisor };
    using relayed_handler = std::function<void(std::optional<std::uint32_t> workers)>;
    void publish(shared_message m, delivery how = delivery::local_first, relayed_handler on_relayed = nullptr);
    // Runs `f` once every subscription made so far is live node-wide (interest acknowledged by
    // the supervisor); at once if nothing is in flight.
    void after_interest_confirmed(std::function<void()> f);

private:
    void on_message(ipc::message&& m);
    void on_channel_error(error_code ec, std::string_view what);
    void apply_config(ipc::config_msg&& m);
    void apply_scheduling();
    void close_sessions_of_removed_routes(const config& previous);
    void accept_handoff(ipc::handoff_msg&& m);
    // listener modes shared and reuseport: the sockets this worker accepts on itself.
    void apply_listen(ipc::listen_msg&& m);
    void on_self_accepted(std::vector<self_acceptor::accepted>&& batch, std::uint64_t errors);
    void update_accept_room();
    // Starts serving one accepted connection from listener `listener_id`.
    void serve(std::uint16_t listener_id, unique_fd fd, const tcp::endpoint& peer);
    void begin_drain(std::chrono::milliseconds timeout, bool node_stopping);
    void maybe_finish_drain();
    void report_load();
    void send_heartbeat();
    void schedule_heartbeat();
    void install_test_hooks();
    void wait_test_signal();
    void exit_now(int code);
    void schedule_interest_flush();
    void flush_interest();
    void on_interest_ack(std::uint64_t seq);
    void on_publish_ack(std::uint32_t request_id, std::uint32_t workers);

    net::io_context& ioc_;
    unsigned slot_;
    pid_t pid_;
    std::shared_ptr<ipc::channel> channel_;
    std::shared_ptr<const config> config_;
    std::shared_ptr<const router> router_;
    std::vector<std::shared_ptr<net::ssl::context>> tls_contexts_; // by listener; null: plain
    std::uint64_t generation_ = 0;
    net::signal_set signals_;
    net::steady_timer drain_timer_;
    net::steady_timer heartbeat_timer_;
    std::chrono::steady_clock::time_point started_at_;
    std::unique_ptr<net::signal_set> test_signals_;   // SIGUSR2 under SOCKHERD_TEST_HOOKS=1
    std::vector<std::unique_ptr<char[]>> test_ballast_; // memory the test hook holds on purpose

    hub hub_;
    poller poller_;
    std::uint64_t interest_seq_sent_ = 0;
    std::uint64_t interest_seq_acked_ = 0;
    bool interest_flush_posted_ = false;
    std::deque<std::pair<std::uint64_t, std::function<void()>>> interest_waiters_; // by seq
    struct pending_publish {
        relayed_handler handler;
        bool local;
        std::unique_ptr<net::steady_timer> timeout;
    };
    std::uint32_t next_request_id_ = 0;
    std::unordered_map<std::uint32_t, pending_publish> pending_publishes_;

    friend class ip_claim;
    void release_ip(const net::ip::address& a);
    struct address_hash {
        std::size_t operator()(const net::ip::address& a) const;
    };
    std::unordered_map<net::ip::address, std::uint32_t, address_hash> per_ip_;
    std::size_t fd_connection_limit_ = 0;

    std::unordered_set<connection*> connections_;
    std::size_t websockets_ = 0;
    std::uint64_t handoffs_received_ = 0;
    std::unique_ptr<self_acceptor> acceptor_;
    std::uint64_t accept_errors_ = 0;
    bool load_report_posted_ = false;
    static constexpr std::chrono::milliseconds load_report_interval{5};
    net::steady_timer load_timer_;
    std::chrono::steady_clock::time_point last_load_report_{};
    bool draining_ = false;
    bool node_stopping_ = false;
    bool scheduling_told_ = false; // logged that worker_scheduling cannot apply (once per worker)
    connection::clock::time_point drain_deadline_{};
    bool drained_sent_ = false;
    int exit_code_ = 0;
    worker_stats stats_;
};

} // namespace sockherd::worker
