#pragma once
// TLS on a listener ([[listener]] tls = { cert, key }): OpenSSL through Asio's ssl::context.
// The supervisor reads the PEM files (load_tls_files), at start and on every reload, and proves
// they make a context before anything changes: a missing file, a key that does not match its
// certificate or garbage is a failed start or a rejected reload, never an outage. The bytes then
// travel to the workers with the config (they may run as a user that cannot read the key), and
// each worker makes its own context (make_server_context).
//
// Policy: TLS 1.2 and 1.3 only; for 1.2, ECDHE key exchange with AEAD ciphers only (AES-GCM,
// ChaCha20-Poly1305); no renegotiation, no compression; the client's cipher order (all of these
// are strong, and clients know best what their hardware does fast).

#include <memory>
#include <optional>
#include <string>
#include <variant>

#include <boost/asio/ssl/context.hpp>

#include "common/config.hpp"

namespace sockherd {

struct tls_material {
    std::string cert_pem; // certificate chain, leaf first
    std::string key_pem;
};

// Certificate and key files above this size are refused (a chain is a few KiB).
inline constexpr std::size_t max_tls_file_size = 1024 * 1024;

// Reads both files and checks that they make a server context; the error names the file and
// what is wrong with it.
std::variant<tls_material, std::string> load_tls_files(const tls_files& files);

// Reads the files of every TLS listener of `cfg` into its tls_loaded; the first failure is an
// error naming the listener and the file (without a line: the file is fine, its content is not).
std::optional<config_error> load_tls(config& cfg);

// A server context for `m` with the policy above; the error says why not.
std::variant<std::shared_ptr<boost::asio::ssl::context>, std::string> make_server_context(const tls_material& m);

} // namespace sockherd
