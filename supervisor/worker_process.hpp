#pragma once
// One worker position (0..N-1) in the supervisor: the worker process that currently fills it,
// its channel, its state and its restart history. Owned by the supervisor; a slot outlives the
// processes that fill it one after another.

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

#include "common/config.hpp"
#include "common/ipc/channel.hpp"
#include "common/net.hpp"
#include "supervisor/backoff.hpp"

namespace sockherd::supervisor {

enum class slot_state {
    stopped,  // no process; waiting for its restart timer, or not wanted
    starting, // spawned, config sent, not ready yet
    ready,    // takes connections
    draining, // told to drain; takes no new connections
};

std::string_view to_string(slot_state);

// What a slot tells its owner. Called from the io_context only.
class slot_observer {
public:
    virtual void on_slot_ready(class worker_slot&) = 0;
    virtual void on_slot_room(class worker_slot&) = 0;       // its channel can take hand-offs again
    virtual void on_slot_exited(class worker_slot&) = 0;     // process reaped; state is stopped
    virtual void on_slot_load_changed(class worker_slot&) = 0;
    virtual void on_slot_publish(class worker_slot&, ipc::publish_msg&&) = 0;
    virtual void on_slot_interest(class worker_slot&, ipc::interest_msg&&) = 0;

protected:
    ~slot_observer() = default;
};

class worker_slot {
public:
    using clock = std::chrono::steady_clock;

    worker_slot(net::io_context& ioc, slot_observer& owner, unsigned id, const config& cfg);
    ~worker_slot();
    worker_slot(const worker_slot&) = delete;
    worker_slot& operator=(const worker_slot&) = delete;

    // Spawns a worker process (`exe worker --channel-fd N --slot ID`) and sends it `cfg` as
    // generation `generation`. On failure the slot stays stopped and the reason is logged.
    bool spawn(const std::string& exe, const config& cfg, std::uint64_t generation);

    // Starts the restart timer per the backoff; `start` is called when it fires.
    void schedule_restart(std::function<void()> start);
    void cancel_restart();

    // Sends a batch of connections. The caller checked eligible().
    void hand_off(ipc::handoff_msg&& msg);

    void drain(std::chrono::milliseconds timeout);
    // Queues a relay encoded once for several workers. False, and counted as a dropped relay,
    // when the slot has no open channel or its channel is over its limit (a worker that does not
    // keep up loses relays rather than growing the supervisor's memory).
    bool send_relay(std::string_view frame);
    std::uint64_t relay_drops() const { return relay_drops_; }
    // Queues a message; false if there is no open channel.
    bool send(ipc::message m);
    void stop_now();          // `stop` over the channel
    void kill(int signal);    // to the process, if there is one

    // Called by the supervisor's SIGCHLD reaper with this slot's waitpid() status.
    void on_reaped(int wait_status);

    // Ready, channel open and not full.
    bool eligible() const;
    std::uint32_t load() const;

    unsigned id() const { return id_; }
    pid_t pid() const { return pid_; }
    slot_state state() const { return state_; }
    bool has_process() const { return pid_ > 0; }
    unsigned restarts() const { return restarts_; }
    const std::string& last_exit() const { return last_exit_; }
    std::uint64_t generation() const { return generation_; }
    bool restart_pending() const { return restart_pending_; }

private:
    void on_message(ipc::message&& m);
    void on_channel_error(error_code ec, std::string_view what);

    net::io_context& ioc_;
    slot_observer& owner_;
    unsigned id_;
    restart_backoff backoff_;
    net::steady_timer restart_timer_;
    bool restart_pending_ = false;

    std::shared_ptr<ipc::channel> channel_;
    pid_t pid_ = -1;
    slot_state state_ = slot_state::stopped;
    std::uint64_t generation_ = 0;
    clock::time_point started_at_{};
    unsigned spawns_ = 0;
    unsigned restarts_ = 0;
    std::string last_exit_;

    // least-conn bookkeeping: what the worker last reported plus what is still in flight.
    std::uint32_t reported_connections_ = 0;
    std::uint64_t handoffs_sent_ = 0;
    std::uint64_t handoffs_acked_ = 0;
    std::uint64_t relay_drops_ = 0;
};

// "exited with status 1", "killed by signal 9 (Killed)", "killed by signal 11 (Segmentation
// fault), core dumped".
std::string describe_wait_status(int wait_status);

} // namespace sockherd::supervisor
