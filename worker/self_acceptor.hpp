#pragma once
// A worker accepting on listening sockets itself (listener modes `shared` and `reuseport`; the
// supervisor passes the sockets over once, in a `listen` message).
//
// One thread per worker blocks in epoll_wait on an epoll instance of its own, where every socket
// is registered with EPOLLEXCLUSIVE: for a socket every worker shares, the kernel wakes one
// waiting worker per connection instead of all of them. (Asio's reactor registers descriptors
// itself and cannot ask for that.) The thread accepts one batch (up to 64 connections, several
// per wake-up, never more than the worker has room for) and posts it to the worker's event loop,
// and it goes back to epoll_wait only once the loop has taken the batch: a worker whose loop is
// busy is not waiting, so the kernel wakes another one. A worker without room (at its connection
// limit) does not wait on the sockets at all: the connections wait in the kernel's backlog, or
// other workers take them, until set_room() gives it room again.

#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <thread>
#include <vector>

#include "common/net.hpp"
#include "common/unique_fd.hpp"

namespace sockherd::worker {

class self_acceptor {
public:
    struct accepted {
        std::uint16_t listener_id = 0;
        unique_fd fd;
        tcp::endpoint peer;
        ino_t socket_inode = 0; // of the listening socket it came from (see listener_of)
    };
    struct socket {
        std::uint16_t listener_id = 0;
        unique_fd fd;
        ino_t inode = 0; // filled in by set_sockets
    };
    // Runs on the io_context with each accepted batch. `errors`: accept4 failures (out of
    // descriptors or memory) since the last call.
    using batch_handler = std::function<void(std::vector<accepted>&& batch, std::uint64_t errors)>;
    // Runs on the io_context if the thread cannot go on (epoll_wait failed): it has stopped.
    using failure_handler = std::function<void(const std::string& what)>;

    self_acceptor(net::io_context& ioc, batch_handler on_batch, failure_handler on_failure);
    ~self_acceptor();
    self_acceptor(const self_acceptor&) = delete;
    self_acceptor& operator=(const self_acceptor&) = delete;

    // Accepts on exactly `sockets` from now on (none: stops). The same sockets as now (compared by
    // inode, not by descriptor number) change nothing: their new descriptors are closed.
    void set_sockets(std::vector<socket> sockets);
    // How many more connections the worker can take (its limit less what it holds); 0 stops
    // accepting until it is raised again. Cheap: call it whenever the count changes.
    void set_room(std::size_t room);
    // Stops accepting and closes this worker's descriptors of the sockets (the sockets stay open
    // in the supervisor and the other workers). A batch already posted is still handled.
    void stop();
    std::size_t socket_count() const;
    // Sets the accepting thread's scheduling policy (SCHED_OTHER or SCHED_BATCH), when it runs;
    // a thread started later takes the policy of the thread that starts it. False if it failed.
    bool set_scheduling(int policy);
    // The listener id the current sockets give the socket with inode `inode`; nullopt if it is
    // not among them. A batch posted before a reload renumbered the listeners (one removed ahead
    // of this one) carries the old id; this is the one the worker's new config uses.
    std::optional<std::uint16_t> listener_of(ino_t inode) const;

private:
    struct state;
    void start();

    net::io_context& ioc_;
    std::shared_ptr<state> state_;
    std::vector<std::pair<std::uint16_t, ino_t>> identity_; // of the current sockets
    std::size_t room_ = 0;
    std::thread thread_;
};

} // namespace sockherd::worker
