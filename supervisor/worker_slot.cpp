#include "supervisor/worker_slot.hpp"

#include <spdlog/spdlog.h>

namespace sockherd::supervisor {
namespace {

// A worker that stays up this long has shown it can run; its slot's backoff starts over.
constexpr std::chrono::milliseconds healthy_after{10'000};

} // namespace

worker_slot::worker_slot(net::io_context& ioc, unsigned id, const config& cfg)
    : id_(id), backoff_(cfg.supervisor.restart_backoff_min, cfg.supervisor.restart_backoff_max, healthy_after),
      restart_timer_(ioc) {}

void worker_slot::filled_by(worker_process* p) {
    process_ = p;
    if (++starts_ > 1)
        ++restarts_;
}

void worker_slot::schedule_restart(std::chrono::milliseconds uptime, std::function<void()> start) {
    const auto delay = backoff_.next(uptime);
    if (backoff_.consecutive_failures() > 1)
        spdlog::warn("worker {}: restarting in {} ms ({} exits in a row without a healthy stretch)", id_,
                     delay.count(), backoff_.consecutive_failures());
    else
        spdlog::info("worker {}: restarting in {} ms", id_, delay.count());
    restart_pending_ = true;
    restart_timer_.expires_after(delay);
    // An expired timer's handler may already be queued when cancel_restart() or the slot's
    // destruction comes: the token and the flag keep it from acting for a slot that moved on.
    restart_timer_.async_wait([this, alive = std::weak_ptr<char>(alive_), start = std::move(start)](error_code ec) {
        if (ec || alive.expired() || !restart_pending_)
            return;
        restart_pending_ = false;
        start();
    });
}

void worker_slot::cancel_restart() {
    restart_pending_ = false;
    restart_timer_.cancel();
}

} // namespace sockherd::supervisor
