#pragma once
// One end of a supervisor<->worker socketpair, owned by the process at that end (the supervisor
// holds one per worker slot, a worker holds one). Sends queued messages, descriptors included,
// without ever blocking, and hands each decoded message to its owner.

#include <sys/socket.h>

#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "common/ipc/protocol.hpp"
#include "common/net.hpp"

namespace sockherd::ipc {

// The system calls the channel makes, so a test can make sendmsg fail with EAGAIN or EPIPE.
class socket_ops {
public:
    virtual ~socket_ops() = default;
    virtual ssize_t send_msg(int fd, const msghdr* msg, int flags) { return ::sendmsg(fd, msg, flags); }
    virtual ssize_t recv_msg(int fd, msghdr* msg, int flags) { return ::recvmsg(fd, msg, flags); }
    static socket_ops& system();
};

// Creates a connected AF_UNIX stream pair, both ends close-on-exec and non-blocking.
std::pair<unique_fd, unique_fd> make_socketpair(error_code& ec);

struct channel_limits {
    std::size_t send_queue_bytes = 4 * 1024 * 1024; // full() above this
    std::size_t send_queue_fds = 1024;              // full() above this many queued descriptors
};

class channel : public std::enable_shared_from_this<channel> {
public:
    using limits = channel_limits;

    struct handlers {
        // A decoded message; handoff entries have their descriptors attached.
        std::function<void(message&&)> on_message;
        // The channel is unusable (peer closed, I/O error, protocol error) and has been closed.
        // `what` names the problem for the log. Not called after close().
        std::function<void(error_code, std::string_view what)> on_error;
        // The send queue dropped back under its limits after full() was true. Optional.
        std::function<void()> on_room;
    };

    channel(net::io_context& ioc, unique_fd fd, limits lim = {}, socket_ops& ops = socket_ops::system());
    ~channel();
    channel(const channel&) = delete;
    channel& operator=(const channel&) = delete;

    // Starts reading. Handlers are called from the io_context only.
    void start(handlers h);

    // Queues `m` (a handoff's descriptors move into the queue) and schedules one flush per
    // event-loop turn, so everything queued in one turn leaves in as few sendmsg calls as possible.
    // Returns false if the channel is closed (descriptors are then closed, not leaked).
    bool send(message m);

    // Queues an already encoded frame that carries no descriptors (a relay encoded once and sent
    // to several workers). Returns false if the channel is closed.
    bool send_encoded(std::string_view frame);

    bool full() const;
    bool is_open() const { return open_; }
    std::size_t queued_bytes() const { return out_.size() - out_pos_; }
    std::size_t queued_fds() const { return queued_fds_; }

    // Sends what is queued now, synchronously, giving up after `budget` (used before exiting).
    void flush_blocking(std::chrono::milliseconds budget);

    // Cancels I/O and closes the descriptor; no handler is called after this returns.
    void close();

private:
    struct fd_mark {
        std::uint64_t position; // stream offset of the first byte of the frame they belong to
        std::vector<unique_fd> fds;
    };

    void schedule_flush();
    void do_write();
    void do_wait_writable();
    void do_read();
    void on_readable();
    bool deliver_frames();
    void fail(error_code ec, std::string_view what);

    net::io_context& ioc_;
    net::posix::stream_descriptor sd_;
    limits limits_;
    socket_ops& ops_;
    handlers handlers_;
    bool open_ = true;
    bool started_ = false;

    // Outbound: one contiguous byte stream, plus descriptor batches keyed by stream position.
    std::string out_;
    std::size_t out_pos_ = 0;
    std::uint64_t out_stream_pos_ = 0; // stream position of out_[out_pos_]
    std::deque<fd_mark> out_fds_;
    std::size_t queued_fds_ = 0;
    bool flush_scheduled_ = false;
    bool waiting_writable_ = false;
    bool was_full_ = false;

    // Inbound: bytes not yet decoded, and descriptors not yet claimed by a handoff.
    std::vector<std::uint8_t> in_;
    std::size_t in_pos_ = 0;
    std::deque<unique_fd> in_fds_;
};

} // namespace sockherd::ipc
