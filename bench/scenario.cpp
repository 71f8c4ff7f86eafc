#include "bench/scenario.hpp"

#include <array>

namespace sockherd::bench {
namespace {

const std::array<scenario_info, 3> registry{{
    {"connect", "open a WebSocket session, close it, repeat (handshakes/s, open+close time)",
     &make_connect_scenario},
    {"echo", "closed-loop echo on open connections (messages/s, round trip time)", &make_echo_scenario},
    {"fanout",
     "--connections subscribers on --path, one publisher sending --size byte messages at --rate/s or "
     "closed loop with --inflight outstanding (deliveries/s, publish-to-receive time, lost/dup/ooo)",
     &make_fanout_scenario},
}};

} // namespace

fanout_settings& fanout_config() {
    static fanout_settings settings;
    return settings;
}

std::span<const scenario_info> scenarios() { return registry; }

const scenario_info* find_scenario(std::string_view name) {
    for (const auto& s : registry) {
        if (s.name == name)
            return &s;
    }
    return nullptr;
}

} // namespace sockherd::bench
