#include "supervisor/notify.hpp"

#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <optional>
#include <string>

#include <gtest/gtest.h>

#include "common/unique_fd.hpp"

namespace sockherd::supervisor {
namespace {

using namespace std::chrono_literals;

// Plays systemd: a datagram socket in a temp dir named by NOTIFY_SOCKET.
struct NotifySystemd : ::testing::Test {
    net::io_context ioc;
    std::string dir;
    std::string socket_path;
    unique_fd sock;

    void SetUp() override {
        char tmpl[] = "/tmp/sockherd-notify-XXXXXX";
        ASSERT_NE(::mkdtemp(tmpl), nullptr);
        dir = tmpl;
        socket_path = dir + "/notify";
        sock.reset(::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0));
        ASSERT_TRUE(sock);
        sockaddr_un addr{};
        addr.sun_family = AF_UNIX;
        std::memcpy(addr.sun_path, socket_path.data(), socket_path.size());
        ASSERT_EQ(::bind(sock.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)), 0);
        ::setenv("NOTIFY_SOCKET", socket_path.c_str(), 1);
    }
    void TearDown() override {
        ::unsetenv("NOTIFY_SOCKET");
        ::unsetenv("WATCHDOG_USEC");
        ::unsetenv("WATCHDOG_PID");
        sock.reset();
        ::unlink(socket_path.c_str());
        ::rmdir(dir.c_str());
    }

    // The next datagram, waiting at most `limit` while the io_context runs (for the watchdog).
    std::optional<std::string> next(std::chrono::milliseconds limit = 2000ms) {
        const auto deadline = std::chrono::steady_clock::now() + limit;
        for (;;) {
            pollfd p{sock.get(), POLLIN, 0};
            if (::poll(&p, 1, 0) == 1) {
                char buf[4096];
                const ssize_t n = ::recv(sock.get(), buf, sizeof(buf), 0);
                if (n >= 0)
                    return std::string(buf, static_cast<std::size_t>(n));
            }
            if (std::chrono::steady_clock::now() >= deadline)
                return std::nullopt;
            ioc.restart();
            ioc.run_for(5ms);
        }
    }
    // Nothing more arrives: checked by a marker sent afterwards, so no wait is needed.
    void expect_next_is_marker(systemd_notifier& n, const std::string& marker) {
        n.status(marker);
        EXPECT_EQ(next(), "STATUS=" + marker);
    }
};

TEST_F(NotifySystemd, disabled_without_notify_socket) {
    ::unsetenv("NOTIFY_SOCKET");
    systemd_notifier n(ioc);
    EXPECT_FALSE(n.enabled());
    n.ready();
    n.status("x");
    n.start_watchdog();
    n.stopping();
    EXPECT_EQ(next(50ms), std::nullopt);
}

TEST_F(NotifySystemd, ready_is_sent_once) {
    systemd_notifier n(ioc);
    EXPECT_TRUE(n.enabled());
    n.ready();
    EXPECT_EQ(next(), "READY=1");
    n.ready();
    expect_next_is_marker(n, "after second ready");
}

TEST_F(NotifySystemd, status_only_when_it_changed_and_on_one_line) {
    systemd_notifier n(ioc);
    n.status("4 workers");
    EXPECT_EQ(next(), "STATUS=4 workers");
    n.status("4 workers");
    n.status("3 workers\n1 restarting");
    EXPECT_EQ(next(), "STATUS=3 workers 1 restarting");
    n.status(std::string(5000, 'x'));
    EXPECT_EQ(next(), "STATUS=" + std::string(1024, 'x'));
}

TEST_F(NotifySystemd, reloading_carries_monotonic_usec_and_allows_ready_again) {
    systemd_notifier n(ioc);
    n.ready();
    EXPECT_EQ(next(), "READY=1");
    timespec before{};
    ::clock_gettime(CLOCK_MONOTONIC, &before);
    n.reloading();
    const auto msg = next();
    ASSERT_TRUE(msg);
    ASSERT_EQ(msg->rfind("RELOADING=1\nMONOTONIC_USEC=", 0), 0u) << *msg;
    const auto usec = std::stoull(msg->substr(std::strlen("RELOADING=1\nMONOTONIC_USEC=")));
    EXPECT_GE(usec, static_cast<unsigned long long>(before.tv_sec) * 1'000'000ull + before.tv_nsec / 1000);
    n.ready();
    EXPECT_EQ(next(), "READY=1");
}

TEST_F(NotifySystemd, stopping_is_sent_once) {
    systemd_notifier n(ioc);
    n.stopping();
    EXPECT_EQ(next(), "STOPPING=1");
    n.stopping();
    expect_next_is_marker(n, "after second stopping");
}

TEST_F(NotifySystemd, watchdog_pings_until_stopping) {
    ::setenv("WATCHDOG_USEC", "200000", 1);
    ::setenv("WATCHDOG_PID", std::to_string(::getpid()).c_str(), 1);
    systemd_notifier n(ioc);
    n.start_watchdog();
    for (int i = 0; i < 4; ++i)
        EXPECT_EQ(next(), "WATCHDOG=1") << "ping " << i;
    n.stopping();
    // A ping already queued before stopping() may still be in the socket; then nothing more.
    auto msg = next();
    if (msg == "WATCHDOG=1")
        msg = next();
    EXPECT_EQ(msg, "STOPPING=1");
    // The only way to see that pings stopped is to run past a few intervals (100ms each).
    EXPECT_EQ(next(350ms), std::nullopt);
}

TEST_F(NotifySystemd, watchdog_meant_for_another_process_is_ignored) {
    ::setenv("WATCHDOG_USEC", "200000", 1);
    ::setenv("WATCHDOG_PID", std::to_string(::getppid()).c_str(), 1);
    systemd_notifier n(ioc);
    n.start_watchdog();
    expect_next_is_marker(n, "no watchdog");
    EXPECT_EQ(next(250ms), std::nullopt);
}

} // namespace
} // namespace sockherd::supervisor
