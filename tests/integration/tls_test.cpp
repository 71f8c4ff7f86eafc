// TLS listeners (issue 6): HTTPS and wss:// against the real binary, hostile TLS input, and the
// certificate re-read on reload. Certificates are made per test with the openssl command.

#include <openssl/ssl.h>
#include <openssl/x509.h>

#include <filesystem>
#include <regex>
#include <string>

#include <boost/asio/ssl.hpp>
#include <boost/beast/ssl.hpp>
#include <boost/beast/websocket/ssl.hpp>
#include <gtest/gtest.h>

#include "tests/integration/harness.hpp"
#include "tests/integration/status_json.hpp"

namespace sockherd::test {
namespace {

using namespace std::chrono_literals;
using json = nlohmann::json;
namespace ssl = net::ssl;

// The openssl command (run_command takes a path, not a name to look up).
std::string openssl_binary() {
    for (const char* p : {"/usr/bin/openssl", "/bin/openssl", "/usr/local/bin/openssl"})
        if (std::filesystem::exists(p))
            return p;
    return "openssl";
}

// A self-signed certificate for `cn` (EC P-256, valid two days) in dir/<name>.pem and .key.
std::string make_cert(const temp_dir& dir, const std::string& name, const std::string& cn) {
    const auto r = run_command({openssl_binary(), "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                                "-nodes", "-days", "2", "-subj", "/CN=" + cn, "-keyout",
                                (dir.path() / (name + ".key")).string(), "-out", (dir.path() / (name + ".pem")).string()},
                               20s);
    if (r.exit_code != 0)
        return "openssl req failed: " + describe(r);
    return {};
}

bool openssl_available() { return run_command({openssl_binary(), "version"}, 5s).exit_code == 0; }

config_text tls_config(const temp_dir& certs, std::string extra = {}) {
    config_text cfg{2, "[supervisor]\nheartbeat_interval = \"100ms\"\nwatchdog_timeout = \"2s\"\n\n"
                       "[limits]\ntls_handshake_timeout = \"1s\"\n\n" +
                           extra};
    cfg.listener_extra = "tls = { cert = \"" + (certs.path() / "a.pem").string() + "\", key = \"" +
        (certs.path() / "a.key").string() + "\" }\n";
    return cfg;
}

bool ready(const node& n, unsigned workers) {
    return wait_status(n, [&](const json& st) { return all_up(st, workers); }, 20s).ok;
}

// A TLS client: the handshake (optionally capped at a protocol version), then the peer's
// certificate subject CN.
struct tls_client {
    net::io_context ioc;
    ssl::context ctx{ssl::context::tls_client};
    beast::ssl_stream<beast::tcp_stream> stream{ioc, ctx};

    explicit tls_client(int max_version = 0) {
        ctx.set_verify_mode(ssl::verify_none); // self-signed; the test checks the CN itself
        if (max_version != 0)
            SSL_CTX_set_max_proto_version(ctx.native_handle(), max_version);
        stream = beast::ssl_stream<beast::tcp_stream>(ioc, ctx);
    }

    error_code connect(std::uint16_t port) {
        auto& tcp_layer = beast::get_lowest_layer(stream);
        tcp_layer.expires_after(5s);
        error_code ec;
        tcp_layer.connect(tcp::endpoint(net::ip::make_address("127.0.0.1"), port), ec);
        if (ec)
            return ec;
        stream.handshake(ssl::stream_base::client, ec);
        return ec;
    }

    std::string peer_cn() {
        X509* cert = SSL_get1_peer_certificate(stream.native_handle());
        if (cert == nullptr)
            return "";
        char buf[256] = {};
        X509_NAME_get_text_by_NID(X509_get_subject_name(cert), NID_commonName, buf, sizeof buf);
        X509_free(cert);
        return buf;
    }

