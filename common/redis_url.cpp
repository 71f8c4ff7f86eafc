// [redis] url: see common/redis_url.hpp.

#include "common/redis_url.hpp"

#include <sys/un.h>

#include <algorithm>
#include <charconv>
#include <optional>

#include <boost/asio/ip/address.hpp>

#include "common/percent.hpp"

namespace sockherd {
namespace {

constexpr std::string_view redis_scheme = "redis://";
constexpr std::string_view unix_scheme = "unix://";
constexpr std::size_t max_unix_path = sizeof(sockaddr_un::sun_path) - 1;
constexpr std::size_t max_host_name = 253;
constexpr std::size_t max_label = 63;
constexpr std::size_t max_credential = 512;

bool is_digit(char c) { return c >= '0' && c <= '9'; }
bool is_alnum(char c) { return is_digit(c) || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }

// RFC 1123 host name: dot-separated labels of letters, digits and '-', no label starting or
// ending with '-', and a last label that is not all digits (that would be a broken IPv4 address).
bool valid_host_name(std::string_view name) {
    if (name.empty() || name.size() > max_host_name)
        return false;
    std::string_view last;
    while (!name.empty()) {
        const auto dot = name.find('.');
        const auto label = name.substr(0, dot);
        if (label.empty() || label.size() > max_label || label.front() == '-' || label.back() == '-' ||
            !std::all_of(label.begin(), label.end(), [](char c) { return is_alnum(c) || c == '-'; }))
            return false;
        last = label;
        if (dot == std::string_view::npos)
            break;
        name.remove_prefix(dot + 1);
        if (name.empty())
            return false; // a trailing dot
    }
    return !std::all_of(last.begin(), last.end(), is_digit);
}

bool parse_number(std::string_view text, unsigned long max, unsigned long& out) {
    if (text.empty() || !std::all_of(text.begin(), text.end(), is_digit))
        return false;
    auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), out);
    return ec == std::errc{} && end == text.data() + text.size() && out <= max;
}

// "[user]:password" into the URL; an error (without the text) otherwise.
std::optional<std::string> parse_user_info(std::string_view info, redis_url& url) {
    const auto colon = info.find(':');
    if (colon == std::string_view::npos)
        return "the part before '@' must be \":password\" or \"user:password\"";
    auto user = percent_decode(info.substr(0, colon));
    auto password = percent_decode(info.substr(colon + 1));
    if (!user || !password)
        return "invalid %-escape in the user name or password";
    if (user->size() > max_credential || password->size() > max_credential)
        return "the user name and password may be at most " + std::to_string(max_credential) + " bytes each";
    if (password->empty())
        return "empty password after ':' (leave out \":@\" for none)";
    if (!std::all_of(user->begin(), user->end(), [](char c) { return c > ' ' && c < 0x7f; }))
        return "the user name may hold printable ASCII only";
    url.username = std::move(*user);
    url.password = std::move(*password);
    return std::nullopt;
}

std::optional<std::string> parse_tcp(std::string_view rest, redis_url& url) {
    const auto slash = rest.find('/');
    auto authority = rest.substr(0, slash);
    const auto path = slash == std::string_view::npos ? std::string_view() : rest.substr(slash);
    if (const auto at = authority.rfind('@'); at != std::string_view::npos) {
        if (auto why = parse_user_info(authority.substr(0, at), url))
            return why;
        authority.remove_prefix(at + 1);
    }

    std::string_view host;
    std::string_view port;
    bool has_port = false;
    if (!authority.empty() && authority.front() == '[') {
        const auto close = authority.find(']');
        if (close == std::string_view::npos)
            return std::string("'[' without ']' around an IPv6 address");
        host = authority.substr(1, close - 1);
        const auto after = authority.substr(close + 1);
        if (!after.empty()) {
            if (after.front() != ':')
                return std::string("expected ':port' after ']'");
            port = after.substr(1);
            has_port = true;
        }
        boost::system::error_code ec;
        boost::asio::ip::make_address_v6(std::string(host), ec);
        if (ec || host.find('%') != std::string_view::npos)
            return "invalid IPv6 address \"" + std::string(host) + "\"";
    } else {
        const auto colon = authority.find(':');
        host = authority.substr(0, colon);
        if (colon != std::string_view::npos) {
            port = authority.substr(colon + 1);
            has_port = true;
            if (port.find(':') != std::string_view::npos)
                return std::string("an IPv6 address must be written in brackets, e.g. redis://[::1]:6379");
        }
        if (host.empty())
            return std::string("no host (expected redis://host:port)");
        boost::system::error_code ec;
        boost::asio::ip::make_address_v4(std::string(host), ec);
        if (ec && !valid_host_name(host))
            return "invalid host \"" + std::string(host) + "\" (an IPv4 address, [IPv6] or a host name)";
    }
    url.host = std::string(host);

    if (has_port) {
        unsigned long n = 0;
        if (!parse_number(port, 65535, n) || n == 0)
            return "invalid port \"" + std::string(port) + "\" (1 to 65535)";
        url.port = static_cast<std::uint16_t>(n);
    }
    if (path.size() > 1) {
        unsigned long n = 0;
        if (!parse_number(path.substr(1), max_redis_db, n))
            return "invalid database \"" + std::string(path.substr(1)) + "\" (0 to " + std::to_string(max_redis_db) +
                   ")";
        url.db = static_cast<unsigned>(n);
    }
    return std::nullopt;
}

