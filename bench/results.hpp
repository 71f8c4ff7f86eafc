#pragma once
// What one load generator process measured, how a child sends it to the parent over a pipe, and
// how the parent merges them and prints the one JSON line.

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "bench/histogram.hpp"

namespace sockherd::bench {

struct options;

struct run_result {
    std::uint64_t count = 0;           // completed operations inside the measured window
    double window_s = 0;               // length of the measured window in this process
    double rate = 0;                   // operations per second (merged: sum of the processes' rates)
    std::uint64_t failed_connects = 0; // TCP connects that were refused, reset or timed out
    std::uint64_t connections = 0;     // connections that were open when the window started (echo)
    std::map<std::string, std::uint64_t> errors; // by kind: "handshake", "reset", "close_code", ...
    histogram latency_us;              // one value per completed operation, in microseconds
    double window_start_unix = 0;      // CLOCK_REALTIME when the window opened (merged: the earliest)
    // Counts per time slot of the window, by name (reload: "echo", "connect", "close"); slot i
    // covers [start + i x slot, start + (i + 1) x slot). Merged slot by slot.
    std::map<std::string, std::vector<std::uint64_t>> slots;
    // fanout with several --target: the latency of the deliveries to each target's subscribers
    // (by target index), beside latency_us, which has them all. Merged target by target.
    std::map<unsigned, histogram> target_latency_us;

    void add_error(const std::string& kind, std::uint64_t n = 1) { errors[kind] += n; }
    void add_to_slot(const std::string& name, std::size_t slot, std::uint64_t n = 1);
    std::uint64_t error_total() const;

    // Adds other's counts; the rates add up because the processes measure side by side.
    void merge(const run_result& other);

    // A line-oriented text form for the pipe between a child and the parent; decode(encode(r))
    // gives r back. decode returns nothing for malformed input instead of throwing.
    std::string encode() const;
    static std::optional<run_result> decode(std::string_view text);
};

struct cpu_usage {
    double user_s = 0;
    double sys_s = 0;
};

// The one JSON line the load generator prints: the parameters that produced the numbers, then the
// numbers.
std::string to_json(const options& opt, const run_result& r, const cpu_usage& cpu, double wall_s);

} // namespace sockherd::bench
