#include "bench/results.hpp"

#include <charconv>
#include <cstdio>
#include <utility>

#include <fmt/format.h>

#include "bench/options.hpp"

namespace sockherd::bench {
namespace {

// Shortest text that reads back as exactly the same double.
std::string exact(double v) {
    char buf[64];
    const auto r = std::to_chars(buf, buf + sizeof buf, v);
    return std::string(buf, r.ptr);
}

template <class T>
bool parse_number(std::string_view s, T& out) {
    const auto r = std::from_chars(s.data(), s.data() + s.size(), out);
    return r.ec == std::errc{} && r.ptr == s.data() + s.size();
}

std::string json_string(std::string_view s) {
    std::string out = "\"";
    for (const char c : s) {
        if (c == '"' || c == '\\') {
            out += '\\';
            out += c;
        } else if (static_cast<unsigned char>(c) < 0x20) {
            out += fmt::format("\\u{:04x}", static_cast<unsigned>(static_cast<unsigned char>(c)));
        } else {
            out += c;
        }
    }
    return out + "\"";
}

// A decoded slot index above this is malformed input, not a reason to allocate gigabytes.
constexpr std::size_t max_slots = std::size_t{1} << 24;
// Likewise a target index (each one is a histogram of a few hundred KiB).
constexpr unsigned max_targets = 1024;

std::string_view next_word(std::string_view& line) {
    const auto sp = line.find(' ');
    const auto word = line.substr(0, sp);
    line = sp == std::string_view::npos ? std::string_view{} : line.substr(sp + 1);
    return word;
}

} // namespace

std::uint64_t run_result::error_total() const {
    std::uint64_t total = 0;
    for (const auto& [kind, n] : errors)
        total += n;
    return total;
}

void run_result::add_to_slot(const std::string& name, std::size_t slot, std::uint64_t n) {
    auto& v = slots[name];
    if (v.size() <= slot)
        v.resize(slot + 1, 0);
    v[slot] += n;
}

void run_result::merge(const run_result& other) {
    count += other.count;
    window_s = std::max(window_s, other.window_s);
    rate += other.rate;
    failed_connects += other.failed_connects;
    connections += other.connections;
    for (const auto& [kind, n] : other.errors)
        errors[kind] += n;
    latency_us.merge(other.latency_us);
    if (other.window_start_unix > 0 && (window_start_unix <= 0 || other.window_start_unix < window_start_unix))
        window_start_unix = other.window_start_unix;
    for (const auto& [name, v] : other.slots) {
        for (std::size_t i = 0; i < v.size(); ++i) {
            if (v[i] != 0)
                add_to_slot(name, i, v[i]);
        }
    }
    for (const auto& [t, h] : other.target_latency_us)
        target_latency_us[t].merge(h);
}

std::string run_result::encode() const {
    std::string out;
    out += fmt::format("count {}\n", count);
    out += "window_s " + exact(window_s) + "\n";
    out += "rate " + exact(rate) + "\n";
    out += fmt::format("failed_connects {}\n", failed_connects);
    out += fmt::format("connections {}\n", connections);
    for (const auto& [kind, n] : errors)
        out += fmt::format("error {} {}\n", kind, n);
    out += "window_start_unix " + exact(window_start_unix) + "\n";
    for (const auto& [name, v] : slots) {
        for (std::size_t i = 0; i < v.size(); ++i) {
            if (v[i] != 0)
                out += fmt::format("slot {} {} {}\n", name, i, v[i]);
        }
    }
    out += fmt::format("hmin {}\nhmax {}\n", latency_us.min(), latency_us.max());
    for (std::size_t i = 0; i < histogram::bucket_count; ++i) {
        if (const auto n = latency_us.bucket(i))
            out += fmt::format("h {} {}\n", i, n);
    }
    for (const auto& [t, h] : target_latency_us) {
        out += fmt::format("th {} {} {}\n", t, h.min(), h.max()); // declares target t's histogram
        for (std::size_t i = 0; i < histogram::bucket_count; ++i) {
            if (const auto n = h.bucket(i))
                out += fmt::format("tb {} {} {}\n", t, i, n);
        }
    }
    out += "end\n";
    return out;
}

std::optional<run_result> run_result::decode(std::string_view text) {
    run_result r;
    std::uint64_t hmin = 0;
    std::uint64_t hmax = 0;
    std::map<unsigned, std::pair<std::uint64_t, std::uint64_t>> target_extremes;
    bool complete = false;
    while (!text.empty() && !complete) {
        const auto nl = text.find('\n');
        if (nl == std::string_view::npos)
            return std::nullopt; // a truncated last line
        std::string_view line = text.substr(0, nl);
        text.remove_prefix(nl + 1);
        const auto key = next_word(line);
        bool ok = true;
        if (key == "count") {
            ok = parse_number(line, r.count);
        } else if (key == "window_s") {
            ok = parse_number(line, r.window_s);
        } else if (key == "rate") {
            ok = parse_number(line, r.rate);
        } else if (key == "failed_connects") {
            ok = parse_number(line, r.failed_connects);
        } else if (key == "connections") {
            ok = parse_number(line, r.connections);
        } else if (key == "error") {
            const auto kind = next_word(line);
            std::uint64_t n = 0;
            ok = !kind.empty() && parse_number(line, n);
            if (ok)
                r.errors[std::string(kind)] += n;
        } else if (key == "window_start_unix") {
            ok = parse_number(line, r.window_start_unix);
        } else if (key == "slot") {
            const auto name = next_word(line);
            std::size_t index = 0;
            std::uint64_t n = 0;
            ok = !name.empty() && parse_number(next_word(line), index) && parse_number(line, n) &&
                 index < max_slots;
            if (ok)
                r.add_to_slot(std::string(name), index, n);
        } else if (key == "hmin") {
            ok = parse_number(line, hmin);
        } else if (key == "hmax") {
            ok = parse_number(line, hmax);
        } else if (key == "h") {
            std::size_t index = 0;
            std::uint64_t n = 0;
            ok = parse_number(next_word(line), index) && parse_number(line, n) && r.latency_us.add_bucket(index, n);
        } else if (key == "th") {
            unsigned t = 0;
            std::uint64_t lo = 0;
            std::uint64_t hi = 0;
            ok = parse_number(next_word(line), t) && parse_number(next_word(line), lo) && parse_number(line, hi) &&
                 t < max_targets && !target_extremes.contains(t);
            if (ok) {
                target_extremes[t] = {lo, hi};
                r.target_latency_us[t];
            }
        } else if (key == "tb") {
            unsigned t = 0;
            std::size_t index = 0;
            std::uint64_t n = 0;
            ok = parse_number(next_word(line), t) && parse_number(next_word(line), index) && parse_number(line, n) &&
                 target_extremes.contains(t) && r.target_latency_us[t].add_bucket(index, n);
        } else if (key == "end") {
            complete = true;
        } else {
            ok = false;
        }
        if (!ok)
            return std::nullopt;
    }
    if (!complete)
        return std::nullopt;
    if (r.latency_us.total() > 0)
        r.latency_us.set_extremes(hmin, hmax);
    for (auto& [t, h] : r.target_latency_us) {
        if (h.total() > 0)
            h.set_extremes(target_extremes[t].first, target_extremes[t].second);
    }
    return r;
}

std::string to_json(const options& opt, const run_result& r, const cpu_usage& cpu, double wall_s) {
    const auto& h = r.latency_us;
    std::string kinds = "{";
    for (const auto& [kind, n] : r.errors) {
        if (kinds.size() > 1)
            kinds += ',';
        kinds += json_string(kind) + ":" + std::to_string(n);
    }
    kinds += '}';
    return fmt::format(
        "{{\"scenario\":{},\"target\":{},\"path\":{},\"procs\":{},\"sources\":{},\"duration_s\":{},"
        "\"concurrency\":{},\"connections\":{},\"inflight\":{},\"size\":{},"
        "\"window_s\":{:.3f},\"count\":{},\"rate\":{:.1f},"
        "\"p50_us\":{},\"p99_us\":{},\"p999_us\":{},\"max_us\":{},\"min_us\":{},"
        "\"errors\":{},\"error_kinds\":{},\"failed_connects\":{},\"connections_open\":{},"
        "\"cpu_user_s\":{:.3f},\"cpu_sys_s\":{:.3f},\"wall_s\":{:.3f}}}",
        json_string(opt.scenario), json_string(opt.target_text), json_string(opt.path), opt.procs, opt.sources,
        exact(opt.duration_s), opt.concurrency, opt.connections, opt.inflight, opt.size, r.window_s, r.count, r.rate,
        h.percentile(0.50), h.percentile(0.99), h.percentile(0.999), h.max(), h.min(), r.error_total(), kinds,
        r.failed_connects, r.connections, cpu.user_s, cpu.sys_s, wall_s);
}

} // namespace sockherd::bench
