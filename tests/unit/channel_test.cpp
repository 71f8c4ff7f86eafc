#include "common/ipc/channel.hpp"

#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

#include <gtest/gtest.h>

#include "run_until.hpp"

namespace sockherd::ipc {
namespace {

// Two channels over one real socketpair, driven by one io_context with a deadline.
struct channel_pair : ::testing::Test {
    net::io_context ioc;
    std::shared_ptr<channel> a, b;
    std::vector<message> got_a, got_b;
    std::vector<std::string> errors_a, errors_b;

    void open(socket_ops& ops_a = socket_ops::system(), socket_ops& ops_b = socket_ops::system()) {
        error_code ec;
        auto [x, y] = make_socketpair(ec);
        ASSERT_FALSE(ec);
        a = std::make_shared<channel>(ioc, std::move(x), channel::limits{}, ops_a);
        b = std::make_shared<channel>(ioc, std::move(y), channel::limits{}, ops_b);
        a->start({[this](message&& m) { got_a.push_back(std::move(m)); },
                  [this](error_code, std::string_view w) { errors_a.emplace_back(w); }, nullptr});
        b->start({[this](message&& m) { got_b.push_back(std::move(m)); },
                  [this](error_code, std::string_view w) { errors_b.emplace_back(w); }, nullptr});
    }

