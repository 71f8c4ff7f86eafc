#pragma once
// The readiness of a worker's plain WebSocket sockets, gathered in one epoll instance of the
// worker's own and handled in one pass per wake-up: every ready socket is read to the end of what
// it holds, then every write the pass queued leaves (the worker's per-turn flush), then the
// instance is waited on again. Per message that is one recv and a share of one sendmsg; the
// pass's two epoll calls are shared by every socket ready at once.
//
// Why not Asio's reactor for these sockets: it has no wait for readability that costs nothing
// when repeated. async_wait re-arms with an epoll_ctl per call, and a speculative receive costs
// a recv that fails with EAGAIN after each message. The instance itself is one descriptor in
// Asio's reactor, so timers, the channel and HTTP sessions run on the same loop as before.
//
// Sockets are registered edge-triggered for input and output. A handler reads until a recv
// returns less than it asked for (the socket is then empty, and data arriving later is a new
// edge), or until its share of the pass is used, and then asks for another turn (again()).

#include <sys/epoll.h>

#include <array>
#include <cstdint>
#include <functional>
#include <vector>

#include "common/net.hpp"

namespace sockherd::worker {

class poller {
public:
    class handler {
    public:
        // `events`: EPOLLIN, EPOLLOUT, EPOLLRDHUP, EPOLLHUP, EPOLLERR as epoll reported them.
        virtual void on_ready(std::uint32_t events) = 0;

    protected:
        ~handler() = default;
    };

    // `after_pass` runs once after every pass (the worker flushes the writes the pass queued).
    // Throws std::system_error if the epoll instance cannot be made.
    poller(net::io_context& ioc, std::function<void()> after_pass);
    ~poller();
    poller(const poller&) = delete;
    poller& operator=(const poller&) = delete;

    // Watches `fd` for `c`. `c` calls remove() before it closes `fd` or is destroyed.
    bool add(int fd, handler& c, error_code& ec);
    // Stops watching `fd`; `c` gets no more calls, not even for events of the pass under way.
    void remove(int fd, handler& c);
    // `c` stopped reading with data possibly left (its share of a pass was used): in the next
    // pass it gets on_ready(EPOLLIN) whether or not a new edge came. Until then it is not removed
    // without remove() being called, which forgets this too.
    void again(handler& c);

    std::size_t watched() const { return watched_; }

private:
    void arm();
    void on_wake(error_code ec);
    void pass();

    net::posix::stream_descriptor instance_;
    std::function<void()> after_pass_;
    static constexpr int max_events = 256;
    std::array<epoll_event, max_events> events_{};
    int count_ = 0; // events of the pass under way
    int at_ = 0;    // the one being handled
    std::vector<handler*> again_;
    std::vector<handler*> again_now_;
    std::size_t watched_ = 0;
    bool pass_posted_ = false;
    bool armed_ = false;
};

} // namespace sockherd::worker
