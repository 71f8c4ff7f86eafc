#include "supervisor/control.hpp"

#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <future>
#include <optional>
#include <sstream>

#include <gtest/gtest.h>

#include "run_until.hpp"

#include "common/unique_fd.hpp"

namespace sockherd::supervisor {
namespace {

using namespace std::chrono_literals;

struct command_result {
    int code = -1;
    std::string out;
    std::string err;
};

sockaddr_un address_of(const std::string& path) {
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::memcpy(addr.sun_path, path.data(), std::min(path.size(), sizeof(addr.sun_path) - 1));
    return addr;
}

// A plain blocking client, for what run_control_command() will not do (leave early, send junk).
unique_fd raw_connect(const std::string& path) {
    unique_fd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    const auto addr = address_of(path);
    EXPECT_EQ(::connect(fd.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)), 0) << std::strerror(errno);
    return fd;
}

// A socket file with nobody behind it: what a supervisor killed with SIGKILL leaves.
void make_stale_socket(const std::string& path) {
    unique_fd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    const auto addr = address_of(path);
    ASSERT_EQ(::bind(fd.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)), 0);
}

// One control_server on a temp path; its io_context runs on the test thread in bounded slices
// while the blocking client runs on another thread.
struct ControlServer : ::testing::Test {
    net::io_context ioc;
    std::string dir;
    std::string path;
    std::vector<std::vector<std::string>> received;
    std::vector<control_server::respond_fn> pending; // answers a test gives later
    std::unique_ptr<control_server> server;

    void SetUp() override {
        char tmpl[] = "/tmp/sockherd-control-XXXXXX";
        ASSERT_NE(::mkdtemp(tmpl), nullptr);
        dir = tmpl;
        path = dir + "/control.sock";
    }
    void TearDown() override {
        server.reset();
        std::error_code ignored;
        std::filesystem::remove_all(dir, ignored);
    }

    // "fail" answers an error, "later" and "stop" wait for the test, "throw" throws; the rest
    // echo their words.
    void start_server(const std::string& at = {}) {
        server = std::make_unique<control_server>(
            ioc, at.empty() ? path : at,
            [this](const std::vector<std::string>& words, control_server::respond_fn respond) {
                received.push_back(words);
                if (words[0] == "fail")
                    respond({false, "it failed"});
                else if (words[0] == "later" || words[0] == "stop")
                    pending.push_back(std::move(respond));
                else if (words[0] == "throw")
                    throw std::runtime_error("boom");
                else
                    respond({true, "did:" + words.back()});
            });
        server->start();
    }

    template <class Pred>
    bool run_until(Pred pred, std::chrono::milliseconds limit = 5000ms) {
        return test::run_until(ioc, pred, limit, 5ms);
    }

    std::future<command_result> command_async(std::vector<std::string> words, std::chrono::milliseconds timeout = 5s,
                                              std::string at = {}) {
        return std::async(std::launch::async, [words = std::move(words), timeout, at = at.empty() ? path : at] {
            std::ostringstream out, err;
            command_result r;
            r.code = run_control_command(at, words, out, err, timeout);
            r.out = out.str();
            r.err = err.str();
            return r;
        });
    }

    command_result finish(std::future<command_result>& f) {
        EXPECT_TRUE(run_until([&] { return f.wait_for(0s) == std::future_status::ready; }, 10s));
        return f.get(); // the client's own timeout bounds this too
    }

    command_result command(std::vector<std::string> words, std::chrono::milliseconds timeout = 5s) {
        auto f = command_async(std::move(words), timeout);
        return finish(f);
    }
};

TEST_F(ControlServer, ok_reply_goes_to_out_with_exit_code_0) {
    start_server();
    const auto r = command({"workers", "4"});
    EXPECT_EQ(r.code, 0);
    EXPECT_EQ(r.out, "did:4\n");
    EXPECT_EQ(r.err, "");
    ASSERT_EQ(received.size(), 1u);
    EXPECT_EQ(received[0], (std::vector<std::string>{"workers", "4"}));
}

TEST_F(ControlServer, error_reply_goes_to_err_with_exit_code_1) {
    start_server();
    const auto r = command({"fail"});
    EXPECT_EQ(r.code, 1);
    EXPECT_EQ(r.out, "");
    EXPECT_EQ(r.err, "it failed\n");
}

