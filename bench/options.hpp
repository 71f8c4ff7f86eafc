#pragma once
// The load generator's command line, parsed once in main and read by every scenario.

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "bench/net.hpp"

namespace sockherd::bench {

struct options {
    std::string scenario;            // connect | echo | fanout | reload | idle
    std::string target_text;         // "127.0.0.1:8080" as given (the first --target)
    tcp::endpoint target;            // parsed from target_text
    std::string host_header;         // Host: sent in the handshake (defaults to target_text)
    // Every --target in the order given; [0] is target_text. Only fanout takes more than one: its
    // subscribers alternate over them and the publisher uses the first.
    std::vector<std::string> target_texts;
    std::vector<tcp::endpoint> targets;
    std::vector<std::string> host_headers; // per target: --host, or that target as given
    std::string path = "/echo";      // WebSocket path
    double duration_s = 10;          // the measured window
    unsigned concurrency = 50;       // connect: loops opening and closing sessions
    unsigned connections = 100;      // echo: open WebSocket connections
    unsigned inflight = 1;           // echo: messages in flight per connection
    std::size_t size = 32;           // echo: payload bytes
    unsigned procs = 1;              // processes, each with one single-threaded io_context
    unsigned sources = 1;            // bind to 127.0.0.1 .. 127.0.0.K round-robin; 0 = kernel's choice
    double connect_timeout_s = 10;   // per TCP connect and per WebSocket handshake or close
    double setup_timeout_s = 60;     // echo: opening every connection before the window starts
    double drain_timeout_s = 5;      // after the window: waiting for outstanding replies and closes
    std::string ready_file;          // written (by the first process) when the measured window opens

    std::chrono::steady_clock::duration duration() const { return seconds(duration_s); }
    std::chrono::steady_clock::duration connect_timeout() const { return seconds(connect_timeout_s); }
    std::chrono::steady_clock::duration setup_timeout() const { return seconds(setup_timeout_s); }
    std::chrono::steady_clock::duration drain_timeout() const { return seconds(drain_timeout_s); }

    static std::chrono::steady_clock::duration seconds(double s) {
        return std::chrono::duration_cast<std::chrono::steady_clock::duration>(std::chrono::duration<double>(s));
    }
};

// The part of the work one of the --procs processes does: its index and its share of the loops.
struct shard {
    unsigned index = 0;
    unsigned count = 1;
    unsigned concurrency = 0; // connect loops in this process
    unsigned connections = 0; // echo connections in this process
    unsigned first_connection = 0; // index of this process's first connection among all processes'
};

} // namespace sockherd::bench
