#pragma once
// A scenario is one kind of load (connect churn, echo, fan-out, reload, idle memory, …). One
// instance lives in each load generator process and runs on that process's io_context. Adding a
// scenario = one .cpp with a make_… function and one line in scenarios() (scenario.cpp).

#include <chrono>
#include <functional>
#include <memory>
#include <span>
#include <string_view>

#include "bench/load_context.hpp"

namespace sockherd::bench {

class scenario {
public:
    virtual ~scenario() = default;

    // Opens what must exist before the window (echo: every connection), then calls ready once,
    // on the io_context. Every step must be bounded by the options' timeouts.
    virtual void prepare(std::function<void()> ready) = 0;
    // The window has just been opened (load_context::open_window): start the load.
    virtual void start() = 0;
    // The window has ended: start nothing new, finish or close what is open within
    // options::drain_timeout, and leave no work on the io_context.
    virtual void stop() = 0;
    // Last resort after stop() overran: close every socket now, so pending operations complete
    // with operation_aborted.
    virtual void abort() = 0;
};

struct scenario_info {
    std::string_view name;
    std::string_view summary;
    std::unique_ptr<scenario> (*make)(load_context&);
};

std::span<const scenario_info> scenarios();
const scenario_info* find_scenario(std::string_view name);

std::unique_ptr<scenario> make_connect_scenario(load_context& ctx);
std::unique_ptr<scenario> make_echo_scenario(load_context& ctx);
std::unique_ptr<scenario> make_fanout_scenario(load_context& ctx);
std::unique_ptr<scenario> make_reload_scenario(load_context& ctx);
std::unique_ptr<scenario> make_idle_scenario(load_context& ctx);

// fan-out settings that have no field in options (set by main before any process is forked).
struct fanout_settings {
    double rate = 0;    // messages/s from the publisher; 0 = closed loop with --inflight outstanding
    double grace_s = 2; // after the last send: how long subscribers keep reading before closing
};
fanout_settings& fanout_config();

// The fan-out scenario passes its extra counters through run_result::errors (so they are merged
// across --procs like any count) under this prefix; main moves them into their own JSON fields.
inline constexpr std::string_view fanout_counter_prefix = "fanout.";

// reload settings that have no field in options.
struct reload_settings {
    double connect_rate = 0; // fresh sessions/s over all --concurrency loops; 0 = as fast as they go
};
reload_settings& reload_config();

// The reload scenario's counters travel the same way, under this prefix; its time slots are
// run_result::slots "echo", "connect" and "close", each reload_slot long.
inline constexpr std::string_view reload_counter_prefix = "reload.";
inline constexpr std::chrono::milliseconds reload_slot{100};

// The idle scenario's counters travel the same way, under this prefix.
inline constexpr std::string_view idle_counter_prefix = "idle.";

} // namespace sockherd::bench