    http_reply get(std::string_view target) {
        http_reply out;
        http::request<http::empty_body> req{http::verb::get, std::string(target), 11};
        req.set(http::field::host, "localhost");
        req.keep_alive(false);
        beast::get_lowest_layer(stream).expires_after(5s);
        http::write(stream, req, out.ec);
        if (out.ec)
            return out;
        beast::flat_buffer b;
        http::response<http::string_body> res;
        http::read(stream, b, res, out.ec);
        if (out.ec)
            return out;
        out.status = res.result_int();
        out.body = res.body();
        for (const auto& f : res)
            out.headers.set(f.name_string(), f.value());
        return out;
    }
};

class tls : public testing::Test {
protected:
    void SetUp() override {
        if (!openssl_available())
            GTEST_SKIP() << "the openssl command is missing (apt-get install openssl)";
        ASSERT_EQ(make_cert(certs, "a", "first.test"), "");
    }
    temp_dir certs;
};

TEST_F(tls, https_and_wss_are_served) {
    node n(tls_config(certs));
    ASSERT_TRUE(ready(n, 2));
    {
        tls_client c;
        ASSERT_FALSE(c.connect(n.port()));
        EXPECT_EQ(c.peer_cn(), "first.test");
        EXPECT_EQ(SSL_version(c.stream.native_handle()), TLS1_3_VERSION);
        const auto r = c.get("/healthz");
        ASSERT_FALSE(r.ec) << r.ec.message();
        EXPECT_EQ(r.status, 200u);
        EXPECT_NE(r.body.find("\"status\":\"ok\""), std::string::npos) << r.body;
    }
    {
        tls_client c(TLS1_2_VERSION); // TLS 1.2 is accepted too, with an ECDHE AEAD suite
        ASSERT_FALSE(c.connect(n.port()));
        EXPECT_EQ(SSL_version(c.stream.native_handle()), TLS1_2_VERSION);
        const std::string cipher = SSL_get_cipher_name(c.stream.native_handle());
        EXPECT_TRUE(cipher.starts_with("ECDHE-") && (cipher.find("GCM") != std::string::npos ||
                                                     cipher.find("CHACHA20") != std::string::npos))
            << cipher;
        EXPECT_EQ(c.get("/healthz").status, 200u);
    }
    // wss:// echo, a text and a 200 KiB binary message.
    tls_client c;
    ASSERT_FALSE(c.connect(n.port()));
    websocket::stream<beast::ssl_stream<beast::tcp_stream>&> ws(c.stream);
    beast::get_lowest_layer(c.stream).expires_after(10s);
    error_code ec;
    ws.handshake("localhost", "/echo", ec);
    ASSERT_FALSE(ec) << ec.message();
    for (const std::string& msg : {std::string("hello over TLS"), std::string(200 * 1024, '\x7f')}) {
        ws.text(msg.size() < 100);
        ws.write(net::buffer(msg), ec);
        ASSERT_FALSE(ec) << ec.message();
        beast::flat_buffer b;
        ws.read(b, ec);
        ASSERT_FALSE(ec) << ec.message();
        EXPECT_EQ(beast::buffers_to_string(b.data()), msg);
    }
    ws.close(websocket::close_code::normal, ec);
    EXPECT_FALSE(ec) << ec.message();
    n.assert_no_unexpected_errors();
}

TEST_F(tls, old_protocols_plaintext_and_garbage_are_refused_and_counted) {
    node n(tls_config(certs));
    ASSERT_TRUE(ready(n, 2));
    {
        tls_client old(TLS1_1_VERSION);
        SSL_CTX_set_security_level(old.ctx.native_handle(), 0); // let the client offer TLS 1.1 at all
        old.stream = beast::ssl_stream<beast::tcp_stream>(old.ioc, old.ctx);
        EXPECT_TRUE(old.connect(n.port())) << "a TLS 1.1 handshake succeeded";
    }
    // Plain HTTP on the TLS port, and garbage: closed, nothing served.
    for (const std::string& bad : {std::string("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"),
                                  std::string("\x16\x03\x01\x00\x05garbage-garbage", 20)}) {
        const auto r = raw_exchange(n.port(), bad, 3s);
        EXPECT_TRUE(r.closed);
        EXPECT_EQ(r.data.find("HTTP/1.1 200"), std::string::npos) << r.data;
    }
    EXPECT_EQ(expect_rejections(n, "tls_handshake_failed", 3), "");
    EXPECT_TRUE(n.wait_for_log(std::regex("TLS handshake failed \\(.+\\); closed"), 2s));
    // Silence: the handshake timeout (1 s).
    const auto start = clock::now();
    const auto r = raw_exchange(n.port(), "", 4s);
    EXPECT_TRUE(r.closed);
    EXPECT_GE(clock::now() - start, 900ms);
    EXPECT_EQ(expect_rejections(n, "tls_handshake_timeout", 1), "");
    // Others are served throughout.
    tls_client c;
    ASSERT_FALSE(c.connect(n.port()));
    EXPECT_EQ(c.get("/healthz").status, 200u);
    n.assert_no_unexpected_errors();
}

TEST_F(tls, reload_rereads_the_certificate_and_a_bad_one_is_a_rejected_reload) {
    node n(tls_config(certs));
    ASSERT_TRUE(ready(n, 2));
    const auto cn = [&] {
        tls_client c;
        return c.connect(n.port()) ? std::string("(no handshake)") : c.peer_cn();
    };
    EXPECT_EQ(cn(), "first.test");

    // A key that does not match the certificate: the reload fails, the old certificate serves on.
    temp_dir other;
    ASSERT_EQ(make_cert(other, "b", "second.test"), "");
    std::filesystem::copy_file(other.path() / "b.key", certs.path() / "a.key",
                               std::filesystem::copy_options::overwrite_existing);
    auto r = run_command({binary_path(), "reload", "--socket", n.control_socket().string()}, 20s);
    EXPECT_EQ(r.exit_code, 1) << describe(r);
    EXPECT_NE(r.output.find("a.key"), std::string::npos) << r.output;
    const auto st = n.status_json();
    ASSERT_TRUE(st);
    EXPECT_EQ(str_field(last_reload(*st), "result"), "failed");
    EXPECT_EQ(cn(), "first.test") << "the node must keep serving the certificate it has";

    // The matching pair: the reload succeeds and new connections get the new certificate.
    std::filesystem::copy_file(other.path() / "b.pem", certs.path() / "a.pem",
                               std::filesystem::copy_options::overwrite_existing);
    r = run_command({binary_path(), "reload", "--socket", n.control_socket().string()}, 20s);
    EXPECT_EQ(r.exit_code, 0) << describe(r);
    EXPECT_TRUE(wait_until([&] { return cn() == "second.test"; }, 5s)) << cn();
    n.assert_no_unexpected_errors({std::regex("reload")});
}

TEST_F(tls, a_missing_key_fails_the_start_with_the_file_named) {
    std::filesystem::remove(certs.path() / "a.key");
    node n(tls_config(certs));
    const auto code = n.wait_exit(10s);
    ASSERT_TRUE(code) << "the node started without its key";
    EXPECT_EQ(*code, 1);
    EXPECT_TRUE(n.wait_for_log(std::regex("tls: key .*a\\.key: No such file or directory"), 2s)) << n.log();
    const auto check = run_command({binary_path(), "check-config", n.config_path().string()}, 10s);
    EXPECT_EQ(check.exit_code, 1) << describe(check);
}

} // namespace
} // namespace sockherd::test
