// worker/self_acceptor: a connection to one of its sockets arrives in a batch on the io_context
// with that socket's listener id and inode, and listener_of() follows a renumbering of the same
// sockets (a reload that removed a listener ahead of them).

#include "common/net.hpp"
#include "worker/self_acceptor.hpp"

#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <vector>

#include <gtest/gtest.h>

#include "run_until.hpp"

namespace sockherd::worker {
namespace {

using test::run_until;

struct listening {
    unique_fd fd;
    std::uint16_t port = 0;
};

listening listen_loopback() {
    listening l;
    l.fd = unique_fd(::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
    EXPECT_TRUE(l.fd);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    EXPECT_EQ(::bind(l.fd.get(), reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
    EXPECT_EQ(::listen(l.fd.get(), 16), 0);
    socklen_t len = sizeof a;
    EXPECT_EQ(::getsockname(l.fd.get(), reinterpret_cast<sockaddr*>(&a), &len), 0);
    l.port = ntohs(a.sin_port);
    return l;
}

unique_fd connect_to(std::uint16_t port) {
    unique_fd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons(port);
    EXPECT_EQ(::connect(fd.get(), reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
    return fd;
}

TEST(self_acceptor, batches_carry_the_socket_and_listener_of_follows_a_renumbering) {
    net::io_context ioc;
    std::vector<self_acceptor::accepted> got;
    self_acceptor acceptor(
        ioc, [&](std::vector<self_acceptor::accepted>&& batch, std::uint64_t) {
            for (auto& a : batch)
                got.push_back(std::move(a));
        },
        [](const std::string& what) { FAIL() << what; });
    auto first = listen_loopback();
    auto second = listen_loopback();
    // Descriptors of its own, as a worker gets them over the channel.
    std::vector<self_acceptor::socket> sockets;
    sockets.push_back({0, unique_fd(::dup(first.fd.get()))});
    sockets.push_back({1, unique_fd(::dup(second.fd.get()))});
    acceptor.set_room(8);
    acceptor.set_sockets(std::move(sockets));
    ASSERT_EQ(acceptor.socket_count(), 2u);

    const auto client = connect_to(second.port);
    ASSERT_TRUE(run_until(ioc, [&] { return !got.empty(); }));
    ASSERT_EQ(got.size(), 1u);
    EXPECT_EQ(got[0].listener_id, 1);
    ASSERT_NE(got[0].socket_inode, 0u);
    EXPECT_EQ(acceptor.listener_of(got[0].socket_inode), std::optional<std::uint16_t>(1));

    // The reload removed the first listener: the second one is listener 0 now.
    std::vector<self_acceptor::socket> renumbered;
    renumbered.push_back({0, unique_fd(::dup(second.fd.get()))});
    acceptor.set_sockets(std::move(renumbered));
    EXPECT_EQ(acceptor.listener_of(got[0].socket_inode), std::optional<std::uint16_t>(0));

    // A socket it no longer accepts on is not among its listeners.
    struct stat st{};
    ASSERT_EQ(::fstat(first.fd.get(), &st), 0);
    EXPECT_EQ(acceptor.listener_of(st.st_ino), std::nullopt);
    acceptor.stop();
}

} // namespace
} // namespace sockherd::worker
