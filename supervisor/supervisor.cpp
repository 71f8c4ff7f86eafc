#include "supervisor/supervisor.hpp"

#include <signal.h>
#include <sys/wait.h>

#include <spdlog/spdlog.h>

namespace sockherd::supervisor {
namespace {

// After the drain deadline, how long workers get to close before they are killed.
constexpr std::chrono::seconds drain_grace{5};
// After an immediate stop request, how long workers get before they are killed.
constexpr std::chrono::seconds stop_grace{2};

} // namespace

supervisor::supervisor(net::io_context& ioc, config cfg, std::string worker_exe)
    : ioc_(ioc), config_(std::move(cfg)), worker_exe_(std::move(worker_exe)),
      scheduler_(config_.scheduler.policy), signals_(ioc), stop_deadline_(ioc) {
    // Every listener is bound before any worker exists, so a bad address fails the start at once.
    for (std::size_t i = 0; i < config_.listeners.size(); ++i) {
        auto l = std::make_unique<listener>(ioc_, static_cast<std::uint16_t>(i), config_.listeners[i]);
        spdlog::info("listening on {} ({})", l->config().address, to_string(l->config().mode));
        listeners_.push_back(std::move(l));
    }
    for (unsigned i = 0; i < config_.server.workers; ++i)
        slots_.push_back(std::make_unique<worker_slot>(ioc_, *this, i, config_));
    pending_ = std::vector<ipc::handoff_msg>(slots_.size());
    loads_.resize(slots_.size());
}

supervisor::~supervisor() = default;

int supervisor::run() {
    for (int s : {SIGINT, SIGTERM, SIGQUIT, SIGHUP, SIGCHLD, SIGUSR1})
        signals_.add(s);
    wait_signals();

    for (auto& l : listeners_) {
        l->start({
            [this] { return has_room(); },
            [this](std::uint16_t id, unique_fd fd, const tcp::endpoint& peer) { dispatch(id, std::move(fd), peer); },
            [this] { flush_handoffs(); },
        });
    }
    spdlog::info("sockherd {} starting {} worker(s), generation {}, config {}", SOCKHERD_VERSION,
                 slots_.size(), generation_, config_.source_name);
    for (auto& slot : slots_)
        start_slot(*slot);

    ioc_.run();
    return exit_code_;
}

void supervisor::start_slot(worker_slot& slot) {
    if (phase_ != phase::running)
        return;
    if (!slot.spawn(worker_exe_, config_, generation_))
        slot.schedule_restart([this, &slot] { start_slot(slot); });
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
        spdlog::warn("SIGHUP: configuration reload is not available in this version; "
                     "still running generation {} from {}", generation_, config_.source_name);
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
        for (auto& slot : slots_) {
            if (slot->pid() == pid) {
                slot->on_reaped(status);
                break;
            }
        }
    }
}

void supervisor::on_slot_ready(worker_slot&) {
    if (phase_ != phase::running)
        return;
    resume_listeners();
}

void supervisor::on_slot_room(worker_slot&) { resume_listeners(); }

void supervisor::on_slot_load_changed(worker_slot&) {}

// A message published on one worker goes, encoded once, to every other worker with interest.
// The relay keeps the order in which this slot's channel delivered its publishes.
void supervisor::on_slot_publish(worker_slot& from, ipc::publish_msg&& p) {
    const auto& targets = interest_.slots_for(p.message->channel);
    const bool include_origin = p.flags & ipc::publish_msg::include_origin;
    std::uint32_t relayed = 0;
    if (!(targets.empty() || (!include_origin && targets.size() == 1 && targets[0] == from.id()))) {
        relay_frame_.clear();
        ipc::encode(ipc::relay_msg{std::move(p.message)}, relay_frame_);
        for (const auto id : targets) {
            if ((id == from.id() && !include_origin) || id >= slots_.size())
                continue;
            if (slots_[id]->send_relay(relay_frame_))
                ++relayed;
        }
        relays_total_ += relayed;
    }
    if (p.request_id != 0)
        from.send(ipc::publish_ack_msg{p.request_id, relayed});
}

