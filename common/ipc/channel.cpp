#include "common/ipc/channel.hpp"

#include <poll.h>

#include <cerrno>
#include <cstring>

#include <spdlog/spdlog.h>

namespace sockherd::ipc {
namespace {

constexpr std::size_t read_chunk = 64 * 1024;
// The kernel never puts more than SCM_MAX_FD (253) descriptors in one message; a buffer this
// size means MSG_CTRUNC can only come from a peer that broke the protocol.
constexpr std::size_t max_fds_per_recv = 253;
// More unclaimed descriptors than a few full handoffs means the peer is misbehaving.
constexpr std::size_t max_pending_fds = 4 * max_handoff_batch;

error_code errno_code(int e = errno) { return error_code(e, boost::system::system_category()); }

} // namespace

socket_ops& socket_ops::system() {
    static socket_ops ops;
    return ops;
}

std::pair<unique_fd, unique_fd> make_socketpair(error_code& ec) {
    int sv[2];
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, sv) != 0) {
        ec = errno_code();
        return {};
    }
    ec = {};
    return {unique_fd(sv[0]), unique_fd(sv[1])};
}

channel::channel(net::io_context& ioc, unique_fd fd, limits lim, socket_ops& ops)
    : ioc_(ioc), sd_(ioc, fd.release()), limits_(lim), ops_(ops) {}

channel::~channel() {
    error_code ignored;
    sd_.close(ignored);
}

void channel::start(handlers h) {
    handlers_ = std::move(h);
    started_ = true;
    // Read first: data may have arrived before the descriptor's first edge could be waited for.
    net::post(ioc_, [self = shared_from_this()] {
        if (self->open_)
            self->on_readable();
    });
    if (queued_bytes() > 0)
        schedule_flush();
}

bool channel::send(message m) {
    if (!open_)
        return false;
    const std::uint64_t frame_pos = out_stream_pos_ + queued_bytes();
    if (const std::size_t n = descriptor_count(m); n > 0) {
        fd_mark mark{frame_pos, {}};
        mark.fds.reserve(n);
        for_each_descriptor(m, [&](unique_fd& fd) { mark.fds.push_back(std::move(fd)); });
        queued_fds_ += mark.fds.size();
        out_fds_.push_back(std::move(mark));
    }
    encode(m, out_);
    if (full())
        was_full_ = true;
    schedule_flush();
    return true;
}

bool channel::send_encoded(std::string_view frame) {
    if (!open_)
        return false;
    out_.append(frame);
    if (full())
        was_full_ = true;
    schedule_flush();
    return true;
}

bool channel::full() const {
    return queued_bytes() > limits_.send_queue_bytes || queued_fds_ > limits_.send_queue_fds;
}

void channel::schedule_flush() {
    if (flush_scheduled_ || waiting_writable_ || !started_)
        return;
    flush_scheduled_ = true;
    net::post(ioc_, [self = shared_from_this()] {
        self->flush_scheduled_ = false;
        if (self->open_)
            self->do_write();
    });
}

// Writes as much as the socket takes. Each sendmsg either starts at a frame that carries
// descriptors (and attaches exactly those) or carries none, and never reaches into the next frame
// that has descriptors: so descriptors always travel with their own frame's first byte.
void channel::do_write() {
    while (open_ && queued_bytes() > 0) {
        std::size_t len = queued_bytes();
        const bool attach = !out_fds_.empty() && out_fds_.front().position == out_stream_pos_;
        const std::size_t next_mark = attach ? 1 : 0;
        if (out_fds_.size() > next_mark)
            len = std::min<std::size_t>(len, out_fds_[next_mark].position - out_stream_pos_);

        iovec iov{out_.data() + out_pos_, len};
        msghdr msg{};
        msg.msg_iov = &iov;
        msg.msg_iovlen = 1;
        std::vector<char> control;
        if (attach) {
            const auto& fds = out_fds_.front().fds;
            control.resize(CMSG_SPACE(sizeof(int) * fds.size()));
            msg.msg_control = control.data();
            msg.msg_controllen = control.size();
            cmsghdr* cm = CMSG_FIRSTHDR(&msg);
            cm->cmsg_level = SOL_SOCKET;
            cm->cmsg_type = SCM_RIGHTS;
            cm->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
            int* data = reinterpret_cast<int*>(CMSG_DATA(cm));
            for (std::size_t i = 0; i < fds.size(); ++i)
                data[i] = fds[i].get();
        }
        const ssize_t n = ops_.send_msg(sd_.native_handle(), &msg, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                do_wait_writable();
                return;
            }
            fail(errno_code(), "sendmsg on the channel failed");
            return;
        }
        if (attach) {
            queued_fds_ -= out_fds_.front().fds.size();
            out_fds_.pop_front(); // the kernel holds its own references now; close ours
        }
        out_pos_ += static_cast<std::size_t>(n);
        out_stream_pos_ += static_cast<std::uint64_t>(n);
    }
    if (out_pos_ == out_.size()) {
        out_.clear();
        out_pos_ = 0;
    } else if (out_pos_ > out_.size() / 2) {
        out_.erase(0, out_pos_);
        out_pos_ = 0;
    }
    if (was_full_ && !full()) {
        was_full_ = false;
        if (handlers_.on_room)
            handlers_.on_room();
    }
}

void channel::do_wait_writable() {
    waiting_writable_ = true;
    sd_.async_wait(net::posix::stream_descriptor::wait_write, [self = shared_from_this()](error_code ec) {
        self->waiting_writable_ = false;
        if (!self->open_)
            return;
        if (ec) {
            self->fail(ec, "waiting for the channel to become writable");
            return;
        }
        self->do_write();
    });
}

