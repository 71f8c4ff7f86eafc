#include "worker/self_acceptor.hpp"

#include <pthread.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/stat.h>

#include <atomic>
#include <algorithm>
#include <cerrno>
#include <cstring>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <system_error>

#include "common/sockaddr.hpp"

namespace sockherd::worker {
namespace {

constexpr std::size_t batch_limit = 64;
constexpr int backoff_ms = 100; // after accept4 ran out of descriptors or memory

// condition_variable::wait(unique_lock&) is a GLIBCXX_3.4.30 symbol in GCC 12's libstdc++, newer
// than RHEL 9's (3.4.29), where the .rpm must run; wait_for is inline (pthread_cond_clockwait).
template <class Predicate>
void wait_for_condition(std::condition_variable& cv, std::unique_lock<std::mutex>& lock, Predicate done) {
    while (!done())
        cv.wait_for(lock, std::chrono::seconds(60));
}

ino_t inode_of(int fd) {
    struct stat st{};
    return ::fstat(fd, &st) == 0 ? st.st_ino : 0;
}

} // namespace

// Shared by the thread, the batches it posted, and the acceptor. The thread owns `sockets` while
// it runs; the mutex guards the flags the two sides hand over.
struct self_acceptor::state {
    std::shared_ptr<batch_handler> on_batch; // shared by every state of one acceptor
    std::shared_ptr<failure_handler> on_failure;
    std::atomic<std::size_t> room{0};
    std::vector<socket> sockets;
    unique_fd epoll;
    unique_fd wake; // an eventfd: stop() writes it to end an epoll_wait
    std::atomic<std::uint64_t> errors{0};

