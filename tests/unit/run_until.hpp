#pragma once
// Drives an io_context until a condition holds, in short slices, under a deadline: the unit tests'
// way to wait for asynchronous work without a bare sleep.

#include <chrono>

#include "common/net.hpp"

namespace sockherd::test {

// Runs `ioc` in `step` slices until `done()` holds or `limit` passes; returns done().
template <class Done>
bool run_until(net::io_context& ioc, Done done, std::chrono::milliseconds limit = std::chrono::milliseconds(5000),
               std::chrono::milliseconds step = std::chrono::milliseconds(10)) {
    const auto deadline = std::chrono::steady_clock::now() + limit;
    while (!done() && std::chrono::steady_clock::now() < deadline) {
        ioc.restart();
        ioc.run_for(step);
    }
    return done();
}

} // namespace sockherd::test
