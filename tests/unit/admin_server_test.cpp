#include "supervisor/admin_server.hpp"

#include <sys/resource.h>
#include <unistd.h>

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

namespace sockherd::supervisor {
namespace {

using namespace std::chrono_literals;
using string_response = http::response<http::string_body>;

node_snapshot healthy_snapshot() {
    node_snapshot s;
    s.version = "0.1.0";
    s.pid = 4242;
    s.config_source = "<embedded default>";
    s.workers_configured = 2;
    s.workers_up = 2;
    for (unsigned i = 0; i < 2; ++i) {
        worker_row w;
        w.id = i;
        w.pid = static_cast<pid_t>(100 + i);
        w.state = "up";
        s.workers.push_back(w);
    }
    s.listeners = {{"127.0.0.1:8080", "handoff", true, 3}};
    return s;
}

// The server and its clients share one io_context, run here in bounded slices: the test is
// single-threaded like the supervisor, and every wait has a deadline.
class AdminServer : public ::testing::Test {
protected:
    void start(std::string token = "") {
        admin_server::options opts{tcp::endpoint(net::ip::make_address("127.0.0.1"), 0), std::move(token)};
        server_ = std::make_unique<admin_server>(ioc_, opts, [this] {
            ++snapshots_;
            return snapshot_;
        });
        server_->start();
    }

    // Runs the loop until `done` or the deadline; false on the deadline.
    bool run_until(const bool& done, std::chrono::milliseconds limit = 5s) {
        const auto deadline = std::chrono::steady_clock::now() + limit;
        while (!done && std::chrono::steady_clock::now() < deadline) {
            if (ioc_.stopped())
                ioc_.restart();
            ioc_.run_one_for(10ms);
        }
        return done;
    }

    // Starts an operation whose handler takes (error_code, ...) and waits for it. On the deadline
    // the socket is closed so the handler still runs before its locals go away.
    template <class Start>
    error_code await(tcp::socket& socket, Start&& start) {
        bool done = false;
        error_code result;
        start([&](error_code ec, auto&&...) {
            result = ec;
            done = true;
        });
        if (!run_until(done)) {
            ADD_FAILURE() << "operation did not complete within the deadline";
            error_code ignored;
            socket.close(ignored);
            run_until(done);
            return net::error::timed_out;
        }
        return result;
    }

    tcp::socket connect() {
        tcp::socket s(ioc_);
        const auto ec = await(s, [&](auto h) { s.async_connect(server_->local_endpoint(), h); });
        EXPECT_FALSE(ec) << ec.message();
        return s;
    }

    error_code send(tcp::socket& s, const std::string& raw) {
        return await(s, [&](auto h) { net::async_write(s, net::buffer(raw), h); });
    }

    // Reads one response; skip_body for the answer to a HEAD.
    std::optional<string_response> read(tcp::socket& s, beast::flat_buffer& buffer, bool skip_body = false) {
        http::response_parser<http::string_body> parser;
        parser.body_limit(4 * 1024 * 1024);
        parser.skip(skip_body);
        const auto ec = await(s, [&](auto h) { http::async_read(s, buffer, parser, h); });
        if (ec)
            return std::nullopt;
        return parser.release();
    }

    // One request on a new connection.
    string_response get(const std::string& target, const std::string& extra_headers = "",
                        const std::string& method = "GET") {
        auto s = connect();
        EXPECT_FALSE(send(s, method + " " + target + " HTTP/1.1\r\nHost: test\r\n" + extra_headers + "\r\n"));
        beast::flat_buffer buffer;
        auto res = read(s, buffer, method == "HEAD");
        EXPECT_TRUE(res) << method << " " << target << ": no response";
        return res ? std::move(*res) : string_response{};
    }

    // True when the server closes `s` (EOF or reset) within the deadline, without answering.
    bool closed_by_server(tcp::socket& s) {
        char byte;
        const auto ec = await(s, [&](auto h) { s.async_read_some(net::buffer(&byte, 1), h); });
        return ec == net::error::eof || ec == net::error::connection_reset;
    }

    static void expect_common_headers(const string_response& res) {
        EXPECT_EQ(res[http::field::cache_control], "no-store");
        EXPECT_EQ(res[http::field::server], "sockherd");
    }