TEST_F(ControlServer, handler_exception_becomes_an_error_reply) {
    start_server();
    const auto r = command({"throw"});
    EXPECT_EQ(r.code, 1);
    EXPECT_EQ(r.err, "internal error: boom\n");
    EXPECT_EQ(command({"status"}).code, 0); // and the server carries on
}

TEST_F(ControlServer, empty_command_is_an_error) {
    start_server();
    const auto r = command({});
    EXPECT_EQ(r.code, 1);
    EXPECT_EQ(r.err, "empty command\n");
    EXPECT_TRUE(received.empty());
}

TEST_F(ControlServer, line_longer_than_1KiB_is_refused) {
    start_server();
    const auto r = command({std::string(2000, 'x')});
    EXPECT_EQ(r.code, 1);
    EXPECT_EQ(r.err, "command too long\n");
    EXPECT_TRUE(received.empty());
}

TEST_F(ControlServer, raw_line_is_split_on_spaces_and_answered_then_closed) {
    start_server();
    auto fd = raw_connect(path);
    const std::string line = "  workers   7 \r\n";
    ASSERT_EQ(::send(fd.get(), line.data(), line.size(), MSG_NOSIGNAL), static_cast<ssize_t>(line.size()));
    std::string reply;
    bool eof = false;
    ASSERT_TRUE(run_until([&] {
        char buf[256];
        const ssize_t n = ::recv(fd.get(), buf, sizeof(buf), MSG_DONTWAIT);
        if (n > 0)
            reply.append(buf, static_cast<std::size_t>(n));
        eof = n == 0;
        return eof;
    }));
    EXPECT_EQ(reply, "ok\ndid:7\n");
    ASSERT_EQ(received.size(), 1u);
    EXPECT_EQ(received[0], (std::vector<std::string>{"workers", "7"}));
}

TEST_F(ControlServer, socket_file_is_0600_whatever_the_umask) {
    const mode_t old = ::umask(0);
    start_server();
    ::umask(old);
    struct stat st{};
    ASSERT_EQ(::lstat(path.c_str(), &st), 0);
    EXPECT_TRUE(S_ISSOCK(st.st_mode));
    EXPECT_EQ(st.st_mode & 07777, 0600u);
}

TEST_F(ControlServer, creates_a_missing_parent_directory) {
    const std::string nested = dir + "/run/control.sock";
    start_server(nested);
    struct stat st{};
    ASSERT_EQ(::stat((dir + "/run").c_str(), &st), 0);
    EXPECT_TRUE(S_ISDIR(st.st_mode));
    auto f = command_async({"status"}, 5s, nested);
    EXPECT_EQ(finish(f).code, 0);
}

TEST_F(ControlServer, does_not_create_more_than_the_last_directory) {
    try {
        start_server(dir + "/a/b/control.sock");
        FAIL() << "expected an exception";
    } catch (const std::system_error& e) {
        EXPECT_NE(std::string(e.what()).find("create directory " + dir + "/a/b"), std::string::npos) << e.what();
    }
}

TEST_F(ControlServer, stale_socket_file_is_replaced) {
    make_stale_socket(path);
    ASSERT_TRUE(std::filesystem::exists(path));
    start_server();
    const auto r = command({"status"});
    EXPECT_EQ(r.code, 0);
    EXPECT_EQ(r.out, "did:status\n");
}

TEST_F(ControlServer, live_socket_makes_the_constructor_throw) {
    start_server();
    try {
        control_server second(ioc, path, [](const std::vector<std::string>&, control_server::respond_fn) {});
        FAIL() << "expected an exception";
    } catch (const std::system_error& e) {
        EXPECT_EQ(std::string(e.what()).rfind("control socket " + path + ": another supervisor is running there", 0),
                  0u)
            << e.what();
    }
    EXPECT_EQ(command({"status"}).code, 0); // the first one is untouched
}

TEST_F(ControlServer, refuses_to_replace_a_file_that_is_not_a_socket) {
    std::ofstream(path) << "precious";
    EXPECT_THROW(start_server(), std::system_error);
    std::ifstream in(path);
    std::string content;
    in >> content;
    EXPECT_EQ(content, "precious");
}