void supervisor::on_slot_interest(worker_slot& from, ipc::interest_msg&& m) {
    const auto id = static_cast<interest_registry::slot_id>(from.id());
    for (const auto& c : m.added)
        interest_.add(id, c);
    for (const auto& c : m.removed)
        interest_.remove(id, c);
    from.send(ipc::interest_ack_msg{m.seq});
}

void supervisor::on_slot_exited(worker_slot& slot) {
    // Its subscribers are gone with it; a replacement starts clean.
    interest_.forget(static_cast<interest_registry::slot_id>(slot.id()));
    if (phase_ != phase::running) {
        maybe_finish();
        return;
    }
    slot.schedule_restart([this, &slot] { start_slot(slot); });
}

bool supervisor::has_room() {
    if (phase_ != phase::running)
        return false;
    for (auto& slot : slots_)
        if (slot->eligible())
            return true;
    return false;
}

void supervisor::dispatch(std::uint16_t listener_id, unique_fd fd, const tcp::endpoint& peer) {
    for (std::size_t i = 0; i < slots_.size(); ++i) {
        // A batch in progress counts toward the load it will add.
        loads_[i] = {slots_[i]->eligible(),
                     slots_[i]->load() + static_cast<std::uint32_t>(pending_[i].connections.size())};
    }
    const auto choice = scheduler_.pick(loads_);
    if (!choice) {
        // has_room() said yes a moment ago, so this cannot happen; closing beats leaking.
        spdlog::warn("no worker can take a connection from {}; closing it", peer.address().to_string());
        return;
    }
    auto& batch = pending_[*choice];
    if (!batch.connections.empty() && batch.listener_id != listener_id) {
        slots_[*choice]->hand_off(std::move(batch));
        batch.connections.clear();
    }
    batch.listener_id = listener_id;
    batch.connections.push_back({peer, std::move(fd)});
    ++handoffs_total_;
    if (batch.connections.size() == ipc::max_handoff_batch) {
        slots_[*choice]->hand_off(std::move(batch));
        batch.connections.clear();
    }
}

void supervisor::flush_handoffs() {
    for (std::size_t i = 0; i < slots_.size(); ++i) {
        if (pending_[i].connections.empty())
            continue;
        slots_[i]->hand_off(std::move(pending_[i]));
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
    if (mode == stop_mode::graceful) {
        phase_ = phase::draining;
        for (auto& l : listeners_)
            l->close();
        for (auto& slot : slots_) {
            slot->cancel_restart();
            slot->drain(config_.supervisor.drain_timeout);
        }
        stop_deadline_.expires_after(config_.supervisor.drain_timeout + drain_grace);
        stop_deadline_.async_wait([this](error_code ec) {
            if (ec)
                return;
            spdlog::warn("workers still running {} s after the drain deadline; killing them",
                         drain_grace.count());
            for (auto& slot : slots_)
                slot->kill(SIGKILL);
        });
    } else {
        phase_ = phase::stopping_now;
        for (auto& l : listeners_)
            l->close();
        for (auto& slot : slots_) {
            slot->cancel_restart();
            slot->stop_now();
        }
        stop_deadline_.expires_after(stop_grace);
        stop_deadline_.async_wait([this](error_code ec) {
            if (ec)
                return;
            for (auto& slot : slots_)
                slot->kill(SIGKILL);
        });
    }
    maybe_finish();
}

void supervisor::maybe_finish() {
    if (phase_ == phase::running || phase_ == phase::done)
        return;
    for (auto& slot : slots_)
        if (slot->has_process())
            return;
    phase_ = phase::done;
    stop_deadline_.cancel();
    signals_.cancel();
    spdlog::info("all workers have exited; supervisor exiting");
    ioc_.stop();
}

} // namespace sockherd::supervisor