    std::mutex mutex;
    std::condition_variable cv;
    bool stopping = false;
    bool taken = false; // the loop has taken the last batch
};

self_acceptor::self_acceptor(net::io_context& ioc, batch_handler on_batch, failure_handler on_failure)
    : ioc_(ioc), state_(std::make_shared<state>()) {
    state_->on_batch = std::make_shared<batch_handler>(std::move(on_batch));
    state_->on_failure = std::make_shared<failure_handler>(std::move(on_failure));
}

self_acceptor::~self_acceptor() {
    stop();
    // Batches still queued on the io_context close their connections instead of serving them.
    *state_->on_batch = nullptr;
    *state_->on_failure = nullptr;
}

std::size_t self_acceptor::socket_count() const { return identity_.size(); }

bool self_acceptor::set_scheduling(int policy) {
    if (!thread_.joinable())
        return true;
    const sched_param param{};
    return ::pthread_setschedparam(thread_.native_handle(), policy, &param) == 0;
}

std::optional<std::uint16_t> self_acceptor::listener_of(ino_t inode) const {
    for (const auto& [id, id_inode] : identity_)
        if (id_inode == inode && inode != 0)
            return id;
    return std::nullopt;
}

void self_acceptor::set_sockets(std::vector<socket> sockets) {
    std::vector<std::pair<std::uint16_t, ino_t>> identity;
    identity.reserve(sockets.size());
    for (auto& s : sockets) {
        s.inode = inode_of(s.fd.get());
        identity.emplace_back(s.listener_id, s.inode);
    }
    if (identity == identity_ && thread_.joinable())
        return; // the same sockets: the new descriptors close here
    stop();
    identity_ = std::move(identity);
    if (sockets.empty())
        return;
    auto next = std::make_shared<state>();
    next->on_batch = state_->on_batch;
    next->on_failure = state_->on_failure;
    next->room = room_;
    next->sockets = std::move(sockets);
    state_ = std::move(next);
    start();
}

void self_acceptor::start() {
    auto& cur = *state_;
    cur.epoll = unique_fd(::epoll_create1(EPOLL_CLOEXEC));
    cur.wake = unique_fd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    if (!cur.epoll || !cur.wake)
        throw std::system_error(errno, std::generic_category(), "self_acceptor: epoll_create1/eventfd");
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u32 = static_cast<std::uint32_t>(cur.sockets.size()); // past the sockets: the wake-up
    if (::epoll_ctl(cur.epoll.get(), EPOLL_CTL_ADD, cur.wake.get(), &ev) != 0)
        throw std::system_error(errno, std::generic_category(), "self_acceptor: epoll_ctl(eventfd)");
    for (std::size_t i = 0; i < cur.sockets.size(); ++i) {
        ev.events = EPOLLIN | EPOLLEXCLUSIVE;
        ev.data.u32 = static_cast<std::uint32_t>(i);
        if (::epoll_ctl(cur.epoll.get(), EPOLL_CTL_ADD, cur.sockets[i].fd.get(), &ev) != 0) {
            ev.events = EPOLLIN; // a kernel before 4.5: every waiting worker wakes, one wins
            if (::epoll_ctl(cur.epoll.get(), EPOLL_CTL_ADD, cur.sockets[i].fd.get(), &ev) != 0)
                throw std::system_error(errno, std::generic_category(), "self_acceptor: epoll_ctl(listener)");
        }
    }

    // The thread takes no signals: the worker's io_context handles them.
    sigset_t all, previous;
    ::sigfillset(&all);
    ::pthread_sigmask(SIG_BLOCK, &all, &previous);
    struct restore_mask {
        sigset_t* mask;
        ~restore_mask() { ::pthread_sigmask(SIG_SETMASK, mask, nullptr); }
    } restore{&previous};
    thread_ = std::thread([st = state_, &ioc = ioc_] {
        auto& s = *st;
        std::vector<epoll_event> events(s.sockets.size() + 1);
        bool backing_off = false;
        for (;;) {
            {
                // No room: not even waiting on the sockets, so the kernel wakes another worker.
                std::unique_lock lock(s.mutex);
                wait_for_condition(s.cv, lock, [&] { return s.stopping || s.room.load(std::memory_order_relaxed) > 0; });
                if (s.stopping)
                    return;
            }
            const int n = ::epoll_wait(s.epoll.get(), events.data(), static_cast<int>(events.size()), -1);
            backing_off = false;
            if (n < 0 && errno != EINTR) {
                const int e = errno;
                net::post(ioc, [st, e] {
                    if (*st->on_failure)
                        (*st->on_failure)(std::string("epoll_wait: ") + std::strerror(e));
                });
                return;
            }
            {
                std::lock_guard lock(s.mutex);
                if (s.stopping)
                    return;
            }
            const std::size_t limit = std::min(batch_limit, s.room.load(std::memory_order_relaxed));
            std::vector<accepted> batch;
            for (int i = 0; i < n && batch.size() < limit; ++i) {
                const auto index = events[i].data.u32;
                if (index >= s.sockets.size())
                    continue; // the wake-up; stopping is checked above
                const auto& sock = s.sockets[index];
                while (batch.size() < limit) {
                    sockaddr_storage ss{};
                    socklen_t len = sizeof(ss);
                    const int fd = ::accept4(sock.fd.get(), reinterpret_cast<sockaddr*>(&ss), &len,
                                             SOCK_NONBLOCK | SOCK_CLOEXEC);
                    if (fd >= 0) {
                        if (batch.empty())
                            batch.reserve(limit);
                        batch.push_back({sock.listener_id, unique_fd(fd), endpoint_from(ss), sock.inode});
                        continue;
                    }
                    const int e = errno;
                    if (e == EAGAIN || e == EWOULDBLOCK)
                        break;
                    if (e == EINTR || e == ECONNABORTED || e == EPROTO || e == EPERM)
                        continue;
                    s.errors.fetch_add(1, std::memory_order_relaxed); // EMFILE, ENFILE, ENOBUFS, ENOMEM
                    backing_off = true;
                    break;
                }
            }
            if (batch.empty() && s.errors.load(std::memory_order_relaxed) == 0)
                continue;
            // What this batch takes is not room any more, until the worker says how much is left.
            for (auto left = s.room.load(std::memory_order_relaxed);
                 !s.room.compare_exchange_weak(left, left > batch.size() ? left - batch.size() : 0,
                                               std::memory_order_relaxed);) {
            }
            net::post(ioc, [st, batch = std::move(batch)]() mutable {
                const auto errors = st->errors.exchange(0, std::memory_order_relaxed);
                if (*st->on_batch)
                    (*st->on_batch)(std::move(batch), errors);
                {
                    std::lock_guard lock(st->mutex);
                    st->taken = true;
                }
                st->cv.notify_one();
            });
            std::unique_lock lock(s.mutex);
            wait_for_condition(s.cv, lock, [&] { return s.stopping || s.taken; });
            s.taken = false;
            // Out of descriptors: the socket stays readable, so epoll_wait would not wait at all.
            if (backing_off)
                s.cv.wait_for(lock, std::chrono::milliseconds(backoff_ms), [&] { return s.stopping; });
            if (s.stopping)
                return;
        }
    });
}

void self_acceptor::set_room(std::size_t room) {
    room_ = room;
    if (!thread_.joinable())
        return;
    auto& s = *state_;
    if (s.room.exchange(room, std::memory_order_relaxed) == 0 && room > 0) {
        std::lock_guard lock(s.mutex); // the thread checks room under it before it waits
        s.cv.notify_one();
    }
}

void self_acceptor::stop() {
    if (!thread_.joinable())
        return;
    auto& s = *state_;
    {
        std::lock_guard lock(s.mutex);
        s.stopping = true;
    }
    s.cv.notify_one();
    const std::uint64_t one = 1;
    [[maybe_unused]] const auto w = ::write(s.wake.get(), &one, sizeof(one));
    thread_.join();
    s.sockets.clear(); // this worker's descriptors; the sockets live on elsewhere
    s.epoll.reset();
    s.wake.reset();
    identity_.clear();
}

} // namespace sockherd::worker
