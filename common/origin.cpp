#include "common/origin.hpp"

#include <algorithm>
#include <cctype>

namespace sockherd {
namespace {

std::string lower(std::string_view s) {
    std::string out(s);
    std::transform(out.begin(), out.end(), out.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    return out;
}

bool host_char(char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '.' || c == '_';
}

std::string_view default_port(std::string_view scheme) {
    if (scheme == "http")
        return "80";
    if (scheme == "https")
        return "443";
    return "";
}

struct parsed_origin {
    std::string scheme, host, port; // port "" when it is the scheme's default
};

// "scheme://host[:port]" with nothing after it (an Origin has no path). A bracketed IPv6 host
// is kept with its brackets. The wildcard prefix, if any, is the caller's business.
std::optional<parsed_origin> split_origin(std::string_view text) {
    const auto sep = text.find("://");
    if (sep == std::string_view::npos || sep == 0)
        return std::nullopt;
    parsed_origin o;
    o.scheme = lower(text.substr(0, sep));
    if (!std::all_of(o.scheme.begin(), o.scheme.end(),
                     [](char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '+' || c == '-' || c == '.'; }))
        return std::nullopt;
    std::string_view rest = text.substr(sep + 3);
    std::string_view host = rest, port;
    if (!rest.empty() && rest.front() == '[') {
        const auto close = rest.find(']');
        if (close == std::string_view::npos)
            return std::nullopt;
        host = rest.substr(0, close + 1);
        const auto after = rest.substr(close + 1);
        if (!after.empty()) {
            if (after.front() != ':')
                return std::nullopt;
            port = after.substr(1);
        }
        const auto inner = host.substr(1, host.size() - 2);
        if (inner.empty() || !std::all_of(inner.begin(), inner.end(), [](char c) {
                return std::isxdigit(static_cast<unsigned char>(c)) || c == ':' || c == '.';
            }))
            return std::nullopt;
    } else {
        const auto colon = rest.rfind(':');
        if (colon != std::string_view::npos) {
            host = rest.substr(0, colon);
            port = rest.substr(colon + 1);
            if (port.empty())
                return std::nullopt;
        }
        if (host.empty() || !std::all_of(host.begin(), host.end(), host_char))
            return std::nullopt;
    }
    if (!port.empty()) {
        if (port.size() > 5 || !std::all_of(port.begin(), port.end(), [](char c) { return c >= '0' && c <= '9'; }))
            return std::nullopt;
        if (std::stoul(std::string(port)) > 65535)
            return std::nullopt;
    }
    o.host = lower(host);
    o.port = std::string(port);
    if (o.port == default_port(o.scheme))
        o.port.clear();
    return o;
}

} // namespace

std::optional<origin_pattern> parse_origin_pattern(std::string_view text) {
    if (text == "*")
        return origin_pattern{"", "", "", false, true};
    const auto sep = text.find("://");
    bool wildcard = false;
    std::string rewritten(text);
    if (sep != std::string_view::npos && text.substr(sep + 3).starts_with("*.")) {
        wildcard = true;
        rewritten = std::string(text.substr(0, sep + 3)) + std::string(text.substr(sep + 5));
    }
    auto o = split_origin(rewritten);
    if (!o || o->host.find('*') != std::string::npos)
        return std::nullopt;
    if (wildcard && (o->host.front() == '[' || o->host.find('.') == std::string::npos))
        return std::nullopt; // "*.[::1]" and "*.com" make no sense
    return origin_pattern{o->scheme, o->host, o->port, wildcard, false};
}

bool origin_allowed(const std::vector<origin_pattern>& patterns, std::string_view origin) {
    if (patterns.empty())
        return true;
    const auto o = split_origin(origin);
    for (const auto& p : patterns) {
        if (p.any)
            return true;
        if (!o || o->scheme != p.scheme || o->port != p.port)
            continue;
        if (!p.wildcard && o->host == p.host)
            return true;
        if (p.wildcard && o->host.size() > p.host.size() + 1 && o->host.ends_with(p.host) &&
            o->host[o->host.size() - p.host.size() - 1] == '.')
            return true;
    }
    return false;
}

} // namespace sockherd