    template <class Pred>
    bool run_until(Pred pred) {
        return test::run_until(ioc, pred);
    }
};

std::pair<unique_fd, unique_fd> make_pipe() {
    int p[2];
    EXPECT_EQ(::pipe2(p, O_CLOEXEC), 0);
    return {unique_fd(p[0]), unique_fd(p[1])};
}

TEST_F(channel_pair, passes_a_connected_socket_that_works_on_the_other_side) {
    open();
    tcp::acceptor acc(ioc, {net::ip::make_address("127.0.0.1"), 0});
    tcp::socket client(ioc);
    client.connect(acc.local_endpoint());
    tcp::socket server = acc.accept();

    handoff_msg h;
    h.listener_id = 3;
    h.connections.push_back({client.local_endpoint(), unique_fd(server.release())});
    ASSERT_TRUE(a->send(std::move(h)));
    ASSERT_TRUE(run_until([&] { return got_b.size() == 1; }));

    auto& m = std::get<handoff_msg>(got_b[0]);
    EXPECT_EQ(m.listener_id, 3);
    ASSERT_TRUE(m.connections[0].fd);
    tcp::socket adopted(ioc);
    adopted.assign(tcp::v4(), m.connections[0].fd.release());
    net::write(adopted, net::buffer(std::string_view("hello")));
    char buf[5];
    net::read(client, net::buffer(buf));
    EXPECT_EQ(std::string_view(buf, 5), "hello");
    EXPECT_TRUE(errors_a.empty());
    EXPECT_TRUE(errors_b.empty());
}

// A listening socket passed in a listen message accepts on the other side, between two
// hand-offs whose descriptors stay with their own messages.
TEST_F(channel_pair, passes_a_listening_socket_between_handoffs) {
    open();
    tcp::acceptor acc(ioc, {net::ip::make_address("127.0.0.1"), 0});
    const auto listening_at = acc.local_endpoint();
    auto [r1, w1] = make_pipe();
    auto [r2, w2] = make_pipe();
    handoff_msg h1;
    h1.connections.push_back({listening_at, std::move(w1)});
    listen_msg l;
    l.sockets.push_back({5, unique_fd(acc.release())});
    handoff_msg h2;
    h2.connections.push_back({listening_at, std::move(w2)});
    ASSERT_TRUE(a->send(std::move(h1)));
    ASSERT_TRUE(a->send(std::move(l)));
    ASSERT_TRUE(a->send(std::move(h2)));
    ASSERT_TRUE(run_until([&] { return got_b.size() == 3; }));

    // Each pipe's write end arrived with its own hand-off.
    for (auto [index, read_end] : {std::pair{0, r1.get()}, std::pair{2, r2.get()}}) {
        auto& h = std::get<handoff_msg>(got_b[static_cast<std::size_t>(index)]);
        ASSERT_TRUE(h.connections[0].fd);
        const char c = static_cast<char>('a' + index);
        ASSERT_EQ(::write(h.connections[0].fd.get(), &c, 1), 1);
        char got = 0;
        ASSERT_EQ(::read(read_end, &got, 1), 1);
        EXPECT_EQ(got, c);
    }
    auto& m = std::get<listen_msg>(got_b[1]);
    ASSERT_EQ(m.sockets.size(), 1u);
    EXPECT_EQ(m.sockets[0].listener_id, 5);
    ASSERT_TRUE(m.sockets[0].fd);
    tcp::acceptor adopted(ioc);
    adopted.assign(tcp::v4(), m.sockets[0].fd.release());
    tcp::socket client(ioc);
    client.connect(listening_at);
    tcp::socket server = adopted.accept();
    EXPECT_EQ(server.remote_endpoint(), client.local_endpoint());
    EXPECT_TRUE(errors_a.empty());
    EXPECT_TRUE(errors_b.empty());
}

TEST_F(channel_pair, many_handoffs_interleaved_keep_each_descriptor_with_its_message) {
    open();
    constexpr int count = 300;
    std::vector<unique_fd> read_ends;
    for (int i = 0; i < count; ++i) {
        auto [r, w] = make_pipe();
        read_ends.push_back(std::move(r));
        handoff_msg h;
        h.listener_id = static_cast<std::uint16_t>(i);
        const int batch = 1 + i % 3;
        h.connections.push_back({{net::ip::make_address("127.0.0.1"), static_cast<unsigned short>(i)}, std::move(w)});
        for (int k = 1; k < batch; ++k) {
            auto [r2, w2] = make_pipe();
            h.connections.push_back({{net::ip::make_address("127.0.0.1"), 0}, std::move(w2)});
        }
        a->send(std::move(h));
        if (i % 7 == 0)
            a->send(config_msg{static_cast<std::uint64_t>(i), std::string(5000, 'c'), {}});
    }
    ASSERT_TRUE(run_until([&] {
        return std::count_if(got_b.begin(), got_b.end(),
                             [](auto& m) { return std::holds_alternative<handoff_msg>(m); }) == count;
    }));
    int seen = 0;
    for (auto& m : got_b) {
        auto* h = std::get_if<handoff_msg>(&m);
        if (!h)
            continue;
        ASSERT_EQ(h->listener_id, seen);
        ASSERT_TRUE(h->connections[0].fd);
        const char tag = static_cast<char>(seen & 0x7f);
        ASSERT_EQ(::write(h->connections[0].fd.get(), &tag, 1), 1);
        char got = 0;
        ASSERT_EQ(::read(read_ends[seen].get(), &got, 1), 1);
        EXPECT_EQ(got, tag) << "descriptor of handoff " << seen << " went to another message";
        ++seen;
    }
    EXPECT_TRUE(errors_b.empty());
}

TEST_F(channel_pair, a_one_mebibyte_message_passes) {
    open();
    std::string big(1024 * 1024, 'z');
    big[12345] = 'q';
    a->send(config_msg{77, big, {}});
    ASSERT_TRUE(run_until([&] { return got_b.size() == 1; }));
    auto& m = std::get<config_msg>(got_b[0]);
    EXPECT_EQ(m.generation, 77u);
    EXPECT_EQ(m.toml, big);
}

// sendmsg fails with EAGAIN a few times: the channel waits and the message still arrives.
struct flaky_send : socket_ops {
    int eagain_left = 3;
    int calls = 0;
    ssize_t send_msg(int fd, const msghdr* msg, int flags) override {
        ++calls;
        if (eagain_left > 0) {
            --eagain_left;
            errno = EAGAIN;
            return -1;
        }
        return socket_ops::send_msg(fd, msg, flags);
    }
};

TEST_F(channel_pair, eagain_from_sendmsg_is_retried) {
    flaky_send ops;
    open(ops);
    a->send(drain_msg{123});
    ASSERT_TRUE(run_until([&] { return got_b.size() == 1; }));
    EXPECT_EQ(std::get<drain_msg>(got_b[0]).timeout_ms, 123u);
    EXPECT_GE(ops.calls, 2);
    EXPECT_TRUE(errors_a.empty());
}

struct broken_send : socket_ops {
    ssize_t send_msg(int, const msghdr*, int) override {
        errno = EPIPE;
        return -1;
    }
};

TEST_F(channel_pair, epipe_is_reported_once_and_closes) {
    broken_send ops;
    open(ops);
    a->send(stop_msg{});
    ASSERT_TRUE(run_until([&] { return !errors_a.empty(); }));
    EXPECT_EQ(errors_a.size(), 1u);
    EXPECT_FALSE(a->is_open());
    EXPECT_FALSE(a->send(stop_msg{})); // closed: refuses, descriptors would be closed
}

TEST_F(channel_pair, peer_close_is_reported) {
    open();
    b->close();
    ASSERT_TRUE(run_until([&] { return !errors_a.empty(); }));
    EXPECT_EQ(errors_a[0], "peer closed the channel");
    EXPECT_TRUE(errors_b.empty()); // no handler after close()
}

TEST_F(channel_pair, unknown_type_is_answered_and_the_channel_survives) {
    open();
    std::string frame;
    encode(stop_msg{}, frame);
    frame[6] = 0x55; // a type nobody knows
    // Write the raw frame, then a valid message, straight onto the socket.
    error_code ec;
    auto [x, y] = make_socketpair(ec);
    auto raw = std::move(x);
    auto receiver = std::make_shared<channel>(ioc, std::move(y));
    std::vector<message> got;
    std::vector<std::string> errs;
    receiver->start({[&](message&& m) { got.push_back(std::move(m)); },
                     [&](error_code, std::string_view w) { errs.emplace_back(w); }, nullptr});
    std::string valid;
    encode(drain_msg{9}, valid);
    const std::string both = frame + valid;
    ASSERT_EQ(::write(raw.get(), both.data(), both.size()), static_cast<ssize_t>(both.size()));
    ASSERT_TRUE(run_until([&] { return got.size() == 1; }));
    EXPECT_EQ(std::get<drain_msg>(got[0]).timeout_ms, 9u);
    EXPECT_TRUE(errs.empty());
    // The receiver answered "did not recognize type 0x55".
    std::string reply(64, '\0');
    ssize_t n = -1;
    for (int i = 0; i < 100 && n <= 0; ++i) {
        ioc.restart();
        ioc.run_for(std::chrono::milliseconds(10));
        n = ::recv(raw.get(), reply.data(), reply.size(), MSG_DONTWAIT);
    }
    ASSERT_GT(n, 0);
    auto r = decode({reinterpret_cast<const std::uint8_t*>(reply.data()), static_cast<std::size_t>(n)});
    ASSERT_EQ(r.status, decode_status::ok);
    EXPECT_EQ(std::get<unknown_type_msg>(r.msg).type, 0x55);
}

// Sends `frame` over `fd` with one descriptor attached, bypassing the channel's rules.
void send_with_fd(int fd, const std::string& frame, int passed) {
    iovec iov{const_cast<char*>(frame.data()), frame.size()};
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))];
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control;
    msg.msg_controllen = sizeof(control);
    cmsghdr* cm = CMSG_FIRSTHDR(&msg);
    cm->cmsg_level = SOL_SOCKET;
    cm->cmsg_type = SCM_RIGHTS;
    cm->cmsg_len = CMSG_LEN(sizeof(int));
    std::memcpy(CMSG_DATA(cm), &passed, sizeof(int));
    ASSERT_EQ(::sendmsg(fd, &msg, 0), static_cast<ssize_t>(frame.size()));
}

