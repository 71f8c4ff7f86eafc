#include "supervisor/supervisor.hpp"

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <stdexcept>
#include <system_error>

#include <spdlog/spdlog.h>

#include "common/logging.hpp"
#include "common/scheduling.hpp"
#include "common/tls.hpp"
#include "common/units.hpp"

namespace sockherd::supervisor {
namespace {

// After the drain deadline, how long workers get to close before they are killed.
constexpr std::chrono::seconds drain_grace{5};
// After an immediate stop request, how long workers get before they are killed.
constexpr std::chrono::seconds stop_grace{2};
// A starting worker gets at least this long to send its first heartbeat (exec, loading, parsing
// the config), whatever watchdog_timeout says.
constexpr std::chrono::milliseconds start_allowance{10'000};
// At most one memory replacement per slot in this long.
constexpr std::chrono::seconds memory_replacement_interval{30};
// A successor that stays up this long resets the delay between retries of a rolling replacement.
constexpr std::chrono::milliseconds roll_healthy_after{10'000};

using std::chrono::duration_cast;
using std::chrono::milliseconds;

double seconds_between(std::chrono::steady_clock::time_point from, std::chrono::steady_clock::time_point to) {
    return std::chrono::duration<double>(to - from).count();
}

std::string format_seconds(milliseconds d) {
    return fmt::format("{:.1f} s", static_cast<double>(d.count()) / 1000.0);
}

worker_counters counters_of(const ipc::heartbeat_msg& h) {
    worker_counters c;
    c.connections = h.connections;
    c.connections_total = h.connections_total;
    c.ws_sessions = h.ws_sessions;
    c.ws_sessions_total = h.ws_sessions_total;
    c.http_requests_total = h.http_requests_total;
    c.messages_in_total = h.messages_in_total;
    c.messages_out_total = h.messages_out_total;
    c.bytes_in_total = h.bytes_in_total;
    c.bytes_out_total = h.bytes_out_total;
    c.send_queue_drops_total = h.send_queue_drops_total;
    c.slow_consumer_disconnects_total = h.slow_consumer_disconnects_total;
    c.publishes_total = h.publishes_total;
    c.publish_drops_total = h.publish_drops_total;
    c.deliveries_total = h.deliveries_total;
    c.limit_hits_total = h.limit_hits_total;
    c.bad_requests_total = h.bad_requests_total;
    c.rejections_total = h.rejections_total;
    c.rss_bytes = h.rss_bytes;
    c.uptime_ms = h.uptime_ms;
    return c;
}

worker_identity resolve_or_throw(const config& cfg, uid_t euid) {
    auto resolved = resolve_worker_identity(cfg, euid);
    if (const auto* err = std::get_if<config_error>(&resolved))
        throw std::runtime_error(err->to_string());
    auto& r = std::get<resolved_identity>(resolved);
    if (r.level == resolved_identity::severity::warn)
        spdlog::warn("{}", r.message);
    else if (!r.message.empty())
        spdlog::info("{}", r.message);
    return std::move(r.identity);
}

// Workers are exec'd through a descriptor of the supervisor's own executable, opened once at
// start, as "/proc/self/fd/N" in the child (N is still open there; it closes on exec):
// - that is a magic link, resolved straight to the open file: no directory on the binary's path
//   is searched, so a worker user that may not enter it (a build under /root, 0700) still
//   starts; only the file's own execute bit counts;
// - it is the file the supervisor runs: after a package upgrade replaced /usr/bin/sockherd, new
//   workers still run the supervisor's binary (and speak its channel protocol) until the node
//   restarts.
// Boost.Process does the execve, so a failed exec comes back to spawn() as an error.
unique_fd open_own_executable() {
    // O_PATH: exec needs no read permission, so an execute-only binary (0711) starts too.
    unique_fd fd(::open("/proc/self/exe", O_PATH | O_CLOEXEC));
    if (!fd)
        throw std::system_error(errno, std::generic_category(), "cannot open /proc/self/exe");
    return fd;
}

} // namespace

supervisor::supervisor(net::io_context& ioc, config cfg)
    : ioc_(ioc), config_(std::move(cfg)), euid_(::geteuid()), identity_(resolve_or_throw(config_, euid_)),
      exe_(open_own_executable()), worker_exe_("/proc/self/fd/" + std::to_string(exe_.get())),
      started_at_(std::chrono::steady_clock::now()), started_at_wall_(std::chrono::system_clock::now()),
      scheduler_(config_.scheduler.policy), notifier_(ioc), reload_timer_(ioc), signals_(ioc), stop_deadline_(ioc),
      health_timer_(ioc),
      roll_backoff_(config_.supervisor.restart_backoff_min, config_.supervisor.restart_backoff_max, roll_healthy_after),
      roll_timer_(ioc) {
    // Every listener is bound before any worker exists, so a bad address fails the start at once.
    for (std::size_t i = 0; i < config_.listeners.size(); ++i) {
        auto l = std::make_unique<listener>(ioc_, static_cast<std::uint16_t>(i), config_.listeners[i],
                                            config_.server.workers);
        spdlog::info("listening on {} ({})", l->config().address, to_string(l->config().mode));
        listeners_.push_back(std::move(l));
    }
    if (config_.admin.endpoint) {
        admin_ = std::make_unique<admin_server>(ioc_, admin_server::options{*config_.admin.endpoint, config_.admin.token},
                                                [this] { return snapshot(); });
    }
    for (unsigned i = 0; i < config_.server.workers; ++i)
        slots_.push_back(std::make_unique<worker_slot>(ioc_, i, config_));
}

supervisor::~supervisor() = default;

int supervisor::run() {
    for (int s : {SIGINT, SIGTERM, SIGQUIT, SIGHUP, SIGCHLD, SIGUSR1})
        signals_.add(s);
    wait_signals();
    apply_scheduling();
    start_control_socket();
    if (admin_)
        admin_->start();
    notifier_.start_watchdog();

    for (auto& l : listeners_) {
        l->start(listener_handlers());
    }
    spdlog::info("sockherd {} starting {} worker(s), generation {}, config {}", SOCKHERD_VERSION,
                 slots_.size(), generation_, config_.source_name);
    if (config_.redis.enabled()) {
        redis_ = make_redis_bridge(config_);
        redis_->start();
    }
    for (auto& slot : slots_)
        start_slot(*slot);
    schedule_health_tick();

    ioc_.run();
    return exit_code_;
}

// The supervisor's one thread accepts and hands off every connection in handoff mode. Under
// SCHED_BATCH it does not preempt a busy worker for each new connection; it takes the backlog
// at its next turn, several connections a wake-up (a third fewer context switches and CPU per
// connection in bench/RESULTS.md's side-by-side check). Workers set their own policy.
void supervisor::apply_scheduling() {
    apply_thread_scheduling(config_.server.supervisor_scheduling == config::server_section::scheduling::batch,
                            "supervisor", "supervisor_scheduling", scheduling_told_);
}

std::unique_ptr<control_server> supervisor::make_control_server(const std::string& path) {
    auto server = std::make_unique<control_server>(
        ioc_, path, [this](const std::vector<std::string>& words, control_server::respond_fn respond) {
            on_control(words, std::move(respond));
        });
    server->start();
    spdlog::info("control socket {}", path);
    return server;
}

void supervisor::start_control_socket() {
    const auto& path = config_.server.control_socket;
    if (path.empty())
        return;
    try {
        control_ = make_control_server(path);
    } catch (const std::system_error& e) {
        // Not being allowed to create it (a non-root user and the packaged /run path) leaves the
        // node without `sockherd status`, not without service; anything else is a real conflict.
        const int code = e.code().value();
        if (e.code().category() == std::system_category() &&
            (code == EACCES || code == EPERM || code == EROFS)) {
            spdlog::warn("{}; running without a control socket (set [server] control_socket)", e.what());
            return;
        }
        throw;
    }
}

worker_slot* supervisor::slot_of(const worker_process& p) const {
    if (p.slot() < slots_.size() && slots_[p.slot()]->process() == &p)
        return slots_[p.slot()].get();
    return nullptr;
}

void supervisor::start_slot(worker_slot& slot) {
    if (phase_ != phase::running)
        return;
    if (auto* p = spawn_process(slot.id()))
        slot.filled_by(p);
    else
        slot.schedule_restart(milliseconds(0), [this, &slot] { start_slot(slot); });
}

worker_process* supervisor::spawn_process(unsigned slot_id) {
    std::size_t index = 0;
    while (index < procs_.size() && procs_[index])
        ++index;
    if (index == procs_.size()) {
        procs_.emplace_back();
        pending_.emplace_back();
        loads_.emplace_back();
    }
    auto p = std::make_unique<worker_process>(ioc_, *this, index, slot_id);
    if (!p->spawn(worker_exe_, config_, generation_, identity_))
        return nullptr;
    procs_[index] = std::move(p);
    send_listen(*procs_[index]);
    return procs_[index].get();
}

// After every config: the sockets of the shared and reuseport listeners this worker accepts on.
void supervisor::send_listen(worker_process& p) {
    ipc::listen_msg m;
    try {
        for (const auto& l : listeners_)
            l->add_sockets_for(p.slot(), m);
    } catch (const std::system_error& e) {
        // Out of descriptors in the supervisor: the worker takes hand-offs only until the next try.
        spdlog::error("worker {}: cannot pass its listening sockets: {}", p.slot(), e.what());
        return;
    }
    p.send_listen(std::move(m));
}

// reuseport: a slot's socket is accepted on by its ready worker, else by the supervisor (which
// hands off), so no connection waits in it for a worker that is not there. A removed slot's
// socket closes once no process of that slot is left.
void supervisor::update_reuseport_cover() {
    if (phase_ != phase::running)
        return;
    unsigned keep = static_cast<unsigned>(slots_.size());
    std::vector<bool> accepting;
    for (const auto& p : procs_) {
        if (!p || !p->alive())
            continue;
        keep = std::max(keep, p->slot() + 1);
        if (accepting.size() <= p->slot())
            accepting.resize(p->slot() + 1, false);
        if (p->state() == process_state::ready && !p->retired())
            accepting[p->slot()] = true;
    }
    for (auto& l : listeners_) {
        if (l->mode() != listener_mode::reuseport)
            continue;
        l->drop_slots_from(keep);
        for (unsigned k = 0; k < l->slot_sockets(); ++k)
            l->set_covered(k, !(k < accepting.size() && accepting[k]));
    }
}

bool supervisor::start_successor(worker_slot& slot, worker_process& p, replacement what, std::string reason) {
    auto* successor = spawn_process(slot.id());
    if (successor == nullptr)
        return false;
    slot.set_successor(successor);
    p.set_replacement(what, std::move(reason));
    return true;
}

void supervisor::retire(worker_process& p, std::string reason) {
    if (auto* slot = slot_of(p))
        slot->vacate();
    p.retire(std::move(reason));
    p.drain(config_.supervisor.drain_timeout, false);
    update_reuseport_cover();
}

void supervisor::wait_signals() {
    signals_.async_wait([this](error_code ec, int signo) {
        if (ec)
            return;
        on_signal(signo);
        if (phase_ != phase::done)
            wait_signals();
    });
}

void supervisor::on_signal(int signo) {
    switch (signo) {
    case SIGCHLD:
        reap_children();
        break;
    case SIGINT:
    case SIGTERM:
        if (phase_ == phase::running) {
            spdlog::info("{}: graceful stop (drain timeout {} ms); send it again to stop at once",
                         signo == SIGINT ? "SIGINT" : "SIGTERM", config_.supervisor.drain_timeout.count());
            begin_stop(stop_mode::graceful);
        } else {
            spdlog::info("{} again: stopping at once", signo == SIGINT ? "SIGINT" : "SIGTERM");
            begin_stop(stop_mode::immediate);
        }
        break;
    case SIGQUIT:
        spdlog::info("SIGQUIT: stopping at once");
        begin_stop(stop_mode::immediate);
        break;
    case SIGHUP:
        spdlog::info("SIGHUP: reloading {}", config_.source_name);
        request_reload(nullptr);
        break;
    case SIGUSR1:
        spdlog::info("SIGUSR1: logs go to stderr; nothing to reopen");
        break;
    default:
        break;
    }
}

void supervisor::reap_children() {
    for (;;) {
        int status = 0;
        const pid_t pid = ::waitpid(-1, &status, WNOHANG);
        if (pid <= 0)
            return;
        for (auto& p : procs_) {
            if (p && p->alive() && p->pid() == pid) {
                p->on_reaped(status);
                break;
            }
        }
    }
}

void supervisor::on_process_ready(worker_process& p) {
    if (phase_ != phase::running || p.retired())
        return;
    // A successor is ready: it takes the slot, and only now does its predecessor drain, so the
    // slot never stops taking connections.
    if (p.slot() < slots_.size() && slots_[p.slot()]->successor() == &p) {
        auto& slot = *slots_[p.slot()];
        slot.set_successor(nullptr);
        auto* old = slot.process();
        slot.vacate();
        slot.filled_by(&p);
        if (old != nullptr) {
            if (old->replaced_for() == replacement::identity)
                roll_backoff_.note_running(roll_healthy_after);
            retire(*old, old->replacement_reason());
        }
    }
    update_reuseport_cover();
    resume_listeners();
    maybe_announce_ready();
    roll_next();
}

// READY=1 once the node serves as configured: every slot up, or failing (a slot that keeps
// crashing is visible in status; it must not keep systemd waiting until it kills the node).
void supervisor::maybe_announce_ready() {
    if (announced_ready_ || phase_ != phase::running)
        return;
    unsigned up = 0;
    for (const auto& slot : slots_) {
        const auto* p = slot->process();
        if (p != nullptr && p->state() == process_state::ready)
            ++up;
        else if (!slot->failing())
            return;
    }
    if (up == 0)
        return;
    announced_ready_ = true;
    if (up == slots_.size())
        spdlog::info("all {} worker(s) ready", up);
    else
        spdlog::warn("{} of {} worker(s) ready, the others failing; the node is up", up, slots_.size());
    report_to_systemd(); // STATUS= first, so systemd shows a summary from the moment it is up
    notifier_.ready();
}

void supervisor::on_process_room(worker_process&) { resume_listeners(); }

void supervisor::on_process_heartbeat(worker_process& p) {
    if (p.stale()) {
        p.set_stale(false);
        spdlog::info("worker {}: pid {} reports again; taking connections", p.slot(), p.pid());
        resume_listeners();
    }
    if (auto* slot = slot_of(p))
        slot->note_running(duration_cast<milliseconds>(p.last_sign_of_life() - p.started_at()));
    check_memory(p);
}

// Replaces a worker that grew over max_worker_memory, gracefully: a successor starts for its
// slot, and once it is ready the old one drains (its WebSockets stay until drain_timeout).
void supervisor::check_memory(worker_process& p) {
    const auto limit = config_.supervisor.max_worker_memory;
    const auto rss = p.heartbeat().rss_bytes;
    if (limit == 0 || rss <= limit || phase_ != phase::running || p.retired() ||
        p.state() != process_state::ready)
        return;
    auto* slot = slot_of(p);
    if (slot == nullptr || slot->successor() != nullptr)
        return;
    auto warn_once = [&](const std::string& why) {
        if (p.memory_warning_logged())
            return;
        p.set_memory_warning_logged();
        spdlog::warn("worker {}: pid {} uses {}, over max_worker_memory {}, but {}", p.slot(), p.pid(),
                     human_size(rss), format_size(limit), why);
    };
    // A replacement would be no smaller: it started over the limit.
    if (p.first_rss() > limit)
        return warn_once("it needed " + human_size(p.first_rss()) +
                         " before serving anyone; not replacing it (raise the limit)");
    // One predecessor draining for its memory per slot at a time, at most one replacement per
    // interval: a leak cannot multiply into several large processes per slot.
    for (const auto& other : procs_)
        if (other && other->alive() && other->retired() && other->slot() == slot->id() &&
            other->replaced_for() == replacement::memory)
            return warn_once("its predecessor (pid " + std::to_string(other->pid()) +
                             ") is still draining; replacing it once that one has exited");
    const auto now = std::chrono::steady_clock::now();
    if (slot->last_memory_replacement && now - *slot->last_memory_replacement < memory_replacement_interval)
        return warn_once("slot " + std::to_string(slot->id()) + " was replaced for its memory less than " +
                         std::to_string(memory_replacement_interval.count()) + " s ago; waiting");
    if (!start_successor(*slot, p, replacement::memory,
                         "replaced: rss " + human_size(rss) + " over max_worker_memory " + format_size(limit)))
        return; // logged; the next heartbeat tries again
    slot->last_memory_replacement = now;
    auto* successor = slot->successor();
    ++memory_replacements_;
    spdlog::warn("worker {}: pid {} uses {}, over max_worker_memory {}; replacing it gracefully: pid {} starts, "
                 "then it drains ({} ms)",
                 p.slot(), p.pid(), human_size(rss), format_size(limit), successor->pid(),
                 config_.supervisor.drain_timeout.count());
}

// Slots with a worker (or a successor about to take over) that runs as another user than identity_.
unsigned supervisor::workers_to_roll() const {
    unsigned n = 0;
    // A slot counts until every process it has runs as identity_: a successor with the new
    // identity may still die before it takes over, leaving the old worker serving.
    const auto stale = [this](const worker_process* p) {
        return p != nullptr && !p->identity().same_credentials(identity_);
    };
    for (const auto& slot : slots_)
        if (stale(slot->process()) || stale(slot->successor()))
            ++n;
    return n;
}

// After a reload changed the workers' user: the first ready worker that runs as another user
// gets a successor (as for memory replacement, the old one drains once it is ready), then the
// next, one slot at a time so the node never serves with fewer workers. Called again whenever a
// worker becomes ready or exits; a successor that dies before it is ready is retried after a
// backoff.
void supervisor::roll_next() {
    if (!rolling_ || phase_ != phase::running)
        return;
    if (roll_retry_pending_)
        return;
    worker_slot* next = nullptr;
    for (auto& slot : slots_) {
        auto* p = slot->process();
        if (slot->successor() != nullptr) {
            if (p != nullptr && p->replaced_for() == replacement::identity)
                return; // this slot's successor is starting: one at a time
            continue;   // a memory replacement: looked at again once its successor is ready
        }
        if (next == nullptr && p != nullptr && p->state() == process_state::ready &&
            !p->identity().same_credentials(identity_))
            next = slot.get();
    }
    if (next == nullptr) {
        // Nothing ready to replace: done, or waiting for starting workers to become ready.
        if (workers_to_roll() == 0) {
            rolling_ = false;
            spdlog::info("workers: all {} run as {}", slots_.size(), identity_.describe());
        }
        return;
    }
    auto& old = *next->process();
    if (!start_successor(*next, old, replacement::identity, "replaced: workers now run as " + identity_.describe())) {
        retry_roll(milliseconds(0));
        return;
    }
    spdlog::info("worker {}: pid {} runs as {}; pid {} starts as {}, then it drains ({} ms)", next->id(), old.pid(),
                 old.identity().describe(), next->successor()->pid(), identity_.describe(),
                 config_.supervisor.drain_timeout.count());
}

void supervisor::retry_roll(milliseconds uptime) {
    const auto delay = roll_backoff_.next(uptime);
    spdlog::warn("workers: replacing the next one as {} again in {} ms", identity_.describe(), delay.count());
    roll_retry_pending_ = true;
    roll_timer_.expires_after(delay);
    // A cancelled wait whose handler is already queued still runs: the sequence tells it apart.
    roll_timer_.async_wait([this, seq = ++roll_retry_seq_](error_code ec) {
        if (ec || seq != roll_retry_seq_)
            return;
        roll_retry_pending_ = false;
        roll_next();
    });
}

// A message published on one worker goes, encoded once, to every other worker with interest.
// The relay keeps the order in which this worker's channel delivered its publishes.
void supervisor::on_process_publish(worker_process& from, ipc::publish_msg&& p) {
    // To the other nodes once, whether or not a local worker has interest (never what came from
    // Redis: that arrives through relay_from_redis, not here).
    if (redis_)
        redis_->publish(*p.message);
    const auto& targets = interest_.slots_for(p.message->channel);
    const bool include_origin = p.flags & ipc::publish_msg::include_origin;
    const auto origin = static_cast<interest_registry::slot_id>(from.index());
    std::uint32_t relayed = 0;
    if (!(targets.empty() || (!include_origin && targets.size() == 1 && targets[0] == origin))) {
        relay_frame_.clear();
        ipc::encode(ipc::relay_msg{std::move(p.message)}, relay_frame_);
        for (const auto id : targets) {
            if ((id == origin && !include_origin) || id >= procs_.size() || !procs_[id])
                continue;
            if (procs_[id]->send_relay(relay_frame_))
                ++relayed;
        }
        relays_total_ += relayed;
    }
    if (p.request_id != 0)
        from.send(ipc::publish_ack_msg{p.request_id, relayed});
}

void supervisor::on_process_interest(worker_process& from, ipc::interest_msg&& m) {
    const auto id = static_cast<interest_registry::slot_id>(from.index());
    for (const auto& c : m.added)
        if (interest_.add(id, c) && redis_)
            redis_->want(c); // the node's first subscriber of c
    for (const auto& c : m.removed)
        if (interest_.remove(id, c) && redis_)
            redis_->unwant(c); // its last one left
    from.send(ipc::interest_ack_msg{m.seq});
}

std::unique_ptr<redis_bridge> supervisor::make_redis_bridge(const config& cfg, std::optional<node_id> id) {
    redis_bridge::limits lim;
    lim.max_message_size = cfg.websocket.max_message_size; // what a worker could have accepted
    return std::make_unique<redis_bridge>(
        ioc_, cfg.redis, lim,
        redis_bridge::callbacks{
            [this](shared_message msg) { relay_from_redis(std::move(msg)); },
            [this](redis_bridge::state st) {
                spdlog::debug("redis: bridge {}", to_string(st));
                report_to_systemd();
            },
        },
        id);
}

void supervisor::relay_from_redis(shared_message msg) {
    if (phase_ == phase::done)
        return;
    const auto& targets = interest_.slots_for(msg->channel);
    if (targets.empty())
        return; // the last local subscriber left while the message was on its way
    relay_frame_.clear();
    ipc::encode(ipc::relay_msg{std::move(msg)}, relay_frame_);
    std::uint32_t relayed = 0;
    for (const auto id : targets)
        if (id < procs_.size() && procs_[id] && procs_[id]->send_relay(relay_frame_))
            ++relayed;
    relays_total_ += relayed;
}

void supervisor::apply_redis_config(const config& next_config) {
    const auto& cur = config_.redis;
    const auto& next = next_config.redis;
    if (next.url == cur.url && next.channel_prefix == cur.channel_prefix &&
        next.connect_timeout == cur.connect_timeout && next.command_timeout == cur.command_timeout &&
        next.reconnect_backoff_min == cur.reconnect_backoff_min &&
        next.reconnect_backoff_max == cur.reconnect_backoff_max) {
        // The same bridge stays; only the workers' message limit can have moved.
        if (redis_)
            redis_->set_max_message_size(next_config.websocket.max_message_size);
        return;
    }
    std::optional<node_id> id;
    if (redis_) {
        id = redis_->id(); // its messages still in flight are skipped by the new bridge too
        redis_retired_ = redis_->stats(); // the new bridge continues its counters
        redis_->stop();
        // Not from inside its own callback: reloads run from the control socket or a signal.
        redis_.reset();
    }
    if (!next.enabled()) {
        spdlog::info("reload: redis bridge off");
        return;
    }
    redis_ = make_redis_bridge(next_config, id);
    if (redis_retired_)
        redis_->continue_counters(*redis_retired_);
    for (const auto& c : interest_.channels())
        redis_->want(c);
    redis_->start();
    spdlog::info("reload: redis bridge to {}", next.masked_url());
}

void supervisor::on_process_exited(worker_process& p) {
    // Its subscribers are gone with it; a successor starts clean.
    for (const auto& c : interest_.forget(static_cast<interest_registry::slot_id>(p.index())))
        if (redis_)
            redis_->unwant(c);
    auto* slot = slot_of(p);
    worker_slot* successor_of = nullptr; // the slot `p` was about to take over
    if (p.slot() < slots_.size() && slots_[p.slot()]->successor() == &p)
        successor_of = slots_[p.slot()].get();
    // Seen alive for: a worker killed by the watchdog had stopped long before it was killed.
    const auto uptime = duration_cast<milliseconds>(p.last_sign_of_life() - p.started_at());
    // The process table entry goes once this call has returned (we are inside its on_reaped).
    net::post(ioc_, [this, index = p.index()] { procs_[index].reset(); });
    if (reload_running_) {
        std::erase(reload_awaiting_, p.index());
        net::post(ioc_, [this] { maybe_finish_reload(); });
    }

    if (successor_of != nullptr) {
        // The replacement died before it was ready; the old worker keeps serving. For its memory,
        // the next heartbeat over the limit tries again (after memory_replacement_interval); for
        // a new user, the roll tries again after a backoff.
        successor_of->set_successor(nullptr);
        auto* old = successor_of->process();
        spdlog::warn("worker {}: replacement pid {} {} before it was ready; pid {} keeps serving", p.slot(), p.pid(),
                     p.exit_description(), old ? old->pid() : 0);
        if (old != nullptr && old->replaced_for() == replacement::identity && phase_ == phase::running)
            retry_roll(uptime);
        if (old != nullptr)
            old->set_replacement(replacement::none, {});
    }
    if (slot != nullptr) {
        slot->vacate();
        slot->set_last_exit(p.exit_description());
        if (auto* next = slot->successor()) {
            // It died while its replacement was starting: the replacement takes the slot now.
            slot->set_successor(nullptr);
            slot->filled_by(next);
        }
    }

    if (phase_ != phase::running) {
        maybe_finish();
        return;
    }
    if (slot != nullptr && slot->process() == nullptr)
        slot->schedule_restart(uptime, [this, slot] { start_slot(*slot); });
    update_reuseport_cover();
    maybe_announce_ready();
    report_to_systemd();
    // A slot whose old worker died restarts as the new user (maybe the roll is done); after a
    // successor died, roll_retry_pending_ holds the next step back for the backoff.
    roll_next();
}

void supervisor::request_reload(control_server::respond_fn respond) {
    if (phase_ != phase::running) {
        if (respond)
            respond({false, "the node is stopping; not reloading\n"});
        return;
    }
    if (reload_running_) {
        if (!reload_queued_)
            spdlog::info("reload: one is running; this one runs when it is done");
        reload_queued_ = true;
        if (respond)
            next_reload_waiters_.push_back(std::move(respond));
        return;
    }
    if (respond)
        reload_waiters_.push_back(std::move(respond));
    start_reload();
}

void supervisor::start_reload() {
    reload_running_ = true;
    notifier_.reloading();
    std::string summary;
    if (auto error = prepare_and_commit_reload(summary)) {
        finish_reload(false, *error);
        return;
    }
    reload_summary_ = std::move(summary);
    // Done once every running worker has confirmed the new generation (so `sockherd reload`
    // returning means new connections see it), or at a deadline.
    reload_timer_.expires_after(std::chrono::seconds(10));
    reload_timer_.async_wait([this](error_code ec) {
        if (ec || !reload_running_)
            return;
        spdlog::warn("reload: {} worker(s) did not confirm generation {} within 10 s", reload_awaiting_.size(),
                     generation_);
        finish_reload(true, reload_summary_ + "; " + std::to_string(reload_awaiting_.size()) +
                                " worker(s) did not confirm it within 10 s");
    });
    maybe_finish_reload();
}

std::optional<std::string> supervisor::prepare_and_commit_reload(std::string& summary) {
    if (config_.source_name == default_config().source_name)
        return std::string("the node runs the embedded default configuration (started without --config); "
                           "there is no file to reload");
    auto result = load_config_file(config_.source_name);
    if (auto* err = std::get_if<config_error>(&result))
        return err->to_string();
    config next = std::get<config>(std::move(result));
    // Certificates and keys are read again on every reload; one that does not load rejects it.
    if (auto err = load_tls(next))
        return err->to_string();
    // The workers' user: an unknown one, or root without the opt-in, rejects the reload.
    auto resolved = resolve_worker_identity(next, euid_);
    if (auto* err = std::get_if<config_error>(&resolved))
        return err->to_string();
    auto& next_identity = std::get<resolved_identity>(resolved);

    // Everything that can fail happens before anything changes: bind new listeners, the admin
    // listener at a new address, the control socket at a new path. Kept listeners keep their
    // socket (no close, no rebind), so the kernel never refuses a connection on them.
    std::vector<std::optional<std::size_t>> kept(next.listeners.size()); // index into listeners_
    std::vector<std::unique_ptr<listener>> fresh(next.listeners.size());
    std::vector<bool> still_used(listeners_.size(), false);
    std::unique_ptr<admin_server> new_admin;
    std::unique_ptr<control_server> new_control;
    try {
        for (std::size_t i = 0; i < next.listeners.size(); ++i) {
            for (std::size_t j = 0; j < listeners_.size(); ++j) {
                if (!still_used[j] && listeners_[j]->config().endpoint == next.listeners[i].endpoint) {
                    still_used[j] = true;
                    kept[i] = j;
                    break;
                }
            }
            if (kept[i] && listeners_[*kept[i]]->mode() != next.listeners[i].mode)
                return "[[listener]] " + next.listeners[i].address + ": changing its mode from \"" +
                       std::string(to_string(listeners_[*kept[i]]->mode())) + "\" to \"" +
                       std::string(to_string(next.listeners[i].mode)) +
                       "\" needs a restart (or a listener at another address)";
            if (!kept[i])
                fresh[i] = std::make_unique<listener>(ioc_, static_cast<std::uint16_t>(i), next.listeners[i],
                                                      next.server.workers);
        }
        if (next.admin.endpoint && (!config_.admin.endpoint || *next.admin.endpoint != *config_.admin.endpoint)) {
            if (admin_ && admin_->local_endpoint().port() == next.admin.endpoint->port())
                return std::string("[admin] address: moving the admin listener to another address on the same "
                                   "port needs a restart");
            new_admin = std::make_unique<admin_server>(ioc_, admin_server::options{*next.admin.endpoint, next.admin.token},
                                                       [this] { return snapshot(); });
        }
        if (!next.server.control_socket.empty() && next.server.control_socket != config_.server.control_socket)
            new_control = make_control_server(next.server.control_socket);
    } catch (const std::system_error& e) {
        return std::string(e.what());
    }
    // Last, as nothing after it may fail: reuseport sockets for slots a larger worker count adds.
    for (std::size_t i = 0; i < next.listeners.size(); ++i) {
        if (!kept[i])
            continue;
        if (auto err = listeners_[*kept[i]]->ensure_slots(next.server.workers)) {
            for (std::size_t j = 0; j <= i; ++j)
                if (kept[j]) // sockets bound for nothing would take connections no one accepts
                    listeners_[*kept[j]]->drop_slots_from(static_cast<unsigned>(slots_.size()));
            return *err;
        }
    }

    // Commit. From here nothing fails.
    unsigned added = 0, removed = 0;
    std::vector<std::unique_ptr<listener>> listeners(next.listeners.size());
    for (std::size_t i = 0; i < next.listeners.size(); ++i) {
        if (kept[i]) {
            listeners[i] = std::move(listeners_[*kept[i]]);
            listeners[i]->set_id(static_cast<std::uint16_t>(i));
        } else {
            listeners[i] = std::move(fresh[i]);
            ++added;
            spdlog::info("reload: listening on {} ({})", listeners[i]->config().address,
                         to_string(listeners[i]->config().mode));
            listeners[i]->start(listener_handlers());
        }
    }
    for (std::size_t j = 0; j < listeners_.size(); ++j) {
        if (listeners_[j]) {
            // Accepts happen in whole batches that end with their hand-offs flushed, so closing
            // between handlers leaves no accepted connection behind.
            spdlog::info("reload: no longer listening on {}", listeners_[j]->config().address);
            // Its accept loops keep themselves alive for their cancelled handlers, which no longer
            // look at the listener: it can go now.
            listeners_[j]->close();
            listeners_[j].reset();
            ++removed;
        }
    }
    listeners_ = std::move(listeners);

    if (new_admin) {
        if (admin_)
            admin_->close();
        admin_ = std::move(new_admin);
        admin_->start();
    } else if (!next.admin.endpoint && admin_) {
        spdlog::info("reload: admin listener off");
        admin_->close();
        admin_.reset();
    } else if (admin_ && next.admin.token != config_.admin.token) {
        admin_->set_token(next.admin.token);
    }
    if (new_control) {
        if (control_)
            control_->close();
        control_ = std::move(new_control);
    } else if (next.server.control_socket.empty() && control_) {
        control_->close();
        control_.reset();
    }

    // What cannot change in a running worker, its user, changes by replacing the workers one
    // by one (roll_next); processes started from now on run as the new user already.
    const bool new_identity = !next_identity.identity.same_credentials(identity_);
    if (new_identity) {
        identity_ = std::move(next_identity.identity);
        rolling_ = true;
        roll_backoff_ = restart_backoff(next.supervisor.restart_backoff_min, next.supervisor.restart_backoff_max,
                                        roll_healthy_after);
        roll_timer_.cancel();
        ++roll_retry_seq_;
        roll_retry_pending_ = false;
        if (next_identity.level == resolved_identity::severity::warn)
            spdlog::warn("reload: {}", next_identity.message);
    } else if (next.server.user != config_.server.user && !next_identity.message.empty()) {
        spdlog::info("reload: {}", next_identity.message); // not root: it does not apply
    }

    apply_redis_config(next);
    const auto workers_before = static_cast<unsigned>(slots_.size());
    const auto workers_after = next.server.workers;
    config_ = std::move(next);
    config_.server.workers = workers_before; // scale_to() below moves it
    ++generation_;
    scheduler_.set_policy(config_.scheduler.policy);
    apply_log_config("supervisor", config_);
    apply_scheduling();

    // In place: every running worker switches to the new generation for new connections and
    // requests; its sessions stay open. Draining workers finish on the config they have.
    reload_awaiting_.clear();
    for (auto& p : procs_) {
        if (p && p->alive() && !p->retired() && p->state() != process_state::draining) {
            p->send_config(config_, generation_);
            send_listen(*p);
            reload_awaiting_.push_back(p->index());
        }
    }
    if (workers_after != workers_before)
        scale_to(workers_after);
    update_reuseport_cover();

    summary = "generation " + std::to_string(generation_);
    if (added || removed)
        summary += ", listeners +" + std::to_string(added) + " -" + std::to_string(removed);
    if (workers_after != workers_before)
        summary += ", workers " + std::to_string(workers_before) + " -> " + std::to_string(workers_after);
    if (new_identity) {
        const auto n = workers_to_roll();
        summary += ", rolling " + std::to_string(n) + " worker(s) to " + identity_.describe();
        spdlog::info("reload: workers run as {} from now on; replacing {} worker(s) one at a time, each draining "
                     "once its successor is ready",
                     identity_.describe(), n);
        roll_next();
    }
    return std::nullopt;
}

void supervisor::on_process_config_applied(worker_process& p) {
    if (!reload_running_)
        return;
    std::erase(reload_awaiting_, p.index());
    maybe_finish_reload();
}

void supervisor::maybe_finish_reload() {
    if (!reload_running_ || !reload_awaiting_.empty())
        return;
    finish_reload(true, reload_summary_);
}

void supervisor::finish_reload(bool ok, const std::string& message) {
    reload_timer_.cancel();
    reload_running_ = false;
    last_reload_ = {ok ? "ok" : "failed", message,
                    std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch())
                        .count()};
    if (ok)
        spdlog::info("reload: {} applied from {}", message, config_.source_name);
    else
        spdlog::warn("reload failed: {}; still running generation {}", message, generation_);
    auto waiters = std::move(reload_waiters_);
    reload_waiters_.clear();
    for (auto& respond : waiters)
        respond({ok, (ok ? "reloaded: " : "reload failed: ") + message + "\n"});
    if (phase_ == phase::running) {
        notifier_.ready(); // leaves systemd's "reloading" state, whatever the outcome
        report_to_systemd();
    }
    if (reload_queued_ && phase_ == phase::running) {
        reload_queued_ = false;
        reload_waiters_ = std::move(next_reload_waiters_);
        next_reload_waiters_.clear();
        net::post(ioc_, [this] {
            if (phase_ == phase::running && !reload_running_)
                start_reload();
        });
    }
}

void supervisor::scale_to(unsigned workers) {
    const auto before = static_cast<unsigned>(slots_.size());
    if (workers > before) {
        // reuseport: a socket for each new slot first (a reload bound them already; `sockherd
        // workers N` binds them here). One that cannot bind leaves its slot on hand-offs only.
        for (auto& l : listeners_)
            if (auto err = l->ensure_slots(workers))
                spdlog::error("{}; the new slots take connections from the other sockets only", *err);
        for (unsigned i = before; i < workers; ++i)
            slots_.push_back(std::make_unique<worker_slot>(ioc_, i, config_));
        for (unsigned i = before; i < workers; ++i)
            start_slot(*slots_[i]);
    } else {
        while (slots_.size() > workers) {
            auto& slot = *slots_.back();
            slot.cancel_restart();
            const std::string why = "slot removed (scaled down to " + std::to_string(workers) + " workers)";
            if (auto* p = slot.successor())
                retire(*p, why);
            if (auto* p = slot.process())
                retire(*p, why);
            restarts_of_removed_slots_ += slot.restarts();
            slots_.pop_back();
        }
    }
    config_.server.workers = workers;
    update_reuseport_cover();
    spdlog::info("workers: {} -> {}", before, workers);
    maybe_announce_ready();
    report_to_systemd();
    roll_next(); // a removed slot may have been the one rolling: the next one goes now
}

void supervisor::on_control(const std::vector<std::string>& words, control_server::respond_fn respond) {
    const std::string command = words.empty() ? std::string() : words[0];
    if (command == "status" && words.size() == 1)
        return respond({true, render_status_text(snapshot())});
    if (command == "status" && words.size() == 2 && words[1] == "json")
        return respond({true, render_status_json(snapshot())});
    if (command == "stop" && words.size() == 1) {
        if (phase_ != phase::running)
            return respond({false, "the node is already stopping"});
        spdlog::info("control socket: graceful stop (drain timeout {} ms)", config_.supervisor.drain_timeout.count());
        respond({true, "stopping: draining " + std::to_string(slots_.size()) + " worker(s), drain timeout " +
                           format_duration(config_.supervisor.drain_timeout) + "\n"});
        // After the answer is on its way: with no worker left the stop ends the loop at once.
        net::post(ioc_, [this] {
            if (phase_ == phase::running)
                begin_stop(stop_mode::graceful);
        });
        return;
    }
    if (command == "reload" && words.size() == 1)
        return request_reload(std::move(respond));
    if (command == "workers" && words.size() == 2) {
        unsigned n = 0;
        const auto& arg = words[1];
        const auto [end, ec] = std::from_chars(arg.data(), arg.data() + arg.size(), n);
        if (ec != std::errc() || end != arg.data() + arg.size() || n < 1 || n > max_workers)
            return respond({false, "workers: expected a number from 1 to " + std::to_string(max_workers) +
                                       ", got '" + arg + "'\n"});
        if (phase_ != phase::running)
            return respond({false, "the node is stopping; not scaling\n"});
        const auto before = slots_.size();
        scale_to(n);
        return respond({true, "workers: " + std::to_string(before) + " -> " + std::to_string(n) +
                                  (n > before   ? " (starting " + std::to_string(n - before) + ")"
                                   : n < before ? " (draining " + std::to_string(before - n) + ")"
                                                : " (unchanged)") +
                                  "\n"});
    }
    respond({false, "unknown command '" + (words.empty() ? std::string() : words[0]) +
                        "' (commands: status, status json, stop, reload, workers N)\n"});
}

void supervisor::schedule_health_tick() {
    // Often enough that a silent worker is caught within a fraction of a heartbeat of its deadline.
    const auto every = std::max(milliseconds(50), config_.supervisor.heartbeat_interval / 4);
    health_timer_.expires_after(every);
    health_timer_.async_wait([this](error_code ec) {
        if (ec)
            return;
        health_tick();
        schedule_health_tick();
    });
}

// The watchdog: a worker that has not reported for watchdog_timeout (a loop stuck in a handler,
// SIGSTOP, a deadlock) serves nobody; SIGKILL works on all of those.
void supervisor::health_tick() {
    const auto now = std::chrono::steady_clock::now();
    for (auto& p : procs_) {
        if (!p || !p->alive() || p->kill_sent())
            continue;
        auto limit = config_.supervisor.watchdog_timeout;
        if (!p->heartbeat_at())
            limit = std::max(limit, start_allowance);
        const auto silent = duration_cast<milliseconds>(now - p->last_sign_of_life());
        if (p->heartbeat_at() && !p->stale() && silent > 2 * config_.supervisor.heartbeat_interval) {
            p->set_stale(true);
            spdlog::warn("worker {}: pid {} has not reported for {}; no new connections until it does", p->slot(),
                         p->pid(), format_seconds(silent));
        }
        if (silent < limit)
            continue;
        ++watchdog_kills_;
        spdlog::warn("worker {}: watchdog: no heartbeat from pid {} for {} (watchdog_timeout {}); killing it",
                     p->slot(), p->pid(), format_seconds(silent), format_duration(config_.supervisor.watchdog_timeout));
        p->kill(SIGKILL, "killed by watchdog: no heartbeat for " + format_seconds(silent));
    }
    report_to_systemd();
}

void supervisor::report_to_systemd() {
    if (!notifier_.enabled())
        return;
    unsigned up = 0;
    std::uint64_t connections = 0;
    for (const auto& p : procs_) {
        if (!p || !p->alive())
            continue;
        if (p->state() == process_state::ready && !p->retired())
            ++up;
        connections += p->heartbeat().connections;
    }
    const char* state = phase_ == phase::running ? "" : " (stopping)";
    notifier_.status(fmt::format("{}/{} workers up, {} connections, generation {}{}", up, slots_.size(), connections,
                                 generation_, state));
}

node_snapshot supervisor::snapshot() const {
    const auto now = std::chrono::steady_clock::now();
    node_snapshot s;
    s.version = SOCKHERD_VERSION;
    s.pid = ::getpid();
    s.state = phase_ == phase::running ? "running" : phase_ == phase::draining ? "draining" : "stopping";
    s.started_at_unix = std::chrono::duration_cast<std::chrono::seconds>(started_at_wall_.time_since_epoch()).count();
    s.uptime_seconds = seconds_between(started_at_, now);
    s.generation = generation_;
    s.config_source = config_.source_name;
    s.last_reload = last_reload_;
    s.workers_configured = static_cast<unsigned>(slots_.size());

    auto row_of = [&](const worker_process& p, const std::string& state) {
        worker_row r;
        r.id = p.slot();
        r.pid = p.pid();
        r.state = state;
        r.generation = p.generation();
        r.uptime_seconds = seconds_between(p.started_at(), now);
        if (p.heartbeat_at())
            r.heartbeat_age_seconds = seconds_between(*p.heartbeat_at(), now);
        r.counters = counters_of(p.heartbeat());
        r.relay_drops_total = p.relay_drops();
        return r;
    };
    std::uint64_t restarts = restarts_of_removed_slots_;
    for (const auto& slot : slots_) {
        worker_row r;
        if (const auto* p = slot->process()) {
            std::string state = p->state() == process_state::ready      ? "up"
                                : p->state() == process_state::draining ? "draining"
                                : slot->failing()                       ? "failing"
                                                                        : "starting";
            r = row_of(*p, state);
        } else {
            r.id = slot->id();
            r.state = slot->failing() ? "failing" : slot->restart_pending() ? "starting" : "stopped";
        }
        r.restarts = slot->restarts();
        r.last_exit = slot->last_exit();
        restarts += slot->restarts();
        if (r.state == "up")
            ++s.workers_up;
        s.workers.push_back(std::move(r));
    }
    for (const auto& p : procs_) {
        if (!p || !p->alive() || !p->retired())
            continue;
        auto r = row_of(*p, "draining");
        r.last_exit = p->retired_reason();
        s.workers.push_back(std::move(r));
    }
    for (const auto& l : listeners_)
        s.listeners.push_back({l->config().address, std::string(to_string(l->config().mode)),
                               l->is_open() && phase_ == phase::running, l->accepted_total()});
    s.handoffs_total = handoffs_total_;
    s.relays_total = relays_total_;
    s.worker_restarts_total = restarts;
    s.watchdog_kills_total = watchdog_kills_;
    s.memory_replacements_total = memory_replacements_;
    s.pubsub_channels = interest_.channel_count();
    if (redis_)
        s.redis = redis_->stats();
    return s;
}

listener::handlers supervisor::listener_handlers() {
    return {
        [this] { return has_room(); },
        [this](std::uint16_t id, unique_fd fd, const tcp::endpoint& peer) { dispatch(id, std::move(fd), peer); },
        [this] { flush_handoffs(); },
    };
}

bool supervisor::has_room() {
    if (phase_ != phase::running)
        return false;
    for (auto& p : procs_)
        if (p && !p->retired() && p->eligible())
            return true;
    return false;
}

void supervisor::dispatch(std::uint16_t listener_id, unique_fd fd, const tcp::endpoint& peer) {
    if (!scheduler_.in_batch()) {
        // Once per accept batch (flush_handoffs() ends it): the workers' loads as they stand.
        for (std::size_t i = 0; i < procs_.size(); ++i) {
            const auto& p = procs_[i];
            loads_[i] = {p && !p->retired() && p->eligible(),
                         p ? p->load() + static_cast<std::uint32_t>(pending_[i].connections.size()) : 0};
        }
        scheduler_.begin_batch(loads_);
    }
    const auto choice = scheduler_.next([this](std::size_t i) {
        const auto& p = procs_[i];
        return p && !p->retired() && p->eligible();
    });
    if (!choice) {
        // has_room() said yes a moment ago, so this cannot happen; closing beats leaking.
        spdlog::warn("no worker can take a connection from {}; closing it", peer.address().to_string());
        return;
    }
    auto& batch = pending_[*choice];
    if (!batch.connections.empty() && batch.listener_id != listener_id) {
        procs_[*choice]->hand_off(std::move(batch));
        batch.connections.clear();
    }
    batch.listener_id = listener_id;
    batch.connections.push_back({peer, std::move(fd)});
    ++handoffs_total_;
    if (batch.connections.size() == ipc::max_handoff_batch) {
        procs_[*choice]->hand_off(std::move(batch));
        batch.connections.clear();
    }
}

void supervisor::flush_handoffs() {
    scheduler_.end_batch();
    for (std::size_t i = 0; i < procs_.size(); ++i) {
        if (pending_[i].connections.empty())
            continue;
        if (procs_[i])
            procs_[i]->hand_off(std::move(pending_[i]));
        pending_[i].connections.clear();
    }
}

void supervisor::resume_listeners() {
    if (phase_ != phase::running)
        return;
    for (auto& l : listeners_)
        l->resume();
}

void supervisor::begin_stop(stop_mode mode) {
    notifier_.stopping();
    if (reload_running_ || reload_queued_) {
        // The stop wins: a reload in flight ends here, and nothing queued runs.
        reload_timer_.cancel();
        reload_queued_ = false;
        for (auto& w : next_reload_waiters_)
            reload_waiters_.push_back(std::move(w));
        next_reload_waiters_.clear();
        if (reload_running_)
            finish_reload(false, "the node is stopping");
    }
    if (mode == stop_mode::graceful) {
        phase_ = phase::draining;
        for (auto& l : listeners_)
            l->close();
        for (auto& slot : slots_)
            slot->cancel_restart();
        for (auto& p : procs_)
            if (p && p->alive())
                p->drain(config_.supervisor.drain_timeout, true);
        stop_deadline_.expires_after(config_.supervisor.drain_timeout + drain_grace);
        stop_deadline_.async_wait([this](error_code ec) {
            if (ec)
                return;
            spdlog::warn("workers still running {} s after the drain deadline; killing them",
                         drain_grace.count());
            for (auto& p : procs_)
                if (p)
                    p->kill(SIGKILL, "killed after the drain deadline");
        });
    } else {
        phase_ = phase::stopping_now;
        for (auto& l : listeners_)
            l->close();
        for (auto& slot : slots_)
            slot->cancel_restart();
        for (auto& p : procs_)
            if (p && p->alive())
                p->stop_now();
        stop_deadline_.expires_after(stop_grace);
        stop_deadline_.async_wait([this](error_code ec) {
            if (ec)
                return;
            for (auto& p : procs_)
                if (p)
                    p->kill(SIGKILL, "killed after an immediate stop");
        });
    }
    maybe_finish();
}

void supervisor::maybe_finish() {
    if (phase_ == phase::running || phase_ == phase::done)
        return;
    for (auto& p : procs_)
        if (p && p->alive())
            return;
    phase_ = phase::done;
    stop_deadline_.cancel();
    health_timer_.cancel();
    roll_timer_.cancel();
    signals_.cancel();
    if (admin_)
        admin_->close();
    if (control_)
        control_->close();
    if (redis_)
        redis_->stop();
    spdlog::info("all workers have exited; supervisor exiting");
    ioc_.stop();
}

} // namespace sockherd::supervisor
