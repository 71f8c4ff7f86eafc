// GCC 12 at -O3 sees a "potential null pointer dereference" inside Asio's own scheduler (a false
// positive in a system header, as in websocket_session.cpp): Asio comes first, with that warning
// off for its code alone.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wnull-dereference"
#include "common/net.hpp"
#pragma GCC diagnostic pop

#include "worker/poller.hpp"

#include <sys/epoll.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <system_error>

namespace sockherd::worker {
namespace {

int make_instance() {
    const int fd = ::epoll_create1(EPOLL_CLOEXEC);
    if (fd < 0)
        throw std::system_error(errno, std::generic_category(), "epoll_create1 for the WebSocket sockets");
    return fd;
}

} // namespace

poller::poller(net::io_context& ioc, std::function<void()> after_pass)
    : instance_(ioc, make_instance()), after_pass_(std::move(after_pass)) {}

poller::~poller() {
    error_code ignored;
    instance_.close(ignored);
}

bool poller::add(int fd, handler& c, error_code& ec) {
    epoll_event ev{};
    ev.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET;
    ev.data.ptr = &c;
    if (::epoll_ctl(instance_.native_handle(), EPOLL_CTL_ADD, fd, &ev) != 0) {
        ec.assign(errno, boost::system::system_category());
        return false;
    }
    ++watched_;
    arm();
    return true;
}

void poller::remove(int fd, handler& c) {
    epoll_event ev{}; // ignored, but kernels before 2.6.9 wanted one
    ::epoll_ctl(instance_.native_handle(), EPOLL_CTL_DEL, fd, &ev);
    if (watched_ > 0)
        --watched_;
    // Events of this pass not handled yet, and turns asked for, must not reach `c` any more.
    for (int i = at_ + 1; i < count_; ++i)
        if (events_[static_cast<std::size_t>(i)].data.ptr == &c)
            events_[static_cast<std::size_t>(i)].data.ptr = nullptr;
    std::erase(again_, &c);
    std::replace(again_now_.begin(), again_now_.end(), &c, static_cast<handler*>(nullptr));
}

void poller::again(handler& c) {
    if (std::find(again_.begin(), again_.end(), &c) == again_.end())
        again_.push_back(&c);
    if (pass_posted_)
        return;
    pass_posted_ = true;
    net::post(instance_.get_executor(), [this] {
        pass_posted_ = false;
        pass();
    });
}

void poller::arm() {
    if (armed_ || !instance_.is_open())
        return;
    armed_ = true;
    instance_.async_wait(net::posix::stream_descriptor::wait_read, [this](error_code ec) { on_wake(ec); });
}

void poller::on_wake(error_code ec) {
    armed_ = false;
    if (ec)
        return; // closed: the worker is going away
    pass();
    arm();
}

void poller::pass() {
    if (!again_.empty()) {
        again_now_.swap(again_); // who asks again now is served in the next pass
        for (std::size_t i = 0; i < again_now_.size(); ++i)
            if (handler* c = again_now_[i])
                c->on_ready(EPOLLIN);
        again_now_.clear();
    }
    const int n = ::epoll_wait(instance_.native_handle(), events_.data(), max_events, 0);
    count_ = n > 0 ? n : 0; // EINTR: the next wake-up
    for (at_ = 0; at_ < count_; ++at_)
        if (auto* c = static_cast<handler*>(events_[static_cast<std::size_t>(at_)].data.ptr))
            c->on_ready(events_[static_cast<std::size_t>(at_)].events);
    count_ = at_ = 0;
    if (after_pass_)
        after_pass_();
    // A full batch may have left events in the instance: the wait re-armed after this pass finds
    // it still readable and fires at once.
}

} // namespace sockherd::worker