TEST_F(channel_pair, descriptor_on_a_message_that_may_not_carry_one_is_a_protocol_error) {
    error_code ec;
    auto [x, y] = make_socketpair(ec);
    auto receiver = std::make_shared<channel>(ioc, std::move(y));
    std::vector<std::string> errs;
    receiver->start({[](message&&) {}, [&](error_code, std::string_view w) { errs.emplace_back(w); }, nullptr});
    auto [r, w] = make_pipe();
    std::string frame;
    encode(stop_msg{}, frame);
    send_with_fd(x.get(), frame, w.get());
    w.reset();
    ASSERT_TRUE(run_until([&] { return !errs.empty(); }));
    EXPECT_EQ(errs[0], "descriptor received with a message that may not carry one");
    // The stray descriptor was closed by the receiver: the pipe's write side is gone.
    char c;
    EXPECT_EQ(::read(r.get(), &c, 1), 0);
}

TEST_F(channel_pair, handoff_without_its_descriptor_is_a_protocol_error) {
    error_code ec;
    auto [x, y] = make_socketpair(ec);
    auto receiver = std::make_shared<channel>(ioc, std::move(y));
    std::vector<std::string> errs;
    receiver->start({[](message&&) {}, [&](error_code, std::string_view w) { errs.emplace_back(w); }, nullptr});
    handoff_msg h;
    h.connections.push_back({{net::ip::make_address("127.0.0.1"), 1}, {}});
    std::string frame;
    encode(message(std::move(h)), frame);
    ASSERT_EQ(::write(x.get(), frame.data(), frame.size()), static_cast<ssize_t>(frame.size()));
    ASSERT_TRUE(run_until([&] { return !errs.empty(); }));
    EXPECT_EQ(errs[0], "handoff arrived without its descriptors");
}