TEST_F(ControlServer, async_handler_may_answer_later) {
    start_server();
    auto f = command_async({"later"});
    ASSERT_TRUE(run_until([&] { return pending.size() == 1; }));
    ASSERT_EQ(f.wait_for(0s), std::future_status::timeout); // still waiting for us
    pending[0]({true, "finally"});
    const auto r = finish(f);
    EXPECT_EQ(r.code, 0);
    EXPECT_EQ(r.out, "finally\n");
}

TEST_F(ControlServer, a_second_answer_is_ignored) {
    start_server();
    auto f = command_async({"later"});
    ASSERT_TRUE(run_until([&] { return pending.size() == 1; }));
    pending[0]({false, "first"});
    pending[0]({true, "second"});
    const auto r = finish(f);
    EXPECT_EQ(r.code, 1);
    EXPECT_EQ(r.err, "first\n");
}

TEST_F(ControlServer, client_leaving_before_the_answer_harms_nothing) {
    start_server();
    {
        auto fd = raw_connect(path);
        ASSERT_EQ(::send(fd.get(), "stop\n", 5, MSG_NOSIGNAL), 5);
        ASSERT_TRUE(run_until([&] { return pending.size() == 1; }));
    } // closed here, before the answer
    pending[0]({true, "stopping"});
    const auto r = command({"status"});
    EXPECT_EQ(r.code, 0);
    EXPECT_EQ(r.out, "did:status\n");
}

TEST_F(ControlServer, answer_after_close_is_dropped_and_the_client_sees_eof) {
    start_server();
    auto fd = raw_connect(path);
    ASSERT_EQ(::send(fd.get(), "stop\n", 5, MSG_NOSIGNAL), 5);
    ASSERT_TRUE(run_until([&] { return pending.size() == 1; }));
    server->close();
    pending[0]({true, "too late"});
    server.reset();
    ioc.restart();
    ioc.poll();
    pollfd p{fd.get(), POLLIN, 0};
    ASSERT_EQ(::poll(&p, 1, 5000), 1);
    char c;
    EXPECT_EQ(::recv(fd.get(), &c, 1, 0), 0);
}

TEST_F(ControlServer, more_than_16_connections_get_busy) {
    start_server();
    std::vector<unique_fd> idle;
    for (int i = 0; i < 16; ++i) {
        idle.push_back(raw_connect(path));
        ioc.restart();
        ioc.poll(); // accept as we go, so that the backlog never fills
    }
    auto r = command({"status"});
    EXPECT_EQ(r.code, 1);
    EXPECT_EQ(r.err, "busy\n");

    idle.clear(); // they leave; their slots come free once the server has seen them go
    EXPECT_TRUE(run_until([&] {
        r = command({"status"}, 1s);
        return r.code == 0;
    }));
    EXPECT_EQ(r.out, "did:status\n");
}

TEST_F(ControlServer, close_removes_the_socket_file) {
    start_server();
    ASSERT_TRUE(std::filesystem::exists(path));
    server->close();
    EXPECT_FALSE(std::filesystem::exists(path));
    server->close(); // twice is fine
    const auto r = command({"status"});
    EXPECT_EQ(r.code, 2);
}

TEST_F(ControlServer, close_leaves_a_file_that_is_no_longer_ours) {
    start_server();
    ASSERT_EQ(::unlink(path.c_str()), 0);
    make_stale_socket(path); // someone else's now
    server->close();
    EXPECT_TRUE(std::filesystem::exists(path));
}

struct ControlClient : ControlServer {};

TEST_F(ControlClient, no_server_is_exit_2_naming_the_path) {
    std::ostringstream out, err;
    EXPECT_EQ(run_control_command(path, {"status"}, out, err, 1s), 2);
    EXPECT_EQ(err.str(),
              "sockherd: no supervisor is running at " + path + " (connect: No such file or directory)\n");
    EXPECT_EQ(out.str(), "");
}

TEST_F(ControlClient, stale_socket_is_exit_2_connection_refused) {
    make_stale_socket(path);
    std::ostringstream out, err;
    EXPECT_EQ(run_control_command(path, {"status"}, out, err, 1s), 2);
    EXPECT_EQ(err.str(), "sockherd: no supervisor is running at " + path + " (connect: Connection refused)\n");
}

TEST_F(ControlClient, path_too_long_is_exit_2) {
    std::ostringstream out, err;
    EXPECT_EQ(run_control_command("/tmp/" + std::string(200, 'x'), {"status"}, out, err, 1s), 2);
    EXPECT_NE(err.str().find("control socket path must be"), std::string::npos) << err.str();
}

