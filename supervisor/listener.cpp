#include "supervisor/listener.hpp"

#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <system_error>

#include <spdlog/spdlog.h>

#include "common/sockaddr.hpp"

namespace sockherd::supervisor {

// The supervisor accepting on one socket (its own descriptor of it) and handing off: in batches
// while its listener's owner has room. Kept alive by its own pending operations, so closing it
// between handlers is safe.
class accept_loop : public std::enable_shared_from_this<accept_loop> {
public:
    accept_loop(net::io_context& ioc, unique_fd fd, const tcp::endpoint& local, listener& owner,
                const listener::handlers& handlers)
        : acceptor_(ioc), retry_timer_(ioc), owner_(&owner), handlers_(&handlers) {
        error_code ec;
        acceptor_.assign(local.protocol(), fd.release(), ec);
        if (ec)
            throw std::system_error(ec, "listener " + owner.config().address + ": adopting a socket");
    }

    // Asio's reactor is edge-triggered and async_wait is not speculative: a wait only completes on
    // a new edge. So accept first and wait only after accept4 said EAGAIN; every other way out of
    // on_readable() comes back through a posted retry (batch limit) or resume() (room again).
    void resume() {
        if (!open_ || waiting_ || retry_posted_)
            return;
        retry_posted_ = true;
        net::post(acceptor_.get_executor(), [self = shared_from_this()] {
            self->retry_posted_ = false;
            if (self->open_ && !self->waiting_)
                self->on_readable();
        });
    }

    void close() {
        if (!open_)
            return;
        open_ = false;
        retry_timer_.cancel();
        error_code ignored;
        acceptor_.close(ignored);
    }

    // Takes everything waiting now, whatever the room (the socket closes next).
    void take_all() {
        if (!open_)
            return;
        std::size_t n = 0;
        while (n < 65536) { // bounded: a backlog is never larger
            sockaddr_storage ss{};
            socklen_t len = sizeof(ss);
            const int fd = ::accept4(acceptor_.native_handle(), reinterpret_cast<sockaddr*>(&ss), &len,
                                     SOCK_NONBLOCK | SOCK_CLOEXEC);
            if (fd < 0) {
                if (errno == EINTR || errno == ECONNABORTED)
                    continue;
                break;
            }
            ++n;
            ++accepted_total_;
            handlers_->on_connection(owner_->id(), unique_fd(fd), endpoint_from(ss));
        }
        if (n > 0 && handlers_->on_batch_end)
            handlers_->on_batch_end();
    }

    std::uint64_t accepted_total() const { return accepted_total_; }
    std::uint64_t accept_errors() const { return accept_errors_; }

private:
    static constexpr int accept_batch = 64;

    void do_wait() {
        waiting_ = true;
        acceptor_.async_wait(tcp::acceptor::wait_read, [self = shared_from_this()](error_code ec) {
            self->waiting_ = false;
            if (!self->open_ || ec == net::error::operation_aborted)
                return;
            if (ec) {
                spdlog::error("listener {}: waiting for connections failed: {}", self->owner_->config().address,
                              ec.message());
                return;
            }
            self->on_readable();
        });
    }

    // Accepts up to one batch while the owner has room. Stops (without re-arming) when the owner
    // is full: resume() re-arms once a worker has room again.
    void on_readable() {
        enum class next_step { wait, retry, pause } next = next_step::retry;
        int accepted = 0;
        while (accepted < accept_batch) {
            if (!handlers_->has_room()) {
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
                spdlog::warn("listener {}: accept failed: {}; pausing 100ms", owner_->config().address,
                             std::strerror(e));
                next = next_step::pause;
                retry_timer_.expires_after(std::chrono::milliseconds(100));
                retry_timer_.async_wait([self = shared_from_this()](error_code ec) {
                    if (!ec && self->open_)
                        self->resume();
                });
                break;
            }
            ++accepted;
            ++accepted_total_;
            handlers_->on_connection(owner_->id(), unique_fd(fd), endpoint_from(ss));
        }
        if (accepted > 0 && handlers_->on_batch_end)
            handlers_->on_batch_end();
        if (!open_)
            return;
        if (next == next_step::wait)
            do_wait();
        else if (next == next_step::retry)
            resume(); // batch limit reached: let other handlers run, then continue
    }

