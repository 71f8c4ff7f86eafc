#include "worker/worker.hpp"

#include <netinet/tcp.h>
#include <sched.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cstdlib>
#include <vector>

#include <spdlog/spdlog.h>

#include "common/fd_limit.hpp"
#include "common/logging.hpp"
#include "common/scheduling.hpp"
#include "common/tls.hpp"
#include "worker/http_session.hpp"
#include "worker/websocket_session.hpp"

namespace sockherd::worker {
namespace {

// After the drain deadline, how long closing handshakes may take before the worker just exits:
// a tenth of the drain window, within [100 ms, 1 s], so a drained worker is gone close to the
// deadline the operator chose even when clients never answer the close.
std::chrono::milliseconds close_grace(std::chrono::milliseconds drain_timeout) {
    return std::clamp(drain_timeout / 10, std::chrono::milliseconds(100), std::chrono::milliseconds(1000));
}

std::string process_name(unsigned slot) { return "worker " + std::to_string(slot); }

// Test-only hook: SOCKHERD_TEST_CRASH_AT_START=<slot> makes that slot's worker abort right after
// start, so the integration tests can watch a crash loop back off.
void maybe_crash_for_test(unsigned slot) {
    if (const char* v = std::getenv("SOCKHERD_TEST_CRASH_AT_START"); v && std::to_string(slot) == v) {
        spdlog::warn("SOCKHERD_TEST_CRASH_AT_START={}: aborting on purpose", v);
        std::abort();
    }
}

// Resident set size from /proc/self/statm (pages); 0 if it cannot be read.
std::uint64_t resident_bytes() {
    std::FILE* f = std::fopen("/proc/self/statm", "re");
    if (f == nullptr)
        return 0;
    unsigned long long size = 0, resident = 0;
    const int n = std::fscanf(f, "%llu %llu", &size, &resident);
    std::fclose(f);
    return n == 2 ? resident * static_cast<std::uint64_t>(::sysconf(_SC_PAGESIZE)) : 0;
}

} // namespace

int run_worker(int channel_fd, unsigned slot) {
    // Exec'd through /proc/self/fd/N, the kernel named us "N": `ps -C sockherd`, top and pgrep
    // should find workers under the binary's name, like the supervisor.
    ::prctl(PR_SET_NAME, "sockherd");
    init_logging(process_name(slot));
    // Ctrl-C in a terminal reaches the whole process group: the supervisor decides, not us.
    ::signal(SIGINT, SIG_IGN);
    ::signal(SIGQUIT, SIG_IGN);
    ::signal(SIGHUP, SIG_IGN);
    ::signal(SIGPIPE, SIG_IGN);
    raise_fd_limit();
    maybe_crash_for_test(slot);
    net::io_context ioc(1);
    worker w(ioc, unique_fd(channel_fd), slot);
    return w.run();
}

worker::worker(net::io_context& ioc, unique_fd channel_fd, unsigned slot)
    : ioc_(ioc), slot_(slot), pid_(::getpid()),
      channel_(std::make_shared<ipc::channel>(ioc, std::move(channel_fd))), signals_(ioc, SIGTERM),
      drain_timer_(ioc), heartbeat_timer_(ioc), started_at_(std::chrono::steady_clock::now()),
      poller_(ioc, &flush_pending_writes), load_timer_(ioc) {
    // Beyond this many connections, a hand-off could arrive with no descriptor left to receive
    // it (recvmsg truncates SCM_RIGHTS and the connection is lost unanswered): keep a reserve for
    // the channel, log files, static files and the descriptors in flight.
    constexpr rlim_t reserve = 64;
    rlimit nofile{};
    const rlim_t cur = ::getrlimit(RLIMIT_NOFILE, &nofile) == 0 ? nofile.rlim_cur : 1024;
    fd_connection_limit_ = static_cast<std::size_t>(cur > 2 * reserve ? cur - reserve : cur / 2);
    acceptor_ = std::make_unique<self_acceptor>(
        ioc_,
        [this](std::vector<self_acceptor::accepted>&& batch, std::uint64_t errors) {
            on_self_accepted(std::move(batch), errors);
        },
        [this](const std::string& what) {
            spdlog::critical("accepting on the listening sockets failed: {}; exiting", what);
            exit_now(1);
        });
}

int worker::run() {
    channel_->start({
        [this](ipc::message&& m) { on_message(std::move(m)); },
        [this](error_code ec, std::string_view what) { on_channel_error(ec, what); },
        nullptr,
    });
    // SIGTERM straight to a worker (e.g. systemd stopping the whole cgroup): drain on our own.
    signals_.async_wait([this](error_code ec, int) {
        if (ec)
            return;
        spdlog::info("SIGTERM: draining");
        begin_drain(config_ ? config_->supervisor.drain_timeout : std::chrono::milliseconds(30'000), true);
    });
    install_test_hooks();
    ioc_.run();
    heartbeat_timer_.cancel();

    // Unwind every session before the worker goes away: drop callbacks that hold sessions, abort
    // their sockets and let their handlers run to completion (each deregisters itself), bounded.
    {
        auto waiting = std::move(interest_waiters_);
        auto publishes = std::move(pending_publishes_);
        interest_waiters_.clear();
        pending_publishes_.clear();
    }
    const std::vector<connection*> left(connections_.begin(), connections_.end());
    for (auto* c : left)
        if (connections_.count(c))
            c->abort();
    ioc_.restart();
    const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(1);
    while (!connections_.empty() && std::chrono::steady_clock::now() < until)
        ioc_.run_one_for(std::chrono::milliseconds(50));
    if (!connections_.empty()) {
        spdlog::warn("{} session(s) did not unwind; exiting without waiting", connections_.size());
        spdlog::shutdown();
        ::_exit(exit_code_);
    }
    return exit_code_;
}

void worker::on_message(ipc::message&& m) {
    std::visit(
        [&](auto&& msg) {
            using T = std::decay_t<decltype(msg)>;
            if constexpr (std::is_same_v<T, ipc::config_msg>) {
                apply_config(std::move(msg));
            } else if constexpr (std::is_same_v<T, ipc::handoff_msg>) {
                accept_handoff(std::move(msg));
            } else if constexpr (std::is_same_v<T, ipc::listen_msg>) {
                apply_listen(std::move(msg));
            } else if constexpr (std::is_same_v<T, ipc::drain_msg>) {
                begin_drain(std::chrono::milliseconds(msg.timeout_ms), msg.node_stopping);
            } else if constexpr (std::is_same_v<T, ipc::stop_msg>) {
                spdlog::info("stop requested; exiting now");
                exit_now(0);
            } else if constexpr (std::is_same_v<T, ipc::relay_msg>) {
                ++stats_.relays_in;
                stats_.deliveries += hub_.publish_local(msg.message);
            } else if constexpr (std::is_same_v<T, ipc::interest_ack_msg>) {
                on_interest_ack(msg.seq);
            } else if constexpr (std::is_same_v<T, ipc::publish_ack_msg>) {
                on_publish_ack(msg.request_id, msg.workers);
            } else if constexpr (std::is_same_v<T, ipc::unknown_type_msg>) {
                spdlog::warn("the supervisor did not recognize message type {} we sent", msg.type);
            } else {
                spdlog::warn("the supervisor sent '{}', which only workers send; ignored",
                             ipc::to_string(ipc::type_of(msg)));
                channel_->send(ipc::unknown_type_msg{static_cast<std::uint16_t>(ipc::type_of(msg))});
            }
        },
        std::move(m));
}

void worker::on_channel_error(error_code ec, std::string_view what) {
    if (ec == net::error::eof || ec == net::error::connection_reset || ec == net::error::broken_pipe)
        spdlog::warn("the supervisor closed our channel; exiting");
    else
        spdlog::error("channel to the supervisor failed: {}: {}; exiting", what, ec.message());
    exit_now(1);
}

void worker::apply_config(ipc::config_msg&& m) {
    auto result = parse_config(m.toml, "<from supervisor>");
    if (auto* err = std::get_if<config_error>(&result)) {
        // The supervisor validated this text with the same parser; this is a bug, not input.
        spdlog::critical("config from the supervisor does not parse: {}", err->to_string());
        exit_now(1);
        return;
    }
    // TLS listeners: a context each from the certificate and key the supervisor read and checked.
    std::vector<std::shared_ptr<net::ssl::context>> tls_contexts(std::get<config>(result).listeners.size());
    for (const auto& e : m.tls) {
        if (e.listener >= tls_contexts.size()) {
            spdlog::critical("TLS material for listener {} of {}", e.listener, tls_contexts.size());
            exit_now(1);
            return;
        }
        auto ctx = make_server_context({e.cert_pem, e.key_pem});
        if (auto* err = std::get_if<std::string>(&ctx)) {
            // The supervisor made a context from these very bytes; this is a bug, not input.
            spdlog::critical("TLS listener {}: {}", std::get<config>(result).listeners[e.listener].address, *err);
            exit_now(1);
            return;
        }
        tls_contexts[e.listener] = std::get<std::shared_ptr<net::ssl::context>>(std::move(ctx));
    }
    tls_contexts_ = std::move(tls_contexts);
    auto cfg = std::make_shared<const config>(std::get<config>(std::move(result)));
    apply_log_config(process_name(slot_), *cfg);
    router_ = std::make_shared<const router>(*cfg);
    for (const auto& problem : router_->problems())
        spdlog::warn("{} (this worker runs as uid {}); its requests answer 404", problem, ::getuid());
    auto previous = std::exchange(config_, std::move(cfg));
    generation_ = m.generation;
    apply_scheduling();
    if (previous)
        close_sessions_of_removed_routes(*previous);
    update_accept_room(); // a reload may have changed max_connections_per_worker
    channel_->send(ipc::ready_msg{generation_, static_cast<std::uint32_t>(pid_)});
    spdlog::debug("generation {} applied", generation_);
    send_heartbeat();
    schedule_heartbeat();
}

// [server] worker_scheduling for the event loop's thread and, when it runs, the acceptor thread of
// shared and reuseport listeners (Linux sets policies per thread; one started later inherits the
// event loop's). A policy other than these two, set on purpose when starting, is kept. SCHED_BATCH:
// a worker woken by a ready socket does not preempt what runs on its CPU. With a busy CPU (the
// same cores serving other processes, or more workers than cores) that turns one wake-up per
// message into one per batch of ready sockets; with an idle CPU it changes nothing.
void worker::apply_scheduling() {
    const bool batch = config_->server.worker_scheduling == config::server_section::scheduling::batch;
    if (!apply_thread_scheduling(batch, "worker", "worker_scheduling", scheduling_told_))
        return;
    if (acceptor_ && !acceptor_->set_scheduling(batch ? SCHED_BATCH : SCHED_OTHER) && !scheduling_told_) {
        spdlog::warn("cannot set the acceptor thread's scheduling policy");
        scheduling_told_ = true;
    }
}

// A reload switched routes, limits and tokens for new connections and requests; sessions keep
// going, except WebSockets whose route is gone: they close with 1001 at the drain deadline.
void worker::close_sessions_of_removed_routes(const config& previous) {
    std::vector<std::string> removed;
    for (const auto& old_route : previous.routes) {
        const bool kept = std::any_of(config_->routes.begin(), config_->routes.end(), [&](const route_config& r) {
            return r.path == old_route.path && r.kind == old_route.kind && r.protocol == old_route.protocol;
        });
        if (!kept)
            removed.push_back(old_route.path);
    }
    if (removed.empty() || draining_)
        return;
    const auto deadline = std::chrono::steady_clock::now() + config_->supervisor.drain_timeout;
    std::size_t closing = 0;
    const std::vector<connection*> open(connections_.begin(), connections_.end());
    for (auto* c : open) {
        if (!connections_.count(c))
            continue;
        const auto path = c->route_path();
        if (!path.empty() && std::find(removed.begin(), removed.end(), path) != removed.end()) {
            c->drain(deadline);
            ++closing;
        }
    }
    if (closing > 0)
        spdlog::info("generation {}: {} session(s) on removed route(s) close at the drain deadline ({} ms)",
                     generation_, closing, config_->supervisor.drain_timeout.count());
}

// The supervisor's watchdog counts on these: a worker whose loop is stuck sends none.
void worker::schedule_heartbeat() {
    heartbeat_timer_.expires_after(config_->supervisor.heartbeat_interval);
    heartbeat_timer_.async_wait([this](error_code ec) {
        if (ec)
            return;
        send_heartbeat();
        schedule_heartbeat();
    });
}

void worker::send_heartbeat() {
    ipc::heartbeat_msg h;
    h.generation = generation_;
    h.pid = static_cast<std::uint32_t>(pid_);
    h.uptime_ms = static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                                 std::chrono::steady_clock::now() - started_at_)
                                                 .count());
    h.rss_bytes = resident_bytes();
    h.connections = connections_.size();
    h.ws_sessions = websockets_;
    h.connections_total = stats_.connections_total;
    h.ws_sessions_total = stats_.ws_sessions_total;
    h.http_requests_total = stats_.http_requests;
    h.messages_in_total = stats_.ws_messages_in;
    h.messages_out_total = stats_.ws_messages_out;
    h.bytes_in_total = stats_.bytes_in;
    h.bytes_out_total = stats_.bytes_out;
    h.send_queue_drops_total = stats_.send_queue_drops;
    h.slow_consumer_disconnects_total = stats_.slow_consumer_disconnects;
    h.publishes_total = stats_.publishes;
    h.publish_drops_total = stats_.publish_drops;
    h.deliveries_total = stats_.deliveries;
    h.limit_hits_total = 0;
    h.bad_requests_total = stats_.bad_ops;
    for (std::size_t i = 0; i < rejection_count; ++i)
        (is_limit(static_cast<rejection>(i)) ? h.limit_hits_total : h.bad_requests_total) += stats_.rejections[i];
    h.rejections_total = stats_.rejections;
    channel_->send(std::move(h));
}

// Test-only: with SOCKHERD_TEST_HOOKS=1, SIGUSR2 makes this worker allocate and touch
// SOCKHERD_TEST_BLOAT_MB MiB (default 256) and keep it, so the tests can watch the supervisor
// replace a worker that grew over max_worker_memory.
void worker::install_test_hooks() {
    const char* hooks = std::getenv("SOCKHERD_TEST_HOOKS");
    if (hooks == nullptr || std::string_view(hooks) != "1")
        return;
    test_signals_ = std::make_unique<net::signal_set>(ioc_, SIGUSR2);
    wait_test_signal();
}

void worker::wait_test_signal() {
    test_signals_->async_wait([this](error_code ec, int) {
        if (ec)
            return;
        std::size_t mib = 256;
        if (const char* v = std::getenv("SOCKHERD_TEST_BLOAT_MB"))
            mib = std::strtoul(v, nullptr, 10);
        auto block = std::make_unique<char[]>(mib << 20);
        for (std::size_t i = 0; i < (mib << 20); i += 4096)
            block[i] = 1; // touch every page so it counts as resident
        test_ballast_.push_back(std::move(block));
        spdlog::warn("SOCKHERD_TEST_HOOKS: SIGUSR2: now holding {} MiB more on purpose", mib);
        if (config_)
            send_heartbeat();
        wait_test_signal();
    });
}

void worker::accept_handoff(ipc::handoff_msg&& m) {
    handoffs_received_ += m.connections.size();
    if (!config_) {
        spdlog::error("hand-off before any config; closing {} connection(s)", m.connections.size());
        report_load();
        return;
    }
    for (auto& c : m.connections) {
        if (draining_)
            continue; // the unique_fd closes it; the supervisor stopped sending before drain
        serve(m.listener_id, std::move(c.fd), c.peer);
    }
    report_load();
}

void worker::serve(std::uint16_t listener_id, unique_fd fd, const tcp::endpoint& peer) {
    tcp::socket sock(ioc_);
    error_code ec;
    sock.assign(peer.protocol(), fd.release(), ec);
    if (ec) {
        spdlog::warn("cannot adopt a connection from {}: {}", peer.address().to_string(), ec.message());
        return;
    }
    sock.set_option(tcp::no_delay(true), ec);
    ++stats_.connections_total;
    if (listener_id < tls_contexts_.size() && tls_contexts_[listener_id])
        std::make_shared<http_session<tls_stream>>(*this, std::move(sock), peer, listener_id,
                                                   tls_contexts_[listener_id])
            ->run();
    else
        std::make_shared<http_session<plain_stream>>(*this, std::move(sock), peer, listener_id)->run();
}

void worker::apply_listen(ipc::listen_msg&& m) {
    if (draining_ || !config_ || !acceptor_)
        return; // the descriptors close here; a draining worker takes no new connections
    std::vector<self_acceptor::socket> sockets;
    sockets.reserve(m.sockets.size());
    for (auto& e : m.sockets) {
        if (e.listener_id >= config_->listeners.size()) {
            spdlog::critical("listening socket for listener {} of {}", e.listener_id, config_->listeners.size());
            exit_now(1);
            return;
        }
        sockets.push_back({e.listener_id, std::move(e.fd)});
    }
    const auto before = acceptor_->socket_count();
    try {
        acceptor_->set_sockets(std::move(sockets));
    } catch (const std::system_error& e) {
        spdlog::critical("{}; exiting", e.what());
        exit_now(1);
        return;
    }
    update_accept_room();
    if (acceptor_->socket_count() > 0 || before > 0)
        spdlog::debug("accepting on {} listening socket(s) of our own", acceptor_->socket_count());
}

// A batch the acceptor thread took from the kernel: every connection is served (a draining
// worker's in-flight ones too, as with hand-offs).
void worker::on_self_accepted(std::vector<self_acceptor::accepted>&& batch, std::uint64_t errors) {
    if (errors > 0) {
        if (std::bit_width(accept_errors_ + errors) > std::bit_width(accept_errors_)) // 1, 2, 4, 8, ...
            spdlog::warn("accept failed {} time(s) (out of descriptors or memory); backing off ({} so far)", errors,
                         accept_errors_ + errors);
        accept_errors_ += errors;
    }
    for (auto& a : batch) {
        // Accepted before a reload that renumbered the listeners: served under the new numbering.
        const auto current = acceptor_ ? acceptor_->listener_of(a.socket_inode) : std::nullopt;
        serve(current.value_or(a.listener_id), std::move(a.fd), a.peer);
    }
    update_accept_room();
}

// shared/reuseport: how many more connections the acceptor may take (0 at the limit: it stops
// waiting on the sockets until a connection closes or a reload raises the limit).
void worker::update_accept_room() {
    if (!acceptor_)
        return;
    const auto limit = connection_limit();
    acceptor_->set_room(limit > connections_.size() ? limit - connections_.size() : 0);
}

ip_claim& ip_claim::operator=(ip_claim&& other) noexcept {
    if (this != &other) {
        release();
        owner_ = std::exchange(other.owner_, nullptr);
        address_ = other.address_;
    }
    return *this;
}

void ip_claim::release() {
    if (auto* w = std::exchange(owner_, nullptr))
        w->release_ip(address_);
}

std::size_t worker::address_hash::operator()(const net::ip::address& a) const {
    if (a.is_v4())
        return std::hash<std::uint32_t>{}(a.to_v4().to_uint());
    const auto bytes = a.to_v6().to_bytes();
    return std::hash<std::string_view>{}({reinterpret_cast<const char*>(bytes.data()), bytes.size()});
}

std::size_t worker::connection_limit() const {
    const auto configured = config_ ? config_->limits.max_connections_per_worker : 0;
    if (configured != 0)
        return std::min<std::size_t>(configured, fd_connection_limit_);
    return fd_connection_limit_;
}

std::optional<ip_claim> worker::claim_ip(const net::ip::address& raw) {
    ip_claim claim;
    const auto limit = config_ ? config_->limits.max_connections_per_ip : 0;
    const auto client = unmapped(raw);
    if (limit == 0 || !config_ || any_contains(config_->http.trusted_proxies, client))
        return claim;
    auto& n = per_ip_[client];
    if (n >= limit) {
        if (n == 0)
            per_ip_.erase(client);
        return std::nullopt;
    }
    ++n;
    claim.owner_ = this;
    claim.address_ = client;
    return claim;
}

void worker::release_ip(const net::ip::address& a) {
    const auto it = per_ip_.find(a);
    if (it != per_ip_.end() && --it->second == 0)
        per_ip_.erase(it);
}

void worker::add(connection& c, bool websocket) {
    connections_.insert(&c);
    update_accept_room();
    if (websocket)
        ++websockets_;
    report_load();
}

void worker::remove(connection& c, bool websocket) {
    connections_.erase(&c);
    if (websocket)
        --websockets_;
    update_accept_room();
    report_load();
    if (draining_)
        maybe_finish_drain();
}

// Coalesced: at most one load message per load_report_interval, however many sessions changed
// (at a high connection rate, one per event-loop turn kept the supervisor busy decoding them).
// Least-conn stays exact meanwhile: the supervisor counts its hand-offs not yet acknowledged.
void worker::report_load() {
    if (load_report_posted_)
        return;
    load_report_posted_ = true;
    load_timer_.expires_at(std::max(std::chrono::steady_clock::now(), last_load_report_ + load_report_interval));
    load_timer_.async_wait([this](error_code ec) {
        load_report_posted_ = false;
        if (ec)
            return;
        last_load_report_ = std::chrono::steady_clock::now();
        channel_->send(ipc::load_msg{static_cast<std::uint32_t>(connections_.size()), handoffs_received_});
    });
}

void worker::subscribe(const std::string& channel, subscriber& s) {
    if (hub_.subscribe(channel, s) && hub_.has_interest_change())
        schedule_interest_flush();
}

void worker::unsubscribe(const std::string& channel, subscriber& s) {
    if (hub_.unsubscribe(channel, s) && hub_.has_interest_change())
        schedule_interest_flush();
}

void worker::publish(shared_message m, delivery how, relayed_handler on_relayed) {
    ++stats_.publishes;
    std::size_t local = 0;
    if (how == delivery::local_first) {
        local = hub_.publish_local(m);
        stats_.deliveries += local;
    }
    if (channel_->full()) {
        // The supervisor is not keeping up with this worker: other workers miss this one, counted.
        if ((stats_.publish_drops & (stats_.publish_drops - 1)) == 0)
            spdlog::warn("channel to the supervisor is full; publish to '{}' reached local subscribers only "
                         "({} such so far)", m->channel, stats_.publish_drops + 1);
        ++stats_.publish_drops;
        if (on_relayed)
            on_relayed(std::nullopt);
        return;
    }
    std::uint32_t request_id = 0;
    if (on_relayed) {
        // Ids wrap; a stale id still pending after 2^32 publishes is not a practical concern.
        do
            request_id = ++next_request_id_;
        while (request_id == 0 || pending_publishes_.count(request_id));
        auto timer = std::make_unique<net::steady_timer>(ioc_, std::chrono::seconds(5));
        timer->async_wait([this, request_id](error_code ec) {
            if (ec)
                return;
            const auto it = pending_publishes_.find(request_id);
            if (it == pending_publishes_.end())
                return;
            auto handler = std::move(it->second.handler);
            pending_publishes_.erase(it);
            spdlog::warn("the supervisor did not acknowledge publish {} within 5 s", request_id);
            handler(std::nullopt);
        });
        pending_publishes_.emplace(request_id, pending_publish{std::move(on_relayed), local > 0, std::move(timer)});
    }
    const std::uint8_t flags = how == delivery::through_supervisor ? ipc::publish_msg::include_origin : 0;
    channel_->send(ipc::publish_msg{request_id, flags, std::move(m)});
}

void worker::on_publish_ack(std::uint32_t request_id, std::uint32_t workers) {
    const auto it = pending_publishes_.find(request_id);
    if (it == pending_publishes_.end())
        return; // timed out already
    auto p = std::move(it->second);
    pending_publishes_.erase(it);
    p.timeout->cancel();
    p.handler(workers + (p.local ? 1 : 0));
}

void worker::after_interest_confirmed(std::function<void()> f) {
    if (!interest_flush_posted_ && !hub_.has_interest_change() && interest_seq_acked_ == interest_seq_sent_) {
        f();
        return;
    }
    // Whatever is pending now goes out in the next flush, numbered interest_seq_sent_ + 1 (or was
    // already sent as interest_seq_sent_); waiting for the former covers both.
    const std::uint64_t target = interest_seq_sent_ + 1;
    interest_waiters_.emplace_back(target, std::move(f));
    schedule_interest_flush();
}

void worker::schedule_interest_flush() {
    if (interest_flush_posted_)
        return;
    interest_flush_posted_ = true;
    net::post(ioc_, [this] { flush_interest(); });
}

// One interest message per event-loop turn, however many subscriptions changed. Sent even when
// empty if someone waits on its acknowledgement.
void worker::flush_interest() {
    interest_flush_posted_ = false;
    auto change = hub_.take_interest();
    if (change.added.empty() && change.removed.empty() && interest_waiters_.empty())
        return;
    const std::uint64_t first = interest_seq_sent_ + 1;
    std::size_t a = 0, r = 0;
    do {
        ipc::interest_msg m;
        m.seq = ++interest_seq_sent_;
        while (a < change.added.size() && m.added.size() + m.removed.size() < ipc::max_interest_channels)
            m.added.push_back(std::move(change.added[a++]));
        while (r < change.removed.size() && m.added.size() + m.removed.size() < ipc::max_interest_channels)
            m.removed.push_back(std::move(change.removed[r++]));
        channel_->send(std::move(m));
    } while (a < change.added.size() || r < change.removed.size());
    // A change split over several messages is live once the last of them is acknowledged.
    for (auto& [target, f] : interest_waiters_)
        if (target >= first)
            target = interest_seq_sent_;
}

void worker::on_interest_ack(std::uint64_t seq) {
    interest_seq_acked_ = std::max(interest_seq_acked_, seq);
    while (!interest_waiters_.empty() && interest_waiters_.front().first <= interest_seq_acked_) {
        auto f = std::move(interest_waiters_.front().second);
        interest_waiters_.pop_front();
        f();
    }
}

void worker::begin_drain(std::chrono::milliseconds timeout, bool node_stopping) {
    if (draining_) {
        node_stopping_ = node_stopping_ || node_stopping; // a retiring worker's node may stop too
        return;
    }
    draining_ = true;
    node_stopping_ = node_stopping;
    if (acceptor_)
        acceptor_->stop(); // connections it already took are served; the others wait for other workers
    const auto deadline = connection::clock::now() + timeout;
    drain_deadline_ = deadline;
    spdlog::info("draining: {} connection(s), {} WebSocket(s), deadline in {} ms", connections_.size(),
                 websockets_, timeout.count());
    // Sessions may deregister while draining; iterate over a snapshot.
    const std::vector<connection*> snapshot(connections_.begin(), connections_.end());
    for (auto* c : snapshot)
        if (connections_.count(c))
            c->drain(deadline);
    const auto grace = close_grace(timeout);
    drain_timer_.expires_at(deadline + grace);
    drain_timer_.async_wait([this, grace](error_code ec) {
        if (ec)
            return;
        spdlog::warn("{} connection(s) still open {} ms after the drain deadline; exiting anyway",
                     connections_.size(), grace.count());
        exit_now(0);
    });
    maybe_finish_drain();
}

void worker::maybe_finish_drain() {
    if (!draining_ || drained_sent_ || !connections_.empty())
        return;
    // Defer: the last session may still be unwinding its own handler.
    drained_sent_ = true;
    net::post(ioc_, [this] {
        if (!connections_.empty()) {
            // A batch the acceptor took before the drain was served after all: wait for it.
            drained_sent_ = false;
            return;
        }
        spdlog::info("drained; exiting");
        channel_->send(ipc::drained_msg{});
        exit_now(0);
    });
}

void worker::exit_now(int code) {
    exit_code_ = code;
    acceptor_.reset(); // batches it posted close their connections now instead of serving them
    channel_->flush_blocking(std::chrono::milliseconds(500));
    channel_->close();
    signals_.cancel();
    drain_timer_.cancel();
    heartbeat_timer_.cancel();
    load_timer_.cancel();
    if (test_signals_)
        test_signals_->cancel();
    ioc_.stop();
}

} // namespace sockherd::worker