void channel::flush_blocking(std::chrono::milliseconds budget) {
    const auto deadline = std::chrono::steady_clock::now() + budget;
    while (open_ && queued_bytes() > 0 && std::chrono::steady_clock::now() < deadline) {
        pollfd p{sd_.native_handle(), POLLOUT, 0};
        const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
            deadline - std::chrono::steady_clock::now());
        if (::poll(&p, 1, static_cast<int>(std::max<std::int64_t>(left.count(), 0))) <= 0)
            return;
        const bool was_waiting = waiting_writable_;
        do_write();
        if (!was_waiting && waiting_writable_)
            continue; // do_write armed an async wait; keep polling synchronously meanwhile
    }
}

void channel::do_read() {
    sd_.async_wait(net::posix::stream_descriptor::wait_read, [self = shared_from_this()](error_code ec) {
        if (!self->open_)
            return;
        if (ec) {
            self->fail(ec, "waiting for the channel to become readable");
            return;
        }
        self->on_readable();
    });
}

void channel::on_readable() {
    // Bounded: at most a few reads per wake-up, so one busy channel cannot starve the others.
    bool saw_eagain = false;
    for (int round = 0; round < 16; ++round) {
        if (in_.size() - in_pos_ == 0) {
            in_.clear();
            in_pos_ = 0;
        } else if (in_pos_ > 0 && in_pos_ >= in_.size() / 2) {
            in_.erase(in_.begin(), in_.begin() + static_cast<std::ptrdiff_t>(in_pos_));
            in_pos_ = 0;
        }
        const std::size_t old_size = in_.size();
        in_.resize(old_size + read_chunk);

        iovec iov{in_.data() + old_size, read_chunk};
        alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * max_fds_per_recv)];
        msghdr msg{};
        msg.msg_iov = &iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control;
        msg.msg_controllen = sizeof(control);
        const ssize_t n = ops_.recv_msg(sd_.native_handle(), &msg, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
        const int saved_errno = errno;
        in_.resize(old_size + static_cast<std::size_t>(std::max<ssize_t>(n, 0)));

        if (n > 0) {
            // Own every received descriptor before looking at anything else.
            bool bad_control = false;
            for (cmsghdr* cm = CMSG_FIRSTHDR(&msg); cm; cm = CMSG_NXTHDR(&msg, cm)) {
                if (cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SCM_RIGHTS) {
                    const std::size_t count = (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int);
                    const int* data = reinterpret_cast<const int*>(CMSG_DATA(cm));
                    for (std::size_t i = 0; i < count; ++i)
                        in_fds_.emplace_back(data[i]);
                } else {
                    bad_control = true;
                }
            }
            if (msg.msg_flags & MSG_CTRUNC) {
                fail(make_error_code(boost::system::errc::protocol_error),
                     "control message truncated (more descriptors than the protocol allows)");
                return;
            }
            if (bad_control) {
                fail(make_error_code(boost::system::errc::protocol_error), "unexpected control message");
                return;
            }
            if (in_fds_.size() > max_pending_fds) {
                fail(make_error_code(boost::system::errc::protocol_error),
                     "too many descriptors without a handoff to claim them");
                return;
            }
            if (!deliver_frames())
                return;
            continue;
        }
        if (n == 0) {
            fail(net::error::eof, "peer closed the channel");
            return;
        }
        if (saved_errno == EINTR)
            continue;
        if (saved_errno == EAGAIN || saved_errno == EWOULDBLOCK) {
            saw_eagain = true;
            break;
        }
        fail(errno_code(saved_errno), "recvmsg on the channel failed");
        return;
    }
    // Asio's reactor is edge-triggered and async_wait is not speculative: wait only after EAGAIN.
    if (saw_eagain) {
        do_read();
        return;
    }
    net::post(ioc_, [self = shared_from_this()] {
        if (self->open_)
            self->on_readable();
    });
}

// Decodes and delivers every whole frame in the input buffer. False if the channel failed.
bool channel::deliver_frames() {
    for (;;) {
        const std::span<const std::uint8_t> pending(in_.data() + in_pos_, in_.size() - in_pos_);
        decode_result r = decode(pending);
        if (r.status == decode_status::need_more)
            break;
        if (r.status == decode_status::malformed) {
            fail(make_error_code(boost::system::errc::protocol_error), r.reason);
            return false;
        }
        in_pos_ += r.consumed;
        if (r.status == decode_status::unknown_type) {
            spdlog::warn("channel: did not recognize message type {} from the peer; skipped it", r.type);
            send(unknown_type_msg{r.type});
            continue;
        }
        const std::size_t want = descriptor_count(r.msg);
        if (want > 0) {
            if (in_fds_.size() < want) {
                fail(make_error_code(boost::system::errc::protocol_error),
                     std::string(to_string(static_cast<message_type>(r.type))) +
                         " arrived without its descriptors");
                return false;
            }
            for_each_descriptor(r.msg, [&](unique_fd& fd) {
                fd = std::move(in_fds_.front());
                in_fds_.pop_front();
            });
        }
        if (handlers_.on_message)
            handlers_.on_message(std::move(r.msg));
        if (!open_)
            return false;
    }
    if (in_pos_ == in_.size() && !in_fds_.empty()) {
        fail(make_error_code(boost::system::errc::protocol_error),
             "descriptor received with a message that may not carry one");
        return false;
    }
    return true;
}

void channel::fail(error_code ec, std::string_view what) {
    if (!open_)
        return;
    close();
    if (handlers_.on_error)
        handlers_.on_error(ec, what);
}

void channel::close() {
    if (!open_)
        return;
    open_ = false;
    error_code ignored;
    sd_.cancel(ignored);
    sd_.close(ignored);
    out_fds_.clear();
    queued_fds_ = 0;
    in_fds_.clear();
}

} // namespace sockherd::ipc
