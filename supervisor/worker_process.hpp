#pragma once
// One worker process as the supervisor sees it: its pid, its channel, its state, its last
// heartbeat. Owned by the supervisor's process table; it fills a slot (worker_slot) or, once
// retired (replaced, or its slot removed), drains on its own until it exits.

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "common/config.hpp"
#include "common/ipc/channel.hpp"
#include "common/net.hpp"
#include "supervisor/worker_identity.hpp"

namespace sockherd::supervisor {

enum class process_state {
    starting, // spawned, config sent, not ready yet
    ready,    // takes connections
    draining, // told to drain; takes no new connections
    exited,   // reaped
};

std::string_view to_string(process_state);

// Why a successor was started to take over a process's slot (see worker_process::replaced_for).
enum class replacement {
    none,
    memory,   // over max_worker_memory
    identity, // a reload changed the user workers run as
};

class worker_process;

// What a process tells its owner. Called from the io_context only.
class process_observer {
public:
    virtual void on_process_ready(worker_process&) = 0;
    virtual void on_process_room(worker_process&) = 0;   // its channel can take hand-offs again
    virtual void on_process_exited(worker_process&) = 0; // reaped; state is exited
    virtual void on_process_heartbeat(worker_process&) = 0;
    virtual void on_process_config_applied(worker_process&) = 0; // acknowledged send_config()
    virtual void on_process_publish(worker_process&, ipc::publish_msg&&) = 0;
    virtual void on_process_interest(worker_process&, ipc::interest_msg&&) = 0;

protected:
    ~process_observer() = default;
};

class worker_process {
public:
    using clock = std::chrono::steady_clock;

    // `index` is the process's place in the supervisor's table (also its key for pub/sub
    // interest); `slot` the worker position it was started for.
    worker_process(net::io_context& ioc, process_observer& owner, std::size_t index, unsigned slot);
    ~worker_process();
    worker_process(const worker_process&) = delete;
    worker_process& operator=(const worker_process&) = delete;

    // Spawns `exe worker --channel-fd N --slot S` as `identity` and sends it `cfg` as `generation`.
    // False (reason logged) when the process could not be started.
    bool spawn(const std::string& exe, const config& cfg, std::uint64_t generation, const worker_identity& identity);

    // A reload: the running worker switches to `cfg` as `generation` and acknowledges it.
    void send_config(const config& cfg, std::uint64_t generation);
    static ipc::config_msg config_message(const config& cfg, std::uint64_t generation);
    std::uint64_t pending_generation() const { return pending_generation_; }

    // The listening sockets of shared and reuseport listeners it accepts on (after each config).
    void send_listen(ipc::listen_msg&& msg);
    // Sends a batch of connections. The caller checked eligible().
    void hand_off(ipc::handoff_msg&& msg);
    // `node_stopping`: see ipc::drain_msg.
    void drain(std::chrono::milliseconds timeout, bool node_stopping);
    // Queues a relay encoded once for several workers. False, and counted as a dropped relay,
    // when the channel is closed or over its limit (a worker that does not keep up loses relays
    // rather than growing the supervisor's memory).
    bool send_relay(std::string_view frame);
    // Queues a message; false if there is no open channel.
    bool send(ipc::message m);
    void stop_now(); // `stop` over the channel
    // Signals the process. A non-empty `reason` prefixes how its exit is described
    // ("killed by watchdog: no heartbeat for 10.0 s; killed by signal 9 (Killed)").
    void kill(int signal, std::string reason = {});

    // Called by the supervisor's SIGCHLD reaper with this process's waitpid() status.
    void on_reaped(int wait_status);

    // Leaves its slot: the owner started a replacement (or removed the slot) and drains this one.
    void retire(std::string reason) { retired_reason_ = std::move(reason); }
    bool retired() const { return retired_reason_.has_value(); }
    const std::string& retired_reason() const { return *retired_reason_; }

    // Ready, channel open and not full.
    bool eligible() const;
    std::uint32_t load() const;

    std::size_t index() const { return index_; }
    unsigned slot() const { return slot_; }
    pid_t pid() const { return pid_; }
    process_state state() const { return state_; }
    bool alive() const { return state_ != process_state::exited && pid_ > 0; }
    std::uint64_t generation() const { return generation_; }
    // Who it runs as (what spawn() was given).
    const worker_identity& identity() const { return identity_; }
    clock::time_point started_at() const { return started_at_; }
    // The last heartbeat and when it came (nullopt before the first one).
    const ipc::heartbeat_msg& heartbeat() const { return heartbeat_; }
    std::optional<clock::time_point> heartbeat_at() const { return heartbeat_at_; }
    // When the watchdog last heard from it: the last heartbeat, else the start.
    clock::time_point last_sign_of_life() const { return heartbeat_at_.value_or(started_at_); }
    bool kill_sent() const { return !kill_reason_.empty(); }
    std::uint64_t relay_drops() const { return relay_drops_; }
    // How it ended ("exited with status 0", "killed by watchdog: …"); empty while alive.
    const std::string& exit_description() const { return exit_description_; }
    bool exited_cleanly() const { return exited_cleanly_; }
    bool memory_warning_logged() const { return memory_warning_logged_; }
    void set_memory_warning_logged() { memory_warning_logged_ = true; }
    // RSS in its first heartbeat: what this worker needed before serving anyone.
    std::uint64_t first_rss() const { return first_rss_; }
    // Late with its heartbeat (more than two intervals): probably stopped or stuck, so it gets no
    // new connections until it reports again. Set by the supervisor's health tick.
    bool stale() const { return stale_; }
    // Set when a successor was started to take over its slot: for what, and the reason it retires
    // with once the successor is ready. Back to none if the successor died first.
    replacement replaced_for() const { return replaced_for_; }
    const std::string& replacement_reason() const { return replacement_reason_; }
    void set_replacement(replacement what, std::string reason) {
        replaced_for_ = what;
        replacement_reason_ = std::move(reason);
    }
    void set_stale(bool s) { stale_ = s; }

private:
    void on_message(ipc::message&& m);
    void on_channel_error(error_code ec, std::string_view what);

    net::io_context& ioc_;
    process_observer& owner_;
    std::size_t index_;
    unsigned slot_;

    std::shared_ptr<ipc::channel> channel_;
    pid_t pid_ = -1;
    process_state state_ = process_state::starting;
    std::uint64_t generation_ = 0;         // the config it runs (acknowledged)
    std::uint64_t pending_generation_ = 0; // the last config sent
    clock::time_point started_at_{};
    ipc::heartbeat_msg heartbeat_;
    std::optional<clock::time_point> heartbeat_at_;
    std::optional<std::string> retired_reason_;
    std::string kill_reason_;
    std::string exit_description_;
    bool exited_cleanly_ = false;
    bool memory_warning_logged_ = false;
    bool stale_ = false;
    replacement replaced_for_ = replacement::none;
    std::string replacement_reason_;
    worker_identity identity_;
    std::uint64_t first_rss_ = 0;

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
