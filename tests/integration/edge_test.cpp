// The edge of the node (issue 6): Origin checks, keepalive pings, connection limits, the PROXY
// protocol and trusted X-Forwarded-For, each seen from outside as a client sees it, with the
// rejection counted in /status.json and a log line naming it.

#include <algorithm>
#include <cstdint>
#include <regex>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "tests/integration/harness.hpp"
#include "tests/integration/status_json.hpp"

namespace sockherd::test {
namespace {

using namespace std::chrono_literals;
using json = nlohmann::json;

constexpr std::string_view fast_heartbeat = "[supervisor]\nheartbeat_interval = \"100ms\"\nwatchdog_timeout = \"2s\"\n\n";

// A WebSocket handshake request for /echo, written by hand.
std::string handshake(std::string_view extra_headers = {}) {
    return "GET /echo HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
           "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n" +
        std::string(extra_headers) + "\r\n";
}

// Server frames in `bytes` after the 101 response (server frames are never masked): their opcodes.
std::vector<int> server_opcodes(std::string_view bytes) {
    std::vector<int> out;
    const auto end_of_head = bytes.find("\r\n\r\n");
    if (end_of_head == std::string_view::npos)
        return out;
    std::size_t i = end_of_head + 4;
    for (int guard = 0; guard < 10'000 && i + 2 <= bytes.size(); ++guard) {
        const auto b0 = static_cast<unsigned char>(bytes[i]);
        const auto b1 = static_cast<unsigned char>(bytes[i + 1]);
        std::size_t len = b1 & 0x7F, head = 2;
        if (len == 126) {
            if (i + 4 > bytes.size())
                break;
            len = (static_cast<unsigned char>(bytes[i + 2]) << 8) | static_cast<unsigned char>(bytes[i + 3]);
            head = 4;
        } else if (len == 127) {
            break; // no test here sends anything that large
        }
        if (i + head + len > bytes.size())
            break;
        out.push_back(b0 & 0x0F);
        i += head + len;
    }
    return out;
}

// PROXY protocol v2 header for a TCP/IPv4 connection from src to dst.
std::string proxy_v2_ipv4(std::array<std::uint8_t, 4> src, std::uint16_t sport, std::array<std::uint8_t, 4> dst,
                          std::uint16_t dport, bool local = false) {
    std::string h("\r\n\r\n\0\r\nQUIT\n", 12);
    h += static_cast<char>(local ? 0x20 : 0x21);
    h += static_cast<char>(0x11); // AF_INET, STREAM
    h += '\0';
    h += static_cast<char>(12);
    for (auto b : src)
        h += static_cast<char>(b);
    for (auto b : dst)
        h += static_cast<char>(b);
    h += static_cast<char>(sport >> 8);
    h += static_cast<char>(sport & 0xFF);
    h += static_cast<char>(dport >> 8);
    h += static_cast<char>(dport & 0xFF);
    return h;
}

const std::string get_healthz = "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";

// ---- Origin ------------------------------------------------------------------------------------

TEST(edge, origin_outside_allowed_origins_gets_403_and_is_counted) {
    node n([] {
        config_text c{2, std::string(fast_heartbeat) +
                              "[websocket]\nallowed_origins = [\"https://app.example.com\", "
                              "\"https://*.example.org\"]\n"};
        c.access_log = true;
        return c;
    }());
    ASSERT_TRUE(n.wait_ready(2));
    {
        ws_client ok;
        EXPECT_FALSE(ok.connect(n.port(), "/echo", default_timeout, {{"Origin", "https://app.example.com"}}));
        EXPECT_EQ(ok.echo("hi", true), "");
    }
    {
        ws_client sub;
        EXPECT_FALSE(sub.connect(n.port(), "/echo", default_timeout, {{"Origin", "https://chat.eu.example.org"}}));
    }
    {
        ws_client no_origin; // not a browser: allowed
        EXPECT_FALSE(no_origin.connect(n.port(), "/echo"));
    }
    int refused = 0;
    for (const char* evil : {"https://evil.example", "http://app.example.com", "https://example.org", "null"}) {
        const auto r = raw_request(n.port(), handshake(std::string("Origin: ") + evil + "\r\n"));
        EXPECT_EQ(r.status, 403u) << evil << ": " << describe(r);
        ++refused;
    }
    EXPECT_EQ(expect_rejections(n, "origin_refused", refused), "");
    EXPECT_TRUE(n.wait_for_log(std::regex("Origin \"https://evil\\.example\", not in allowed_origins; 403"), 2s));
    n.assert_no_unexpected_errors();
}

// ---- keepalive ---------------------------------------------------------------------------------

TEST(edge, server_pings_and_cuts_off_a_client_that_never_answers) {
    node n(config_text{1, std::string(fast_heartbeat) + "[websocket]\nping_interval = \"300ms\"\nidle_timeout = \"1500ms\"\n"});
    ASSERT_TRUE(n.wait_ready(1));
    // A client that only reads (Beast answers pings while a read is pending) and never sends a
    // message stays connected well past idle_timeout: its pongs are signs of life.
    ws_client alive;
    ASSERT_FALSE(alive.connect(n.port(), "/echo"));
    ws_client::message alive_result;
    std::thread reader([&] { alive_result = alive.receive(4s); });
    // A silent one: sends the handshake, then reads nothing and sends nothing.
    raw_connection silent;
    ASSERT_FALSE(silent.connect(n.port()));
    ASSERT_FALSE(silent.send(handshake()));
    const auto start = clock::now();
    const auto r = silent.read_until_close(6s);
    const auto took = clock::now() - start;
    ASSERT_TRUE(r.closed) << "still open after 6 s";
    EXPECT_NE(r.data.find("101 Switching Protocols"), std::string::npos) << r.data.substr(0, 200);
    const auto ops = server_opcodes(r.data);
    const auto pings = std::count(ops.begin(), ops.end(), 0x9);
    EXPECT_GE(pings, 3) << "pings every 300 ms for 1.5 s";
    EXPECT_LE(pings, 6);
    EXPECT_GE(took, 1400ms);
    EXPECT_LE(took, 3500ms) << "idle_timeout 1.5 s, checked at each ping";
    EXPECT_EQ(expect_rejections(n, "ws_pong_timeout", 1), "");
    EXPECT_TRUE(n.wait_for_log(std::regex("nothing from the client for idle_timeout \\(1500 ms\\)"), 2s));
    reader.join();
    // The reading client's receive ran into its own 4 s timeout: the server never closed it.
    EXPECT_EQ(alive_result.ec, beast::error::timeout) << alive_result.ec.message();
    EXPECT_EQ(expect_rejections(n, "ws_pong_timeout", 1), "") << "only the silent client was cut off";
    n.assert_no_unexpected_errors();
}

// ---- limits ------------------------------------------------------------------------------------

TEST(edge, max_requests_per_connection_closes_after_the_last_one) {
    node n(config_text{1, std::string(fast_heartbeat) + "[http]\nmax_requests_per_connection = 3\n"});
    ASSERT_TRUE(n.wait_ready(1));
    raw_connection c;
    ASSERT_FALSE(c.connect(n.port()));
    for (int i = 1; i <= 3; ++i) {
        ASSERT_FALSE(c.send("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"));
        const auto r = c.read_response();
        ASSERT_EQ(r.status, 200u) << describe(r);
        EXPECT_EQ(r.header("Connection") == "close", i == 3) << "request " << i << ": " << r.header("Connection");
    }
    const auto rest = c.read_until_close(3s);
    EXPECT_TRUE(rest.closed);
    EXPECT_EQ(rest.data, "");
    EXPECT_EQ(expect_rejections(n, "keepalive_requests", 1), "");
}

TEST(edge, max_connections_per_ip_answers_429_and_frees_the_slot_on_close) {
    node n(config_text{1, std::string(fast_heartbeat) + "[limits]\nmax_connections_per_ip = 3\n"});
    ASSERT_TRUE(n.wait_ready(1));
    std::vector<std::unique_ptr<ws_client>> held;
    for (int i = 0; i < 3; ++i) {
        held.push_back(std::make_unique<ws_client>());
        ASSERT_FALSE(held.back()->connect(n.port(), "/echo")) << i;
    }
    const auto over = raw_request(n.port(), get_healthz);
    EXPECT_EQ(over.status, 429u) << describe(over);
    EXPECT_EQ(expect_rejections(n, "ip_connections", 1), "");
    EXPECT_TRUE(n.wait_for_log(std::regex("127\\.0\\.0\\.1: this address holds max_connections_per_ip \\(3\\)"), 2s));
    // Another loopback address is another client.
    {
        raw_connection other;
        net::io_context ioc;
        tcp::socket s(ioc);
        s.open(tcp::v4());
        s.bind({net::ip::make_address("127.0.0.2"), 0});
        error_code ec;
        s.connect({net::ip::make_address("127.0.0.1"), n.port()}, ec);
        ASSERT_FALSE(ec) << ec.message();
        net::write(s, net::buffer(get_healthz), ec);
        ASSERT_FALSE(ec);
        beast::flat_buffer b;
        http::response<http::string_body> res;
        s.set_option(net::socket_base::receive_buffer_size(65536));
        http::read(s, b, res, ec);
        ASSERT_FALSE(ec) << ec.message();
        EXPECT_EQ(res.result_int(), 200u);
    }
    // Closing one frees its place.
    held.pop_back();
    EXPECT_TRUE(wait_until([&] { return http_get(n.port(), "/healthz").status == 200; }, 5s));
}

TEST(edge, max_connections_per_worker_answers_503) {
    node n(config_text{1, std::string(fast_heartbeat) + "[limits]\nmax_connections_per_worker = 2\n"});
    ASSERT_TRUE(n.wait_ready(1));
    ws_client a, b;
    ASSERT_FALSE(a.connect(n.port(), "/echo"));
    ASSERT_FALSE(b.connect(n.port(), "/echo"));
    const auto over = raw_request(n.port(), get_healthz);
    EXPECT_EQ(over.status, 503u) << describe(over);
    EXPECT_EQ(expect_rejections(n, "worker_connections", 1), "");
    EXPECT_TRUE(n.wait_for_log(std::regex("max_connections_per_worker\\); 503"), 2s));
    EXPECT_EQ(a.echo("x", true), "") << "the held connections are unaffected";
}

// ---- PROXY protocol ----------------------------------------------------------------------------

config_text proxy_config() {
    config_text cfg{1, std::string(fast_heartbeat) + "[limits]\nproxy_header_timeout = \"1s\"\n"};
    cfg.listener_extra = "proxy_protocol = true\n";
    cfg.access_log = true;
    return cfg;
}

bool ready_behind_proxy(const node& n) {
    return wait_status(n, [](const json& st) { return all_up(st, 1); }, 20s).ok;
}

TEST(edge, proxy_v1_and_v2_name_the_client_in_the_access_log) {
    node n(proxy_config());
    ASSERT_TRUE(ready_behind_proxy(n)); // wait_ready's GET /healthz would need a PROXY header
    auto r = raw_request(n.port(), "PROXY TCP4 203.0.113.7 192.0.2.1 40000 80\r\n" + get_healthz);
    EXPECT_EQ(r.status, 200u) << describe(r);
    EXPECT_TRUE(n.wait_for_log(std::regex("\\] info: 203\\.0\\.113\\.7 \"GET /healthz\" 200"), 3s)) << n.log();
    r = raw_request(n.port(), "PROXY TCP6 2001:db8::42 2001:db8::1 40000 80\r\n" + get_healthz);
    EXPECT_EQ(r.status, 200u) << describe(r);
    EXPECT_TRUE(n.wait_for_log(std::regex("\\] info: 2001:db8::42 \"GET /healthz\" 200"), 3s));
    r = raw_request(n.port(), proxy_v2_ipv4({198, 51, 100, 9}, 5555, {192, 0, 2, 1}, 80) + get_healthz);
    EXPECT_EQ(r.status, 200u) << describe(r);
    EXPECT_TRUE(n.wait_for_log(std::regex("\\] info: 198\\.51\\.100\\.9 \"GET /healthz\" 200"), 3s));
    // A v2 LOCAL header (the balancer's own health check) is accepted; the socket's peer stays.
    r = raw_request(n.port(), proxy_v2_ipv4({0, 0, 0, 0}, 0, {0, 0, 0, 0}, 0, true) + get_healthz);
    EXPECT_EQ(r.status, 200u) << describe(r);
    EXPECT_TRUE(n.wait_for_log(std::regex("\\] info: 127\\.0\\.0\\.1 \"GET /healthz\" 200"), 3s));
    // A WebSocket behind the header.
    raw_connection ws;
    ASSERT_FALSE(ws.connect(n.port()));
    ASSERT_FALSE(ws.send("PROXY TCP4 203.0.113.8 192.0.2.1 40001 80\r\n" + handshake()));
    const auto res = ws.read_response();
    EXPECT_EQ(res.status, 101u) << describe(res);
    EXPECT_TRUE(n.wait_for_log(std::regex("\\] info: 203\\.0\\.113\\.8 \"GET /echo\" 101 websocket"), 3s));
    EXPECT_EQ(expect_rejections(n, "proxy_header_invalid", 0), "");
    n.assert_no_unexpected_errors();
}

TEST(edge, proxy_listener_closes_connections_without_a_valid_header) {
    node n(proxy_config());
    ASSERT_TRUE(ready_behind_proxy(n)); // wait_ready's GET /healthz would need a PROXY header
    int invalid = 0;
    for (const std::string& bad : {get_healthz,                                           // no header at all
                                   std::string("PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n"),  // one field too many
                                   std::string("PROXY TCP4 999.2.3.4 5.6.7.8 1 2\r\n"),  // bad address
                                   std::string("PROXY TCP9 1.2.3.4 5.6.7.8 1 2\r\n"),    // bad family
                                   std::string("PROXY ") + std::string(200, 'x'),        // too long
                                   std::string("\r\n\r\n\0\r\nQUIT\n\x2F\x11\0\x0C", 16), // v2, bad command
                                   std::string("\x16\x03\x01\x02\x00\x01", 6)}) {       // TLS ClientHello
        const auto r = raw_exchange(n.port(), bad, 3s);
        EXPECT_TRUE(r.closed) << "not closed";
        EXPECT_EQ(r.data, "") << "an answer to a connection without a PROXY header";
        ++invalid;
    }
    EXPECT_EQ(expect_rejections(n, "proxy_header_invalid", invalid), "");
    EXPECT_TRUE(n.wait_for_log(std::regex("invalid PROXY header on a proxy_protocol listener \\("), 2s));
    // Truncated: a header that never completes runs into proxy_header_timeout.
    for (const std::string& partial : {std::string("PROXY TCP4 1.2.3.4"), std::string("\r\n\r\n\0\r\nQU", 9)}) {
        const auto start = clock::now();
        const auto r = raw_exchange(n.port(), partial, 4s);
        EXPECT_TRUE(r.closed);
        EXPECT_GE(clock::now() - start, 900ms);
    }
    EXPECT_EQ(expect_rejections(n, "proxy_header_timeout", 2), "");
    // Others are served throughout.
    const auto ok = raw_request(n.port(), "PROXY TCP4 203.0.113.7 192.0.2.1 40000 80\r\n" + get_healthz);
    EXPECT_EQ(ok.status, 200u) << describe(ok);
    n.assert_no_unexpected_errors();
}

// A connection the worker took before a drain began, whose PROXY header (and so its first request)
// arrives after: the request is answered (Connection: close), not cut off unanswered. The same
// path serves a batch a shared or reuseport acceptor took just before its worker began to drain.
TEST(edge, a_request_behind_a_proxy_header_sent_after_the_drain_began_is_answered) {
    config_text cfg{1, "[supervisor]\nheartbeat_interval = \"100ms\"\nwatchdog_timeout = \"2s\"\n"
                       "drain_timeout = \"10s\"\n\n[limits]\nproxy_header_timeout = \"8s\"\n"};
    cfg.listener_extra = "proxy_protocol = true\n";
    node n(cfg);
    ASSERT_TRUE(ready_behind_proxy(n));
    raw_connection c;
    ASSERT_FALSE(c.connect(n.port()));
    const auto held = wait_status(n, [](const json& st) { return sum_field(st, "connections") == 1; }, 5s);
    ASSERT_TRUE(held.ok) << "the worker never reported the connection: " << rows(held.last);
    const auto bytes_before = sum_field(*held.last, "bytes_in_total");

    ASSERT_TRUE(n.signal(SIGTERM));
    ASSERT_TRUE(n.wait_for_log(std::regex("\\] info: draining: 1 connection"), 5s)) << n.log();
    const std::string header = "PROXY TCP4 203.0.113.7 192.0.2.1 40000 80\r\n";
    ASSERT_FALSE(c.send(header));
    // Once the worker has read the header (or has closed the connection, the bug this test is
    // for, and so exited) ...
    const auto read = wait_status(
        n,
        [&](const json& st) {
            return sum_field(st, "bytes_in_total") >= bytes_before + std::int64_t(header.size()) ||
                sum_field(st, "connections") == 0;
        },
        5s);
    // ... the request that follows still gets its answer.
    const auto sent = c.send(get_healthz);
    const auto r = c.read_response(3s);
    EXPECT_TRUE(r.ok()) << "the request after the drain began (send: " << sent.message() << "): " << describe(r)
                        << "; status when the header was read: " << rows(read.last);
    EXPECT_EQ(r.status, 503u) << describe(r); // the node is stopping: /healthz says "draining"
    EXPECT_EQ(r.header("Connection"), "close") << describe(r);
    EXPECT_TRUE(n.wait_exit(15s)) << "the node did not stop";
}

// ---- trusted proxies ---------------------------------------------------------------------------

TEST(edge, x_forwarded_for_is_trusted_only_from_trusted_proxies) {
    config_text trusting_cfg{1, "[http]\ntrusted_proxies = [\"127.0.0.0/8\"]\n"};
    trusting_cfg.access_log = true;
    config_text wary_cfg{1};
    wary_cfg.access_log = true;
    node trusting(trusting_cfg);
    node wary(wary_cfg);
    ASSERT_TRUE(trusting.wait_ready(1));
    ASSERT_TRUE(wary.wait_ready(1));
    const header_list fwd = {{"X-Forwarded-For", "1.2.3.4, 198.51.100.23"}};
    EXPECT_EQ(http_get(trusting.port(), "/healthz?t", fwd).status, 200u);
    EXPECT_TRUE(trusting.wait_for_log(std::regex("\\] info: 198\\.51\\.100\\.23 \"GET /healthz\\?t\" 200"), 3s))
        << trusting.log();
    EXPECT_EQ(http_get(wary.port(), "/healthz?w", fwd).status, 200u);
    EXPECT_TRUE(wary.wait_for_log(std::regex("\\] info: 127\\.0\\.0\\.1 \"GET /healthz\\?w\" 200"), 3s)) << wary.log();
    EXPECT_EQ(wary.count_log(std::regex("198\\.51\\.100\\.23")), 0u);
    // Only the configured header counts: with x-forwarded-for (the default), a client's own
    // Forwarded header (which XFF-appending proxies pass through) is ignored.
    EXPECT_EQ(http_get(trusting.port(), "/healthz?f", {{"Forwarded", "for=198.51.100.66"}}).status, 200u);
    EXPECT_TRUE(trusting.wait_for_log(std::regex("\\] info: 127\\.0\\.0\\.1 \"GET /healthz\\?f\" 200"), 3s));
    // forwarded_header = "forwarded": RFC 7239, and X-Forwarded-For is the ignored one.
    config_text rfc_cfg{1, "[http]\ntrusted_proxies = [\"127.0.0.0/8\"]\nforwarded_header = \"forwarded\"\n"};
    rfc_cfg.access_log = true;
    node rfc(rfc_cfg);
    ASSERT_TRUE(rfc.wait_ready(1));
    EXPECT_EQ(http_get(rfc.port(), "/healthz?r", {{"Forwarded", "for=\"[2001:db8::9]:443\";proto=https"},
                                                  {"X-Forwarded-For", "198.51.100.77"}})
                  .status,
              200u);
    EXPECT_TRUE(rfc.wait_for_log(std::regex("\\] info: 2001:db8::9 \"GET /healthz\\?r\" 200"), 3s)) << rfc.log();
    EXPECT_EQ(rfc.count_log(std::regex("198\\.51\\.100\\.77")), 0u);
}

// A refused upgrade on a keep-alive connection (a bad channel name: 400) must leave the
// connection counted against its address, so a later upgrade on it still counts.
TEST(edge, a_refused_upgrade_keeps_the_connection_counted_per_ip) {
    config_text cfg{1, "[supervisor]\nheartbeat_interval = \"100ms\"\nwatchdog_timeout = \"2s\"\n\n"
                       "[limits]\nmax_connections_per_ip = 2\n"};
    cfg.routes = "[[route]]\npath = \"/ws/\"\nkind = \"pubsub\"\n\n[[route]]\npath = \"/echo\"\nkind = \"echo\"\n";
    node n(cfg);
    ASSERT_TRUE(n.wait_ready(1));
    const auto upgrade_to = [](std::string_view target) {
        return "GET " + std::string(target) +
            " HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
    };
    raw_connection a;
    ASSERT_FALSE(a.connect(n.port()));
    ASSERT_FALSE(a.send(upgrade_to("/ws/bad%20name")));
    const auto refused = a.read_response();
    EXPECT_EQ(refused.status, 400u) << describe(refused);
    ASSERT_FALSE(a.send(upgrade_to("/echo")));
    const auto upgraded = a.read_response();
    EXPECT_EQ(upgraded.status, 101u) << describe(upgraded);
    ws_client b;
    ASSERT_FALSE(b.connect(n.port(), "/echo"));
    // Two connections from 127.0.0.1 are open: a third is over the limit.
    const auto third = raw_request(n.port(), get_healthz);
    EXPECT_EQ(third.status, 429u) << describe(third);
    EXPECT_EQ(expect_rejections(n, "ip_connections", 1), "");
}

} // namespace
} // namespace sockherd::test