struct truncating_recv : socket_ops {
    ssize_t recv_msg(int fd, msghdr* msg, int flags) override {
        ssize_t n = socket_ops::recv_msg(fd, msg, flags);
        if (n > 0)
            msg->msg_flags |= MSG_CTRUNC;
        return n;
    }
};

TEST_F(channel_pair, truncated_control_data_is_a_protocol_error) {
    truncating_recv ops;
    open(socket_ops::system(), ops);
    a->send(stop_msg{});
    ASSERT_TRUE(run_until([&] { return !errors_b.empty(); }));
    EXPECT_NE(errors_b[0].find("truncated"), std::string::npos);
    EXPECT_TRUE(got_b.empty());
}

TEST_F(channel_pair, malformed_frame_closes_the_channel) {
    error_code ec;
    auto [x, y] = make_socketpair(ec);
    auto receiver = std::make_shared<channel>(ioc, std::move(y));
    std::vector<std::string> errs;
    receiver->start({[](message&&) {}, [&](error_code, std::string_view w) { errs.emplace_back(w); }, nullptr});
    const char junk[16] = {1, 0, 0, 0, 9, 9, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0};
    ASSERT_EQ(::write(x.get(), junk, sizeof junk), static_cast<ssize_t>(sizeof junk));
    ASSERT_TRUE(run_until([&] { return !errs.empty(); }));
    EXPECT_EQ(errs[0], "unsupported protocol version");
    EXPECT_FALSE(receiver->is_open());
}

TEST_F(channel_pair, full_reports_room_when_the_queue_drains) {
    error_code ec;
    auto [x, y] = make_socketpair(ec);
    channel::limits lim;
    lim.send_queue_bytes = 1024;
    auto sender = std::make_shared<channel>(ioc, std::move(x), lim);
    int room = 0;
    sender->start({[](message&&) {}, [](error_code, std::string_view) {}, [&] { ++room; }});
    sender->send(config_msg{1, std::string(4096, 'a'), {}});
    EXPECT_TRUE(sender->full());
    // Nobody reads y yet, but 4 KiB fits in the socket buffer: the queue drains.
    ASSERT_TRUE(run_until([&] { return room == 1; }));
    EXPECT_FALSE(sender->full());
    EXPECT_EQ(sender->queued_bytes(), 0u);
}

} // namespace
} // namespace sockherd::ipc
