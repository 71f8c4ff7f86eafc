#include "common/forwarded.hpp"

#include <string>

namespace sockherd {
namespace {

using boost::asio::ip::address;

std::string_view trim(std::string_view s) {
    while (!s.empty() && (s.front() == ' ' || s.front() == '\t'))
        s.remove_prefix(1);
    while (!s.empty() && (s.back() == ' ' || s.back() == '\t'))
        s.remove_suffix(1);
    return s;
}

std::optional<address> parse_ip(std::string_view s) {
    if (s.empty() || s.size() > 64)
        return std::nullopt;
    boost::system::error_code ec;
    auto a = boost::asio::ip::make_address(std::string(s), ec);
    if (ec || s.find('%') != std::string_view::npos)
        return std::nullopt;
    return unmapped(a);
}

// An X-Forwarded-For element: "1.2.3.4", "2001:db8::1", and what some proxies write,
// "1.2.3.4:5678" and "[2001:db8::1]:80".
std::optional<address> xff_element(std::string_view s) {
    s = trim(s);
    if (!s.empty() && s.front() == '[') {
        const auto close = s.find(']');
        return close == std::string_view::npos ? std::nullopt : parse_ip(s.substr(1, close - 1));
    }
    if (const auto colon = s.find(':'); colon != std::string_view::npos && s.find(':', colon + 1) == std::string_view::npos)
        return parse_ip(s.substr(0, colon)); // exactly one colon: IPv4 with a port
    return parse_ip(s);
}

// The for= value of one Forwarded element ("for=192.0.2.1;proto=https", "For=\"[::1]:80\"").
std::optional<address> forwarded_element(std::string_view element) {
    while (!element.empty()) {
        const auto semi = element.find(';');
        const auto pair = trim(element.substr(0, semi));
        element = semi == std::string_view::npos ? std::string_view{} : element.substr(semi + 1);
        const auto eq = pair.find('=');
        if (eq == std::string_view::npos)
            continue;
        const auto name = trim(pair.substr(0, eq));
        if (name.size() != 3 || (name[0] | 0x20) != 'f' || (name[1] | 0x20) != 'o' || (name[2] | 0x20) != 'r')
            continue;
        auto value = trim(pair.substr(eq + 1));
        if (value.size() >= 2 && value.front() == '"' && value.back() == '"')
            value = value.substr(1, value.size() - 2);
        return xff_element(value);
    }
    return std::nullopt;
}

// Walks a comma list from the right, as described in the header.
template <class Element>
std::optional<address> rightmost_untrusted(std::string_view list, const std::vector<cidr>& trusted, Element element) {
    constexpr int max_hops = 64;
    int hops = 0;
    while (!list.empty() && hops++ < max_hops) {
        const auto comma = list.rfind(',');
        const auto item = comma == std::string_view::npos ? list : list.substr(comma + 1);
        list = comma == std::string_view::npos ? std::string_view{} : list.substr(0, comma);
        const auto a = element(item);
        if (!a)
            return std::nullopt; // "unknown", obfuscated or garbage: no further trust
        if (!any_contains(trusted, *a))
            return a;
    }
    return std::nullopt;
}

} // namespace

address forwarded_client(const address& peer, std::string_view header, forwarded_syntax syntax,
                         const std::vector<cidr>& trusted) {
    if (!any_contains(trusted, peer))
        return peer;
    const auto a = syntax == forwarded_syntax::forwarded ? rightmost_untrusted(header, trusted, forwarded_element)
                                                         : rightmost_untrusted(header, trusted, xff_element);
    return a ? *a : peer;
}

} // namespace sockherd