std::optional<std::string> parse_unix(std::string_view rest, redis_url& url) {
    if (rest.empty() || rest.front() != '/') {
        const auto at = rest.find("@/");
        if (at == std::string_view::npos)
            return std::string("expected unix:///absolute/path");
        if (auto why = parse_user_info(rest.substr(0, at), url))
            return why;
        rest.remove_prefix(at + 1);
    }
    if (rest.size() < 2)
        return std::string("expected unix:///absolute/path");
    if (rest.size() > max_unix_path)
        return "a Unix socket path may be at most " + std::to_string(max_unix_path) + " bytes, got " +
               std::to_string(rest.size());
    url.path = std::string(rest);
    return std::nullopt;
}

} // namespace

std::variant<redis_url, std::string> parse_redis_url(std::string_view text) {
    const auto bad = [](std::string why) { return std::variant<redis_url, std::string>(std::move(why)); };
    for (char c : text)
        if (static_cast<unsigned char>(c) <= ' ' || c == 0x7f)
            return bad("spaces and control characters are not allowed");
    if (text.find_first_of("?#") != std::string_view::npos)
        return bad("query strings and fragments ('?', '#') are not supported");
    redis_url url;
    std::optional<std::string> why;
    if (text.starts_with(redis_scheme)) {
        why = parse_tcp(text.substr(redis_scheme.size()), url);
    } else if (text.starts_with(unix_scheme)) {
        url.kind = redis_url::transport::unix_socket;
        why = parse_unix(text.substr(unix_scheme.size()), url);
    } else if (text.starts_with("rediss://")) {
        return bad("TLS (rediss://) is not supported");
    } else {
        return bad("expected redis://[:password@]host[:port][/db] or unix:///path");
    }
    if (why)
        return bad(std::move(*why));
    return url;
}

std::string redis_url::masked() const {
    std::string out = kind == transport::tcp_socket ? std::string(redis_scheme) : std::string(unix_scheme);
    if (!password.empty())
        out += username + ":***@"; // printable ASCII, checked when parsed
    out += address();
    if (kind == transport::tcp_socket)
        out += "/" + std::to_string(db);
    return out;
}

std::string redis_url::address() const {
    if (kind == transport::unix_socket)
        return path;
    const bool v6 = host.find(':') != std::string::npos;
    return (v6 ? "[" + host + "]" : host) + ":" + std::to_string(port);
}

bool redis_url::host_is_address() const {
    boost::system::error_code ec;
    boost::asio::ip::make_address(host, ec);
    return !ec;
}

std::string mask_redis_url(std::string_view text) {
    const auto scheme_end = text.find("://");
    const std::size_t start = scheme_end == std::string_view::npos ? 0 : scheme_end + 3;
    const auto at = text.rfind('@');
    if (at == std::string_view::npos || at < start) {
        // "redis://:secret" (the '@' and host forgotten): what follows the ':' may be a password.
        if (text.substr(start).starts_with(':'))
            return std::string(text.substr(0, start)) + ":***";
        return std::string(text);
    }
    const auto info = text.substr(start, at - start);
    const auto colon = info.find(':');
    const std::string user = colon == std::string_view::npos ? std::string() : std::string(info.substr(0, colon));
    return std::string(text.substr(0, start)) + user + (colon == std::string_view::npos ? "***" : ":***") +
           std::string(text.substr(at));
}

} // namespace sockherd
