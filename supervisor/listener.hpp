#pragma once
// One listening socket bound by the supervisor. It accepts in batches while its owner has room
// for more connections and pauses (leaving the rest in the kernel's backlog) when it has none.

#include <cstdint>
#include <functional>

#include "common/config.hpp"
#include "common/net.hpp"
#include "common/unique_fd.hpp"

namespace sockherd::supervisor {

class listener {
public:
    struct handlers {
        std::function<bool()> has_room;  // false: stop accepting until resume()
        std::function<void(std::uint16_t listener_id, unique_fd fd, const tcp::endpoint& peer)> on_connection;
        std::function<void()> on_batch_end; // after each batch of accepts (to flush hand-offs)
    };

    // Binds and listens; throws std::system_error naming the address when that fails.
    listener(net::io_context& ioc, std::uint16_t id, const listener_config& cfg);

    void start(handlers h);
    // Accept again after a pause; a no-op when already waiting.
    void resume();
    // Stops accepting and closes the socket (connections still in its backlog are reset).
    void close();

    std::uint16_t id() const { return id_; }
    // A reload kept this socket but its place in the new config's listener list moved.
    void set_id(std::uint16_t id) { id_ = id; }
    const listener_config& config() const { return config_; }
    tcp::endpoint local_endpoint() const;
    std::uint64_t accepted_total() const { return accepted_total_; }
    std::uint64_t accept_errors() const { return accept_errors_; }
    bool is_open() const { return open_; }

private:
    void do_wait();
    void on_readable();

    std::uint16_t id_;
    listener_config config_;
    tcp::acceptor acceptor_;
    net::steady_timer retry_timer_;
    handlers handlers_;
    bool waiting_ = false;
    bool retry_posted_ = false;
    bool open_ = true;
    std::uint64_t accepted_total_ = 0;
    std::uint64_t accept_errors_ = 0;
};

} // namespace sockherd::supervisor