// Root passes every permission check, so as root the client runs in a child that became nobody.
TEST_F(ControlClient, permission_denied_is_exit_2_with_a_hint) {
    start_server();
    command_result r;
    if (::geteuid() != 0) {
        ASSERT_EQ(::chmod(path.c_str(), 0), 0);
        std::ostringstream out, err;
        r.code = run_control_command(path, {"status"}, out, err, 1s);
        r.err = err.str();
    } else {
        int p[2];
        ASSERT_EQ(::pipe(p), 0);
        unique_fd rd(p[0]), wr(p[1]);
        const pid_t pid = ::fork();
        ASSERT_GE(pid, 0);
        if (pid == 0) {
            rd.reset();
            std::string msg;
            if (::setgid(65534) != 0 || ::setuid(65534) != 0) {
                msg = "skip";
            } else {
                std::ostringstream out, err;
                const int code = run_control_command(path, {"status"}, out, err, 1s);
                msg = std::to_string(code) + " " + err.str();
            }
            [[maybe_unused]] auto n = ::write(wr.get(), msg.data(), msg.size());
            ::_exit(0);
        }
        wr.reset();
        std::string msg;
        char buf[512];
        for (ssize_t n; (n = ::read(rd.get(), buf, sizeof(buf))) > 0;)
            msg.append(buf, static_cast<std::size_t>(n));
        int status = 0;
        ::waitpid(pid, &status, 0);
        if (msg == "skip")
            GTEST_SKIP() << "cannot become nobody here";
        const auto space = msg.find(' ');
        ASSERT_NE(space, std::string::npos) << msg;
        r.code = std::atoi(msg.substr(0, space).c_str());
        r.err = msg.substr(space + 1);
    }
    EXPECT_EQ(r.code, 2);
    EXPECT_NE(r.err.find("permission denied on the control socket " + path), std::string::npos) << r.err;
    EXPECT_NE(r.err.find("as root"), std::string::npos) << r.err;
}

TEST_F(ControlClient, no_answer_within_the_timeout_is_exit_1) {
    start_server();
    auto f = command_async({"later"}, 200ms);
    const auto r = finish(f);
    EXPECT_EQ(r.code, 1);
    EXPECT_EQ(r.err, "sockherd: no answer from the supervisor at " + path + " within 200ms\n");
}

// A peer that is not a sockherd supervisor: answers anything but "ok"/"error".
TEST_F(ControlClient, unexpected_reply_is_exit_1) {
    unique_fd listener(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    const auto addr = address_of(path);
    ASSERT_EQ(::bind(listener.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)), 0);
    ASSERT_EQ(::listen(listener.get(), 1), 0);
    auto f = command_async({"status"});
    pollfd p{listener.get(), POLLIN, 0};
    ASSERT_EQ(::poll(&p, 1, 5000), 1);
    unique_fd conn(::accept(listener.get(), nullptr, nullptr));
    ASSERT_TRUE(conn);
    ASSERT_EQ(::send(conn.get(), "HTTP/1.1 400\r\n", 14, MSG_NOSIGNAL), 14);
    conn.reset();
    ASSERT_EQ(f.wait_for(5s), std::future_status::ready);
    const auto r = f.get();
    EXPECT_EQ(r.code, 1);
    EXPECT_EQ(r.err, "sockherd: unexpected reply from " + path + ": \"HTTP/1.1 400?\"\n");
}

TEST_F(ControlClient, ok_without_a_body_prints_nothing) {
    unique_fd listener(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    const auto addr = address_of(path);
    ASSERT_EQ(::bind(listener.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)), 0);
    ASSERT_EQ(::listen(listener.get(), 1), 0);
    auto f = command_async({"stop"});
    pollfd p{listener.get(), POLLIN, 0};
    ASSERT_EQ(::poll(&p, 1, 5000), 1);
    unique_fd conn(::accept(listener.get(), nullptr, nullptr));
    ASSERT_EQ(::send(conn.get(), "ok\n", 3, MSG_NOSIGNAL), 3);
    conn.reset();
    ASSERT_EQ(f.wait_for(5s), std::future_status::ready);
    const auto r = f.get();
    EXPECT_EQ(r.code, 0);
    EXPECT_EQ(r.out, "");
}

} // namespace
} // namespace sockherd::supervisor
