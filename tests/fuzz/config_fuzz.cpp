// libFuzzer target: the config loader must never throw, crash or hang on any text, and a config it
// accepts must keep the promises common/config.hpp makes about a parsed config.
#include <cstdint>
#include <cstdlib>
#include <string_view>
#include <variant>

#include "common/config.hpp"

using namespace sockherd;

namespace {

constexpr std::string_view source_name = "<fuzz>";

void check(const config& c, std::string_view text) {
    if (c.source_name != source_name || c.source_text != text)
        std::abort(); // workers re-parse exactly this text: it must be the input, unchanged
    if (c.server.workers < 1 || c.server.workers > max_workers)
        std::abort();
    if (c.server.user == "root" && !c.server.allow_root_workers)
        std::abort();
    if (c.listeners.empty())
        std::abort();
    for (std::size_t i = 0; i < c.listeners.size(); ++i) {
        const auto& l = c.listeners[i];
        if (parse_address(l.address) != l.endpoint || l.backlog < 1 || l.backlog > 65535)
            std::abort();
        for (std::size_t j = 0; j < i; ++j)
            if (c.listeners[j].endpoint == l.endpoint)
                std::abort(); // two listeners on one endpoint
        if (c.admin.endpoint && *c.admin.endpoint == l.endpoint)
            std::abort();
    }
    if (c.admin.endpoint.has_value() == c.admin.address.empty() ||
        (c.admin.endpoint && parse_address(c.admin.address) != c.admin.endpoint))
        std::abort(); // the endpoint is parsed from the address, and set exactly when there is one
    if (c.admin.endpoint && !c.admin.endpoint->address().is_loopback() && c.admin.token.empty())
        std::abort(); // a reachable admin listener without a token
    const auto& s = c.supervisor;
    if (s.restart_backoff_min.count() <= 0 || s.restart_backoff_min > s.restart_backoff_max ||
        s.heartbeat_interval.count() <= 0 || s.watchdog_timeout < 3 * s.heartbeat_interval)
        std::abort();
    const auto& r = c.redis;
    if (r.endpoint.has_value() == r.url.empty() || r.channel_prefix.size() > max_redis_channel_prefix ||
        r.reconnect_backoff_min.count() <= 0 || r.reconnect_backoff_min > r.reconnect_backoff_max)
        std::abort();
    if (c.websocket.max_subscriptions < 1)
        std::abort();
    for (std::size_t i = 0; i < c.routes.size(); ++i) {
        const auto& route = c.routes[i];
        if (route.path.empty() || route.path.front() != '/')
            std::abort();
        if (route.root && (route.kind != route_kind::static_files || route.root->empty() || route.root->front() != '/'))
            std::abort();
        for (std::size_t j = 0; j < i; ++j)
            if (c.routes[j].path == route.path)
                std::abort(); // duplicate routes
    }
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const std::string_view text(reinterpret_cast<const char*>(data), size);
    try {
        auto result = parse_config(text, source_name);
        if (const auto* err = std::get_if<config_error>(&result)) {
            if (err->message.empty() || err->source_name != source_name || err->to_string().empty())
                std::abort(); // a rejection must say why
        } else {
            check(std::get<config>(result), text);
        }
    } catch (...) {
        std::abort(); // parse_config promises never to throw for bad input
    }
    return 0;
}
