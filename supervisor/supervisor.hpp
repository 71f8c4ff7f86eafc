#pragma once
// The supervisor process: owns the listeners, the worker slots and the worker processes; hands
// accepted connections to workers, restarts workers that die or hang, replaces workers that
// grow too large or (after a reload) run as another user than [server] user, reports the node's
// health (admin listener, control socket, systemd) and stops the node on signals. It never
// serves an application request itself.

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/config.hpp"
#include "common/net.hpp"
#include "common/unique_fd.hpp"
#include "supervisor/admin_server.hpp"
#include "supervisor/control.hpp"
#include "supervisor/interest.hpp"
#include "supervisor/listener.hpp"
#include "supervisor/redis_bridge.hpp"
#include "supervisor/notify.hpp"
#include "supervisor/scheduler.hpp"
#include "supervisor/status.hpp"
#include "supervisor/worker_identity.hpp"
#include "supervisor/worker_process.hpp"
#include "supervisor/worker_slot.hpp"

namespace sockherd::supervisor {

class supervisor final : public process_observer {
public:
    // Resolves the workers' user (throws std::runtime_error with the config error when [server]
    // user cannot be used), then binds every listener and the admin listener (throws
    // std::system_error naming the address when one cannot bind).
    supervisor(net::io_context& ioc, config cfg);
    ~supervisor();

    // Spawns the workers and runs until the node has stopped. Returns the process exit code.
    int run();

    const config& current_config() const { return config_; }
    const std::vector<std::unique_ptr<listener>>& listeners() const { return listeners_; }
    node_snapshot snapshot() const;

private:
    enum class phase { running, draining, stopping_now, done };
    enum class stop_mode { graceful, immediate };

    // process_observer
    void on_process_ready(worker_process&) override;
    void on_process_room(worker_process&) override;
    void on_process_exited(worker_process&) override;
    void on_process_heartbeat(worker_process&) override;
    void on_process_config_applied(worker_process&) override;
    void on_process_publish(worker_process&, ipc::publish_msg&&) override;
    void on_process_interest(worker_process&, ipc::interest_msg&&) override;

    // [redis]: the bridge to other nodes. A message from Redis goes to the local workers with
    // interest, encoded once; interest changes become SUBSCRIBE/UNSUBSCRIBE.
    std::unique_ptr<redis_bridge> make_redis_bridge(const config& cfg, std::optional<node_id> id = std::nullopt);
    void relay_from_redis(shared_message msg);
    // A reload changed [redis]: a new bridge (same node id, same wanted channels) replaces it.
    void apply_redis_config(const config& next);
    void apply_scheduling(); // [server] supervisor_scheduling for the event loop

    void start_slot(worker_slot& slot);
    void send_listen(worker_process& p);
    void update_reuseport_cover();
    // A new process for `slot_id` in a free entry of the process table; null if it cannot start.
    worker_process* spawn_process(unsigned slot_id);
    // Starts a successor for `slot`, whose process `p` retires with `reason` once the successor is
    // ready (on_process_ready). False when none could be spawned.
    bool start_successor(worker_slot& slot, worker_process& p, replacement what, std::string reason);
    void check_memory(worker_process& p);
    // Replaces, one slot at a time and successor first, the workers that run as another user than
    // identity_ (a reload changed it).
    void roll_next();
    // Schedules roll_next() after the roll's backoff (a successor ran for `uptime`, then died).
    void retry_roll(std::chrono::milliseconds uptime);
    unsigned workers_to_roll() const;
    void maybe_announce_ready();
    // Takes the process out of its slot and drains it; the slot is free for a successor.
    void retire(worker_process& p, std::string reason);
    void scale_to(unsigned workers);
    worker_slot* slot_of(const worker_process& p) const;

    void wait_signals();
    void on_signal(int signo);
    void reap_children();
    void begin_stop(stop_mode mode);
    void maybe_finish();

    // Reload (SIGHUP, `sockherd reload`). One runs at a time; requests that arrive meanwhile
    // coalesce into one more reload after it. `respond` (may be null) gets the outcome.
    void request_reload(control_server::respond_fn respond);
    void start_reload();
    // Reads, validates and binds everything new, then commits; an error string leaves the old
    // configuration running untouched.
    std::optional<std::string> prepare_and_commit_reload(std::string& summary);
    void maybe_finish_reload();
    void finish_reload(bool ok, const std::string& message);

    std::unique_ptr<control_server> make_control_server(const std::string& path);
    void start_control_socket();
    void on_control(const std::vector<std::string>& words, control_server::respond_fn respond);
    void schedule_health_tick();
    void health_tick();
    void report_to_systemd();

    // What every listener's accept loops call: room, one connection, the end of a batch.
    listener::handlers listener_handlers();
    bool has_room();
    void dispatch(std::uint16_t listener_id, unique_fd fd, const tcp::endpoint& peer);
    void flush_handoffs();
    void resume_listeners();

    net::io_context& ioc_;
    config config_;
    uid_t euid_;
    worker_identity identity_; // what new workers run as
    // The supervisor's own executable, open for its whole life: workers are exec'd through it.
    unique_fd exe_;
    std::string worker_exe_; // "/proc/self/fd/N" for exe_
    std::uint64_t generation_ = 1;
    phase phase_ = phase::running;
    int exit_code_ = 0;
    std::chrono::steady_clock::time_point started_at_;
    std::chrono::system_clock::time_point started_at_wall_;
    reload_result last_reload_;

    std::vector<std::unique_ptr<listener>> listeners_;
    std::vector<std::unique_ptr<worker_slot>> slots_;
    // The process table: index = worker_process::index(); null entries are free.
    std::vector<std::unique_ptr<worker_process>> procs_;
    // Per process: the hand-off being batched during the current accept batch.
    std::vector<ipc::handoff_msg> pending_;
    std::vector<worker_load> loads_;
    scheduler scheduler_;
    interest_registry interest_; // keyed by process index
    std::string relay_frame_;    // reused encode buffer for relays

    std::unique_ptr<admin_server> admin_;
    std::unique_ptr<redis_bridge> redis_; // null: [redis] off
    // The counters of the bridge a [redis] reload replaced (or switched off): a new bridge
    // continues them, so sockherd_redis_*_total never go backwards.
    std::optional<redis_bridge::stats_snapshot> redis_retired_;
    std::unique_ptr<control_server> control_;
    systemd_notifier notifier_;
    bool announced_ready_ = false;

    bool reload_running_ = false;
    bool reload_queued_ = false;
    std::vector<control_server::respond_fn> reload_waiters_;      // of the running reload
    std::vector<control_server::respond_fn> next_reload_waiters_; // of the queued one
    std::vector<std::size_t> reload_awaiting_;                    // process indexes yet to confirm
    std::string reload_summary_;
    net::steady_timer reload_timer_;

    net::signal_set signals_;
    net::steady_timer stop_deadline_;
    net::steady_timer health_timer_;
    bool rolling_ = false; // roll_next() has workers left to replace
    bool scheduling_told_ = false; // logged that supervisor_scheduling cannot apply (once)
    restart_backoff roll_backoff_;
    net::steady_timer roll_timer_; // retries a roll after a successor died before it was ready
    bool roll_retry_pending_ = false;
    std::uint64_t roll_retry_seq_ = 0; // the current retry wait; earlier ones are stale
    std::uint64_t handoffs_total_ = 0;
    std::uint64_t relays_total_ = 0;
    std::uint64_t watchdog_kills_ = 0;
    std::uint64_t memory_replacements_ = 0;
    std::uint64_t restarts_of_removed_slots_ = 0;
};

} // namespace sockherd::supervisor
