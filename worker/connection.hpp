#pragma once
// What a worker can ask of any live client connection (HTTP or WebSocket). Sessions register
// with their worker on start and deregister in their destructor.

#include <chrono>
#include <string_view>

namespace sockherd::worker {

class connection {
public:
    using clock = std::chrono::steady_clock;

    // The worker is draining: take no new request; idle HTTP connections close now, in-flight
    // responses finish with Connection: close; WebSockets close with 1001 by `deadline`.
    virtual void drain(clock::time_point deadline) = 0;

    // The worker is exiting: close the socket now, no handshake. Pending operations complete
    // with an error and the session unwinds.
    virtual void abort() = 0;

    // The configured route path a WebSocket session was opened on ("" for HTTP sessions), so a
    // reload that removes the route can close exactly its sessions.
    virtual std::string_view route_path() const { return {}; }

protected:
    ~connection() = default;
};

} // namespace sockherd::worker
