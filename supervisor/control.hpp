#pragma once
// The control socket: a Unix stream socket (mode 0600) on which the supervisor takes one-line
// commands from `sockherd status|stop|reload|workers N`, and the client side those commands use.
//
// Protocol (one exchange per connection): the client writes one line, words separated by single
// spaces, ending in '\n' (at most 1 KiB); the server answers "ok\n" or "error\n", then a UTF-8
// body, then closes. Commands: "status", "status json", "stop", "reload", "workers N".

#include <chrono>
#include <functional>
#include <iosfwd>
#include <memory>
#include <string>
#include <vector>

#include "common/net.hpp"

namespace sockherd::supervisor {

struct control_reply {
    bool ok = false;
    std::string body;
};

class control_server {
public:
    using respond_fn = std::function<void(control_reply)>;
    // Gets the command's words; answers through `respond` (now or later, exactly once).
    using handler_fn = std::function<void(const std::vector<std::string>& words, respond_fn respond)>;

    // Creates the socket at `path` (mode 0600). A stale socket file (nobody accepting on it) is
    // replaced; a live one (another supervisor) is an error. Throws std::system_error naming
    // the path when the socket cannot be created.
    control_server(net::io_context& ioc, std::string path, handler_fn handler);
    ~control_server(); // close()
    control_server(const control_server&) = delete;
    control_server& operator=(const control_server&) = delete;

    void start();
    // Stops accepting and removes the socket file (only if it is still ours).
    void close();
    const std::string& path() const;

private:
    struct impl;
    std::shared_ptr<impl> impl_;
};

// The client: sends `words` to the supervisor at `socket_path`, prints the body to `out` (ok) or
// `err` (error, or a clear message when no supervisor is running there), and returns the exit
// code: 0 ok, 1 the command failed, 2 no supervisor reachable.
int run_control_command(const std::string& socket_path, const std::vector<std::string>& words, std::ostream& out,
                        std::ostream& err, std::chrono::milliseconds timeout = std::chrono::seconds(60));

} // namespace sockherd::supervisor
