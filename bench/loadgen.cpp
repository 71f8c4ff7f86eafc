// sockherd-loadgen: a WebSocket load generator for sockherd and the servers it is compared with.
// main parses the command line and dispatches to one process (run_shard) or several (run_forked);
// it prints one JSON line with the parameters and the numbers.

#include <signal.h>
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdint>
#include <exception>
#include <map>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include "bench/driver.hpp"
#include "bench/procs.hpp"
#include "bench/results.hpp"
#include "bench/scenario.hpp"

namespace {

using namespace sockherd;
using namespace sockherd::bench;

// Connections are the load: take as many descriptors as the hard limit allows.
void raise_fd_limit() {
    rlimit rl{};
    if (::getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        ::setrlimit(RLIMIT_NOFILE, &rl);
    }
}

double seconds_of(const timeval& tv) { return static_cast<double>(tv.tv_sec) + static_cast<double>(tv.tv_usec) / 1e6; }

// This process's CPU time plus that of its reaped children (the --procs processes).
cpu_usage cpu_used() {
    cpu_usage c;
    for (const int who : {RUSAGE_SELF, RUSAGE_CHILDREN}) {
        rusage ru{};
        if (::getrusage(who, &ru) == 0) {
            c.user_s += seconds_of(ru.ru_utime);
            c.sys_s += seconds_of(ru.ru_stime);
        }
    }
    return c;
}

// "127.0.0.1:8080" or "[::1]:8080".
tcp::endpoint parse_endpoint(const std::string& text) {
    const auto colon = text.rfind(':');
    if (colon == std::string::npos || colon == 0)
        throw std::invalid_argument("--target must be ADDRESS:PORT, got \"" + text + "\"");
    std::string host = text.substr(0, colon);
    if (host.size() > 2 && host.front() == '[' && host.back() == ']')
        host = host.substr(1, host.size() - 2);
    const auto port = std::stoul(text.substr(colon + 1));
    if (port == 0 || port > 65535)
        throw std::invalid_argument("--target port out of range: " + text);
    return tcp::endpoint(net::ip::make_address(host), static_cast<std::uint16_t>(port));
}

// A scenario's own counters travel as errors named "<prefix><name>": takes them out of the errors,
// by name without the prefix.
std::map<std::string, std::uint64_t> take_counters(run_result& r, std::string_view prefix) {
    std::map<std::string, std::uint64_t> c;
    for (auto it = r.errors.begin(); it != r.errors.end();) {
        if (std::string_view(it->first).starts_with(prefix)) {
            c[it->first.substr(prefix.size())] = it->second;
            it = r.errors.erase(it);
        } else {
            ++it;
        }
    }
    return c;
}

// fanout: moves the "fanout.*" counters out of the errors into their own JSON fields, and adds
// delivered, lost (= sent x subscribers - delivered), the publisher's own receipts and, per
// --target, its subscribers, deliveries, loss and latency ("per_target", in --target order).
std::string add_fanout_fields(const options& opt, run_result& r, std::string& extra) {
    auto c = take_counters(r, fanout_counter_prefix);
    const std::uint64_t expected = c["sent"] * c["subscribers"];
    const std::uint64_t delivered = r.count;
    const std::int64_t lost = static_cast<std::int64_t>(expected) - static_cast<std::int64_t>(delivered);
    extra = ",\"fanout_rate\":" + std::to_string(fanout_config().rate) +
            ",\"grace_s\":" + std::to_string(fanout_config().grace_s) +
            ",\"subscribers\":" + std::to_string(c["subscribers"]) + ",\"sent\":" + std::to_string(c["sent"]) +
            ",\"delivered\":" + std::to_string(delivered) + ",\"expected\":" + std::to_string(expected) +
            ",\"lost\":" + std::to_string(lost) + ",\"dup\":" + std::to_string(c["dup"]) +
            ",\"out_of_order\":" + std::to_string(c["out_of_order"]) +
            ",\"malformed\":" + std::to_string(c["malformed"]) +
            ",\"publisher_received\":" + std::to_string(c["self"]);
    extra += ",\"per_target\":[";
    for (std::size_t t = 0; t < opt.target_texts.size(); ++t) {
        const std::string p = "t" + std::to_string(t) + ".";
        const std::uint64_t subs = c[p + "subscribers"];
        const std::uint64_t got = c[p + "delivered"];
        const auto& h = r.target_latency_us[static_cast<unsigned>(t)];
        extra += fmt::format("{}{{\"target\":\"{}\",\"subscribers\":{},\"delivered\":{},\"expected\":{},\"lost\":{},"
                             "\"p50_us\":{},\"p99_us\":{},\"max_us\":{}}}",
                             t == 0 ? "" : ",", opt.target_texts[t], subs, got, c["sent"] * subs,
                             static_cast<std::int64_t>(c["sent"] * subs) - static_cast<std::int64_t>(got),
                             h.percentile(0.50), h.percentile(0.99), h.max());
    }
    extra += "]";
    return extra;
}

// The smallest and the median of a slot series (0 for an empty one).
std::pair<std::uint64_t, std::uint64_t> min_and_median(std::vector<std::uint64_t> v) {
    if (v.empty())
        return {0, 0};
    std::sort(v.begin(), v.end());
    return {v.front(), v[v.size() / 2]};
}

std::string json_array(const std::vector<std::uint64_t>& v) {
    std::string s = "[";
    for (std::size_t i = 0; i < v.size(); ++i) {
        if (i > 0)
            s += ',';
        s += std::to_string(v[i]);
    }
    return s + "]";
}

// reload: moves the "reload.*" counters out of the errors into their own JSON fields, and adds the
// time slots of the window (every slot, empty ones as 0) with the smallest and the median slot.
void add_reload_fields(const options& opt, run_result& r, std::string& extra) {
    const auto c = take_counters(r, reload_counter_prefix);
    const auto slot_s = std::chrono::duration<double>(reload_slot).count();
    const auto slots = static_cast<std::size_t>(std::ceil(opt.duration_s / slot_s - 1e-9));
    extra = fmt::format(",\"connect_rate\":{},\"slot_ms\":{},\"window_start_unix\":{:.3f}", reload_config().connect_rate,
                        reload_slot.count(), r.window_start_unix);
    for (const auto& [name, n] : c)
        extra += fmt::format(",\"{}\":{}", name, n);
    for (const char* name : {"echo", "connect", "close"}) {
        auto v = r.slots[name];
        v.resize(slots, 0);
        const auto [lo, median] = min_and_median(v);
        extra += fmt::format(",\"{0}_slot_min\":{1},\"{0}_slot_median\":{2},\"{0}_slots\":{3}", name, lo, median,
                             json_array(v));
    }
}

// idle: moves the "idle.*" counters out of the errors into their own JSON fields.
void add_idle_fields(run_result& r, std::string& extra) {
    for (const auto& [name, n] : take_counters(r, idle_counter_prefix))
        extra += fmt::format(",\"{}\":{}", name, n);
    extra += fmt::format(",\"held\":{},\"window_start_unix\":{:.3f}", r.count, r.window_start_unix);
}

std::string scenario_list() {
    std::string s = "Scenarios:\n";
    for (const auto& info : scenarios())
        s += "  " + std::string(info.name) + ": " + std::string(info.summary) + "\n";
    return s;
}

} // namespace