    tcp::acceptor acceptor_;
    net::steady_timer retry_timer_;
    listener* owner_;                    // valid while open_
    const listener::handlers* handlers_; // the owner's; valid while open_
    bool open_ = true;
    bool waiting_ = false;
    bool retry_posted_ = false;
    std::uint64_t accepted_total_ = 0;
    std::uint64_t accept_errors_ = 0;
};

namespace {

unique_fd dup_fd(int fd) {
    unique_fd d(::fcntl(fd, F_DUPFD_CLOEXEC, 0));
    if (!d)
        throw std::system_error(errno, std::generic_category(), "fcntl(F_DUPFD_CLOEXEC)");
    return d;
}

} // namespace

listener::listener(net::io_context& ioc, std::uint16_t id, const listener_config& cfg, unsigned slots)
    : ioc_(ioc), id_(id), config_(cfg) {
    if (config_.mode == listener_mode::reuseport) {
        if (auto err = ensure_slots(std::max(slots, 1u)))
            throw std::system_error(std::make_error_code(std::errc::address_in_use), *err);
    } else {
        shared_ = unique_fd(bind_one(false));
    }
}

listener::~listener() { close(); }

// A socket bound to the listener's address. For reuseport, every socket after the first binds
// to the port the first one got (the address may say port 0).
int listener::bind_one(bool reuseport) {
    auto endpoint = config_.endpoint;
    if (reuseport && !slots_.empty())
        endpoint = local_endpoint();
    const auto fail = [&](const char* what) {
        throw std::system_error(errno, std::generic_category(), "listener " + config_.address + ": " + what);
    };
    unique_fd fd(::socket(endpoint.protocol().family(), SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
    if (!fd)
        fail("socket");
    const int on = 1;
    if (::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &on, sizeof(on)) != 0)
        fail("SO_REUSEADDR");
    if (reuseport && ::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEPORT, &on, sizeof(on)) != 0)
        fail("SO_REUSEPORT");
    // Like nginx: "[::]:80" is IPv6 only, so it can sit beside a "0.0.0.0:80" listener.
    if (endpoint.address().is_v6() && ::setsockopt(fd.get(), IPPROTO_IPV6, IPV6_V6ONLY, &on, sizeof(on)) != 0)
        fail("IPV6_V6ONLY");
    if (::bind(fd.get(), endpoint.data(), static_cast<socklen_t>(endpoint.size())) != 0)
        fail("bind");
    if (::listen(fd.get(), config_.backlog) != 0)
        fail("listen");
    return fd.release();
}

tcp::endpoint listener::local_endpoint() const {
    const int fd = shared_ ? shared_.get() : (slots_.empty() ? -1 : slots_.front().get());
    tcp::endpoint ep;
    sockaddr_storage ss{};
    socklen_t len = sizeof(ss);
    if (fd >= 0 && ::getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len) == 0)
        ep = endpoint_from(ss);
    return ep;
}

void listener::start(handlers h) {
    handlers_ = std::move(h);
    started_ = true;
    if (config_.mode == listener_mode::handoff && open_) {
        main_ = std::make_shared<accept_loop>(ioc_, dup_fd(shared_.get()), config_.endpoint, *this, handlers_);
        main_->resume();
    }
    for (std::size_t i = 0; i < cover_.size(); ++i)
        if (cover_[i])
            cover_[i]->resume();
}

void listener::resume() {
    if (!open_)
        return;
    if (main_)
        main_->resume();
    for (auto& c : cover_)
        if (c)
            c->resume();
}

void listener::close() {
    if (!open_)
        return;
    open_ = false;
    if (main_) {
        retired_accepted_ += main_->accepted_total();
        retired_errors_ += main_->accept_errors();
        main_->close();
        main_.reset();
    }
    for (auto& c : cover_) {
        if (c) {
            retired_accepted_ += c->accepted_total();
            retired_errors_ += c->accept_errors();
            c->close();
        }
    }
    cover_.clear();
    shared_.reset();
    slots_.clear();
}

std::uint64_t listener::accepted_total() const {
    auto n = retired_accepted_ + (main_ ? main_->accepted_total() : 0);
    for (const auto& c : cover_)
        if (c)
            n += c->accepted_total();
    return n;
}

std::uint64_t listener::accept_errors() const {
    auto n = retired_errors_ + (main_ ? main_->accept_errors() : 0);
    for (const auto& c : cover_)
        if (c)
            n += c->accept_errors();
    return n;
}

void listener::add_sockets_for(unsigned slot, ipc::listen_msg& out) const {
    if (!open_)
        return;
    if (config_.mode == listener_mode::shared)
        out.sockets.push_back({id_, dup_fd(shared_.get())});
    else if (config_.mode == listener_mode::reuseport && slot < slots_.size())
        out.sockets.push_back({id_, dup_fd(slots_[slot].get())});
}

std::optional<std::string> listener::ensure_slots(unsigned n) {
    if (config_.mode != listener_mode::reuseport || !open_)
        return std::nullopt;
    try {
        while (slots_.size() < n) {
            slots_.emplace_back(bind_one(true));
            cover_.emplace_back();
        }
    } catch (const std::system_error& e) {
        return std::string(e.what());
    }
    return std::nullopt;
}

void listener::set_covered(unsigned slot, bool covered) {
    if (config_.mode != listener_mode::reuseport || !open_ || slot >= slots_.size())
        return;
    auto& c = cover_[slot];
    if (covered == static_cast<bool>(c))
        return;
    if (covered) {
        c = std::make_shared<accept_loop>(ioc_, dup_fd(slots_[slot].get()), local_endpoint(), *this, handlers_);
        if (started_)
            c->resume();
        return;
    }
    retired_accepted_ += c->accepted_total();
    retired_errors_ += c->accept_errors();
    c->close();
    c.reset();
}

void listener::drop_slots_from(unsigned n) {
    if (config_.mode != listener_mode::reuseport || !open_)
        return;
    while (slots_.size() > std::max(n, 1u)) {
        auto c = cover_.back() ? cover_.back()
                               : std::make_shared<accept_loop>(ioc_, dup_fd(slots_.back().get()), local_endpoint(),
                                                               *this, handlers_);
        // What the kernel queued on this socket goes to the other workers; then it closes and
        // the kernel hashes new connections over the remaining sockets.
        c->take_all();
        retired_accepted_ += c->accepted_total();
        retired_errors_ += c->accept_errors();
        c->close();
        cover_.pop_back();
        slots_.pop_back();
    }
}

} // namespace sockherd::supervisor
