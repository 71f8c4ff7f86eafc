#include "supervisor/listener.hpp"

#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstring>
#include <system_error>

#include <spdlog/spdlog.h>

namespace sockherd::supervisor {
namespace {

constexpr int accept_batch = 64;

tcp::endpoint to_endpoint(const sockaddr_storage& ss) {
    tcp::endpoint ep;
    if (ss.ss_family == AF_INET || ss.ss_family == AF_INET6) {
        std::memcpy(ep.data(), &ss, ss.ss_family == AF_INET ? sizeof(sockaddr_in) : sizeof(sockaddr_in6));
    }
    return ep;
}

} // namespace

listener::listener(net::io_context& ioc, std::uint16_t id, const listener_config& cfg)
    : id_(id), config_(cfg), acceptor_(ioc), retry_timer_(ioc) {
    error_code ec;
    const auto fail = [&](const char* what) {
        throw std::system_error(ec, "listener " + cfg.address + ": " + what);
    };
    acceptor_.open(cfg.endpoint.protocol(), ec);
    if (ec) fail("socket");
    if (::fcntl(acceptor_.native_handle(), F_SETFD, FD_CLOEXEC) != 0) {
        ec = error_code(errno, boost::system::system_category());
        fail("fcntl(FD_CLOEXEC)");
    }
    acceptor_.set_option(tcp::acceptor::reuse_address(true), ec);
    if (ec) fail("SO_REUSEADDR");
    if (cfg.endpoint.address().is_v6()) {
        // Like nginx: "[::]:80" is IPv6 only, so it can sit beside a "0.0.0.0:80" listener.
        acceptor_.set_option(net::ip::v6_only(true), ec);
        if (ec) fail("IPV6_V6ONLY");
    }
    acceptor_.non_blocking(true, ec);
    if (ec) fail("O_NONBLOCK");
    acceptor_.bind(cfg.endpoint, ec);
    if (ec) fail("bind");
    acceptor_.listen(cfg.backlog, ec);
    if (ec) fail("listen");
}

tcp::endpoint listener::local_endpoint() const {
    error_code ec;
    return acceptor_.local_endpoint(ec);
}

void listener::start(handlers h) {
    handlers_ = std::move(h);
    resume();
}

// Asio's reactor is edge-triggered and async_wait is not speculative: a wait only completes on
// a new edge. So accept first and wait only after accept4 said EAGAIN; every other way out of
// on_readable() comes back through a posted retry (batch limit) or resume() (room again).
void listener::resume() {
    if (!open_ || waiting_ || retry_posted_)
        return;
    retry_posted_ = true;
    net::post(acceptor_.get_executor(), [this] {
        retry_posted_ = false;
        if (open_ && !waiting_)
            on_readable();
    });
}

void listener::close() {
    if (!open_)
        return;
    open_ = false;
    retry_timer_.cancel();
    error_code ignored;
    acceptor_.close(ignored);
}

void listener::do_wait() {
    waiting_ = true;
    acceptor_.async_wait(tcp::acceptor::wait_read, [this](error_code ec) {
        waiting_ = false;
        if (!open_ || ec == net::error::operation_aborted)
            return;
        if (ec) {
            spdlog::error("listener {}: waiting for connections failed: {}", config_.address, ec.message());
            return;
        }
        on_readable();
    });
}

// Accepts up to one batch while the owner has room. Stops (without re-arming) when the owner is
// full: resume() re-arms once a worker has room again.
void listener::on_readable() {
    enum class next_step { wait, retry, pause } next = next_step::retry;
    int accepted = 0;
    while (accepted < accept_batch) {
        if (!handlers_.has_room()) {
            next = next_step::pause;
            break;
        }
        sockaddr_storage ss{};
        socklen_t len = sizeof(ss);
        const int fd = ::accept4(acceptor_.native_handle(), reinterpret_cast<sockaddr*>(&ss), &len,
                                 SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            const int e = errno;
            if (e == EAGAIN || e == EWOULDBLOCK) {
                next = next_step::wait;
                break;
            }
            if (e == EINTR || e == ECONNABORTED || e == EPROTO || e == EPERM)
                continue;
            ++accept_errors_;
            // Out of descriptors or memory: leave the backlog to the kernel for a moment.
            spdlog::warn("listener {}: accept failed: {}; pausing 100ms", config_.address, std::strerror(e));
            next = next_step::pause;
            retry_timer_.expires_after(std::chrono::milliseconds(100));
            retry_timer_.async_wait([this](error_code ec) {
                if (!ec && open_)
                    resume();
            });
            break;
        }
        ++accepted;
        ++accepted_total_;
        handlers_.on_connection(id_, unique_fd(fd), to_endpoint(ss));
    }
    if (accepted > 0 && handlers_.on_batch_end)
        handlers_.on_batch_end();
    if (!open_)
        return;
    if (next == next_step::wait)
        do_wait();
    else if (next == next_step::retry)
        resume(); // batch limit reached: let other handlers run, then continue
}

} // namespace sockherd::supervisor
