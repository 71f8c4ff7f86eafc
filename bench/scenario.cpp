#include "bench/scenario.hpp"

#include <array>

namespace sockherd::bench {
namespace {

const std::array<scenario_info, 5> registry{{
    {"connect", "open a WebSocket session, close it, repeat (handshakes/s, open+close time)",
     &make_connect_scenario},
    {"echo", "closed-loop echo on open connections (messages/s, round trip time)", &make_echo_scenario},
    {"fanout",
     "--connections subscribers on --path, one publisher sending --size byte messages at --rate/s or "
     "closed loop with --inflight outstanding (deliveries/s, publish-to-receive time, lost/dup/ooo)",
     &make_fanout_scenario},
    {"reload",
     "while a script reloads the server: --concurrency loops opening fresh sessions (open, one echo, "
     "close) at --connect-rate/s, and --connections long-lived closed-loop echo sessions that are not "
     "reopened when closed (connects ok/failed, closes by kind, echoes and connects per 100 ms slot)",
     &make_reload_scenario},
    {"idle",
     "--connections sessions opened before the window and held open for --duration, sending nothing and "
     "answering pings (opened/failed, closed by the server meanwhile, still open at the end); a script "
     "samples the server's memory while they are held (--ready-file tells it when)",
     &make_idle_scenario},
}};

} // namespace

fanout_settings& fanout_config() {
    static fanout_settings settings;
    return settings;
}

reload_settings& reload_config() {
    static reload_settings settings;
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
