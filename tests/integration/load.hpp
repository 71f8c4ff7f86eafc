#pragma once
// Load for integration tests that change a running node (reload, scaling, a new worker user):
// a prober that keeps opening fresh connections and counts what went wrong.

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <string>
#include <thread>

#include "tests/integration/harness.hpp"

namespace sockherd::test {

// Opens fresh connections to 127.0.0.1:port from its own thread, in a bounded loop, until stopped:
// GET /healthz (must be 200) and WebSocket connect + echo + close on /echo, alternately (or only
// one of them). Refusals are counted apart from other failures (resets, timeouts, wrong answers).
class prober {
public:
    enum class mode { http, websocket, both };

    explicit prober(std::uint16_t port, mode m = mode::both);
    ~prober() { stop(); }
    prober(const prober&) = delete;
    prober& operator=(const prober&) = delete;

    void stop();
    std::size_t attempts() const { return attempts_; }
    std::size_t succeeded() const { return ok_; }
    const failure_log& refused() const { return refused_; }
    const failure_log& failed() const { return failed_; }
    std::string summary() const;

private:
    void loop();
    bool try_http(std::size_t i);
    bool try_websocket(std::size_t i);

    std::uint16_t port_;
    mode mode_;
    std::atomic<bool> stop_{false};
    std::atomic<std::size_t> attempts_{0};
    std::atomic<std::size_t> ok_{0};
    failure_log refused_;
    failure_log failed_;
    std::thread thread_;
};

} // namespace sockherd::test
