// worker/poller: readiness reaches the right handler once per pass, a handler removed during a
// pass gets none of that pass's remaining events, again() gives a turn without a new edge, and
// after_pass runs after the handlers.

#include "common/net.hpp"
#include "worker/poller.hpp"

#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <functional>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "run_until.hpp"

#include "common/unique_fd.hpp"

namespace sockherd::worker {
namespace {

using test::run_until;

struct pair_fds {
    unique_fd ours;
    unique_fd theirs;
};

pair_fds make_pair() {
    int fds[2] = {-1, -1};
    EXPECT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, fds), 0);
    return {unique_fd(fds[0]), unique_fd(fds[1])};
}

// Records what it is told; reads `per_call` bytes at most per call (0: everything there is).
struct recorder final : poller::handler {
    int fd = -1;
    std::size_t per_call = 0;
    std::string got;
    int readable_calls = 0;
    std::vector<std::uint32_t> events;
    std::function<void(recorder&)> on_call; // runs first in each call

    void on_ready(std::uint32_t ev) override {
        events.push_back(ev);
        if (on_call)
            on_call(*this);
        if ((ev & EPOLLIN) == 0)
            return;
        ++readable_calls;
        char buf[256];
        const std::size_t want = per_call ? per_call : sizeof buf;
        for (;;) {
            const ssize_t n = ::recv(fd, buf, want, 0);
            if (n <= 0)
                break;
            got.append(buf, static_cast<std::size_t>(n));
            if (per_call)
                break;
        }
    }
};

TEST(poller, readable_reaches_the_handler_and_after_pass_follows) {
    net::io_context ioc;
    int passes = 0;
    std::string seen_by_after_pass;
    recorder r;
    poller p(ioc, [&] {
        ++passes;
        seen_by_after_pass = r.got;
    });
    auto s = make_pair();
    r.fd = s.ours.get();
    error_code ec;
    ASSERT_TRUE(p.add(r.fd, r, ec)) << ec.message();
    EXPECT_EQ(p.watched(), 1u);

    ASSERT_EQ(::write(s.theirs.get(), "hello", 5), 5);
    ASSERT_TRUE(run_until(ioc, [&] { return r.got == "hello"; }));
    EXPECT_GE(passes, 1);
    EXPECT_EQ(seen_by_after_pass, "hello"); // after the handlers of its pass

    ASSERT_EQ(::write(s.theirs.get(), " again", 6), 6); // a new edge after the socket was emptied
    ASSERT_TRUE(run_until(ioc, [&] { return r.got == "hello again"; }));
    EXPECT_EQ(r.readable_calls, 2);

    p.remove(r.fd, r);
    EXPECT_EQ(p.watched(), 0u);
}

TEST(poller, a_handler_removed_during_a_pass_gets_none_of_its_events) {
    net::io_context ioc;
    poller p(ioc, nullptr);
    auto a = make_pair();
    auto b = make_pair();
    recorder ra;
    recorder rb;
    ra.fd = a.ours.get();
    rb.fd = b.ours.get();
    // Whichever is called first removes the other (as a session closing another would).
    bool removed = false;
    ra.on_call = [&](recorder&) {
        if (!removed) {
            removed = true;
            p.remove(rb.fd, rb);
        }
    };
    rb.on_call = [&](recorder&) {
        if (!removed) {
            removed = true;
            p.remove(ra.fd, ra);
        }
    };
    // Both readable before either is added: the first pass reports both.
    ASSERT_EQ(::write(a.theirs.get(), "a", 1), 1);
    ASSERT_EQ(::write(b.theirs.get(), "b", 1), 1);
    error_code ec;
    ASSERT_TRUE(p.add(ra.fd, ra, ec)) << ec.message();
    ASSERT_TRUE(p.add(rb.fd, rb, ec)) << ec.message();
    ASSERT_TRUE(run_until(ioc, [&] { return removed; }));
    EXPECT_EQ(ra.events.size() + rb.events.size(), 1u);
    EXPECT_EQ(p.watched(), 1u);
    // The removed one hears nothing more, even with new bytes.
    recorder& gone = ra.events.empty() ? ra : rb;
    recorder& kept = ra.events.empty() ? rb : ra;
    pair_fds& gone_pair = ra.events.empty() ? a : b;
    pair_fds& kept_pair = ra.events.empty() ? b : a;
    ASSERT_EQ(::write(gone_pair.theirs.get(), "x", 1), 1);
    ASSERT_EQ(::write(kept_pair.theirs.get(), "y", 1), 1);
    ASSERT_TRUE(run_until(ioc, [&] { return kept.got.find('y') != std::string::npos; }));
    EXPECT_TRUE(gone.events.empty());
}

// Reads one byte per turn and asks for another while bytes are left, as a session whose share
// of a pass is used does.
struct one_byte_reader final : poller::handler {
    one_byte_reader(poller& watcher, int socket) : p(&watcher), fd(socket) {}
    poller* p;
    int fd;
    std::string got;
    int turns = 0;
    void on_ready(std::uint32_t ev) override {
        ++turns;
        if ((ev & EPOLLIN) == 0)
            return;
        char c = 0;
        if (::recv(fd, &c, 1, 0) == 1)
            got += c;
        int left = 0;
        if (::ioctl(fd, FIONREAD, &left) == 0 && left > 0)
            p->again(*this);
    }
};

TEST(poller, again_gives_a_turn_without_a_new_edge) {
    net::io_context ioc;
    poller p(ioc, nullptr);
    auto s = make_pair();
    one_byte_reader r(p, s.ours.get());
    error_code ec;
    ASSERT_TRUE(p.add(r.fd, r, ec)) << ec.message();
    ASSERT_EQ(::write(s.theirs.get(), "abcd", 4), 4); // one edge (or two) for four bytes
    ASSERT_TRUE(run_until(ioc, [&] { return r.got == "abcd"; }));
    EXPECT_GE(r.turns, 4);
    p.remove(r.fd, r);
}

TEST(poller, removing_forgets_a_turn_asked_for) {
    net::io_context ioc;
    int passes = 0;
    poller p(ioc, [&] { ++passes; });
    auto s = make_pair();
    one_byte_reader r(p, s.ours.get());
    error_code ec;
    ASSERT_TRUE(p.add(r.fd, r, ec)) << ec.message();
    p.again(r);
    p.remove(r.fd, r);
    ASSERT_TRUE(run_until(ioc, [&] { return passes >= 1; })); // the posted pass runs without it
    EXPECT_EQ(r.turns, 0);
}

} // namespace
} // namespace sockherd::worker
