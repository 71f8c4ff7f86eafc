// Real load balancers in front of a proxy_protocol listener (issue 6): HAProxy with
// send-proxy-v2 and nginx's stream proxy with proxy_protocol on (v1). A client connects to the
// balancer from its own loopback address (127.0.0.x); sockherd's access log must name exactly
// that address and port-less client for HTTP and for a WebSocket, as it would the real client's.

#include <filesystem>
#include <regex>
#include <string>

#include <gtest/gtest.h>

#include "tests/integration/harness.hpp"
#include "tests/integration/status_json.hpp"

namespace sockherd::test {
namespace {

using namespace std::chrono_literals;
using json = nlohmann::json;

std::string find_binary(std::initializer_list<const char*> candidates) {
    for (const char* p : candidates)
        if (std::filesystem::exists(p))
            return p;
    return {};
}

const std::string haproxy_bin = find_binary({"/usr/sbin/haproxy", "/usr/bin/haproxy"});
const std::string nginx_bin = find_binary({"/usr/sbin/nginx", "/usr/bin/nginx"});
const std::string nginx_stream_module = find_binary({"/usr/lib/nginx/modules/ngx_stream_module.so"});

config_text proxied_config() {
    config_text cfg{2, "[supervisor]\nheartbeat_interval = \"100ms\"\nwatchdog_timeout = \"2s\"\n"};
    cfg.listener_extra = "proxy_protocol = true\n";
    cfg.access_log = true;
    return cfg;
}

bool ready(const node& n) { return wait_status(n, [](const json& st) { return all_up(st, 2); }, 20s).ok; }

// One HTTP request and one WebSocket echo through the balancer at `port`, from `source`.
std::string exchange_from(const std::string& source, std::uint16_t port, const std::string& tag) {
    net::io_context ioc;
    for (int attempt = 0;; ++attempt) { // the balancer may still be starting: bounded retries
        beast::tcp_stream s(ioc);
        error_code ec;
        s.socket().open(tcp::v4(), ec);
        s.socket().bind({net::ip::make_address(source), 0}, ec);
        if (ec)
            return "bind " + source + ": " + ec.message();
        s.expires_after(5s);
        s.connect(tcp::endpoint(net::ip::make_address("127.0.0.1"), port), ec);
        if (ec) {
            if (attempt < 50 && ec == net::error::connection_refused) {
                wait_until([] { return false; }, 100ms); // a deadline-bound pause between attempts
                continue;
            }
            return "connect: " + ec.message();
        }
        http::request<http::empty_body> req{http::verb::get, "/healthz?" + tag, 11};
        req.set(http::field::host, "localhost");
        http::write(s, req, ec);
        beast::flat_buffer b;
        http::response<http::string_body> res;
        if (!ec)
            http::read(s, b, res, ec);
        if (ec)
            return "HTTP through the balancer: " + ec.message();
        if (res.result_int() != 200)
            return "HTTP status " + std::to_string(res.result_int());
        // The same connection upgrades to a WebSocket echo.
        websocket::stream<beast::tcp_stream&> ws(s);
        ws.handshake("localhost", "/echo", ec);
        if (ec)
            return "WebSocket handshake: " + ec.message();
        ws.write(net::buffer(std::string("hello ") + tag), ec);
        beast::flat_buffer m;
        if (!ec)
            ws.read(m, ec);
        if (ec)
            return "WebSocket echo: " + ec.message();
        if (beast::buffers_to_string(m.data()) != "hello " + tag)
            return "wrong echo";
        ws.close(websocket::close_code::normal, ec);
        return {};
    }
}

TEST(peers, haproxy_send_proxy_v2_passes_the_client_address) {
    if (haproxy_bin.empty())
        GTEST_SKIP() << "haproxy is missing (apt-get install haproxy)";
    node n(proxied_config());
    ASSERT_TRUE(ready(n));
    temp_dir dir;
    const auto port = free_port();
    const auto cfg = dir.write_file("haproxy.cfg",
                                    "global\n  maxconn 100\n\ndefaults\n  mode tcp\n  timeout connect 5s\n"
                                    "  timeout client 30s\n  timeout server 30s\n\n"
                                    "frontend fe\n  bind 127.0.0.1:" +
                                        std::to_string(port) +
                                        "\n  default_backend be\n\nbackend be\n  server s1 127.0.0.1:" +
                                        std::to_string(n.port()) + " send-proxy-v2\n");
    process haproxy({{haproxy_bin, "-db", "-f", cfg.string()}, {}, {}});
    EXPECT_EQ(exchange_from("127.0.0.23", port, "haproxy"), "") << haproxy.output();
    EXPECT_TRUE(n.wait_for_log(std::regex("\\] info: 127\\.0\\.0\\.23 \"GET /healthz\\?haproxy\" 200"), 5s)) << n.log();
    EXPECT_TRUE(n.wait_for_log(std::regex("\\] info: 127\\.0\\.0\\.23 \"GET /echo\" 101 websocket"), 5s));
    EXPECT_EQ(n.count_log(std::regex("\\] info: 127\\.0\\.0\\.1 \"GET /healthz\\?haproxy\"")), 0u);
    EXPECT_EQ(expect_rejections(n, "proxy_header_invalid", 0), "");
    n.assert_no_unexpected_errors();
}

TEST(peers, nginx_stream_proxy_protocol_passes_the_client_address) {
    if (nginx_bin.empty() || nginx_stream_module.empty())
        GTEST_SKIP() << "nginx or its stream module is missing (apt-get install nginx-light libnginx-mod-stream)";
    node n(proxied_config());
    ASSERT_TRUE(ready(n));
    temp_dir dir;
    const auto port = free_port();
    const auto d = dir.path().string();
    const auto cfg = dir.write_file(
        "nginx.conf", "load_module " + nginx_stream_module + ";\ndaemon off;\nmaster_process off;\npid " + d +
            "/nginx.pid;\nerror_log " + d + "/error.log warn;\nevents {}\nstream {\n  server {\n    listen 127.0.0.1:" +
            std::to_string(port) + ";\n    proxy_pass 127.0.0.1:" + std::to_string(n.port()) +
            ";\n    proxy_protocol on;\n  }\n}\n");
    process nginx({{nginx_bin, "-p", d, "-e", d + "/error.log", "-c", cfg.string()}, {}, {}});
    EXPECT_EQ(exchange_from("127.0.0.24", port, "nginx"), "") << nginx.output();
    EXPECT_TRUE(n.wait_for_log(std::regex("\\] info: 127\\.0\\.0\\.24 \"GET /healthz\\?nginx\" 200"), 5s)) << n.log();
    EXPECT_TRUE(n.wait_for_log(std::regex("\\] info: 127\\.0\\.0\\.24 \"GET /echo\" 101 websocket"), 5s));
    EXPECT_EQ(expect_rejections(n, "proxy_header_invalid", 0), "");
    n.assert_no_unexpected_errors();
}

} // namespace
} // namespace sockherd::test
