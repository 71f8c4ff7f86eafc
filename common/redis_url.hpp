#pragma once
// Where the supervisor's Redis bridge connects: [redis] url, parsed and validated with the rest
// of the config. The password it may hold never goes into a log line, a status page or a config
// error: those use masked() / mask_redis_url().

#include <cstdint>
#include <string>
#include <string_view>
#include <variant>

namespace sockherd {

struct redis_url {
    enum class transport : std::uint8_t { tcp_socket, unix_socket };

    transport kind = transport::tcp_socket;
    std::string host;          // tcp: an IPv4 or IPv6 address (no brackets) or a host name
    std::uint16_t port = 6379; // tcp
    std::string path;          // unix_socket: absolute
    std::string username;      // with a password: AUTH username password (Redis 6 ACL users)
    std::string password;      // empty: no AUTH
    // 0-15, accepted for compatibility with other clients' URLs. Redis pub/sub is not scoped by
    // database (a PUBLISH on db 3 reaches subscribers on db 0), so the bridge sends no SELECT:
    // nodes that must not hear each other need different channel_prefix values, or servers.
    unsigned db = 0;

    // "redis://:***@10.0.0.5:6379/0", "redis://[::1]:6379/0", "unix:///run/redis.sock":
    // the whole URL, normalized, with the password (and only it) replaced by "***".
    std::string masked() const;
    // Where it connects, for log lines: "10.0.0.5:6379", "[::1]:6379", "/run/redis.sock".
    std::string address() const;
    // The host is an IP address (connect at once) rather than a name (resolve first).
    bool host_is_address() const;
};

inline constexpr unsigned max_redis_db = 15;

// redis://[[user]:password@]host[:port][/db]   host: a.b.c.d, [v6], or a host name; port 6379
// unix://[[user]:password@]/absolute/path      (the user info is how redis-py writes it)
// User and password may be percent-encoded (%40 for '@'). Returns the URL, or why it is not one;
// the reason never repeats the password.
std::variant<redis_url, std::string> parse_redis_url(std::string_view text);

// Any text that was meant to be a Redis URL, valid or not, with whatever sits between "://" (or
// the start) and the last '@' masked except a user name: for error messages about bad URLs.
std::string mask_redis_url(std::string_view text);

} // namespace sockherd