    net::io_context ioc_;
    node_snapshot snapshot_ = healthy_snapshot();
    int snapshots_ = 0;
    std::unique_ptr<admin_server> server_;
};

TEST_F(AdminServer, status_page) {
    start();
    const auto res = get("/status");
    EXPECT_EQ(res.result(), http::status::ok);
    EXPECT_EQ(res[http::field::content_type], "text/html; charset=utf-8");
    EXPECT_EQ(res.body(), render_status_html(snapshot_));
    EXPECT_NE(res["Content-Security-Policy"].find("default-src 'none'"), std::string_view::npos);
    expect_common_headers(res);
    EXPECT_EQ(snapshots_, 1) << "one snapshot per request";
}

TEST_F(AdminServer, status_json_metrics_and_query_strings) {
    start();
    auto res = get("/status.json?pretty=1");
    EXPECT_EQ(res.result(), http::status::ok);
    EXPECT_EQ(res[http::field::content_type], "application/json");
    EXPECT_EQ(nlohmann::json::parse(res.body())["pid"], 4242);
    expect_common_headers(res);

    res = get("/metrics");
    EXPECT_EQ(res.result(), http::status::ok);
    EXPECT_EQ(res[http::field::content_type], "text/plain; version=0.0.4; charset=utf-8");
    EXPECT_EQ(res.body(), render_metrics(snapshot_));
    expect_common_headers(res);
    EXPECT_EQ(snapshots_, 2);
}

TEST_F(AdminServer, healthz_follows_the_snapshot) {
    start();
    auto res = get("/healthz");
    EXPECT_EQ(res.result(), http::status::ok);
    EXPECT_EQ(res[http::field::content_type], "application/json");
    auto j = nlohmann::json::parse(res.body());
    EXPECT_EQ(j["status"], "ok");
    EXPECT_EQ(j["workers_up"], 2);
    expect_common_headers(res);

    snapshot_.workers_up = 0;
    res = get("/healthz");
    EXPECT_EQ(res.result(), http::status::service_unavailable);
    j = nlohmann::json::parse(res.body());
    EXPECT_EQ(j["status"], "unhealthy");
    EXPECT_EQ(j["reason"], "no worker is up");

    snapshot_ = healthy_snapshot();
    snapshot_.state = "draining";
    res = get("/healthz");
    EXPECT_EQ(res.result(), http::status::service_unavailable);
    EXPECT_EQ(nlohmann::json::parse(res.body())["reason"], "node is draining");
}

TEST_F(AdminServer, root_redirects_and_unknown_paths_are_404) {
    start();
    auto res = get("/");
    EXPECT_EQ(res.result(), http::status::found);
    EXPECT_EQ(res[http::field::location], "/status");
    expect_common_headers(res);

    res = get("/status/../etc/passwd");
    EXPECT_EQ(res.result(), http::status::not_found);
    expect_common_headers(res);
    res = get("/favicon.ico");
    EXPECT_EQ(res.result(), http::status::not_found);
    EXPECT_EQ(snapshots_, 0) << "no snapshot for requests that do not need one";
}

TEST_F(AdminServer, only_get_and_head) {
    start();
    for (const char* method : {"POST", "PUT", "DELETE", "OPTIONS"}) {
        const auto res = get("/status", "Content-Length: 0\r\n", method);
        EXPECT_EQ(res.result(), http::status::method_not_allowed) << method;
        EXPECT_EQ(res[http::field::allow], "GET, HEAD") << method;
        expect_common_headers(res);
    }
    EXPECT_EQ(snapshots_, 0);
}

TEST_F(AdminServer, request_bodies_are_refused) {
    start();
    auto s = connect();
    ASSERT_FALSE(send(s, "POST /status HTTP/1.1\r\nHost: test\r\nContent-Length: 5\r\n\r\nhello"));
    beast::flat_buffer buffer;
    auto res = read(s, buffer);
    ASSERT_TRUE(res);
    EXPECT_EQ(res->result(), http::status::payload_too_large);
    EXPECT_FALSE(res->keep_alive());
    EXPECT_TRUE(closed_by_server(s));

    const auto chunked = get("/status", "Transfer-Encoding: chunked\r\n");
    EXPECT_EQ(chunked.result(), http::status::payload_too_large);
}

TEST_F(AdminServer, head_sends_headers_only) {
    start();
    const auto full = get("/status.json");
    ASSERT_EQ(full.result(), http::status::ok);

    // HEAD, then GET on the same connection: had the HEAD answer carried a body, the second
    // response would not parse.
    auto s = connect();
    ASSERT_FALSE(send(s, "HEAD /status.json HTTP/1.1\r\nHost: test\r\n\r\n"
                         "GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n"));
    beast::flat_buffer buffer;
    auto head = read(s, buffer, true);
    ASSERT_TRUE(head);
    EXPECT_EQ(head->result(), http::status::ok);
    EXPECT_EQ(head->body(), "");
    EXPECT_EQ((*head)[http::field::content_length], std::to_string(full.body().size()));
    EXPECT_EQ((*head)[http::field::content_type], "application/json");
    auto next = read(s, buffer);
    ASSERT_TRUE(next);
    EXPECT_EQ(next->result(), http::status::ok);
    EXPECT_EQ(nlohmann::json::parse(next->body())["status"], "ok");
    EXPECT_EQ(buffer.size(), 0u) << "nothing else was sent";
}

TEST_F(AdminServer, keep_alive_serves_several_requests) {
    start();
    auto s = connect();
    beast::flat_buffer buffer;
    for (const char* target : {"/healthz", "/status.json", "/nope", "/metrics"}) {
        ASSERT_FALSE(send(s, std::string("GET ") + target + " HTTP/1.1\r\nHost: test\r\n\r\n"));
        auto res = read(s, buffer);
        ASSERT_TRUE(res) << target;
        EXPECT_TRUE(res->keep_alive()) << target;
    }
    ASSERT_FALSE(send(s, "GET /healthz HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"));
    auto last = read(s, buffer);
    ASSERT_TRUE(last);
    EXPECT_FALSE(last->keep_alive());
    EXPECT_TRUE(closed_by_server(s));
}

TEST_F(AdminServer, token_is_required_when_configured) {
    start("s3cret-token");
    for (const std::string& header : {std::string(), std::string("Authorization: Bearer wrong\r\n"),
                                      std::string("Authorization: Bearer s3cret-toke\r\n"),
                                      std::string("Authorization: Bearer s3cret-tokenX\r\n"),
                                      std::string("Authorization: Basic czNjcmV0LXRva2Vu\r\n"),
                                      std::string("Authorization: s3cret-token\r\n")}) {
        for (const char* target : {"/status", "/healthz", "/nope", "/"}) {
            const auto res = get(target, header);
            EXPECT_EQ(res.result(), http::status::unauthorized) << target << " with " << header;
            EXPECT_EQ(res[http::field::www_authenticate], "Bearer realm=\"sockherd\"");
            expect_common_headers(res);
        }
    }
    EXPECT_EQ(snapshots_, 0) << "nothing is rendered for a client without the token";

    auto res = get("/status.json", "Authorization: Bearer s3cret-token\r\n");
    EXPECT_EQ(res.result(), http::status::ok);
    EXPECT_EQ(nlohmann::json::parse(res.body())["pid"], 4242);
    res = get("/healthz", "Authorization: bearer s3cret-token\r\n");
    EXPECT_EQ(res.result(), http::status::ok) << "the scheme is case-insensitive";
}

TEST_F(AdminServer, huge_header_is_431) {
    start();
    // 12 KiB: over the header limit; 40 KiB: over the read buffer as well.
    for (std::size_t pad : {12 * 1024, 40 * 1024}) {
        auto s = connect();
        ASSERT_FALSE(send(s, "GET /status HTTP/1.1\r\nHost: test\r\nX-Pad: " + std::string(pad, 'a') + "\r\n\r\n"));
        beast::flat_buffer buffer;
        auto res = read(s, buffer);
        ASSERT_TRUE(res) << pad << ": the answer arrives although the server did not read the whole request";
        EXPECT_EQ(res->result(), http::status::request_header_fields_too_large) << pad;
        EXPECT_FALSE(res->keep_alive());
        expect_common_headers(*res);
        EXPECT_TRUE(closed_by_server(s));
    }
    EXPECT_EQ(snapshots_, 0);

    // Just under the limit is fine.
    const auto ok = get("/healthz", "X-Pad: " + std::string(7 * 1024, 'a') + "\r\n");
    EXPECT_EQ(ok.result(), http::status::ok);
}

TEST_F(AdminServer, malformed_request_is_400) {
    start();
    auto s = connect();
    ASSERT_FALSE(send(s, "GET /status HTTP/1.1\r\nBad Header Line\r\n\r\n"));
    beast::flat_buffer buffer;
    auto res = read(s, buffer);
    ASSERT_TRUE(res);
    EXPECT_EQ(res->result(), http::status::bad_request);
    EXPECT_TRUE(closed_by_server(s));
}

TEST_F(AdminServer, connections_beyond_the_cap_are_closed) {
    start();
    std::vector<tcp::socket> held;
    beast::flat_buffer buffer;
    // 64 connections, each known to the server (it answered on it) and left idle.
    for (int i = 0; i < 64; ++i) {
        held.push_back(connect());
        ASSERT_FALSE(send(held.back(), "GET /nope HTTP/1.1\r\nHost: test\r\n\r\n"));
        ASSERT_TRUE(read(held.back(), buffer)) << "connection " << i;
    }
    auto extra = connect();
    send(extra, "GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n"); // may fail: the server may have closed already
    EXPECT_TRUE(closed_by_server(extra));

    // Once one leaves, a new connection is served again (the server notices the close on its own
    // time, so retry under a deadline).
    held.front().close();
    const auto deadline = std::chrono::steady_clock::now() + 5s;
    bool served = false;
    while (!served && std::chrono::steady_clock::now() < deadline) {
        auto s = connect();
        beast::flat_buffer b;
        served = !send(s, "GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n") && read(s, b).has_value();
    }
    EXPECT_TRUE(served);
}

// With no descriptor left, accept fails at once (EMFILE) and the connection stays in the
// backlog: retrying at once would spin. The server backs off, and accepts once it can.
TEST_F(AdminServer, out_of_descriptors_backs_off_and_recovers) {
    start();
    tcp::socket s(ioc_);
    s.open(tcp::v4()); // the client's descriptor, taken before the limit
    rlimit old{};
    ASSERT_EQ(::getrlimit(RLIMIT_NOFILE, &old), 0);
    const int lowest_free = ::dup(0);
    ASSERT_GE(lowest_free, 0);
    ::close(lowest_free);
    struct restore_limit {
        rlimit r;
        ~restore_limit() { ::setrlimit(RLIMIT_NOFILE, &r); }
    } restore{old};
    rlimit tight = old;
    tight.rlim_cur = static_cast<rlim_t>(lowest_free); // no new descriptor can be made
    ASSERT_EQ(::setrlimit(RLIMIT_NOFILE, &tight), 0);

    bool connected = false;
    s.async_connect(server_->local_endpoint(), [&](error_code ec) {
        EXPECT_FALSE(ec) << ec.message();
        connected = true;
    });
    // A fixed window to count handlers in: a server that retried at once would run thousands.
    const auto handlers = ioc_.run_for(300ms);
    EXPECT_TRUE(connected);
    EXPECT_LT(handlers, 30u);

    ASSERT_EQ(::setrlimit(RLIMIT_NOFILE, &old), 0);
    ASSERT_FALSE(send(s, "GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n"));
    beast::flat_buffer buffer;
    auto res = read(s, buffer);
    ASSERT_TRUE(res) << "the connection left in the backlog is served once descriptors are back";
    EXPECT_EQ(res->result(), http::status::ok);
}

TEST_F(AdminServer, close_ends_open_connections_and_stops_accepting) {
    start();
    const auto endpoint = server_->local_endpoint();
    auto s = connect();
    beast::flat_buffer buffer;
    ASSERT_FALSE(send(s, "GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n"));
    ASSERT_TRUE(read(s, buffer));
    server_->close();
    EXPECT_TRUE(closed_by_server(s));

    tcp::socket late(ioc_);
    const auto ec = await(late, [&](auto h) { late.async_connect(endpoint, h); });
    EXPECT_EQ(ec, net::error::connection_refused);
    server_.reset(); // destroying a closed server is fine
}

TEST_F(AdminServer, bind_failure_names_the_address) {
    start();
    const auto port = server_->local_endpoint().port();
    admin_server::options opts{tcp::endpoint(net::ip::make_address("127.0.0.1"), port), ""};
    try {
        admin_server second(ioc_, opts, [] { return node_snapshot{}; });
        FAIL() << "a second server bound the same port";
    } catch (const std::system_error& e) {
        const std::string what = e.what();
        EXPECT_NE(what.find("admin listener 127.0.0.1:" + std::to_string(port)), std::string::npos) << what;
        EXPECT_NE(what.find("bind"), std::string::npos) << what;
    }
}

TEST_F(AdminServer, listens_on_ipv6_loopback) {
    admin_server::options opts{tcp::endpoint(net::ip::make_address("::1"), 0), ""};
    std::unique_ptr<admin_server> v6;
    try {
        v6 = std::make_unique<admin_server>(ioc_, opts, [this] { return snapshot_; });
    } catch (const std::system_error& e) {
        GTEST_SKIP() << "no IPv6 loopback here: " << e.what();
    }
    v6->start();
    tcp::socket s(ioc_);
    ASSERT_FALSE(await(s, [&](auto h) { s.async_connect(v6->local_endpoint(), h); }));
    ASSERT_FALSE(send(s, "GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n"));
    beast::flat_buffer buffer;
    auto res = read(s, buffer);
    ASSERT_TRUE(res);
    EXPECT_EQ(res->result(), http::status::ok);
}

} // namespace
} // namespace sockherd::supervisor
