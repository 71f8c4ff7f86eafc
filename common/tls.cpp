#include "common/tls.hpp"

#include <openssl/err.h>
#include <openssl/ssl.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <iterator>

namespace sockherd {
namespace {

namespace ssl = boost::asio::ssl;

// TLS 1.2 suites: forward secrecy and authenticated encryption only.
constexpr const char* tls12_ciphers = "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
                                      "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
                                      "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305";

// The reason OpenSSL gives for what just failed ("key values mismatch"), or `fallback`.
std::string openssl_reason(const boost::system::error_code& ec, std::string_view fallback) {
    std::string why = ec ? ec.message() : std::string();
    if (why.empty() || why == "asio.ssl error")
        why = std::string(fallback);
    ERR_clear_error();
    return why;
}

std::variant<std::string, std::string> read_file(const std::string& path, std::string_view what) {
    std::ifstream in(path, std::ios::binary);
    if (!in)
        return std::variant<std::string, std::string>(std::in_place_index<1>,
                                                      std::string(what) + " " + path + ": " + std::strerror(errno));
    std::string data;
    char chunk[16384];
    while (in.read(chunk, sizeof chunk) || in.gcount() > 0) {
        data.append(chunk, static_cast<std::size_t>(in.gcount()));
        if (data.size() > max_tls_file_size)
            return std::variant<std::string, std::string>(
                std::in_place_index<1>, std::string(what) + " " + path + ": larger than 1 MiB; not a PEM file");
    }
    if (data.empty())
        return std::variant<std::string, std::string>(std::in_place_index<1>,
                                                      std::string(what) + " " + path + ": empty file");
    return std::variant<std::string, std::string>(std::in_place_index<0>, std::move(data));
}

} // namespace

std::variant<std::shared_ptr<ssl::context>, std::string> make_server_context(const tls_material& m) {
    auto ctx = std::make_shared<ssl::context>(ssl::context::tls_server);
    ctx->set_options(ssl::context::default_workarounds | ssl::context::no_sslv2 | ssl::context::no_sslv3 |
                     ssl::context::no_tlsv1 | ssl::context::no_tlsv1_1 | ssl::context::no_compression |
                     ssl::context::single_dh_use);
    SSL_CTX* native = ctx->native_handle();
    SSL_CTX_set_min_proto_version(native, TLS1_2_VERSION);
    SSL_CTX_set_options(native, SSL_OP_NO_RENEGOTIATION);
    // An idle connection gives back OpenSSL's record buffers (about 34 KiB) until it next reads
    // or writes.
    SSL_CTX_set_mode(native, SSL_MODE_RELEASE_BUFFERS);
    if (SSL_CTX_set_cipher_list(native, tls12_ciphers) != 1)
        return openssl_reason({}, "the cipher list is not supported by this OpenSSL");
    boost::system::error_code ec;
    ctx->use_certificate_chain(boost::asio::buffer(m.cert_pem), ec);
    if (ec)
        return "certificate: " + openssl_reason(ec, "not a PEM certificate chain");
    ctx->use_private_key(boost::asio::buffer(m.key_pem), ssl::context::pem, ec);
    if (ec)
        return "key: " + openssl_reason(ec, "not an unencrypted PEM private key");
    if (SSL_CTX_check_private_key(native) != 1)
        return "key: " + openssl_reason({}, "does not match the certificate");
    return ctx;
}

std::variant<tls_material, std::string> load_tls_files(const tls_files& files) {
    tls_material m;
    auto cert = read_file(files.cert, "certificate");
    if (cert.index() == 1)
        return std::get<1>(cert);
    auto key = read_file(files.key, "key");
    if (key.index() == 1)
        return std::get<1>(key);
    m.cert_pem = std::move(std::get<0>(cert));
    m.key_pem = std::move(std::get<0>(key));
    auto ctx = make_server_context(m);
    if (const auto* err = std::get_if<std::string>(&ctx)) {
        const bool key_problem = err->starts_with("key:");
        return (key_problem ? files.key : files.cert) + ": " + *err;
    }
    return m;
}

std::optional<config_error> load_tls(config& cfg) {
    for (auto& l : cfg.listeners) {
        if (!l.tls)
            continue;
        auto loaded = load_tls_files(*l.tls);
        if (auto* err = std::get_if<std::string>(&loaded))
            return config_error{cfg.source_name, 0, 0, "[[listener]] " + l.address + " tls: " + *err};
        l.tls_loaded = std::make_shared<const tls_material>(std::move(std::get<tls_material>(loaded)));
    }
    return std::nullopt;
}

} // namespace sockherd
