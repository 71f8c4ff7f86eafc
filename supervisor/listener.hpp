#pragma once
// One [[listener]] of the config, bound by the supervisor, in one of three modes:
// - handoff: the supervisor accepts (in batches, while a worker has room; it pauses and leaves
//   the rest in the kernel's backlog when none has) and hands each connection to a worker;
// - shared: one socket that every worker accepts on itself (passed over once in a `listen`
//   message; workers wait with EPOLLEXCLUSIVE, so one wakes per connection);
// - reuseport: one SO_REUSEPORT socket per worker slot, passed to that slot's worker. The socket
//   belongs to the slot, not the process: a replacement worker gets the same one, so nothing
//   queued in it is lost. While no worker of the slot accepts (crashed, restarting, draining),
//   the supervisor accepts on it and hands off ("covers" the slot); a slot removed by scaling
//   down has its socket closed once its last worker is gone, after handing off what waits in it.

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/config.hpp"
#include "common/ipc/protocol.hpp"
#include "common/net.hpp"
#include "common/unique_fd.hpp"

namespace sockherd::supervisor {

class accept_loop;

class listener {
public:
    struct handlers {
        std::function<bool()> has_room; // false: stop accepting until resume()
        std::function<void(std::uint16_t listener_id, unique_fd fd, const tcp::endpoint& peer)> on_connection;
        std::function<void()> on_batch_end; // after each batch of accepts (to flush hand-offs)
    };

    // Binds and listens (reuseport: `slots` sockets); throws std::system_error naming the address
    // when that fails.
    listener(net::io_context& ioc, std::uint16_t id, const listener_config& cfg, unsigned slots);
    ~listener();

    void start(handlers h);
    // Accept again after a pause; a no-op when already waiting.
    void resume();
    // Stops accepting and closes the supervisor's sockets (connections still in a backlog are
    // reset once no worker holds the socket either).
    void close();

    std::uint16_t id() const { return id_; }
    // A reload kept this socket but its place in the new config's listener list moved.
    void set_id(std::uint16_t id) { id_ = id; }
    const listener_config& config() const { return config_; }
    listener_mode mode() const { return config_.mode; }
    tcp::endpoint local_endpoint() const;
    // Connections the supervisor accepted (hand-off mode, and covered reuseport slots).
    std::uint64_t accepted_total() const;
    std::uint64_t accept_errors() const;
    bool is_open() const { return open_; }

    // shared, reuseport: appends to `out` the sockets the worker of slot `slot` accepts on
    // (duplicated descriptors; the message owns them). Nothing for handoff.
    void add_sockets_for(unsigned slot, ipc::listen_msg& out) const;
    // reuseport: a socket for every slot below `n` (binds the missing ones). The error names the
    // address. A no-op for the other modes.
    std::optional<std::string> ensure_slots(unsigned n);
    // reuseport: whether the supervisor accepts on slot `slot`'s socket (no worker of the slot does).
    void set_covered(unsigned slot, bool covered);
    // reuseport: closes the sockets of slots `n` and up, after handing off what waits in them.
    void drop_slots_from(unsigned n);
    unsigned slot_sockets() const { return static_cast<unsigned>(slots_.size()); }

private:
    int bind_one(bool reuseport); // a bound, listening, non-blocking socket; throws

    net::io_context& ioc_;
    std::uint16_t id_;
    listener_config config_;
    handlers handlers_;
    bool started_ = false;
    bool open_ = true;
    unique_fd shared_;                          // handoff, shared: the socket
    std::shared_ptr<accept_loop> main_;         // handoff: the supervisor's accept loop
    std::vector<unique_fd> slots_;              // reuseport: a socket per slot
    std::vector<std::shared_ptr<accept_loop>> cover_; // reuseport: per slot, null unless covered
    std::uint64_t retired_accepted_ = 0;        // by accept loops that are gone
    std::uint64_t retired_errors_ = 0;
};

} // namespace sockherd::supervisor
