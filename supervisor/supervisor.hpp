#pragma once
// The supervisor process: owns the listeners and the worker slots, hands accepted connections
// to workers, restarts workers that die, and stops the node on signals. It never serves a
// request itself.

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/config.hpp"
#include "common/net.hpp"
#include "supervisor/interest.hpp"
#include "supervisor/listener.hpp"
#include "supervisor/scheduler.hpp"
#include "supervisor/worker_slot.hpp"

namespace sockherd::supervisor {

class supervisor final : public slot_observer {
public:
    // Binds every listener (throws std::system_error naming the address when one cannot bind).
    supervisor(net::io_context& ioc, config cfg, std::string worker_exe);
    ~supervisor();

    // Spawns the workers and runs until the node has stopped. Returns the process exit code.
    int run();

    const config& current_config() const { return config_; }
    const std::vector<std::unique_ptr<listener>>& listeners() const { return listeners_; }

private:
    enum class phase { running, draining, stopping_now, done };
    enum class stop_mode { graceful, immediate };

    // slot_observer
    void on_slot_ready(worker_slot&) override;
    void on_slot_room(worker_slot&) override;
    void on_slot_exited(worker_slot&) override;
    void on_slot_load_changed(worker_slot&) override;
    void on_slot_publish(worker_slot&, ipc::publish_msg&&) override;
    void on_slot_interest(worker_slot&, ipc::interest_msg&&) override;

    void start_slot(worker_slot& slot);
    void wait_signals();
    void on_signal(int signo);
    void reap_children();
    void begin_stop(stop_mode mode);
    void maybe_finish();

    bool has_room();
    void dispatch(std::uint16_t listener_id, unique_fd fd, const tcp::endpoint& peer);
    void flush_handoffs();
    void resume_listeners();

    net::io_context& ioc_;
    config config_;
    std::string worker_exe_;
    std::uint64_t generation_ = 1;
    phase phase_ = phase::running;
    int exit_code_ = 0;

    std::vector<std::unique_ptr<listener>> listeners_;
    std::vector<std::unique_ptr<worker_slot>> slots_;
    // Per slot: the hand-off being batched during the current accept batch.
    std::vector<ipc::handoff_msg> pending_;
    std::vector<worker_load> loads_;
    scheduler scheduler_;
    interest_registry interest_;
    std::string relay_frame_; // reused encode buffer for relays
    std::uint64_t relays_total_ = 0;

    net::signal_set signals_;
    net::steady_timer stop_deadline_;
    std::uint64_t handoffs_total_ = 0;
};

} // namespace sockherd::supervisor
