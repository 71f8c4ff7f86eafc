#pragma once
// One worker position (0..N-1): the process that currently fills it, its restart history and
// backoff. Owned by the supervisor; a slot outlives the processes that fill it one after another.

#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "common/config.hpp"
#include "common/net.hpp"
#include "supervisor/backoff.hpp"

namespace sockherd::supervisor {

class worker_process;

class worker_slot {
public:
    // Exits in a row without a healthy stretch after which the slot is reported as failing.
    static constexpr unsigned failing_after = 3;

    worker_slot(net::io_context& ioc, unsigned id, const config& cfg);
    worker_slot(const worker_slot&) = delete;
    worker_slot& operator=(const worker_slot&) = delete;

    unsigned id() const { return id_; }

    // The process filling the slot (owned by the supervisor's process table), or null.
    worker_process* process() const { return process_; }
    // Records a new process in the slot; every one after the first counts as a restart.
    void filled_by(worker_process* p);
    void vacate() { process_ = nullptr; }
    // A process started to take over from process() (memory replacement); it fills the slot once
    // it is ready, and only then does the old one drain.
    worker_process* successor() const { return successor_; }
    void set_successor(worker_process* p) { successor_ = p; }

    // After its process exited having been seen alive for `uptime`: starts the restart timer per
    // the backoff; `start` runs when it fires (never after the slot is gone or the restart was
    // cancelled, even if the timer had already expired).
    void schedule_restart(std::chrono::milliseconds uptime, std::function<void()> start);
    // The slot's process has been up for `uptime`; a long enough stretch resets the backoff.
    void note_running(std::chrono::milliseconds uptime) { backoff_.note_running(uptime); }
    void cancel_restart();
    bool restart_pending() const { return restart_pending_; }

    unsigned restarts() const { return restarts_; }
    const std::string& last_exit() const { return last_exit_; }
    void set_last_exit(std::string what) { last_exit_ = std::move(what); }
    // Keeps crashing: its last failing_after processes died without a healthy stretch.
    bool failing() const { return backoff_.consecutive_failures() >= failing_after; }

    // When a process of this slot was last replaced for its memory (rate-limits replacements, so
    // a limit below what a fresh worker needs cannot turn into a restart loop).
    std::optional<std::chrono::steady_clock::time_point> last_memory_replacement;

private:
    unsigned id_;
    restart_backoff backoff_;
    net::steady_timer restart_timer_;
    bool restart_pending_ = false;
    worker_process* process_ = nullptr;
    worker_process* successor_ = nullptr;
    std::shared_ptr<char> alive_ = std::make_shared<char>(); // restart callbacks check it
    unsigned starts_ = 0;
    unsigned restarts_ = 0;
    std::string last_exit_;
};

} // namespace sockherd::supervisor