int main(int argc, char** argv) {
    CLI::App app{"sockherd-loadgen: WebSocket load generator; prints one JSON line of results", "sockherd-loadgen"};
    app.footer(scenario_list());
    options opt;
    app.add_option("--scenario,-s", opt.scenario, "What load to generate")->required();
    app.add_option("--target,-t", opt.target_texts,
                   "Server address, ADDRESS:PORT; fanout: may be given more than once (subscribers alternate over "
                   "the targets, the publisher uses the first)")
        ->required()
        ->expected(1)
        ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
    app.add_option("--path", opt.path, "WebSocket path")->capture_default_str();
    app.add_option("--host", opt.host_header, "Host header (default: the target)");
    app.add_option("--duration,-d", opt.duration_s, "Measured window, seconds")
        ->check(CLI::Range(0.1, 86400.0))
        ->capture_default_str();
    app.add_option("--concurrency,-c", opt.concurrency, "connect, reload: loops opening and closing sessions")
        ->check(CLI::Range(1u, 1000000u))
        ->capture_default_str();
    app.add_option("--connections", opt.connections,
                   "echo: WebSocket connections; fanout: subscribers; reload: long-lived sessions; idle: sessions held")
        ->check(CLI::Range(1u, 10000000u))
        ->capture_default_str();
    app.add_option("--inflight", opt.inflight, "echo: messages in flight per connection")
        ->check(CLI::Range(1u, 1000000u))
        ->capture_default_str();
    app.add_option("--size", opt.size, "echo: message payload bytes")
        ->check(CLI::Range(std::size_t{0}, std::size_t{16} << 20))
        ->capture_default_str();
    app.add_option("--rate", fanout_config().rate, "fanout: publisher messages/s (0: closed loop, --inflight outstanding)")
        ->check(CLI::Range(0.0, 10000000.0))
        ->capture_default_str();
    app.add_option("--grace", fanout_config().grace_s, "fanout: seconds subscribers keep reading after the last send")
        ->check(CLI::Range(0.0, 3600.0))
        ->capture_default_str();
    app.add_option("--connect-rate", reload_config().connect_rate,
                   "reload: fresh sessions/s over all --concurrency loops (0: back to back)")
        ->check(CLI::Range(0.0, 10000000.0))
        ->capture_default_str();
    app.add_option("--procs,-p", opt.procs, "Load generator processes (one single-threaded io_context each)")
        ->check(CLI::Range(1u, 256u))
        ->capture_default_str();
    app.add_option("--sources", opt.sources,
                   "Bind client sockets to 127.0.0.1 .. 127.0.0.K round-robin (0: let the kernel choose)")
        ->check(CLI::Range(0u, (1u << 24) - 2))
        ->capture_default_str();
    app.add_option("--connect-timeout", opt.connect_timeout_s, "Seconds per TCP connect, handshake and close")
        ->check(CLI::Range(0.1, 3600.0))
        ->capture_default_str();
    app.add_option("--setup-timeout", opt.setup_timeout_s, "Seconds to open every connection before the window")
        ->check(CLI::Range(0.1, 86400.0))
        ->capture_default_str();
    app.add_option("--drain-timeout", opt.drain_timeout_s, "Seconds after the window for replies and closes")
        ->check(CLI::Range(0.1, 3600.0))
        ->capture_default_str();
    app.add_option("--ready-file", opt.ready_file,
                   "Write this file (\"window_start_unix <time>\") once every process is prepared and the "
                   "measured window has begun, e.g. for a script that samples the server while idle sessions are held");
    try {
        app.parse(argc, argv);
    } catch (const CLI::ParseError& e) {
        return app.exit(e);
    }

    try {
        if (find_scenario(opt.scenario) == nullptr)
            throw std::invalid_argument("unknown scenario \"" + opt.scenario + "\"\n" + scenario_list());
        if (opt.target_texts.size() > 1 && opt.scenario != "fanout")
            throw std::invalid_argument("only the fanout scenario takes more than one --target");
        for (const auto& text : opt.target_texts) {
            opt.targets.push_back(parse_endpoint(text));
            opt.host_headers.push_back(opt.host_header.empty() ? text : opt.host_header);
            const auto& a = opt.targets.back().address();
            if (opt.sources > 0 && !(a.is_v4() && a.is_loopback()))
                throw std::invalid_argument("--sources binds to 127.0.0.x, so every target must be in 127.0.0.0/8 "
                                            "(use --sources 0 for other targets)");
        }
        opt.target_text = opt.target_texts.front();
        opt.target = opt.targets.front();
        opt.host_header = opt.host_headers.front();
        if (opt.procs > std::max(opt.concurrency, opt.connections))
            throw std::invalid_argument("--procs is larger than the number of loops or connections");

        if (opt.scenario == "fanout") {
            if (opt.size < 16)
                throw std::invalid_argument("fanout: --size must be at least 16 (sequence number and send time)");
            if (fanout_config().grace_s + 1 > opt.drain_timeout_s)
                opt.drain_timeout_s = fanout_config().grace_s + 2;
        }

        raise_fd_limit();
        ::signal(SIGPIPE, SIG_IGN);
        const auto started = std::chrono::steady_clock::now();
        run_result r = opt.procs == 1 ? run_shard(opt, make_shards(opt).front(), {}) : run_forked(opt);
        const double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
        std::string extra;
        if (opt.scenario == "fanout")
            add_fanout_fields(opt, r, extra);
        else if (opt.scenario == "reload")
            add_reload_fields(opt, r, extra);
        else if (opt.scenario == "idle")
            add_idle_fields(r, extra);
        std::string json = to_json(opt, r, cpu_used(), wall);
        if (!extra.empty() && !json.empty() && json.back() == '}')
            json.insert(json.size() - 1, extra);
        std::printf("%s\n", json.c_str());
        return 0;
    } catch (const std::exception& e) {
        std::fprintf(stderr, "sockherd-loadgen: %s\n", e.what());
        return 1;
    }
}
